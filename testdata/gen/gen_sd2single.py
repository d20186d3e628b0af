"""tiny-v.safetensors: the tiny SD2-like model (testdata/models/tiny-v) as an
original SD2 single file holds it: UNet and VAE under LDM names, and the text
encoder in OpenCLIP's layout (cond_stage_model.model.*: q/k/v fused into
in_proj, ln_1/ln_2, c_fc/c_proj, positional_embedding, ln_final,
text_projection) with one resblock more than the model uses, as SD2 files
carry 24 resblocks for a 23-layer encoder. Checked here against diffusers' own
convert_open_clip_checkpoint and LDM converters."""
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                 convert_open_clip_checkpoint)
from safetensors.torch import save_file
from transformers import CLIPTextModel

from common import ROOT, randn, seeded
from gen_models import ldm_unet_key, ldm_vae_key

MODELS = os.path.join(ROOT, "models")
OC = "cond_stage_model.model."


def open_clip_keys(text, extra_layer, g):
    sd = {k.removeprefix("text_model."): v for k, v in text.state_dict().items()}
    out = {
        OC + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        OC + "positional_embedding": sd["embeddings.position_embedding.weight"],
        OC + "ln_final.weight": sd["final_layer_norm.weight"],
        OC + "ln_final.bias": sd["final_layer_norm.bias"],
    }
    n = text.config.num_hidden_layers
    d = text.config.hidden_size
    for i in range(n + extra_layer):
        if i < n:
            p = lambda name: sd[f"encoder.layers.{i}.{name}"]
        else:  # a layer the model does not use, filled with noise
            p = lambda name: randn(g, *sd[f"encoder.layers.0.{name}"].shape)
        r = f"{OC}transformer.resblocks.{i}."
        out[r + "attn.in_proj_weight"] = torch.cat([p("self_attn.q_proj.weight"), p("self_attn.k_proj.weight"),
                                                    p("self_attn.v_proj.weight")])
        out[r + "attn.in_proj_bias"] = torch.cat([p("self_attn.q_proj.bias"), p("self_attn.k_proj.bias"),
                                                  p("self_attn.v_proj.bias")])
        for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                             ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            out[r + theirs + ".weight"] = p(ours + ".weight")
            out[r + theirs + ".bias"] = p(ours + ".bias")
    out[OC + "text_projection"] = randn(g, d, d)
    out[OC + "logit_scale"] = torch.tensor(4.6052)
    return out


def generate():
    g = seeded(80)
    root = os.path.join(MODELS, "tiny-v")
    kw = dict(variant="fp16", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **kw)
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **kw)
    text = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", **kw)
    up_attn = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    sd = {}
    for k, p in unet.state_dict().items():
        sd["model.diffusion_model." + ldm_unet_key(k, unet.config.layers_per_block, up_attn)] = p
    for k, p in vae.state_dict().items():
        if p.ndim == 2:
            p = p[:, :, None, None]
        sd["first_stage_model." + ldm_vae_key(k, len(vae.config.up_block_types))] = p
    sd.update(open_clip_keys(text, 1, g))
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}  # SD2 files ship in fp16
    path = os.path.join(MODELS, "tiny-v.safetensors")
    save_file(sd, path, metadata={"format": "pt"})

    # diffusers' own converters map it back to the folder's tensors (the extra layer aside).
    ck = {k: v.float() for k, v in sd.items()}
    n = text.config.num_hidden_layers
    conv = convert_open_clip_checkpoint(text, ck)
    want = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in text.state_dict().items()}
    for k, v in want.items():
        if k.endswith("position_ids"):
            continue
        assert torch.equal(conv[k], v.half().float()), k
    extra = set(conv) - set(want)
    assert all(k.startswith(f"text_model.encoder.layers.{n}.") or k == "text_projection.weight" for k in extra), extra
    u = convert_ldm_unet_checkpoint(ck, unet.config)
    for k, v in unet.state_dict().items():
        assert torch.equal(u[k], v.half().float()), k
    vv = convert_ldm_vae_checkpoint(ck, vae.config)
    for k, v in vae.state_dict().items():
        assert torch.equal(vv[k].reshape(v.shape), v.half().float()), k
