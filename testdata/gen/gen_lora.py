"""LoRA goldens for internal/lora, under testdata/golden/lora/.

An adapter as the diffusers examples make it (PEFT LoraConfig r=4, lora_alpha=8,
gaussian init, target_modules to_k/to_q/to_v/to_out.0) on the tiny UNet, with
every lora_B set to seeded non-zero values so it changes the output:

- pytorch_lora_weights.safetensors: written by StableDiffusionPipeline.save_lora_weights
  from convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)), as
  train_text_to_image_lora.py does, plus the LoRA config as unet_lora_adapter_metadata
  (without it load_lora_weights assumes alpha = r, scale 1 instead of 2).
- peft.safetensors: get_peft_model_state_dict(unet) as is, with the LoraConfig
  (adapter_config.json's content) in the "adapter_config" metadata.
- kohya.safetensors: diffusers' convert_state_dict_to_kohya of the same state dict,
  except the alphas: that converter writes alpha = rank as an int64 scalar, which
  would make the adapter scale 1; we store lora_alpha as a float32 scalar, as
  kohya's sd-scripts does. Checked by loading it back with load_lora_weights.
- outputs.safetensors: inputs x, t, ctx and the UNet output without the adapter
  (y_base), with it at scale 1 (y_scale1) and 0.5 (y_scale05, cross_attention_kwargs),
  and with it fused by fuse_lora at lora_scale 1 and 0.5 (y_fused1, y_fused05).

Then it checks the files Go wrote (go_written*.safetensors, made by
`ZD_WRITE_GO_LORA=1 go test ./internal/lora -run TestGoWrittenFiles`): diffusers'
load_lora_weights (diffusers and kohya forms) and PEFT (peft form) must load them
so that the UNet gives Go's output, go_written_io.safetensors["y"]. The Go adapters
have alpha 2 on to_k layers and 8 elsewhere, so a reader that drops per-layer alphas fails.
For the kohya form the layer names are diffusers' converter's and the per-layer alpha/rank
is applied as A1111 and ComfyUI apply it: diffusers 0.42.1's own load_lora_weights gives
every layer of a kohya file the most common alpha (see check_go_written).
"""
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from common import GOLDEN, ROOT, _sort_header, randn, save, seeded

TINY = os.path.join(ROOT, "models", "tiny")
OUT = os.path.join(GOLDEN, "lora")
TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
RANK, ALPHA = 4, 8

# Go against torch through the tiny UNet: internal/lora's unetTol (seen: 2e-6 at most).
ATOL, RTOL = 2e-5, 1e-3


def pipeline():
    from diffusers import StableDiffusionPipeline
    return StableDiffusionPipeline.from_pretrained(TINY)


def run(unet, x, t, ctx, **kw):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ctx, **kw).sample


def close(name, got, want):
    """Asserts got ≈ want and returns the largest difference."""
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
    return (got - want).abs().max().item()


def generate():
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    os.makedirs(OUT, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(TINY, subfolder="unet").eval()
    g = seeded(4242)
    x = randn(g, 2, 4, 16, 16)
    t = torch.tensor([3.0, 917.0])
    ctx = randn(g, 2, 7, 32)
    y_base = run(unet, x, t, ctx)

    torch.manual_seed(0)  # PEFT draws the gaussian lora_A from torch's global generator
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=TARGETS))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if ".lora_B." in name:
                p.copy_(randn(g, *p.shape, scale=0.5))
    y_scale1 = run(unet, x, t, ctx)
    y_scale05 = run(unet, x, t, ctx, cross_attention_kwargs={"scale": 0.5})
    assert (y_scale1 - y_base).abs().max() > 0.05, "the adapter barely changes the output"

    peft_sd = get_peft_model_state_dict(unet)
    config = unet.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])  # a set: sorted for identical files
    StableDiffusionPipeline.save_lora_weights(OUT, unet_lora_layers=convert_state_dict_to_diffusers(peft_sd),
                                              unet_lora_adapter_metadata=dict(config), safe_serialization=True)
    _sort_header(os.path.join(OUT, "pytorch_lora_weights.safetensors"))

    peft_path = os.path.join(OUT, "peft.safetensors")
    save_file({k: v.contiguous() for k, v in peft_sd.items()}, peft_path,
              metadata={"format": "pt", "adapter_config": json.dumps(config, indent=2, sort_keys=True)})
    _sort_header(peft_path)

    kohya = convert_state_dict_to_kohya({"unet." + k: v for k, v in peft_sd.items()})
    for k in kohya:
        if k.endswith(".alpha"):
            kohya[k] = torch.tensor(float(ALPHA), dtype=torch.float32)
    kohya_path = os.path.join(OUT, "kohya.safetensors")
    save_file({k: v.contiguous() for k, v in kohya.items()}, kohya_path)
    _sort_header(kohya_path)

    # What diffusers loads from the files gives the in-memory adapter's outputs.
    for weight_name in ("pytorch_lora_weights.safetensors", "kohya.safetensors"):
        pipe = pipeline()
        pipe.load_lora_weights(OUT, weight_name=weight_name)
        close(weight_name + " scale 1", run(pipe.unet, x, t, ctx), y_scale1)
        close(weight_name + " scale 0.5", run(pipe.unet, x, t, ctx, cross_attention_kwargs={"scale": 0.5}), y_scale05)
    fused = {}
    for scale in (1.0, 0.5):
        pipe = pipeline()
        pipe.load_lora_weights(OUT, weight_name="pytorch_lora_weights.safetensors")
        pipe.fuse_lora(lora_scale=scale)
        fused[scale] = run(pipe.unet, x, t, ctx)
    close("fused 1", fused[1.0], y_scale1)
    close("fused 0.5", fused[0.5], y_scale05)

    save("lora/outputs.safetensors", {"x": x, "t": t, "ctx": ctx, "y_base": y_base, "y_scale1": y_scale1,
                                      "y_scale05": y_scale05, "y_fused1": fused[1.0], "y_fused05": fused[0.5]},
         meta={"rank": RANK, "lora_alpha": ALPHA, "target_modules": ",".join(TARGETS)})
    check_go_written()


