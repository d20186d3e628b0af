"""Goldens for internal/export, under testdata/golden/export/: what diffusers
accepts of the files `ckpt export` writes.

The generator runs `ZD_EXPORT_OUT=<tmp> go test ./internal/export -run
TestGoWrittenExports`, which writes, from two checkpoints of the tiny model with
fixed weights (a full fine-tune, and a LoRA run with r=4, alpha=8 on
to_k/to_q/to_v/to_out.0), every export format and go_io.safetensors (inputs x, t,
ctx; the Go UNet outputs y_full and y_lora). It then loads each format as its
users do, offline:

- diffusers:   StableDiffusionPipeline.from_pretrained(pipeline/), then one
               2-step text-to-image call through the whole pipeline;
- unet-only:   UNet2DConditionModel.from_pretrained(unet_only/); as a control, the
               same folder with attention_head_dim, cross_attention_dim,
               layers_per_block and transformer_layers_per_block as one-element
               lists (what the export used to write) must be refused;
- single-file: StableDiffusionPipeline.from_single_file(single.safetensors,
               config=models/tiny) (the tiny model's folder gives the configs
               offline); its VAE and text encoder must equal the tiny model's;
- lora-diffusers, lora-kohya: pipe.load_lora_weights on the tiny pipeline.

The same four formats of two tiny SDXL checkpoints (sdxl_*) load as
StableDiffusionXLPipeline.from_pretrained (then a 2-step call), from_single_file
(config=models/tiny-sdxl; its VAE and both text encoders must equal the tiny SDXL
model's) and load_lora_weights (kohya's SGM names go through diffusers'
_convert_non_diffusers_lora_to_diffusers, and every adapter must be attached).

Each loaded UNet runs x, t, ctx (SDXL: xl_x, xl_t, xl_ctx, xl_text_embeds,
xl_time_ids) and must give Go's output (y_full, or y_lora for the adapters;
y_xl_full, y_xl_lora), which differs from the tiny model's own output. Files:
  outputs.safetensors  diffusers' output for each format (y_<format>)
  accepted.json        per format: how diffusers loaded it, the output tensor, the
                       Go tensor it matched, the largest difference, and the
                       SHA-256 of every file it read; TestGoWrittenExports
                       demands Go still writes those bytes.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import torch
from safetensors.torch import load_file

from common import GOLDEN, ROOT, save, versions

REPO = os.path.dirname(ROOT)
TINY = os.path.join(ROOT, "models", "tiny")
TINY_XL = os.path.join(ROOT, "models", "tiny-sdxl")
OUT = os.path.join(GOLDEN, "export")

# Go against torch through the tiny UNet: internal/lora's unetTol (seen: 2e-6 at most).
ATOL, RTOL = 2e-5, 1e-3


def run(unet, io):
    with torch.no_grad():
        return unet(io["x"], io["t"], encoder_hidden_states=io["ctx"]).sample


def run_xl(unet, io):
    with torch.no_grad():
        return unet(io["xl_x"], io["xl_t"], encoder_hidden_states=io["xl_ctx"],
                    added_cond_kwargs={"text_embeds": io["xl_text_embeds"], "time_ids": io["xl_time_ids"]}).sample


def same_parts(name, got, want, parts):
    """The components parts of pipeline got hold exactly the weights of want's."""
    for part in parts:
        a, b = getattr(got, part).state_dict(), getattr(want, part).state_dict()
        assert sorted(a) == sorted(b), f"{name} {part}: other keys"
        for k, v in b.items():
            assert torch.equal(a[k], v), f"{name} {part}: {k} differs from the base model's"


def close(name, got, want):
    """Asserts got ≈ want and returns the largest difference."""
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
    return (got - want).abs().max().item()


