"""The PyTorch side of `make gpu-check`'s sampling row: one 512x512 image
from SD1.5-shaped models with random weights (no files), 30 DPM++ (2M)
steps with classifier-free guidance, bf16, SDPA: the UNet loop of
StableDiffusionPipeline on precomputed (random) prompt embeddings, then the
VAE decode. Text encoding is left out, as on the Go side.

Prints one line: card, ms for the UNet loop, ms for the decode, peak GiB.
Usage: python torch_sample.py [--steps 30] [--repeat 2]
"""

import argparse
import time

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel

from torch_unet_train import SD15_UNET

SD15_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(0)
    dev, dt = torch.device("cuda"), torch.bfloat16
    with dev:  # initialize on the GPU
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
    unet = unet.to(dt, memory_format=torch.channels_last).eval()
    vae = vae.to(dt).eval()
    sched = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        algorithm_type="dpmsolver++", solver_order=2)
    emb = torch.randn(2, 77, 768, device=dev, dtype=dt)  # (uncond, cond)

    @torch.no_grad()
    def sample():
        sched.set_timesteps(args.steps, device=dev)
        lat = torch.randn(1, 4, 64, 64, device=dev, dtype=dt) * sched.init_noise_sigma
        t0 = time.perf_counter()
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([lat, lat]), t)
            eps = unet(inp, t, emb).sample
            u, c = eps.chunk(2)
            lat = sched.step(u + 7.5 * (c - u), t, lat).prev_sample
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        img = vae.decode(lat / 0.18215).sample
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        assert img.shape == (1, 3, 512, 512)
        return t1 - t0, t2 - t1

    sample()  # warm-up
    torch.cuda.reset_peak_memory_stats()
    loop = dec = 0.0
    for _ in range(args.repeat):
        a, b = sample()
        loop, dec = loop + a, dec + b
    card = torch.cuda.get_device_name()
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"torch card={card!r} unet30_ms={loop / args.repeat * 1e3:.1f} decode_ms={dec / args.repeat * 1e3:.1f} peakGiB={peak:.2f}")


if __name__ == "__main__":
    main()
