"""The PyTorch side of `make gpu-check`: one SD1.5 UNet training step in
diffusers on the GPU, as its train_text_to_image.py runs it with
--mixed_precision bf16: fp32 weights under bf16 autocast, SDPA attention,
channels_last, fused AdamW. Random weights (no files), (N, 4, 64, 64) latents
and a (N, 77, 768) context, as internal/cuda's BenchmarkUNetTrainStep.

Prints one line: card, batch, ms/step, img/s, MFU, peak GiB.
Usage: python torch_unet_train.py --batch 8 [--steps 10] [--peak-tflops 790]
"""

import argparse
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)
# One 512-px training sample of the SD1.5 UNet: forward ~803 GFLOP, backward twice that
# (counted layer by layer by internal/sd/sd15/flops_test.go).
TRAIN_FLOPS_PER_SAMPLE = 2.41e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    args = ap.parse_args()

    torch.manual_seed(0)
    dev = torch.device("cuda")
    with dev:  # initialize on the GPU: a CPU init of 860M parameters takes longer than the step
        unet = UNet2DConditionModel(**SD15_UNET)
    unet = unet.to(memory_format=torch.channels_last)
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2, fused=True)
    n = args.batch
    x = torch.randn(n, 4, 64, 64, device=dev).to(memory_format=torch.channels_last)
    target = torch.randn(n, 4, 64, 64, device=dev)
    ctx = torch.randn(n, 77, 768, device=dev)
    t = torch.randint(0, 1000, (n,), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = unet(x, t, ctx).sample
        loss = F.mse_loss(y.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):  # warm-up: cuDNN/cuBLAS heuristics, the caching allocator
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    sec = (time.perf_counter() - start) / args.steps
    if not torch.isfinite(loss):
        raise SystemExit(f"loss {loss.item()}: the step diverged, the timing is meaningless")
    card = torch.cuda.get_device_name()
    mfu = 100 * TRAIN_FLOPS_PER_SAMPLE * n / sec / (args.peak_tflops * 1e12)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"torch card={card!r} batch={n} ms/step={sec * 1e3:.1f} img/s={n / sec:.2f} MFU%={mfu:.1f} peakGiB={peak:.2f}")


if __name__ == "__main__":
    main()
