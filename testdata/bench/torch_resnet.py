"""PyTorch CPU side of BenchmarkResnetBlock: diffusers' ResnetBlock2D on
(2, 320, 32, 32), forward + backward, GFLOP/s counted as the Go benchmark does."""
import json
import sys
import time

import torch
from diffusers.models.resnet import ResnetBlock2D

FLOPS = 3 * 2 * (2 * 2 * 320 * 320 * 9 * 32 * 32)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    blk = ResnetBlock2D(in_channels=320, out_channels=320, temb_channels=1280, groups=32, eps=1e-5)
    x = torch.randn(2, 320, 32, 32, requires_grad=True)
    temb = torch.randn(2, 1280, requires_grad=True)
    dy = torch.randn(2, 320, 32, 32)
    times = []
    for i in range(6):
        t0 = time.perf_counter()
        blk(x, temb).backward(dy)
        times.append(time.perf_counter() - t0)
    best = sorted(times[1:])[len(times[1:]) // 2]
    print(json.dumps({"op": "resnet_block_fwd_bwd", "threads": threads, "seconds": best, "gflops": FLOPS / best / 1e9}))


if __name__ == "__main__":
    main()
