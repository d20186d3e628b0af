"""Whole-pipeline sampler parity: StableDiffusionPipeline on the tiny models
(testdata/models) with each deterministic sampler, 10 steps, guidance 7.5 and
a negative prompt, from fixed initial latents; the decoded image in [0, 1].
(The stochastic samplers, euler_a and ddpm, are checked step by step with
diffusers' own noise replayed in testdata/golden/sampler.)"""
import os

import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler,
                       StableDiffusionPipeline)

from common import ROOT, randn, save, seeded

SAMPLERS = [
    ("ddim", DDIMScheduler, {}),
    ("euler", EulerDiscreteScheduler, {}),
    ("dpmpp_2m", DPMSolverMultistepScheduler, {}),
    ("dpmpp_2m_karras", DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    ("pndm", PNDMScheduler, {}),
]
PROMPT, NEGATIVE = "a photo of a cat", "blurry"


def generate():
    for model, variant, seed in (("tiny", None, 70), ("tiny-v", "fp16", 71)):
        pipe = StableDiffusionPipeline.from_pretrained(os.path.join(ROOT, "models", model), variant=variant,
                                                       torch_dtype=torch.float32, safety_checker=None,
                                                       feature_extractor=None)
        base = pipe.scheduler.config
        latents = randn(seeded(seed), 1, 4, 16, 16)
        out = {"latents": latents}
        for name, cls, extra in SAMPLERS:
            pipe.scheduler = cls.from_config(base, **extra)
            with torch.no_grad():
                out[name] = pipe(PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_inference_steps=10,
                                 guidance_scale=7.5, latents=latents.clone(), output_type="pt").images
        save(f"pipeline/{model}.safetensors", out,
             meta={"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": 10, "guidance_scale": 7.5})
