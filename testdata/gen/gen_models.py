"""Tiny seeded Stable Diffusion models and their goldens.

Writes, under testdata/models/:
  tiny/     an SD1-like diffusers folder (float32 weights, CLIP text encoder with quick_gelu,
            PNDM scheduler with epsilon prediction, a 2000-merge CLIP BPE tokenizer)
  tiny-v/   an SD2-like folder: linear projections, per-block head counts, upcast attention,
            gelu text encoder, pad token "!", v_prediction, weights as the fp16 variant
            (*.fp16.safetensors, stored as float16)
  tiny.safetensors   tiny/ as one original-LDM checkpoint (model.diffusion_model.*,
            first_stage_model.*, cond_stage_model.transformer.*), checked here against
            diffusers' own single-file converters
and under testdata/golden/models/<model>/: clip, vae and unet goldens computed in float32
from exactly the weights on disk (for tiny-v: the float16 values widened to float32), plus
a short pipeline run for tiny; and testdata/golden/models/ldm_names.json, the single-file
names of SD-sized UNet and VAE block structures.

tiny-v's tokenizer makes "!" its pad token, and transformers (5.x here) then splits "!" out
of prompts as that special token (id 0, not "!</w>"); the clip golden's ids record it.
"""
import gzip
import json
import os
import re
import shutil

import diffusers
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from common import ROOT, randn, save, seeded

MODELS = os.path.join(ROOT, "models")
BPE = os.path.join(ROOT, "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
N_MERGES = 2000
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
PROMPTS = ["a photo of a cat", "A RED circle on a dark background, 2 shapes!", ""]


# ---------------------------------------------------------------- tokenizer

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


def write_tokenizer(out, pad_token, n_merges=N_MERGES):
    """The real CLIP BPE truncated to its first n_merges merges, laid out as in SD model folders."""
    with gzip.open(BPE, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(m.split()) for m in lines[1:n_merges + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += [SOT, EOT]
    assert len(set(vocab)) == len(vocab), "duplicate BPE vocabulary entries"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": SOT, "eos_token": EOT, "unk_token": EOT, "pad_token": pad_token}
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    cfg = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True,
               add_prefix_space=False, errors="replace")
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return len(vocab)


# ---------------------------------------------------------------- models

def unet_config(v):
    cfg = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
               cross_attention_dim=32, attention_head_dim=2, norm_num_groups=4)
    if v:
        cfg.update(use_linear_projection=True, attention_head_dim=[2, 4], upcast_attention=True)
    return cfg


VAE_CONFIG = dict(in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1, latent_channels=4,
                  norm_num_groups=4, sample_size=32, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, scaling_factor=0.18215)


def clip_config(vocab_size, v, pad_id):
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                          hidden_act="gelu" if v else "quick_gelu", layer_norm_eps=1e-5,
                          bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=pad_id)


def scheduler(v):
    return PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         steps_offset=1, skip_prk_steps=True, set_alpha_to_one=False,
                         prediction_type="v_prediction" if v else "epsilon", timestep_spacing="leading")


def perturb_constants(model, g, half):
    """Add seeded noise to every parameter the init left constant (zero biases, zero-initialized
    output layers, unit norm scales), so goldens and gradients exercise every element and a
    swapped weight/bias shows. With half, round to float16 so the saved and the used weights agree."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.std() == 0:
                p.add_(randn(g, *p.shape, scale=0.1))
            if half:
                p.copy_(p.half().float())


def build(name, v, seed):
    """Build, save and return the float32 models of one folder."""
    g = seeded(seed)
    out = os.path.join(MODELS, name)
    shutil.rmtree(out, ignore_errors=True)
    vocab_size = write_tokenizer(os.path.join(out, "tokenizer"), "!" if v else EOT)
    tok = CLIPTokenizer.from_pretrained(os.path.join(out, "tokenizer"))
    assert len(tok) == vocab_size, (len(tok), vocab_size)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(v)).eval()
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    text = CLIPTextModel(clip_config(vocab_size, v, tok.pad_token_id)).eval()
    sched = scheduler(v)
    variant = "fp16" if v else None
    for sub, m in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        perturb_constants(m, g, half=v)
        disk = m
        if v:
            disk = type(m).from_config(m.config) if sub != "text_encoder" else CLIPTextModel(m.config)
            disk.load_state_dict(m.state_dict())
            disk = disk.to(torch.float16)
        disk.save_pretrained(os.path.join(out, sub), safe_serialization=True, variant=variant)
        if sub == "text_encoder" and not v:
            add_text_model_prefix(os.path.join(out, sub, "model.safetensors"))
    sched.save_pretrained(os.path.join(out, "scheduler"))
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
             "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
    check_reload(out, variant, unet, vae, text)
    return g, tok, unet, vae, text


def add_text_model_prefix(path):
    """transformers 5 saves CLIPTextModel without the "text_model." prefix that every SD model folder
    and single file in the wild has (they were saved by transformers 4). tiny/ keeps the classic
    names, tiny-v/ the new ones, so loaders are tested on both."""
    sd = load_file(path)
    save_file({"text_model." + k: v for k, v in sd.items()}, path, metadata={"format": "pt"})


def check_reload(out, variant, unet, vae, text):
    """The saved folder loads with diffusers' pipeline and holds exactly the weights used for the goldens."""
    pipe = StableDiffusionPipeline.from_pretrained(out, variant=variant, torch_dtype=torch.float32,
                                                   safety_checker=None, feature_extractor=None)
    for mine, loaded in ((unet, pipe.unet), (vae, pipe.vae), (text, pipe.text_encoder)):
        a, b = mine.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- single file (original LDM names)

