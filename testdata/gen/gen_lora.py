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
so that the UNet gives Go's output, go_written_io.safetensors["y"].
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

# Go against torch through the tiny UNet: the tolerance of internal/lora's unetTol.
ATOL, RTOL = 2e-4, 5e-3


def pipeline():
    from diffusers import StableDiffusionPipeline
    return StableDiffusionPipeline.from_pretrained(TINY)


def run(unet, x, t, ctx, **kw):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ctx, **kw).sample


def close(name, got, want):
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


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
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    io_path = os.path.join(OUT, "go_written_io.safetensors")
    if not os.path.exists(io_path):
        raise SystemExit(f"{io_path} is missing: write the Go files first with "
                         "`ZD_WRITE_GO_LORA=1 go test ./internal/lora -run TestGoWrittenFiles`")
    io = load_file(io_path)
    x, t, ctx, y_go = io["x"], io["t"], io["ctx"], io["y"]

    for weight_name in ("go_written.safetensors", "go_written_kohya.safetensors"):
        pipe = pipeline()
        pipe.load_lora_weights(OUT, weight_name=weight_name)
        close(weight_name + " loaded by diffusers", run(pipe.unet, x, t, ctx), y_go)
        print(f"  {weight_name}: diffusers' load_lora_weights gives Go's output")

    # Negative control: without the metadata diffusers takes alpha = rank for every layer.
    pipe = pipeline()
    pipe.load_lora_weights(load_file(os.path.join(OUT, "go_written.safetensors")))
    wrong = run(pipe.unet, x, t, ctx)
    assert (wrong - y_go).abs().max() > 100 * ATOL, "the check cannot see a wrong alpha"

    path = os.path.join(OUT, "go_written_peft.safetensors")
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["adapter_config"])
    unet = UNet2DConditionModel.from_pretrained(TINY, subfolder="unet").eval()
    unet.add_adapter(LoraConfig(**config))
    result = set_peft_model_state_dict(unet, load_file(path))
    assert not result.unexpected_keys, result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k], result.missing_keys
    close("go_written_peft.safetensors loaded by PEFT", run(unet, x, t, ctx), y_go)
    print("  go_written_peft.safetensors: PEFT's set_peft_model_state_dict gives Go's output")
