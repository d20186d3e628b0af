"""The Stable Diffusion 1.5 architecture with seeded random weights, and its reference outputs,
for `make parity-sd15` (internal/sd/sd15 compares zerodiff against them).

Usage: python testdata/sd15/make_sd15.py            (writes $ZD_SD15_DIR, default /tmp/zerodiff-sd15)

Writes a diffusers folder (never committed; ~4.3 GB of float32 safetensors):
  unet/, vae/, text_encoder/   UNet2DConditionModel, AutoencoderKL and CLIPTextModel with the exact
                               SD1.5 configs below (as runwayml/stable-diffusion-v1-5 ships them; keys
                               they omit take diffusers'/transformers' defaults), PyTorch's default random
                               init under torch.manual_seed, then seeded noise on every parameter the init
                               leaves constant (norm scales, zero biases) so a swapped weight/bias shows.
                               The text encoder's keys get the "text_model." prefix every SD1.5 folder has
                               (transformers 5 saves without it).
  tokenizer/                   the real CLIP BPE (48,894 merges, 49,408 tokens) from
                               testdata/tokenizer/bpe_simple_vocab_16e6.txt.gz, with SD1.5's special tokens
  scheduler/, model_index.json SD1.5's PNDM scheduler and pipeline index
  reference.safetensors        outputs of the folder as diffusers reloads it, float32, 2 threads, no grad:
      unet.x64 (1,4,64,64), unet.x32 (1,4,32,32), unet.t (1) = [500], unet.ctx (1,77,768) random;
      unet.y64, unet.y32 the UNet's outputs;
      vae.image (1,3,256,256) in [-1,1] → vae.mean, vae.logvar (1,4,32,32) (encoder);
      vae.z (1,4,32,32) → vae.decoded (1,3,256,256) (decoder). 256 px instead of SD's 512 keeps the
      CPU time sane; every layer and weight is the same, only the image is smaller;
      text.ids (3,77) for PROMPTS → text.last_hidden_state, text.clip_skip1 (3,77,768);
      metadata: versions, seed, torch's wall time of each forward (a first call, like the Go test's), and
      the UNet's FLOPs at both sizes counted by torch.utils.flop_counter (internal/sd/sd15 checks its own
      count against them).
  MADE_BY_MAKE_SD15            marks the folder as this script's, so it may overwrite it later (it refuses to
                               overwrite a model folder without the mark)
  fingerprint.txt              hash of this script and the reference stack's versions: a later run with the
                               same fingerprint does nothing.
"""
import gc
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.dirname(HERE)
BPE = os.path.join(TESTDATA, "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
SD1_TOKENIZER = os.path.join(TESTDATA, "tokenizer", "sd1")
SEED = 1505
THREADS = 2
MARKER = "MADE_BY_MAKE_SD15"  # marks a folder this script may overwrite
MIN_FREE_GB = 10  # the folder is ~4.3 GB; saving and reloading need headroom
PROMPTS = ["a photograph of an astronaut riding a horse",
           "A RED circle on a dark background, 2 shapes! Wide-angle, 35mm; f/1.8 — bokeh.",
           ""]

# SD1.5's unet/config.json.
UNET_CONFIG = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])

# SD1.5's vae/config.json (scaling_factor is diffusers' default, 0.18215).
VAE_CONFIG = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4)

# SD1.5's text_encoder/config.json: the text tower of CLIP ViT-L/14 (the token ids 0/1/2 are what that
# file says; the tokenizer, not these, decides the ids the model sees).
CLIP_CONFIG = dict(
    attention_dropout=0.0, bos_token_id=0, dropout=0.0, eos_token_id=2, hidden_act="quick_gelu", hidden_size=768,
    initializer_factor=1.0, initializer_range=0.02, intermediate_size=3072, layer_norm_eps=1e-5,
    max_position_embeddings=77, num_attention_heads=12, num_hidden_layers=12, pad_token_id=1,
    projection_dim=768, vocab_size=49408)

