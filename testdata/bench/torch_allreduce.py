"""All-reduce of 64 MiB of float32 across 4 local ranks with torch.distributed
and gloo: the reference for internal/collective's BenchmarkRingAllReduce64MB.

Usage: python testdata/bench/torch_allreduce.py [--world 4] [--mib 64] [--iters 10]

Spawns --world processes (torch.multiprocessing), which meet at
tcp://127.0.0.1:<a free port>; each times --iters all-reduces (sum) after
two for warmup, a barrier before each. Rank 0 prints one JSON object:
{"torch", "backend", "world", "bytes", "iters", "seconds" (median per
all-reduce), "best_seconds", "alg_gbs" (bytes/seconds), "bus_gbs"
(2(n-1)/n · alg_gbs, what each link carries), "best_alg_gbs", "cpu_seconds"
(CPU time of all ranks per all-reduce: the fairer number on a machine shared
with other jobs, where wall time depends on how many threads compete)}.
"""
import argparse
import json
import socket
import statistics
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, numel, iters, out):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x = torch.zeros(numel, dtype=torch.float32)  # (n,) zeros: the values do not change the time
    for _ in range(2):
        dist.all_reduce(x)
    times = []
    cpu = 0.0
    for _ in range(iters):
        dist.barrier()
        c0, t0 = time.process_time(), time.perf_counter()
        dist.all_reduce(x)
        times.append(time.perf_counter() - t0)
        cpu += time.process_time() - c0
    # A rank's time ends when it has its result; the slowest rank's time is
    # the collective's. CPU time adds up over the ranks.
    t = torch.tensor(times, dtype=torch.float64)  # (iters,)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    c = torch.tensor([cpu], dtype=torch.float64)  # (1,)
    dist.all_reduce(c)
    if rank == 0:
        out.put((t.tolist(), c.item() / iters))
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()

    import torch
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    numel = args.mib * (1 << 20) // 4
    mp.spawn(worker, args=(args.world, free_port(), numel, args.iters, out), nprocs=args.world, join=True)
    times, cpu = out.get()
    nbytes = 4 * numel
    sec, best = statistics.median(times), min(times)
    alg = nbytes / sec / 1e9
    print(json.dumps({
        "torch": torch.__version__,
        "backend": "gloo",
        "world": args.world,
        "bytes": nbytes,
        "iters": args.iters,
        "seconds": sec,
        "best_seconds": best,
        "alg_gbs": alg,
        "bus_gbs": alg * 2 * (args.world - 1) / args.world,
        "best_alg_gbs": nbytes / best / 1e9,
        "cpu_seconds": cpu,
    }))


if __name__ == "__main__":
    main()
