"""Time the GEMM-bound ops of internal/cpu/bench_test.go in PyTorch on the CPU.

Usage: python testdata/bench/torch_ops.py [--threads 1,2] [--runs 7]

Names are the Go benchmark names in lower case, without "Benchmark".
Prints one JSON object: {"torch": version, "results": [{"name", "threads",
"flops", "seconds", "gflops", "best_gflops"}, ...]}, with seconds the median
of --runs timed runs after warmup and best_gflops from the fastest run (the
better estimate on a machine that other jobs share). Each thread count runs in a fresh process whose
OMP/MKL/OPENBLAS thread variables are set before torch loads (a BLAS pool
sized for the whole machine slowed a one-thread run 1.5x on a 2-core machine), so the
reference is configured as fairly as the Go side.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def cases(torch):
    """Name, FLOP count and a closure per op, with the Go benchmarks' shapes."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    out = []

    a = torch.randn(4096, 320, generator=g)  # (M, K)
    b = torch.randn(320, 320, generator=g)  # (K, N)
    out.append(("matmul_4096x320x320", 2 * 4096 * 320 * 320, lambda: torch.mm(a, b)))

    x = torch.randn(1, 320, 64, 64, generator=g)  # (N, Ci, H, W)
    w = torch.randn(320, 320, 3, 3, generator=g)  # (Co, Ci, 3, 3)
    bias = torch.randn(320, generator=g)  # (Co)
    dy = torch.randn(1, 320, 64, 64, generator=g)  # (N, Co, Ho, Wo)
    fwd = 2 * 320 * 320 * 9 * 64 * 64
    out.append(("conv3x3_64x64x320", fwd, lambda: F.conv2d(x, w, bias, padding=1)))

    def conv_bwd():
        # dx, dw, db as Conv2DBackward computes them: two GEMMs of the forward's size.
        return torch.ops.aten.convolution_backward(
            dy, x, w, [320], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])

    out.append(("conv3x3backward_64x64x320", 2 * fwd, conv_bwd))
    return out


def measure(threads, runs):
    import torch

    torch.set_num_threads(threads)
    results = []
    with torch.no_grad():
        for name, flops, fn in cases(torch):
            for _ in range(3):
                fn()
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            sec = statistics.median(times)
            results.append({"name": name, "threads": threads, "flops": flops,
                            "seconds": sec, "gflops": flops / sec / 1e9,
                            "best_gflops": flops / min(times) / 1e9})
    return {"torch": torch.__version__, "results": results}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--runs", type=int, default=7, help="timed runs per op (median is reported)")
    ap.add_argument("--child", action="store_true", help="measure one thread count in this process")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.threads), args.runs)))
        return
    merged = {"torch": None, "results": []}
    for t in args.threads.split(","):
        env = dict(os.environ, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t)
        res = subprocess.run([sys.executable, __file__, "--child", "--threads", t, "--runs", str(args.runs)],
                             env=env, check=True, capture_output=True, text=True)
        part = json.loads(res.stdout)
        merged["torch"] = part["torch"]
        merged["results"].extend(part["results"])
    print(json.dumps(merged, indent=1))


if __name__ == "__main__":
    main()
