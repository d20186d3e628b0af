"""A tiny seeded SDXL model and its goldens.

Writes, under testdata/models/:
  tiny-sdxl/   a StableDiffusionXLPipeline folder: a UNet with SDXL's structure at tiny widths
               (DownBlock2D then cross-attention blocks, transformer depth and head count per
               block, linear projections, "text_time" added conditioning), CLIPTextModel
               (quick_gelu, hidden 32, 3 layers) and CLIPTextModelWithProjection (gelu, hidden 64,
               2 layers, projection 48) with their tokenizers (the second pads with "!"), a VAE with
               SDXL's scaling factor and force_upcast, EulerDiscrete as SDXL base configures it;
               every weight is a float16 value, stored as float32
  tiny-sdxl.safetensors   the same weights in float16 under the original SGM names
               (model.diffusion_model.*, conditioner.embedders.0.transformer.*,
               conditioner.embedders.1.model.* with OpenCLIP names, first_stage_model.*), checked
               here against diffusers' own converters
and under testdata/golden/models/tiny-sdxl/: unet (forward and every gradient, with added
conditioning), clip (both encoders' penultimate states, clip_skip 1, pooled), encode (diffusers'
encode_prompt with and without a negative prompt), time_ids (_get_add_time_ids), pipeline
(StableDiffusionXLPipeline runs from given latents).
"""
import json
import os
import shutil

import torch
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from common import randn, save, seeded
from gen_models import EOT, MODELS, ldm_unet_key, ldm_vae_key, perturb_constants, write_tokenizer

NAME = "tiny-sdxl"
PROMPTS = ["a photo of a cat", "A RED circle on a dark background, 2 shapes!"]
POOLED = 48  # text_encoder_2's projection_dim
TIME_DIM = 8  # addition_time_embed_dim
N_MERGES = 400  # a smaller vocabulary than tiny/'s keeps the two token embeddings small

UNET_CONFIG = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1,
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                   transformer_layers_per_block=[1, 1, 2], attention_head_dim=[1, 2, 4], cross_attention_dim=32 + 64,
                   use_linear_projection=True, norm_num_groups=4, addition_embed_type="text_time",
                   addition_time_embed_dim=TIME_DIM, projection_class_embeddings_input_dim=POOLED + 6 * TIME_DIM)

VAE_CONFIG = dict(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                  norm_num_groups=4, sample_size=32, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, scaling_factor=0.13025, force_upcast=True)


def clip_configs(vocab_size, pad1, pad2):
    """SDXL's encoders at tiny widths; eos_token_id 2 as the configs SDXL was saved with (transformers
    then pools at the first largest id, the end token)."""
    common = dict(vocab_size=vocab_size, max_position_embeddings=77, layer_norm_eps=1e-5,
                  bos_token_id=vocab_size - 2, eos_token_id=2)
    one = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         projection_dim=32, hidden_act="quick_gelu", pad_token_id=pad1, **common)
    two = CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         projection_dim=POOLED, hidden_act="gelu", pad_token_id=pad2, **common)
    return one, two


def scheduler():
    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
                                  prediction_type="epsilon", interpolation_type="linear", use_karras_sigmas=False)