def check_go_written():
    """Loads the Go-written adapter files with diffusers and PEFT and compares the
    UNet output with Go's; a file loaded without its per-layer alphas must not match."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft
    from peft import LoraConfig

    io_path = os.path.join(OUT, "go_written_io.safetensors")
    if not os.path.exists(io_path):
        raise SystemExit(f"{io_path} is missing: write the Go files first with "
                         "`ZD_WRITE_GO_LORA=1 go test ./internal/lora -run TestGoWrittenFiles`")
    io = load_file(io_path)
    x, t, ctx, y_go = io["x"], io["t"], io["ctx"], io["y"]

    pipe = pipeline()
    pipe.load_lora_weights(OUT, weight_name="go_written.safetensors")
    d = close("go_written.safetensors loaded by diffusers", run(pipe.unet, x, t, ctx), y_go)
    print(f"  go_written.safetensors: diffusers' load_lora_weights gives Go's output (max diff {d:.3g})")

    # Negative control: without the metadata diffusers takes alpha = rank for every layer.
    pipe = pipeline()
    pipe.load_lora_weights(load_file(os.path.join(OUT, "go_written.safetensors")))
    d = (run(pipe.unet, x, t, ctx) - y_go).abs().max().item()
    assert d > 100 * ATOL, "the check cannot see a wrong alpha"
    print(f"  go_written.safetensors without its metadata (alpha = rank): differs from Go by {d:.3g}, as it must")

    path = os.path.join(OUT, "go_written_peft.safetensors")
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["adapter_config"])
    d = close("go_written_peft.safetensors loaded by PEFT", with_peft(LoraConfig(**config), load_file(path), x, t, ctx), y_go)
    print(f"  go_written_peft.safetensors: PEFT's set_peft_model_state_dict gives Go's output (max diff {d:.3g})")

    # Kohya: diffusers' converter names the layers; each layer's scale is its own
    # alpha/rank, as A1111 and ComfyUI apply it. diffusers 0.42.1's load_lora_weights
    # itself keys the alpha_pattern it builds from a kohya file by
    # "...processor.to_k_lora.down.weight", which matches no layer, so every layer
    # gets the most common alpha; it is run only to report that.
    path = os.path.join(OUT, "go_written_kohya.safetensors")
    sd, alphas = StableDiffusionPipeline.lora_state_dict(path)
    sd = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in sd.items()})
    alphas = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in alphas.items()})
    alphas = {k.removesuffix(".lora_A.weight.alpha"): v for k, v in alphas.items()}
    common = max(sorted(set(alphas.values())), key=list(alphas.values()).count)
    config = LoraConfig(r=RANK, lora_alpha=common, target_modules=sorted(alphas),
                        alpha_pattern={k: v for k, v in alphas.items() if v != common})
    d = close("go_written_kohya.safetensors with per-layer alpha", with_peft(config, sd, x, t, ctx), y_go)
    print("  go_written_kohya.safetensors: named as diffusers' kohya converter reads it, "
          f"per-layer alpha/rank gives Go's output (max diff {d:.3g})")
    pipe = pipeline()
    pipe.load_lora_weights(path)
    d = (run(pipe.unet, x, t, ctx) - y_go).abs().max().item()
    print(f"  go_written_kohya.safetensors: diffusers' load_lora_weights differs from Go by {d:.3g} (mixed alphas, see above)")


def with_peft(config, state_dict, x, t, ctx):
    """The tiny UNet's output with an adapter of config holding state_dict (PEFT names)."""
    from diffusers import UNet2DConditionModel
    from peft.utils import set_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(TINY, subfolder="unet").eval()
    unet.add_adapter(config)
    result = set_peft_model_state_dict(unet, state_dict)
    assert not result.unexpected_keys, result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k], result.missing_keys
    return run(unet, x, t, ctx)