def ldm_unet_key(name, lpb, up_attn):
    """The LDM name of a diffusers UNet parameter: the inverse of convert_ldm_unet_checkpoint."""
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    res = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]

    def resnet(rest):
        for d, l in res:
            if rest.startswith(d + "."):
                return l + rest[len(d):]
        raise KeyError(name)

    stem, leaf = name.rsplit(".", 1)
    if stem in top:
        return f"{top[stem]}.{leaf}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        k = 1 + i * (lpb + 1) + j
        return f"input_blocks.{k}.0.{resnet(rest)}" if kind == "resnets" else f"input_blocks.{k}.1.{rest}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name)
    if m:
        return f"input_blocks.{1 + int(m[1]) * (lpb + 1) + lpb}.0.op.{m[2]}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        return f"middle_block.{2 * j}.{resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        k = i * (lpb + 1) + j
        return f"output_blocks.{k}.0.{resnet(rest)}" if kind == "resnets" else f"output_blocks.{k}.1.{rest}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name)
    if m:
        i = int(m[1])
        return f"output_blocks.{i * (lpb + 1) + lpb}.{2 if up_attn[i] else 1}.conv.{m[2]}"
    raise KeyError(name)


def ldm_vae_key(name, n_up):
    """The LDM name of a diffusers VAE parameter: the inverse of convert_ldm_vae_checkpoint."""
    name = name.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    name = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", name)
    name = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", name)
    name = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.",
                  lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.block.", name)
    name = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                  lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.upsample.", name)
    name = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", name)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", name)
    if m:
        return f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
    return name


def write_single_file(unet, vae, text):
    """tiny.safetensors: the three models under LDM names, as an SD1 checkpoint holds them."""
    up_attn = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    lpb = unet.config.layers_per_block
    sd = {}
    for k, p in unet.state_dict().items():
        sd["model.diffusion_model." + ldm_unet_key(k, lpb, up_attn)] = p
    for k, p in vae.state_dict().items():
        if p.ndim == 2:  # LDM's VAE attention projections are 1x1 convolutions
            p = p[:, :, None, None]
        sd["first_stage_model." + ldm_vae_key(k, len(vae.config.up_block_types))] = p
    for k, p in text.state_dict().items():
        sd["cond_stage_model.transformer.text_model." + k] = p
    # Keys real SD1 checkpoints carry besides the weights; loaders must pass over them.
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["alphas_cumprod"] = scheduler(False).alphas_cumprod
    sd = {k: v.detach().contiguous() for k, v in sd.items()}
    path = os.path.join(MODELS, "tiny.safetensors")
    save_file(sd, path)
    check_single_file(path, unet, vae, text)


