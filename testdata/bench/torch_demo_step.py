"""PyTorch CPU side of BenchmarkDemoStep: one optimizer step of the demo
recipe — diffusers' UNet2DConditionModel with the demo config (3 channels,
16x16, widths 32/64/64), batch 64, 8-token context of width 64, MSE on ε,
AdamW — timed as the median of several steps after a warm-up.

Usage: python torch_demo_step.py THREADS   (prints one JSON line)
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

CONFIG = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
              norm_num_groups=8, attention_head_dim=(1, 2, 2), cross_attention_dim=64)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**CONFIG)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=1e-2)
    x = torch.randn(64, 3, 16, 16)
    ctx = torch.randn(64, 8, 64)
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (64,))
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        pred = unet(x + noise, t, ctx).sample
        loss = F.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    best = sorted(times[2:])[len(times[2:]) // 2]
    print(json.dumps({"op": "demo_train_step", "threads": threads, "seconds": best, "img_per_s": 64 / best,
                      "torch": torch.__version__, "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}))


if __name__ == "__main__":
    main()
