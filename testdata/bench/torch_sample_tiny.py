"""The diffusers side of bench.sh's sample row: load the tiny test model
(testdata/models/tiny), sample "a red circle" with 20 DPM-Solver++(2M) steps
at its native 32x32, guidance 7.5, and save the PNG — what `bin/sample` does.
bench.sh times the whole process, imports included, as it times bin/sample.

Usage: python torch_sample_tiny.py THREADS OUT.png
"""
import os
import sys

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline


def main():
    torch.set_num_threads(int(sys.argv[1]))
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "tiny")
    pipe = StableDiffusionPipeline.from_pretrained(root, safety_checker=None, feature_extractor=None)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    image = pipe("a red circle", num_inference_steps=20, guidance_scale=7.5, height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images[0]
    image.save(sys.argv[2])


if __name__ == "__main__":
    main()
