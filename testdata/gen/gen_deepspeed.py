"""DeepSpeed parity: the tiny UNet trained 6 optimizer steps by DeepSpeed
itself (deepspeed.initialize, engine.backward, engine.step) on 2 CPU ranks
over gloo, fp32, ZeRO stage 0 and stage 2, with AdamW (torch_adam),
gradient_clipping, gradient accumulation and WarmupDecayLR from the
DeepSpeed config.

The two ranks are processes started here (torch.multiprocessing spawn) that
join through a FileStore in a temporary folder; DS_ACCELERATOR=cpu makes
DeepSpeed use its CPU accelerator, whose communication backend is gloo when
oneCCL is absent. torch_adam selects torch.optim.AdamW, so no compiled
DeepSpeed op is needed (the pip install builds none by default).

Every micro-batch (ε target, plain MSE) draws its latents, text states,
noise and timesteps here, before the ranks start, and stores them: micro
"step{s}.micro{a·world + r}" is rank r's a-th micro-batch of step s, the
order train.Job cuts a step's samples in.

File testdata/golden/train/deepspeed.safetensors, per stage N:
  stageN.losses      every rank's micro-batch loss, (step, micro, rank) order
  stageN.grad_norms  the global gradient norm of each step: stage 2's
                     engine.get_global_grad_norm(); at stage 0 (fp32, no
                     ZeRO) the engine keeps none, so the value its
                     clip_grad_norm_ returned
  final.*            the weights after stage 2's last step (stage 0's differ
                     by float32 rounding; metadata stage0_vs_stage2_max_abs)
metadata stageN.config (the DeepSpeed config, JSON) and stageN.lrs (the rate
DeepSpeed's optimizer held at each step, exact float64 JSON).
"""
import importlib
import json
import os
import tempfile

import torch
import torch.nn.functional as F

from common import ROOT, randn, save, seeded

MODELS = os.path.join(ROOT, "models")
MODEL = "tiny"
WORLD = 2
STEPS = 6
ACCUM = 2
MICRO = 1
SEED = 70


def config(stage):
    """The DeepSpeed config of a run. WarmupDecayLR (warmup_type left at its
    default, log) rises over 3 steps and decays to 0 at step 8, so the 6 steps
    see warmup, peak and decay; the rate starts above 0 so every step moves
    the weights. The gradient norm is above 1 at some steps and below it at
    others: both sides of clipping show."""
    return {
        "train_micro_batch_size_per_gpu": MICRO,
        "gradient_accumulation_steps": ACCUM,
        "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {"lr": 2e-3, "betas": [0.9, 0.999], "eps": 1e-8,
                                                  "weight_decay": 1e-2, "torch_adam": True}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": 1e-4, "warmup_max_lr": 2e-3,
                                                          "warmup_num_steps": 3, "total_num_steps": 8}},
        "zero_optimization": {"stage": stage},
    }


def inputs(sched):
    """Every rank's micro-batches, drawn in (step, accumulation, rank) order."""
    g = seeded(SEED)
    out = {}
    for step in range(STEPS):
        for k in range(ACCUM * WORLD):
            p = f"step{step}.micro{k}."
            out[p + "x0"] = randn(g, MICRO, 4, 16, 16)  # (B, C, h, w)
            out[p + "ctx"] = randn(g, MICRO, 7, 32)  # (B, S, D)
            out[p + "noise"] = randn(g, MICRO, 4, 16, 16)  # (B, C, h, w)
            out[p + "t"] = torch.randint(0, sched.config.num_train_timesteps, (MICRO,), generator=g)  # (B)
    return out