def sums(root, rel):
    """SHA-256 of every file under root/rel (a file or a folder), keyed by its path under root."""
    out = {}
    path = os.path.join(root, rel)
    files = [path] if os.path.isfile(path) else [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for p in sorted(files):
        with open(p, "rb") as f:
            out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def refuses_listy_config(unet_dir, tmp):
    """The export's old UNet config — four keys as one-element lists — must be refused."""
    from diffusers import UNet2DConditionModel

    bad = os.path.join(tmp, "listy")
    shutil.copytree(unet_dir, bad)
    with open(os.path.join(bad, "config.json")) as f:
        cfg = json.load(f)
    for k in ("attention_head_dim", "cross_attention_dim", "layers_per_block", "transformer_layers_per_block"):
        cfg[k] = [cfg[k]]
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(cfg, f)
    try:
        UNet2DConditionModel.from_pretrained(bad, local_files_only=True)
    except ValueError as e:
        assert "Must provide the same number" in str(e), e
        return str(e).splitlines()[0]
    raise AssertionError("diffusers loaded a UNet config with one-element lists; the control sees nothing")


def generate():
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    os.makedirs(OUT, exist_ok=True)
    formats, outputs = {}, {}

    def accept(format, loaded_by, output, go, files, y, io):
        outputs[output] = y
        d = close(f"{format} ({loaded_by})", y, io[go])
        formats[format] = {"loaded_by": loaded_by, "output": output, "go": go, "files": files,
                           "max_abs_diff": float(f"{d:.3g}")}
        print(f"  {format}: {loaded_by} accepts it; the UNet gives Go's {go} (max diff {d:.3g})")

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["go", "test", "./internal/export", "-run", "^TestGoWrittenExports$", "-count=1"],
                       cwd=REPO, env=dict(os.environ, ZD_EXPORT_OUT=tmp), check=True)
        io = load_file(os.path.join(tmp, "go_io.safetensors"))
        # Controls: the fixed weights and adapters move the output, so a loader
        # that kept the tiny model's UNet or dropped the adapters cannot pass.
        y_base = run(UNet2DConditionModel.from_pretrained(TINY, subfolder="unet", local_files_only=True), io)
        for go in ("y_full", "y_lora"):
            assert (io[go] - y_base).abs().max() > 100 * ATOL, f"{go} is the tiny model's own output"

        pipe = StableDiffusionPipeline.from_pretrained(os.path.join(tmp, "pipeline"), local_files_only=True)
        image = pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="np",
                     generator=torch.Generator().manual_seed(0)).images
        assert image.shape == (1, 32, 32, 3) and torch.isfinite(torch.from_numpy(image)).all(), image.shape
        accept("diffusers", "StableDiffusionPipeline.from_pretrained, then a 2-step pipe(prompt)", "y_pipeline", "y_full",
               sums(tmp, "pipeline"), run(pipe.unet, io), io)

        unet = UNet2DConditionModel.from_pretrained(os.path.join(tmp, "unet_only"), local_files_only=True)
        accept("diffusers-unet-only", "UNet2DConditionModel.from_pretrained", "y_unet_only", "y_full",
               sums(tmp, "unet_only"), run(unet, io), io)
        refused = refuses_listy_config(os.path.join(tmp, "unet_only"), tmp)
        print(f"  control: the old one-element-list config is refused ({refused})")

        single = StableDiffusionPipeline.from_single_file(os.path.join(tmp, "single.safetensors"), config=TINY,
                                                          local_files_only=True)
        base = StableDiffusionPipeline.from_pretrained(TINY, local_files_only=True)
        for part in ("vae", "text_encoder"):
            got, want = getattr(single, part).state_dict(), getattr(base, part).state_dict()
            assert sorted(got) == sorted(want), f"single-file {part}: other keys"
            for k, v in want.items():
                assert torch.equal(got[k], v), f"single-file {part}: {k} differs from the tiny model's"
        accept("single-file", "StableDiffusionPipeline.from_single_file(config=models/tiny)", "y_single_file", "y_full",
               sums(tmp, "single.safetensors"), run(single.unet, io), io)

        for format, name in (("lora-diffusers", "lora_diffusers.safetensors"), ("lora-kohya", "lora_kohya.safetensors")):
            pipe = StableDiffusionPipeline.from_pretrained(TINY, local_files_only=True)
            pipe.load_lora_weights(tmp, weight_name=name)
            accept(format, "StableDiffusionPipeline.load_lora_weights", "y_" + format.replace("-", "_"), "y_lora",
                   sums(tmp, name), run(pipe.unet, io), io)

        xl_formats(tmp, io, accept)

    save("export/outputs.safetensors", outputs)
    with open(os.path.join(OUT, "accepted.json"), "w") as f:
        json.dump({"versions": versions(), "control_refused": refused, "formats": formats}, f, indent=1, sort_keys=True)
        f.write("\n")


def xl_formats(tmp, io, accept):
    """Loads the SDXL exports as diffusers' users do."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    y_base = run_xl(UNet2DConditionModel.from_pretrained(TINY_XL, subfolder="unet", local_files_only=True), io)
    for go in ("y_xl_full", "y_xl_lora"):
        assert (io[go] - y_base).abs().max() > 100 * ATOL, f"{go} is the tiny SDXL model's own output"
    base = StableDiffusionXLPipeline.from_pretrained(TINY_XL, local_files_only=True)

    pipe = StableDiffusionXLPipeline.from_pretrained(os.path.join(tmp, "sdxl_pipeline"), local_files_only=True)
    same_parts("sdxl pipeline", pipe, base, ("vae", "text_encoder", "text_encoder_2"))
    image = pipe("a red circle", num_inference_steps=2, height=32, width=48, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 48, 3) and torch.isfinite(torch.from_numpy(image)).all(), image.shape
    accept("sdxl-diffusers", "StableDiffusionXLPipeline.from_pretrained, then a 2-step pipe(prompt)", "y_xl_pipeline",
           "y_xl_full", sums(tmp, "sdxl_pipeline"), run_xl(pipe.unet, io), io)

    single = StableDiffusionXLPipeline.from_single_file(os.path.join(tmp, "sdxl_single.safetensors"), config=TINY_XL,
                                                        local_files_only=True)
    same_parts("sdxl single-file", single, base, ("vae", "text_encoder", "text_encoder_2"))
    accept("sdxl-single-file", "StableDiffusionXLPipeline.from_single_file(config=models/tiny-sdxl)",
           "y_xl_single_file", "y_xl_full", sums(tmp, "sdxl_single.safetensors"), run_xl(single.unet, io), io)

    for format, name in (("sdxl-lora-diffusers", "sdxl_lora_diffusers.safetensors"),
                         ("sdxl-lora-kohya", "sdxl_lora_kohya.safetensors")):
        pipe = StableDiffusionXLPipeline.from_pretrained(TINY_XL, local_files_only=True)
        pipe.load_lora_weights(tmp, weight_name=name)
        n = sum(1 for k in pipe.unet.state_dict() if k.endswith("lora_A.default_0.weight"))
        want = sum(1 for k in load_file(os.path.join(tmp, name)) if k.endswith((".lora.down.weight", ".lora_down.weight")))
        assert n == want, f"{format}: diffusers attached {n} adapters of the file's {want}"
        accept(format, "StableDiffusionXLPipeline.load_lora_weights", "y_" + format.replace("-", "_"), "y_xl_lora",
               sums(tmp, name), run_xl(pipe.unet, io), io)
