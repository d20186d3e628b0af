"""SDXL training parity: the tiny SDXL UNet trained a few optimizer steps the way
diffusers' examples/text_to_image/train_text_to_image_sdxl.py (and its LoRA
sibling) does — DDPM add_noise, ε target, min-SNR-γ weighting, add_time_ids
from each image's original size and crop and the target size, the pooled text
as added_cond_kwargs text_embeds, torch AdamW, clip_grad_norm_, EMAModel (full
fine-tune) or PEFT LoRA — with every micro-batch's latents, text states, pooled
text, time ids, noise and timesteps fixed here and stored, so Go replays the
same inputs (internal/train/sdxl_parity_test.go).
"""
import os

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel, compute_snr

from common import ROOT, randn, save, seeded

MODEL = os.path.join(ROOT, "models", "tiny-sdxl")
RESOLUTION = 32  # sample_size 16 latents × the tiny VAE's factor 2


def compute_time_ids(original_size, crops_coords_top_left):
    # train_text_to_image_sdxl.py: original size + crop top-left + (resolution, resolution).
    return torch.tensor([list(original_size + crops_coords_top_left + (RESOLUTION, RESOLUTION))], dtype=torch.float32)


def run(name, lora, snr_gamma, accum, micro, steps, lr, wd, clip, ema_decay, seed):
    g = seeded(seed)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(MODEL, "unet"), torch_dtype=torch.float32)
    sched = DDPMScheduler.from_pretrained(os.path.join(MODEL, "scheduler"))
    cfg = unet.config
    pooled_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    init = {}
    if lora:
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        params = [p for p in unet.parameters() if p.requires_grad]
        for k, v in get_peft_model_state_dict(unet).items():
            init["init." + k] = v.detach().clone()
    else:
        params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=False)
    ema = EMAModel(params, decay=ema_decay, use_ema_warmup=False, foreach=False) if ema_decay else None
    out = dict(init)
    losses, norms = [], []
    for step in range(steps):
        for a in range(accum):
            x0 = randn(g, micro, 4, 16, 16)
            ctx = randn(g, micro, 7, cfg.cross_attention_dim)
            pooled = randn(g, micro, pooled_dim)
            sizes = torch.randint(256, 1024, (micro, 2), generator=g)
            crops = torch.randint(0, 64, (micro, 2), generator=g)
            time_ids = torch.cat([compute_time_ids(tuple(s.tolist()), tuple(c.tolist())) for s, c in zip(sizes, crops)])
            noise = randn(g, micro, 4, 16, 16)
            t = torch.randint(0, sched.config.num_train_timesteps, (micro,), generator=g)
            for k, v in (("x0", x0), ("ctx", ctx), ("pooled", pooled), ("time_ids", time_ids), ("noise", noise), ("t", t)):
                out[f"step{step}.micro{a}.{k}"] = v
            xt = sched.add_noise(x0, noise, t)
            y = unet(xt, t, ctx, added_cond_kwargs={"time_ids": time_ids, "text_embeds": pooled}).sample
            if snr_gamma:
                snr = compute_snr(sched, t)
                w = torch.stack([snr, snr_gamma * torch.ones_like(t)], dim=1).min(dim=1)[0] / snr
                loss = F.mse_loss(y.float(), noise.float(), reduction="none")
                loss = (loss.mean(dim=list(range(1, loss.ndim))) * w).mean()
            else:
                loss = F.mse_loss(y.float(), noise.float(), reduction="mean")
            losses.append(loss.item())
            (loss / accum).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(params, clip).item())
        opt.step()
        opt.zero_grad()
        if ema:
            ema.step(params)
    if lora:
        from peft.utils import get_peft_model_state_dict
        for k, v in get_peft_model_state_dict(unet).items():
            out["final." + k] = v.detach().clone()
    else:
        for k, v in unet.state_dict().items():
            out["final." + k] = v.detach().clone()
        for (k, _), s in zip(unet.named_parameters(), ema.shadow_params):
            out["ema." + k] = s
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    save(f"train/{name}.safetensors", out, meta={
        "model": "tiny-sdxl", "lora": int(lora), "prediction_type": "epsilon", "snr_gamma": snr_gamma, "accum": accum,
        "micro": micro, "steps": steps, "lr": lr, "weight_decay": wd, "clip": clip, "ema_decay": ema_decay})


def generate():
    torch.manual_seed(0)
    run("sdxl_full", False, 5.0, 2, 2, 5, 1e-3, 1e-2, 1.0, 0.9, 70)
    run("sdxl_lora", True, 0.0, 1, 2, 5, 1e-2, 1e-2, 1.0, 0.0, 71)