def rank_main(rank, store, data, result):
    """One rank: a DeepSpeed run per stage from the same pretrained weights,
    in one process group; rank 0 saves the records of both to result."""
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.distributed.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=WORLD)
    import deepspeed.runtime.engine as ds_engine

    # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce (a C++
    # build of a minute or more) that only inference_all_reduce, used by
    # tensor-parallel inference, calls; training's collectives are gloo's.
    # (deepspeed.comm's attribute "torch" is the torch package, hence importlib.)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    # Stage 0 in fp32 clips with deepspeed.runtime.utils.clip_grad_norm_ and
    # drops the norm it returns (get_global_grad_norm() stays None): record it.
    clip_norms = []
    clip = ds_engine.clip_grad_norm_

    def recording_clip(*args, **kwargs):
        n = clip(*args, **kwargs)
        clip_norms.append(float(n))
        return n

    ds_engine.clip_grad_norm_ = recording_clip
    records = {}
    for stage in (0, 2):
        clip_norms.clear()
        records[stage] = train(stage, rank, data)
        if stage == 0:
            records[stage]["norms"] = list(clip_norms)
    if rank == 0:
        torch.save(records, result)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def train(stage, rank, data):
    """STEPS optimizer steps of DeepSpeed at ZeRO stage on this rank's
    micro-batches: every rank's losses, the rates and norms, the final weights."""
    import deepspeed
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(os.path.join(MODELS, MODEL, "unet"), torch_dtype=torch.float32)
    sched = DDPMScheduler.from_pretrained(os.path.join(MODELS, MODEL, "scheduler"))
    engine, _, _, _ = deepspeed.initialize(model=unet, model_parameters=unet.parameters(), config=config(stage),
                                           dist_init_required=False)
    losses, lrs, norms = [], [], []
    for step in range(STEPS):
        for a in range(ACCUM):
            p = f"step{step}.micro{a * WORLD + rank}."
            x0, ctx, noise, t = data[p + "x0"], data[p + "ctx"], data[p + "noise"], data[p + "t"]
            y = engine(sched.add_noise(x0, noise, t), t, ctx).sample
            loss = F.mse_loss(y, noise, reduction="mean")
            engine.backward(loss)
            if engine.is_gradient_accumulation_boundary():
                # The rate torch's AdamW reads in this engine.step().
                lrs.append(engine.optimizer.param_groups[0]["lr"])
            engine.step()
            every = [torch.zeros(1) for _ in range(WORLD)]
            torch.distributed.all_gather(every, loss.detach().reshape(1))
            losses.extend(float(x) for x in every)
        if stage > 0:
            norms.append(float(engine.get_global_grad_norm()))
    final = {k: v.detach().clone() for k, v in unet.named_parameters()}
    return {"losses": losses, "lrs": lrs, "norms": norms, "final": final}


def generate():
    os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_pretrained(os.path.join(MODELS, MODEL, "scheduler"))
    data = inputs(sched)
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.pt")
        torch.multiprocessing.spawn(rank_main, args=(os.path.join(tmp, "store"), data, result), nprocs=WORLD)
        records = torch.load(result)
    out = dict(data)
    meta = {"deepspeed": deepspeed.__version__, "model": MODEL, "world": WORLD, "steps": STEPS,
            "accum": ACCUM, "micro": MICRO}
    for stage, r in records.items():
        out[f"stage{stage}.losses"] = torch.tensor(r["losses"], dtype=torch.float64)
        out[f"stage{stage}.grad_norms"] = torch.tensor(r["norms"], dtype=torch.float64)
        # The rates as exact float64 (a tensor would round them to float32).
        meta[f"stage{stage}.lrs"] = json.dumps(r["lrs"])
        meta[f"stage{stage}.config"] = json.dumps(config(stage), sort_keys=True)
    # Final weights of stage 2 only, to keep the file small. DeepSpeed's two
    # stages differ by float32 rounding; their largest difference is recorded.
    final0, final2 = records[0]["final"], records[2]["final"]
    for k, v in final2.items():
        out["final." + k] = v
    meta["stage0_vs_stage2_max_abs"] = max((final0[k] - v).abs().max().item() for k, v in final2.items())
    save("train/deepspeed.safetensors", out, meta=meta)
