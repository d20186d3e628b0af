"""The Stable Diffusion XL base 1.0 architecture with seeded random weights, and its reference outputs,
for `make parity-sdxl` (internal/sd/sdxlfull compares zerodiff against them).

Usage: python testdata/sdxl/make_sdxl.py            (writes $ZD_SDXL_DIR, default /tmp/zerodiff-sdxl)

Writes a diffusers StableDiffusionXLPipeline folder (never committed; ~7 GB of float16 safetensors, the
"fp16" variant, which zerodiff's loader and diffusers' from_pretrained(variant="fp16") both read as float32):
  unet/, vae/, text_encoder/, text_encoder_2/
                               UNet2DConditionModel, AutoencoderKL, CLIPTextModel (CLIP ViT-L) and
                               CLIPTextModelWithProjection (OpenCLIP ViT-bigG) with the SDXL base 1.0 configs
                               below (keys they omit take diffusers'/transformers' defaults), PyTorch's default
                               init under torch.manual_seed, seeded noise on every parameter the init leaves
                               constant (make_sd15.perturb_constants), then rounded to float16 for the disk: the
                               UNet alone is 2.57B parameters, 10.3 GB in float32. The text encoders' keys get the
                               "text_model." prefix SDXL folders have.
  tokenizer/, tokenizer_2/     the real CLIP BPE; tokenizer_2 pads with "!" as SDXL's does
  scheduler/, model_index.json SDXL base's EulerDiscrete scheduler; force_zeros_for_empty_prompt true
  reference.safetensors        outputs in float32 (2 threads, no grad), one component in memory at a time: the
                               text encoders and VAE as diffusers/transformers reload them from the folder, the
                               UNet as built, widened back to float32 right after its float16 save (the same
                               weights a reload gives; see unet_reference):
      unet.x (1,4,48,32) non-square latents, unet.t (1) = [500], unet.ctx (1,77,2048), unet.text_embeds (1,1280)
      random, unet.time_ids (1,6) as _get_add_time_ids builds them from UNET_SIZES; unet.y the UNet's output;
      text.ids1, text.ids2 (3,77) for PROMPTS from each tokenizer; text.hidden1/2 (hidden_states[-2]),
      text.hidden1/2_skip1 (hidden_states[-3]), text.pooled2 (text_embeds);
      encode.{none,text}.{prompt_embeds,pooled,negative_embeds,negative_pooled} from encode_prompt with
      classifier-free guidance, without a negative prompt and with NEGATIVE;
      vae.z (1,4,32,24) → vae.decoded (1,3,256,192) (decoder at a small size: every layer and weight is
      SDXL's, only the image is smaller);
      metadata: versions, seed, prompts, torch's wall time of each forward.
  MADE_BY_MAKE_SDXL            marks the folder as this script's, so it may overwrite it later
  fingerprint.txt              hash of this script, make_sd15.py and the stack's versions: a later run with the
                               same fingerprint does nothing.
"""
import gc
import hashlib
import json
import os
import resource
import shutil
import sys
import time

import diffusers
import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "sd15"))
import make_sd15  # noqa: E402  (the tokenizer writer and the constant-parameter noise are SD1.5's)

SEED = 2048
THREADS = 2
VARIANT = "fp16"
MARKER = "MADE_BY_MAKE_SDXL"
MIN_FREE_GB = 12  # the folder is ~7 GB; saving needs headroom
PROMPTS = make_sd15.PROMPTS
NEGATIVE = "blurry, low quality"
UNET_SIZES = ((512, 400), (16, 8), (384, 256))  # original (h, w), crop top-left, target: every slot differs

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the keys that differ from the defaults).
UNET_CONFIG = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], flip_sin_to_cos=True,
    freq_shift=0, in_channels=4, layers_per_block=2, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True)

# Its vae/config.json: SD1.5's VAE with SDXL's scaling factor and force_upcast.
VAE_CONFIG = dict(make_sd15.VAE_CONFIG, sample_size=1024, scaling_factor=0.13025, force_upcast=True)

# text_encoder/config.json (CLIP ViT-L, as SD1.5's) and text_encoder_2/config.json (OpenCLIP ViT-bigG).
CLIP_CONFIG = make_sd15.CLIP_CONFIG
CLIP2_CONFIG = dict(
    attention_dropout=0.0, bos_token_id=0, dropout=0.0, eos_token_id=2, hidden_act="gelu", hidden_size=1280,
    initializer_factor=1.0, initializer_range=0.02, intermediate_size=5120, layer_norm_eps=1e-5,
    max_position_embeddings=77, num_attention_heads=20, num_hidden_layers=32, pad_token_id=1,
    projection_dim=1280, vocab_size=49408)