# SD1.5's scheduler/scheduler_config.json, written as is (PNDMScheduler ignores clip_sample; the keys it
# omits, prediction_type and timestep_spacing, default to epsilon and leading).
SCHEDULER_CONFIG = dict(
    _class_name="PNDMScheduler", beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085,
    clip_sample=False, num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None)

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
    "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"]}


def versions():
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def fingerprint():
    """What the folder's contents depend on: this script and the reference stack."""
    with open(__file__, "rb") as f:
        src = f.read()
    return hashlib.sha256(src + json.dumps(versions(), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- tokenizer

def bpe_file(out):
    """The CLIP BPE: the committed copy, else the one inside the open-clip-torch wheel (MIT)."""
    if os.path.exists(BPE):
        return BPE
    dst = os.path.join(out, "bpe_simple_vocab_16e6.txt.gz")
    if os.path.exists(dst):
        return dst
    print(f"sd15: {BPE} is missing; taking the BPE from the open-clip-torch wheel", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "-d", tmp, "open-clip-torch"], check=True)
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as z, open(dst, "wb") as f:
            f.write(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
    return dst


def bytes_to_unicode():
    """CLIP's (GPT-2's) map from the 256 byte values to printable unicode symbols."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer(out):
    """vocab.json and merges.txt as CLIP builds them from its BPE file (merges 1..48894 of the file, vocab =
    bytes, bytes + "</w>", one token per merge, then the two special tokens), and SD1's tokenizer_config.json
    and special_tokens_map.json."""
    with gzip.open(bpe_file(os.path.dirname(out)), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == len(vocab), len(vocab)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(SD1_TOKENIZER, name), os.path.join(out, name))


# ---------------------------------------------------------------- models

def perturb_constants(model, g):
    """Add seeded noise (std 0.1) to every parameter the init left constant."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.std() == 0:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def add_text_model_prefix(path):
    """Give the text encoder's keys the "text_model." prefix of every SD1.5 folder (transformers 4 names)."""
    sd = load_file(path)
    if not any(k.startswith("text_model.") for k in sd):
        save_file({"text_model." + k: v for k, v in sd.items()}, path, metadata={"format": "pt"})


def build(out):
    """Write the model folder; return nothing (the reference reloads it from disk)."""
    g = torch.Generator().manual_seed(SEED + 1)
    torch.manual_seed(SEED)
    for sub, make in (("unet", lambda: UNet2DConditionModel(**UNET_CONFIG)),
                      ("vae", lambda: AutoencoderKL(**VAE_CONFIG)),
                      ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)))):
        t0 = time.perf_counter()
        m = make().eval()
        perturb_constants(m, g)
        m.save_pretrained(os.path.join(out, sub), safe_serialization=True)
        if sub == "text_encoder":
            add_text_model_prefix(os.path.join(out, sub, "model.safetensors"))
        n = sum(p.numel() for p in m.parameters())
        print(f"sd15: {sub}: {n / 1e6:.1f}M parameters, built and saved in {time.perf_counter() - t0:.0f} s", flush=True)
        del m
        gc.collect()
    write_tokenizer(os.path.join(out, "tokenizer"))
    os.makedirs(os.path.join(out, "scheduler"), exist_ok=True)
    with open(os.path.join(out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER_CONFIG, f, indent=2, sort_keys=True)
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(MODEL_INDEX, f, indent=2, sort_keys=True)


# ---------------------------------------------------------------- reference outputs

def timed(meta, key, fn):
    t0 = time.perf_counter()
    out = fn()
    meta[key] = f"{time.perf_counter() - t0:.3f}"
    print(f"sd15: torch {key}: {meta[key]} s", flush=True)
    return out


def unet_flops(size):
    """FLOPs of one UNet forward at (1, 4, size, size) with a 77-token context, as torch's FlopCounterMode
    counts them (2 per multiply-add of convolutions, linears and attention matmuls), on the meta device."""
    with torch.device("meta"):
        u = UNet2DConditionModel(**UNET_CONFIG)
        x, t, ctx = torch.empty(1, 4, size, size), torch.empty(1), torch.empty(1, 77, 768)
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        u(x, t, ctx)
    return fc.get_total_flops()


def reference(out):
    """Reload the folder with diffusers and write reference.safetensors from exactly what it loaded."""
    pipe = StableDiffusionPipeline.from_pretrained(out, dtype=torch.float32, safety_checker=None,
                                                   feature_extractor=None)
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.timestep_spacing == "leading"
    unet, vae, text, tok = pipe.unet.eval(), pipe.vae.eval(), pipe.text_encoder.eval(), pipe.tokenizer
    g = torch.Generator().manual_seed(SEED + 2)
    r, meta = {}, {}
    with torch.no_grad():
        r["unet.x64"] = torch.randn(1, 4, 64, 64, generator=g)
        r["unet.x32"] = torch.randn(1, 4, 32, 32, generator=g)
        r["unet.t"] = torch.tensor([500.0])
        r["unet.ctx"] = torch.randn(1, 77, 768, generator=g)
        for s in (64, 32):
            r[f"unet.y{s}"] = timed(meta, f"seconds.unet{s}",
                                    lambda: unet(r[f"unet.x{s}"], r["unet.t"], r["unet.ctx"]).sample)
            meta[f"flops.unet{s}"] = str(unet_flops(s))

        r["vae.image"] = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
        dist = timed(meta, "seconds.vae_encode", lambda: vae.encode(r["vae.image"]).latent_dist)
        r["vae.mean"], r["vae.logvar"] = dist.mean, dist.logvar
        r["vae.z"] = torch.randn(1, 4, 32, 32, generator=g)
        r["vae.decoded"] = timed(meta, "seconds.vae_decode", lambda: vae.decode(r["vae.z"]).sample)

        ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        o = timed(meta, "seconds.text", lambda: text(ids, output_hidden_states=True))
        r["text.ids"] = ids
        r["text.last_hidden_state"] = o.last_hidden_state
        r["text.clip_skip1"] = text.final_layer_norm(o.hidden_states[-2])
    meta.update(versions(), seed=str(SEED), threads=str(THREADS), prompts=json.dumps(PROMPTS))
    save_file({k: v.contiguous() for k, v in r.items()}, os.path.join(out, "reference.safetensors"), metadata=meta)
    for k, v in r.items():
        if v.is_floating_point():
            print(f"sd15: {k:24s} {str(tuple(v.shape)):18s} rms {v.pow(2).mean().sqrt().item():.4g}"
                  f" max|.| {v.abs().max().item():.4g}", flush=True)


def main():
    out = os.environ.get("ZD_SD15_DIR") or "/tmp/zerodiff-sd15"
    fp_path = os.path.join(out, "fingerprint.txt")
    fp = fingerprint()
    if os.path.exists(fp_path):
        with open(fp_path) as f:
            if f.read().strip() == fp:
                print(f"sd15: {out} is up to date (fingerprint {fp[:12]})")
                return
    mark = os.path.join(out, MARKER)
    if os.path.exists(os.path.join(out, "model_index.json")) and not os.path.exists(mark):
        sys.exit(f"sd15: {out} holds a model folder this script did not write; "
                 "point ZD_SD15_DIR at an empty or new folder")
    os.makedirs(out, exist_ok=True)
    with open(mark, "w") as f:
        f.write("written by testdata/sd15/make_sd15.py: random weights, for `make parity-sd15` only\n")
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "fingerprint.txt", "reference.safetensors"):
        p = os.path.join(out, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    free = shutil.disk_usage(out).free / 2**30
    if free < MIN_FREE_GB:
        sys.exit(f"sd15: {out} has {free:.1f} GiB free, the folder needs {MIN_FREE_GB}")
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    build(out)
    reference(out)
    with open(fp_path, "w") as f:
        f.write(fp + "\n")
    print(f"sd15: wrote {out} in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
