"""PyTorch CPU side of BenchmarkUNetForwardSD15_32 (internal/sd/sd15): one forward of diffusers'
UNet2DConditionModel at the SD1.5 architecture (random weights) on (1, 4, 32, 32) latents, t = [500],
a (1, 77, 768) context; float32, no grad, diffusers' default attention (SDPA).

Usage: python testdata/bench/torch_unet.py [--threads 1,2] [--runs 5]

Prints one JSON line per thread count: {"op", "threads", "torch", "flops", "seconds", "gflops"}, with
seconds the median of --runs timed forwards after one warmup and flops counted by
torch.utils.flop_counter (convolutions, linears and attention matmuls, 2 per multiply-add), the count
the Go benchmark's own counter is checked against. Each thread count runs in a fresh process whose
OMP/MKL/OPENBLAS thread variables are set before torch loads, as torch_ops.py does.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZE = 32
# SD1.5's unet/config.json (testdata/sd15/make_sd15.py writes the same).
UNET_CONFIG = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])


def measure(threads, runs):
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    with torch.device("meta"):
        meta = UNet2DConditionModel(**UNET_CONFIG)
        fc = FlopCounterMode(display=False)
        with fc, torch.no_grad():
            meta(torch.empty(1, 4, SIZE, SIZE), torch.empty(1), torch.empty(1, 77, 768))
    flops = fc.get_total_flops()

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    x = torch.randn(1, 4, SIZE, SIZE)  # (N, 4, h, w)
    t = torch.tensor([500.0])  # (N)
    ctx = torch.randn(1, 77, 768)  # (N, S, D)
    times = []
    with torch.no_grad():
        unet(x, t, ctx)
        for _ in range(runs):
            t0 = time.perf_counter()
            unet(x, t, ctx)
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"op": f"unet_sd15_forward_{SIZE}", "threads": threads, "torch": torch.__version__, "flops": flops,
            "seconds": sec, "gflops": flops / sec / 1e9}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--runs", type=int, default=5, help="timed forwards per thread count (median is reported)")
    ap.add_argument("--child", action="store_true", help="measure one thread count in this process")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.threads), args.runs)))
        return
    for t in args.threads.split(","):
        env = dict(os.environ, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t)
        res = subprocess.run([sys.executable, __file__, "--child", "--threads", t, "--runs", str(args.runs)],
                             env=env, check=True, capture_output=True, text=True)
        print(res.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