# scheduler/scheduler_config.json.
SCHEDULER_CONFIG = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="epsilon", sample_max_value=1.0, set_alpha_to_one=False,
    skip_prk_steps=True, steps_offset=1, timestep_spacing="leading", trained_betas=None, use_karras_sigmas=False)


def versions():
    return make_sd15.versions()


def fingerprint():
    """What the folder's contents depend on: this script, make_sd15.py and the reference stack."""
    src = b""
    for p in (__file__, make_sd15.__file__):
        with open(p, "rb") as f:
            src += f.read()
    return hashlib.sha256(src + json.dumps(versions(), sort_keys=True).encode()).hexdigest()


def write_tokenizers(out):
    """tokenizer/ as SD1's; tokenizer_2/ the same BPE padding with "!" (SDXL's tokenizer_2)."""
    make_sd15.write_tokenizer(os.path.join(out, "tokenizer"))
    tok2 = os.path.join(out, "tokenizer_2")
    make_sd15.write_tokenizer(tok2)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        p = os.path.join(tok2, name)
        with open(p) as f:
            cfg = json.load(f)
        cfg["pad_token"] = "!"
        with open(p, "w") as f:
            json.dump(cfg, f, indent=2)


def save_half(m, path):
    """Round m to float16 in place (halving its memory) and save it as the fp16 variant, one file."""
    m.half()
    m.save_pretrained(path, safe_serialization=True, variant=VARIANT, max_shard_size="40GB")


