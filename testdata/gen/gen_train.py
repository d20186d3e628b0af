"""Training parity: the tiny UNet trained 10 optimizer steps the way diffusers'
train_text_to_image(.py / _lora.py) examples do — DDPM add_noise, ε or v
target, min-SNR-γ weighting, torch AdamW, clip_grad_norm_, EMAModel (full
fine-tune) or PEFT LoRA — with the latents, text states, noise and timesteps
of every micro-batch fixed here and stored, so Go replays the same inputs.
"""
import os

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel, compute_snr

from common import ROOT, randn, save, seeded

MODELS = os.path.join(ROOT, "models")


def run(name, model, lora, pred, snr_gamma, accum, micro, steps, lr, wd, clip, ema_decay, seed):
    g = seeded(seed)
    variant = "fp16" if model == "tiny-v" else None
    unet = UNet2DConditionModel.from_pretrained(os.path.join(MODELS, model, "unet"), torch_dtype=torch.float32,
                                                variant=variant)
    sched = DDPMScheduler.from_pretrained(os.path.join(MODELS, model, "scheduler"))
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
            ctx = randn(g, micro, 7, 32)
            noise = randn(g, micro, 4, 16, 16)
            t = torch.randint(0, sched.config.num_train_timesteps, (micro,), generator=g)
            for k, v in (("x0", x0), ("ctx", ctx), ("noise", noise), ("t", t)):
                out[f"step{step}.micro{a}.{k}"] = v
            xt = sched.add_noise(x0, noise, t)
            target = noise if pred == "epsilon" else sched.get_velocity(x0, noise, t)
            y = unet(xt, t, ctx).sample
            if snr_gamma:
                snr = compute_snr(sched, t)
                w = torch.stack([snr, snr_gamma * torch.ones_like(t)], dim=1).min(dim=1)[0]
                w = w / snr if pred == "epsilon" else w / (snr + 1)
                loss = F.mse_loss(y.float(), target.float(), reduction="none")
                loss = (loss.mean(dim=list(range(1, loss.ndim))) * w).mean()
            else:
                loss = F.mse_loss(y.float(), target.float(), reduction="mean")
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
        "model": model, "lora": int(lora), "prediction_type": pred, "snr_gamma": snr_gamma, "accum": accum,
        "micro": micro, "steps": steps, "lr": lr, "weight_decay": wd, "clip": clip, "ema_decay": ema_decay})


def generate():
    torch.manual_seed(0)
    run("full", "tiny", False, "epsilon", 5.0, 2, 1, 10, 1e-3, 1e-2, 1.0, 0.9, 60)
    run("lora", "tiny-v", True, "v_prediction", 0.0, 1, 2, 10, 1e-2, 1e-2, 1.0, 0.0, 61)