def build():
    g = seeded(42)
    out = os.path.join(MODELS, NAME)
    shutil.rmtree(out, ignore_errors=True)
    vocab_size = write_tokenizer(os.path.join(out, "tokenizer"), EOT, N_MERGES)
    write_tokenizer(os.path.join(out, "tokenizer_2"), "!", N_MERGES)
    tok = CLIPTokenizer.from_pretrained(os.path.join(out, "tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(os.path.join(out, "tokenizer_2"))
    torch.manual_seed(42)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    c1, c2 = clip_configs(vocab_size, tok.pad_token_id, tok2.pad_token_id)
    text = CLIPTextModel(c1).eval()
    text2 = CLIPTextModelWithProjection(c2).eval()
    for m in (unet, vae, text, text2):
        perturb_constants(m, g, half=True)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text2, tokenizer=tok,
                                     tokenizer_2=tok2, unet=unet, scheduler=scheduler(),
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(out, safe_serialization=True)
    # save_pretrained rewrites the tokenizer files in its own layout; keep the plain CLIP ones.
    for sub, pad in (("tokenizer", EOT), ("tokenizer_2", "!")):
        shutil.rmtree(os.path.join(out, sub))
        write_tokenizer(os.path.join(out, sub), pad, N_MERGES)
    check_reload(out, pipe)
    return g, pipe


def check_reload(out, pipe):
    """The folder loads with diffusers and holds exactly the weights the goldens use."""
    back = StableDiffusionXLPipeline.from_pretrained(out, torch_dtype=torch.float32)
    assert back.config.force_zeros_for_empty_prompt
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(pipe, name).state_dict(), getattr(back, name).state_dict()
        assert a.keys() == b.keys(), name
        for k in a:
            assert torch.equal(a[k], b[k]), k
    for name in ("tokenizer", "tokenizer_2"):
        a, b = getattr(pipe, name), getattr(back, name)
        assert a(PROMPTS).input_ids == b(PROMPTS).input_ids and a.pad_token_id == b.pad_token_id, name


# ---------------------------------------------------------------- single file (SGM names)

OPENCLIP_LAYER = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                  ("self_attn.out_proj", "attn.out_proj")]


def openclip_keys(text2):
    """text_encoder_2 under OpenCLIP names: the inverse of diffusers' convert_open_clip_checkpoint
    (q, k, v fused into in_proj, text_projection transposed)."""
    sd = text2.state_dict()
    sd = {k if k.startswith("text_projection") else k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {"positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           "ln_final.weight": sd.pop("final_layer_norm.weight"), "ln_final.bias": sd.pop("final_layer_norm.bias"),
           "text_projection": sd.pop("text_projection.weight").T.contiguous()}
    for i in range(text2.config.num_hidden_layers):
        pre = f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
                [sd.pop(f"{pre}self_attn.{p}_proj.{kind}") for p in "qkv"])
            for d, o in OPENCLIP_LAYER:
                out[f"transformer.resblocks.{i}.{o}.{kind}"] = sd.pop(f"{pre}{d}.{kind}")
    assert not sd, sorted(sd)
    return out


def write_single_file(pipe):
    unet, vae = pipe.unet, pipe.vae
    up_attn = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    lpb = unet.config.layers_per_block
    label = {"add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    sd = {}
    for k, p in unet.state_dict().items():
        stem, leaf = k.rsplit(".", 1)
        key = f"{label[stem]}.{leaf}" if stem in label else ldm_unet_key(k, lpb, up_attn)
        sd["model.diffusion_model." + key] = p
    for k, p in vae.state_dict().items():
        if p.ndim == 2:  # LDM's VAE attention projections are 1x1 convolutions
            p = p[:, :, None, None]
        sd["first_stage_model." + ldm_vae_key(k, len(vae.config.up_block_types))] = p
    for k, p in pipe.text_encoder.state_dict().items():
        sd["conditioner.embedders.0.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k] = p
    for k, p in openclip_keys(pipe.text_encoder_2).items():
        sd["conditioner.embedders.1.model." + k] = p
    # Released SDXL single files hold float16; the weights are float16 values already (perturb_constants).
    sd = {k: v.detach().half().contiguous() for k, v in sd.items()}
    path = os.path.join(MODELS, NAME + ".safetensors")
    save_file(sd, path)
    check_single_file(path, pipe)


def check_single_file(path, pipe):
    """diffusers' own converters map the single file back to exactly the folder's tensors."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint, convert_open_clip_checkpoint)
    ckpt = {k: v.float() for k, v in load_file(path).items()}
    got = {"unet": convert_ldm_unet_checkpoint(ckpt, pipe.unet.config),
           "vae": convert_ldm_vae_checkpoint(ckpt, pipe.vae.config),
           "text_encoder": convert_ldm_clip_checkpoint(ckpt, "conditioner.embedders.0.transformer."),
           "text_encoder_2": convert_open_clip_checkpoint(pipe.text_encoder_2, ckpt, "conditioner.embedders.1.model.")}
    for name, conv in got.items():
        want = getattr(pipe, name).state_dict()
        if name.startswith("text"):
            want = {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: p
                    for k, p in want.items()}
        assert conv.keys() == want.keys(), (name, sorted(set(conv) ^ set(want)))
        for k in want:
            assert torch.equal(conv[k], want[k]), k


# ---------------------------------------------------------------- goldens

def unet_golden(g, unet):
    x = randn(g, 2, 4, 16, 16).requires_grad_()
    t = torch.tensor([3.0, 917.0])
    ctx = randn(g, 2, 7, 96).requires_grad_()
    text_embeds = randn(g, 2, POOLED).requires_grad_()
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 32.0, 1024.0, 1024.0], [512.0, 512.0, 16.0, 0.0, 256.0, 384.0]])
    unet.zero_grad()
    y = unet(x, t, encoder_hidden_states=ctx,
             added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
    dy = randn(g, *y.shape)
    y.backward(dy)
    out = {"x": x, "t": t, "ctx": ctx, "text_embeds": text_embeds, "time_ids": time_ids, "y": y, "dy": dy,
           "dx": x.grad, "dctx": ctx.grad, "dtext_embeds": text_embeds.grad}
    for k, p in unet.named_parameters():
        out["g." + k] = p.grad
    save(f"models/{NAME}/unet.safetensors", out)


def clip_golden(pipe):
    out = {}
    with torch.no_grad():
        for i, (tok, enc) in enumerate(((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))):
            ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            o = enc(ids, output_hidden_states=True)
            out[f"ids{i + 1}"] = ids
            out[f"hidden{i + 1}"] = o.hidden_states[-2]
            out[f"hidden{i + 1}_skip1"] = o.hidden_states[-3]
            if i == 1:
                out["pooled2"] = o.text_embeds
    save(f"models/{NAME}/clip.safetensors", out, meta={"prompts": json.dumps(PROMPTS)})


def encode_golden(pipe):
    """encode_prompt with classifier-free guidance: no negative prompt (force_zeros_for_empty_prompt gives
    zeros), an explicit empty one (encoded), a written one, and clip_skip 1."""
    out = {}
    negatives = {"none": None, "empty": "", "text": "blurry, low quality"}
    with torch.no_grad():
        for key, neg in negatives.items():
            e, ne, p, np_ = pipe.encode_prompt(PROMPTS, device="cpu", num_images_per_prompt=1,
                                               do_classifier_free_guidance=True,
                                               negative_prompt=None if neg is None else [neg] * len(PROMPTS))
            out[f"{key}.prompt_embeds"], out[f"{key}.pooled"] = e, p
            out[f"{key}.negative_embeds"], out[f"{key}.negative_pooled"] = ne, np_
        e, _, p, _ = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False, clip_skip=1)
        out["skip1.prompt_embeds"], out["skip1.pooled"] = e, p
    assert not out["none.negative_embeds"].any() and not out["none.negative_pooled"].any()
    save(f"models/{NAME}/encode.safetensors", out,
         meta={"prompts": json.dumps(PROMPTS), "negatives": json.dumps(negatives)})


TIME_CASES = [((1024, 1024), (0, 0), (1024, 1024)), ((768, 1360), (32, 8), (1024, 1024)), ((64, 48), (0, 0), (32, 48))]


def time_ids_golden(pipe):
    out = {}
    for i, (orig, crop, target) in enumerate(TIME_CASES):
        out[f"case{i}"] = pipe._get_add_time_ids(orig, crop, target, torch.float32, text_encoder_projection_dim=POOLED)
    save(f"models/{NAME}/time_ids.safetensors", out, meta={"cases": json.dumps(TIME_CASES)})


PIPELINE_RUNS = {
    "plain": dict(prompt=PROMPTS[0], height=32, width=48, num_inference_steps=3, guidance_scale=5.0),
    "conditioned": dict(prompt=PROMPTS[1], negative_prompt="blurry", height=32, width=48, num_inference_steps=2,
                        guidance_scale=7.0, original_size=(64, 96), crops_coords_top_left=(4, 8)),
}


def pipeline_golden(g, pipe):
    """StableDiffusionXLPipeline runs (EulerDiscrete, guidance, time ids) from given latents, on a
    non-square size so that (h, w) order shows: without a negative prompt (zeros) and with one plus
    micro-conditioning."""
    out = {}
    for key, kw in PIPELINE_RUNS.items():
        latents = randn(g, 1, 4, kw["height"] // 2, kw["width"] // 2)
        with torch.no_grad():
            image = pipe(**kw, latents=latents, output_type="pt").images
        out[f"{key}.latents"], out[f"{key}.image"] = latents, image
    save(f"models/{NAME}/pipeline.safetensors", out, meta={"runs": json.dumps(PIPELINE_RUNS)})


def generate():
    g, pipe = build()
    write_single_file(pipe)
    unet_golden(g, pipe.unet)
    clip_golden(pipe)
    encode_golden(pipe)
    time_ids_golden(pipe)
    pipeline_golden(g, pipe)