def build(out, r, meta):
    """Write the model folder, and the UNet's reference outputs into r and meta (see unet_reference)."""
    g = torch.Generator().manual_seed(SEED + 1)
    torch.manual_seed(SEED)
    for sub, make in (("unet", lambda: UNet2DConditionModel(**UNET_CONFIG)),
                      ("vae", lambda: AutoencoderKL(**VAE_CONFIG)),
                      ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG))),
                      ("text_encoder_2", lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP2_CONFIG)))):
        t0 = time.perf_counter()
        m = make().eval()
        make_sd15.perturb_constants(m, g)
        n = sum(p.numel() for p in m.parameters())
        save_half(m, os.path.join(out, sub))
        if sub.startswith("text_encoder"):
            make_sd15.add_text_model_prefix(os.path.join(out, sub, f"model.{VARIANT}.safetensors"))
        if sub == "unet":
            unet_reference(m.float(), r, meta)
        print(f"sdxl: {sub}: {n / 1e6:.1f}M parameters, built and saved in {time.perf_counter() - t0:.0f} s"
              f" (peak RSS so far {peak_gib():.1f} GiB)", flush=True)
        del m
        gc.collect()
    write_tokenizers(out)
    os.makedirs(os.path.join(out, "scheduler"), exist_ok=True)
    with open(os.path.join(out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(dict(SCHEDULER_CONFIG, _class_name="EulerDiscreteScheduler"), f, indent=2, sort_keys=True)
    index = {
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True, "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


def peak_gib():
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(meta, key, fn):
    t0 = time.perf_counter()
    out = fn()
    meta[key] = f"{time.perf_counter() - t0:.3f}"
    print(f"sdxl: torch {key}: {meta[key]} s", flush=True)
    return out


def unet_reference(unet, r, meta):
    """The UNet's outputs, from the built model widened back to float32 right after its float16 save: exactly the
    weights from_pretrained(variant="fp16", torch_dtype=float32) reads (every float16 is a float32), without the
    reload, which holds the file and the float32 copy at once (measured: 18.2 GiB peak RSS instead of 10.3)."""
    g = torch.Generator().manual_seed(SEED + 3)
    with torch.no_grad():
        r["unet.x"] = torch.randn(1, 4, 48, 32, generator=g)
        r["unet.t"] = torch.tensor([500.0])
        r["unet.ctx"] = torch.randn(1, 77, 2048, generator=g)
        r["unet.text_embeds"] = torch.randn(1, 1280, generator=g)
        # _get_add_time_ids (pipeline_stable_diffusion_xl.py) is list(original_size + crops_coords_top_left +
        # target_size) as a (1, 6) tensor.
        r["unet.time_ids"] = torch.tensor([sum(UNET_SIZES, ())], dtype=torch.float32)
        r["unet.y"] = timed(meta, "seconds.unet", lambda: unet.eval()(
            r["unet.x"], r["unet.t"], encoder_hidden_states=r["unet.ctx"],
            added_cond_kwargs={"text_embeds": r["unet.text_embeds"], "time_ids": r["unet.time_ids"]}).sample)
    meta["unet.parameters"] = str(sum(p.numel() for p in unet.parameters()))


def reference(out, r, meta):
    """Reload the text encoders and the VAE from the folder with diffusers/transformers (float32), one at a
    time, run them, free them, and write reference.safetensors with r (the UNet's outputs) added."""
    g = torch.Generator().manual_seed(SEED + 2)
    with torch.no_grad():
        pipe = StableDiffusionXLPipeline.from_pretrained(out, unet=None, vae=None, variant=VARIANT,
                                                         torch_dtype=torch.float32)
        assert pipe.config.force_zeros_for_empty_prompt and pipe.tokenizer_2.pad_token == "!"
        for i, (tok, enc) in enumerate(((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))):
            ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            o = timed(meta, f"seconds.text{i + 1}", lambda: enc(ids, output_hidden_states=True))
            r[f"text.ids{i + 1}"] = ids
            r[f"text.hidden{i + 1}"] = o.hidden_states[-2]
            r[f"text.hidden{i + 1}_skip1"] = o.hidden_states[-3]
            if i == 1:
                r["text.pooled2"] = o.text_embeds
        for key, neg in (("none", None), ("text", NEGATIVE)):
            e, ne, p, np_ = timed(meta, f"seconds.encode_{key}", lambda: pipe.encode_prompt(
                PROMPTS, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                negative_prompt=None if neg is None else [neg] * len(PROMPTS)))
            r[f"encode.{key}.prompt_embeds"], r[f"encode.{key}.pooled"] = e, p
            r[f"encode.{key}.negative_embeds"], r[f"encode.{key}.negative_pooled"] = ne, np_
        assert not r["encode.none.negative_embeds"].any() and not r["encode.none.negative_pooled"].any()
        del pipe
        gc.collect()

        print(f"sdxl: text encoders done (peak RSS so far {peak_gib():.1f} GiB)", flush=True)
        vae = AutoencoderKL.from_pretrained(os.path.join(out, "vae"), variant=VARIANT, torch_dtype=torch.float32)
        r["vae.z"] = torch.randn(1, 4, 32, 24, generator=g)
        r["vae.decoded"] = timed(meta, "seconds.vae_decode", lambda: vae.decode(r["vae.z"]).sample)
        del vae
        gc.collect()
    meta.update(versions(), seed=str(SEED), threads=str(THREADS), prompts=json.dumps(PROMPTS), negative=NEGATIVE)
    save_file({k: v.contiguous() for k, v in r.items()}, os.path.join(out, "reference.safetensors"), metadata=meta)
    for k, v in r.items():
        if v.is_floating_point():
            print(f"sdxl: {k:34s} {str(tuple(v.shape)):18s} rms {v.pow(2).mean().sqrt().item():.4g}"
                  f" max|.| {v.abs().max().item():.4g}", flush=True)


def main():
    out = os.environ.get("ZD_SDXL_DIR") or "/tmp/zerodiff-sdxl"
    fp_path = os.path.join(out, "fingerprint.txt")
    fp = fingerprint()
    if os.path.exists(fp_path):
        with open(fp_path) as f:
            if f.read().strip() == fp:
                print(f"sdxl: {out} is up to date (fingerprint {fp[:12]})")
                return
    mark = os.path.join(out, MARKER)
    if os.path.exists(os.path.join(out, "model_index.json")) and not os.path.exists(mark):
        sys.exit(f"sdxl: {out} holds a model folder this script did not write; "
                 "point ZD_SDXL_DIR at an empty or new folder")
    os.makedirs(out, exist_ok=True)
    with open(mark, "w") as f:
        f.write("written by testdata/sdxl/make_sdxl.py: random weights, for `make parity-sdxl` only\n")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler",
                 "fingerprint.txt", "reference.safetensors"):
        p = os.path.join(out, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    free = shutil.disk_usage(out).free / 2**30
    if free < MIN_FREE_GB:
        sys.exit(f"sdxl: {out} has {free:.1f} GiB free, the folder needs {MIN_FREE_GB}")
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    r, meta = {}, {}
    build(out, r, meta)
    reference(out, r, meta)
    with open(fp_path, "w") as f:
        f.write(fp + "\n")
    print(f"sdxl: wrote {out} in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