def check_single_file(path, unet, vae, text):
    """diffusers' own converters map the single file back to exactly the folder's tensors."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)
    ckpt = load_file(path)
    for mine, conv in ((unet, convert_ldm_unet_checkpoint(ckpt, unet.config)),
                       (vae, convert_ldm_vae_checkpoint(ckpt, vae.config)),
                       (text, convert_ldm_clip_checkpoint(ckpt))):
        want = mine.state_dict()
        if mine is text:
            want = {"text_model." + k: p for k, p in want.items()}
        conv = {k: v for k, v in conv.items() if not k.endswith("position_ids")}
        assert conv.keys() == want.keys(), sorted(set(conv) ^ set(want))
        for k in want:
            assert torch.equal(conv[k], want[k]), k


def ldm_names_golden():
    """ldm_names.json: the single-file name of every parameter of SD-sized block structures
    (SD1.5's UNet with 4 blocks of 2 layers, SD's 4-block VAE) at tiny widths, from the inverse
    mapping above after diffusers' converters confirmed it on those very models."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 8, 8, 8), layers_per_block=2, norm_num_groups=4,
                                cross_attention_dim=8, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=2, norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    up_attn = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    names = {"unet": {k: "model.diffusion_model." + ldm_unet_key(k, 2, up_attn) for k in unet.state_dict()},
             "vae": {k: "first_stage_model." + ldm_vae_key(k, 4) for k in vae.state_dict()}}
    for kind, model, conv in (("unet", unet, convert_ldm_unet_checkpoint), ("vae", vae, convert_ldm_vae_checkpoint)):
        want = model.state_dict()
        ckpt = {names[kind][k]: (p[:, :, None, None] if kind == "vae" and p.ndim == 2 else p) for k, p in want.items()}
        back = conv(ckpt, model.config)
        assert back.keys() == want.keys(), sorted(set(back) ^ set(want))
        for k in want:
            assert torch.equal(back[k], want[k]), k
    path = os.path.join(ROOT, "golden", "models", "ldm_names.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"unet_layers_per_block": 2, "unet_up_attn": up_attn, "vae_up_blocks": 4, **names}, f,
                  indent=1, sort_keys=True)


# ---------------------------------------------------------------- goldens

def clip_golden(name, tok, text):
    ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = text(ids, output_hidden_states=True)
        skip1 = text.final_layer_norm(out.hidden_states[-2])
    save(f"models/{name}/clip.safetensors", {"ids": ids, "last_hidden_state": out.last_hidden_state,
                                              "clip_skip1": skip1},
         meta={"prompts": json.dumps(PROMPTS), "pad_token": tok.pad_token})


def vae_golden(name, g, vae):
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    z = randn(g, 2, 4, 16, 16)
    noise = randn(g, 2, 4, 16, 16)
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        # diffusers' DiagonalGaussianDistribution.sample is mean + std·noise with std = exp(logvar/2).
        sample = dist.mean + dist.std * noise
        image = vae.decode(z).sample
    save(f"models/{name}/vae.safetensors", {"x": x, "mean": dist.mean, "logvar": dist.logvar, "noise": noise,
                                             "sample": sample, "z": z, "image": image},
         meta={"scaling_factor": vae.config.scaling_factor})


def unet_golden(name, g, unet):
    x = randn(g, 2, 4, 16, 16).requires_grad_()
    t = torch.tensor([3.0, 917.0])
    ctx = randn(g, 2, 7, 32).requires_grad_()
    unet.zero_grad()
    y = unet(x, t, encoder_hidden_states=ctx).sample
    dy = randn(g, *y.shape)
    y.backward(dy)
    out = {"x": x, "t": t, "ctx": ctx, "y": y, "dy": dy, "dx": x.grad, "dctx": ctx.grad}
    for k, p in unet.named_parameters():
        out["g." + k] = p.grad
    save(f"models/{name}/unet.safetensors", out)


def pipeline_golden(name, g):
    """A 3-step PNDM run with classifier-free guidance from given latents: the whole chain."""
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(MODELS, name), torch_dtype=torch.float32,
                                                   safety_checker=None, feature_extractor=None)
    latents = randn(g, 1, 4, 16, 16)
    with torch.no_grad():
        image = pipe(PROMPTS[0], height=32, width=32, num_inference_steps=3, guidance_scale=7.5,
                     latents=latents, output_type="pt").images
    save(f"models/{name}/pipeline.safetensors", {"latents": latents, "image": image},
         meta={"prompt": PROMPTS[0], "steps": 3, "guidance_scale": 7.5, "scheduler": "PNDM"})


def generate():
    ldm_names_golden()
    for name, v, seed in (("tiny", False, 40), ("tiny-v", True, 41)):
        g, tok, unet, vae, text = build(name, v, seed)
        if not v:
            write_single_file(unet, vae, text)
        clip_golden(name, tok, text)
        vae_golden(name, g, vae)
        unet_golden(name, g, unet)
        if not v:
            pipeline_golden(name, g)
