"""Golden trajectories of the diffusers schedulers for internal/sampler.

A deterministic fake model stands in for the UNet:

    eps(x, t) = 0.3·x·cos(t/300) + 0.1·sin(x + t/100)

evaluated in float64 on the float32 model input and rounded to float32, so Go
(which evaluates the same expression in float64) gets the same bits up to libm's
last-ulp differences. Each trajectory follows StableDiffusionPipeline's loop:
latents = noise · init_noise_sigma; per step scale_model_input, model, step.
Where a scheduler draws noise from its generator, the exact tensor it drew is
recorded (the generator state is saved, the draw repeated, the state restored
before the step) so Go can replay it.

Files (testdata/golden/sampler/):
  <case>.safetensors   one trajectory: timesteps, sigmas, init noise, model
                       inputs, drawn noise, latents after every step, final.
                       Runs begun part-way (img2img) also hold begin, the
                       clean latents x0 and noised = add_noise(x0, init
                       noise); their per-step tensors start at step begin.
  schedule.safetensors betas/alphas_cumprod of several configs, add_noise,
                       get_velocity and compute_snr at a few t, and CFG.
  timesteps.safetensors set_timesteps of every scheduler × spacing for many
                       step counts.
"""
import json
import math
import zlib

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.training_utils import compute_snr

import common

CLASSES = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "pndm": PNDMScheduler,
}

# SD1.5's scheduler/scheduler_config.json (PNDMScheduler), with the keys that
# from_config would otherwise fill from each class's own defaults made explicit.
SD15 = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "clip_sample": False,
    "trained_betas": None,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}

STEPS = 10
SHAPE = (1, 4, 8, 8)


def fake_model(x, t):
    """(1, 4, 8, 8) float32 → (1, 4, 8, 8) float32, computed in float64."""
    t = float(t)
    x = x.double()
    return (0.3 * x * math.cos(t / 300) + 0.1 * torch.sin(x + t / 100)).float()


def cases():
    """name → (sampler, config overrides, step kwargs)."""
    out = {}
    for name in CLASSES:
        out[f"{name}_sd15"] = (name, {}, {})
    out["dpmpp_2m_karras_sd15"] = ("dpmpp_2m", {"use_karras_sigmas": True}, {})
    out["euler_karras_sd15"] = ("euler", {"use_karras_sigmas": True}, {})
    for name in CLASSES:
        out[f"{name}_trailing_v"] = (name, {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, {})
        out[f"{name}_linspace"] = (name, {"timestep_spacing": "linspace"}, {})
    for name in ("ddim", "euler", "dpmpp_2m"):
        out[f"{name}_trailing_v_zsnr"] = (
            name,
            {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
            {},
        )
    out["ddim_eta1"] = ("ddim", {}, {"eta": 1.0})
    out["ddim_clip"] = ("ddim", {"clip_sample": True, "clip_sample_range": 1.0}, {})
    out["ddpm_clip_large"] = ("ddpm", {"clip_sample": True, "clip_sample_range": 1.5, "variance_type": "fixed_large"}, {})
    out["ddpm_linear_v"] = ("ddpm", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                                     "prediction_type": "v_prediction"}, {})
    out["dpmpp_2m_cosine"] = ("dpmpp_2m", {"beta_schedule": "squaredcos_cap_v2"}, {})
    out["euler_a_linear"] = ("euler_a", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}, {})
    # final_sigmas_type "sigma_min" keeps the last step's σ at σ_min: its last
    # step is first order under 15 steps (lower_order_final), second order
    # from 15 on or without lower_order_final, first order again with
    # euler_at_final.
    out["dpmpp_2m_sigma_min"] = ("dpmpp_2m", {"final_sigmas_type": "sigma_min"}, {})
    out["dpmpp_2m_sigma_min_20"] = ("dpmpp_2m", {"final_sigmas_type": "sigma_min"}, {"steps": 20})
    out["dpmpp_2m_sigma_min_no_lower"] = ("dpmpp_2m", {"final_sigmas_type": "sigma_min", "lower_order_final": False}, {})
    out["dpmpp_2m_euler_at_final_20"] = (
        "dpmpp_2m", {"final_sigmas_type": "sigma_min", "euler_at_final": True}, {"steps": 20})
    out["dpmpp_2m_karras_sigma_min_trailing_v"] = (
        "dpmpp_2m",
        {"final_sigmas_type": "sigma_min", "use_karras_sigmas": True, "timestep_spacing": "trailing",
         "prediction_type": "v_prediction"},
        {},
    )
    # PNDM with its Runge-Kutta warm-up (skip_prk_steps false, the class
    # default); linspace spacing has gaps other than T//steps, where the
    # half-step timesteps are t' + δ//2 rather than t − δ//2.
    out["pndm_prk"] = ("pndm", {"skip_prk_steps": False}, {})
    out["pndm_prk_linspace_v"] = (
        "pndm", {"skip_prk_steps": False, "timestep_spacing": "linspace", "prediction_type": "v_prediction"}, {})
    # img2img: a run begun part-way (set_begin_index) from add_noise of
    # clean latents, as StableDiffusionImg2ImgPipeline at strength 0.6.
    for name in CLASSES:
        out[f"{name}_begin4"] = (name, {}, {"begin": 4})
    out["dpmpp_2m_karras_begin4"] = ("dpmpp_2m", {"use_karras_sigmas": True}, {"begin": 4})
    out["euler_trailing_v_zsnr_begin3"] = (
        "euler", {"timestep_spacing": "trailing", "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
        {"begin": 3})
    return out


def run_case(sampler, overrides, kwargs, seed):
    cfg = dict(SD15, **overrides)
    sched = CLASSES[sampler].from_config(cfg)
    num_steps = kwargs.get("steps", STEPS)
    begin = kwargs.get("begin", 0)
    sched.set_timesteps(num_steps)
    g = common.seeded(seed)
    init = torch.randn(*SHAPE, generator=g, dtype=torch.float32)
    extra = {}
    if begin:
        # StableDiffusionImg2ImgPipeline: set_begin_index where the scheduler
        # has it, then add_noise at the first timestep of the shortened run.
        x0 = torch.randn(*SHAPE, generator=g, dtype=torch.float32)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
        latents = sched.add_noise(x0, init, sched.timesteps[begin:begin + 1])
        extra = {"begin": torch.tensor([begin], dtype=torch.int64), "x0": x0, "noised": latents}
    else:
        latents = init * sched.init_noise_sigma
    model_in, noise, drew, steps = [], [], [], []
    eta = kwargs.get("eta", 0.0)
    for t in sched.timesteps[begin:]:
        inp = sched.scale_model_input(latents, t)
        eps = fake_model(inp, t)
        model_in.append(inp)
        before = g.get_state()
        drawn = torch.randn(*SHAPE, generator=g, dtype=torch.float32)
        after = g.get_state()
        g.set_state(before)
        if sampler == "ddim":
            # DDIM takes the noise as an argument; the pipeline draws it only when eta > 0.
            if eta > 0:
                latents = sched.step(eps, t, latents, eta=eta, variance_noise=drawn).prev_sample
                g.set_state(after)
            else:
                latents = sched.step(eps, t, latents, eta=eta).prev_sample
        elif sampler in ("ddpm", "euler_a"):
            latents = sched.step(eps, t, latents, generator=g).prev_sample
        else:
            latents = sched.step(eps, t, latents).prev_sample
        took = g.get_state()
        if torch.equal(took, after):
            drew.append(1)
            noise.append(drawn)
        elif torch.equal(took, before):
            drew.append(0)
            noise.append(torch.zeros(SHAPE))
        else:
            raise RuntimeError(f"{sampler}: step drew something other than one {SHAPE} tensor")
        steps.append(latents)
    sigmas = getattr(sched, "sigmas", None)
    out = {
        "timesteps": sched.timesteps.to(torch.float32),
        "init_noise": init,
        "init_noise_sigma": torch.tensor([float(sched.init_noise_sigma)], dtype=torch.float32),
        "drew": torch.tensor(drew, dtype=torch.int64),
        "latents": torch.stack(steps),
        "final": latents,
        **extra,
    }
    # Kept small: the model inputs only where scale_model_input changes them,
    # the noise only where the scheduler drew some.
    if sampler in ("euler", "euler_a"):
        out["model_in"] = torch.stack(model_in)
    if any(drew):
        out["noise"] = torch.stack(noise)
    if sigmas is not None and sampler in ("euler", "euler_a", "dpmpp_2m"):
        out["sigmas"] = sigmas.to(torch.float32)
    meta = {"sampler": sampler, "config": json.dumps(cfg), "steps": num_steps, "eta": eta}
    return out, meta


def schedule_file():
    configs = {
        "sd15": SD15,
        "linear": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
        "cosine": {"beta_schedule": "squaredcos_cap_v2"},
        "sd15_zsnr": dict(SD15, rescale_betas_zero_snr=True),
    }
    g = common.seeded(7)
    x0 = torch.randn(*SHAPE, generator=g, dtype=torch.float32)
    noise = torch.randn(*SHAPE, generator=g, dtype=torch.float32)
    ts = torch.tensor([0, 1, 250, 500, 999], dtype=torch.int64)
    out = {"x0": x0, "noise": noise, "t": ts}
    for name, cfg in configs.items():
        s = DDPMScheduler.from_config(cfg)
        out[f"{name}/betas"] = s.betas
        out[f"{name}/alphas_cumprod"] = s.alphas_cumprod
        batch_x0 = x0.expand(len(ts), *SHAPE[1:])
        batch_noise = noise.expand(len(ts), *SHAPE[1:])
        out[f"{name}/add_noise"] = s.add_noise(batch_x0, batch_noise, ts)
        out[f"{name}/velocity"] = s.get_velocity(batch_x0, batch_noise, ts)
        out[f"{name}/snr"] = compute_snr(s, ts)
    uncond = torch.randn(*SHAPE, generator=g, dtype=torch.float32)
    cond = torch.randn(*SHAPE, generator=g, dtype=torch.float32)
    out["cfg/uncond"] = uncond
    out["cfg/cond"] = cond
    out["cfg/guided"] = uncond + 7.5 * (cond - uncond)
    meta = {"configs": json.dumps(configs), "guidance_scale": 7.5}
    return out, meta


# Step counts of the timesteps table: every count up to 50, and a few larger
# ones (61 is one where numpy's arange gives trailing spacing an extra step).
COUNTS = list(range(1, 51)) + [61, 64, 75, 100, 150, 250]


def timesteps_file():
    out = {}
    variants = []
    for name in CLASSES:
        for spacing in ("leading", "linspace", "trailing"):
            variants.append((f"{name}/{spacing}", name, {"timestep_spacing": spacing}))
    for spacing in ("leading", "linspace", "trailing"):
        variants.append((f"euler_karras/{spacing}", "euler", {"timestep_spacing": spacing, "use_karras_sigmas": True}))
    variants.append(("dpmpp_2m_karras/leading", "dpmpp_2m", {"use_karras_sigmas": True}))
    variants.append(("dpmpp_2m_karras_cosine/leading", "dpmpp_2m",
                     {"use_karras_sigmas": True, "beta_schedule": "squaredcos_cap_v2"}))
    for key, name, overrides in variants:
        sched = CLASSES[name].from_config(dict(SD15, **overrides))
        all_ts, lens = [], []
        for n in COUNTS:
            sched.set_timesteps(n)
            ts = sched.timesteps.to(torch.float64)
            all_ts.append(ts)
            lens.append(len(ts))
        out[f"{key}/timesteps"] = torch.cat(all_ts).to(torch.float32)
        out[f"{key}/lengths"] = torch.tensor(lens, dtype=torch.int64)
    out["counts"] = torch.tensor(COUNTS, dtype=torch.int64)
    return out, {"config": json.dumps(SD15)}


def generate():
    for case, (sampler, overrides, kwargs) in sorted(cases().items()):
        # The seed comes from the case's name, so adding a case changes no other file.
        tensors, meta = run_case(sampler, overrides, kwargs, seed=zlib.crc32(case.encode()))
        common.save(f"sampler/{case}.safetensors", tensors, meta=meta)
    tensors, meta = schedule_file()
    common.save("sampler/schedule.safetensors", tensors, meta=meta)
    tensors, meta = timesteps_file()
    common.save("sampler/timesteps.safetensors", tensors, meta=meta)
