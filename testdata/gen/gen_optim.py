"""Golden values for internal/optim: AdamW, gradient clipping, DeepSpeed's LR
schedules and fp16 loss scaler, diffusers' EMAModel and min-SNR-γ weights.

DeepSpeed is not installed (it needs a compiler toolchain and CUDA headers to
build). Instead its pinned sdist is downloaded with pip (`pip download
--no-deps`), and DeepSpeed's own runtime/lr_schedules.py and
runtime/fp16/loss_scaler.py are copied out of it into a temporary package whose
few other imports (a logger, dist.get_rank, a config base class) are stubbed
below; the LR and loss-scale sequences therefore come from DeepSpeed's code
itself, not from a reimplementation. Set ZD_DEEPSPEED_SDIST to a downloaded
deepspeed-<version>.tar.gz to skip the download.

Files (testdata/golden/optim/):
  adamw.safetensors     torch.optim.AdamW(foreach=False), 10 steps, two configs:
                        p0, grads and lr per step, params after every step,
                        exp_avg/exp_avg_sq after the last step.
  clip.safetensors      torch.nn.utils.clip_grad_norm_ on three grad tensors,
                        one case that clips and one that does not.
  lr_schedules.json     DeepSpeed WarmupLR/WarmupDecayLR/WarmupCosineLR: the
                        optimizer lr at last_batch_iteration = -1 .. N and at
                        a few far iterations, for several parameter sets.
  loss_scaler.json      DeepSpeed DynamicLossScaler: scale, hysteresis and
                        skip per iteration for given overflow patterns.
  ema.safetensors       diffusers EMAModel on a small module over 12 steps,
                        warmup on and off (decays in the metadata, exactly).
  min_snr.safetensors   compute_snr + train_text_to_image.py's min-SNR-γ
                        weights (float32, as diffusers runs them) for every
                        SD1.5 timestep; float64 values of the same formula in
                        the metadata.
"""
import glob
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr

import common

DEEPSPEED_VERSION = "0.19.8"
OUT = os.path.join(common.GOLDEN, "optim")


def generate():
    os.makedirs(OUT, exist_ok=True)
    gen_adamw()
    gen_clip()
    gen_ema()
    gen_min_snr()
    with tempfile.TemporaryDirectory() as tmp:
        lr_schedules, loss_scaler = deepspeed_modules(tmp)
        gen_lr_schedules(lr_schedules)
        gen_loss_scaler(loss_scaler)


def write_json(name, version, cases):
    """One case per line, so a regenerated file diffs case by case."""
    with open(os.path.join(OUT, name), "w") as f:
        f.write('{"deepspeed": %s, "cases": [\n' % json.dumps(version))
        f.write(",\n".join(json.dumps(c, sort_keys=True) for c in cases))
        f.write("\n]}\n")


# AdamW ---------------------------------------------------------------------

def gen_adamw():
    g = common.seeded(501)
    n = 300
    steps = 10
    configs = {
        "default": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        "sd": dict(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    }
    tensors = {}
    for name, cfg in configs.items():
        p0 = common.randn(g, n)  # (n,)
        # Gradients of very different sizes per element, some exactly zero,
        # so both the m/√v ≈ ±1 regime and the eps-dominated regime show.
        mag = torch.pow(10.0, torch.randint(-4, 2, (n,), generator=g).float())  # (n,)
        grads = common.randn(g, steps, n) * mag  # (steps, n)
        grads[:, :7] = 0
        grads[3, 7:20] = 0
        lrs = torch.tensor([1e-3 * (0.5 + 0.15 * k) for k in range(steps)], dtype=torch.float64)  # (steps,)
        p = torch.nn.Parameter(p0.clone())
        opt = torch.optim.AdamW([p], lr=1e-3, foreach=False, **cfg)
        after = []
        for k in range(steps):
            for group in opt.param_groups:
                group["lr"] = float(lrs[k])
            p.grad = grads[k].clone()
            opt.step()
            after.append(p.detach().clone())
        st = opt.state[p]
        tensors[f"{name}.p0"] = p0
        tensors[f"{name}.grads"] = grads
        tensors[f"{name}.params"] = torch.stack(after)  # (steps, n)
        tensors[f"{name}.exp_avg"] = st["exp_avg"]
        tensors[f"{name}.exp_avg_sq"] = st["exp_avg_sq"]
        tensors[f"{name}.lr"] = lrs.float()
    meta = {
        "configs": json.dumps({k: dict(beta1=v["betas"][0], beta2=v["betas"][1], eps=v["eps"],
                                       weight_decay=v["weight_decay"]) for k, v in configs.items()}),
        # The lrs as exact float64 (the tensor holds them rounded to float32).
        "lrs": json.dumps([1e-3 * (0.5 + 0.15 * k) for k in range(steps)]),
    }
    common.save("optim/adamw.safetensors", tensors, meta=meta)


# Gradient clipping ---------------------------------------------------------

def gen_clip():
    g = common.seeded(502)
    shapes = [(17, 5), (64,), (3, 3, 4)]
    tensors = {}
    for case, max_norm in (("clip", 1.0), ("noclip", 1e4)):
        grads = [common.randn(g, *s, scale=0.7) for s in shapes]
        params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
        for prm, gr in zip(params, grads):
            prm.grad = gr.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        for i, (gr, prm) in enumerate(zip(grads, params)):
            tensors[f"{case}.grad{i}"] = gr
            tensors[f"{case}.clipped{i}"] = prm.grad
        tensors[f"{case}.total_norm"] = total.reshape(1)
        tensors[f"{case}.max_norm"] = torch.tensor([max_norm])
    common.save("optim/clip.safetensors", tensors, meta={"cases": "clip,noclip", "tensors": str(len(shapes))})


# EMA -----------------------------------------------------------------------

def gen_ema():
    g = common.seeded(503)
    cases = {
        "plain": dict(decay=0.9999, min_decay=0.0, update_after_step=0, use_ema_warmup=False),
        "plain_after3": dict(decay=0.95, min_decay=0.3, update_after_step=3, use_ema_warmup=False),
        "warmup": dict(decay=0.9999, min_decay=0.0, update_after_step=0, use_ema_warmup=True,
                       inv_gamma=1.0, power=2 / 3),
        "warmup_custom": dict(decay=0.9, min_decay=0.1, update_after_step=2, use_ema_warmup=True,
                              inv_gamma=2.5, power=0.75),
    }
    steps = 12
    tensors = {}
    decays = {}
    for name, cfg in cases.items():
        module = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.GroupNorm(1, 5), torch.nn.Linear(5, 3))
        with torch.no_grad():
            for prm in module.parameters():
                prm.copy_(common.randn(g, *prm.shape))
        ema = EMAModel(module.parameters(), **cfg)
        flat0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()])  # (n,)
        params, shadows, ds = [], [], []
        for _ in range(steps):
            with torch.no_grad():
                for prm in module.parameters():
                    prm.add_(common.randn(g, *prm.shape, scale=0.1))
            ema.step(module.parameters())
            params.append(torch.cat([p.detach().reshape(-1) for p in module.parameters()]))
            shadows.append(torch.cat([s.reshape(-1) for s in ema.shadow_params]))
            ds.append(ema.cur_decay_value)
        # Store / copy_to / restore round trip: the module ends with its own weights.
        ema.store(module.parameters())
        ema.copy_to(module.parameters())
        copied = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
        ema.restore(module.parameters())
        restored = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
        tensors[f"{name}.initial"] = flat0
        tensors[f"{name}.params"] = torch.stack(params)  # (steps, n)
        tensors[f"{name}.shadow"] = torch.stack(shadows)  # (steps, n)
        tensors[f"{name}.copied"] = copied
        tensors[f"{name}.restored"] = restored
        decays[name] = {"config": cfg, "decays": ds, "get_decay": [ema.get_decay(s) for s in range(0, 40)]}
    common.save("optim/ema.safetensors", tensors, meta={"cases": json.dumps(decays)})


# min-SNR-γ -----------------------------------------------------------------

def min_snr_weights(snr, gamma, prediction_type):
    """The weighting lines of diffusers' examples/text_to_image/train_text_to_image.py."""
    mse_loss_weights = torch.stack([snr, gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    if prediction_type == "epsilon":
        mse_loss_weights = mse_loss_weights / snr
    elif prediction_type == "v_prediction":
        mse_loss_weights = mse_loss_weights / (snr + 1)
    return mse_loss_weights


def gen_min_snr():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear")
    timesteps = torch.arange(1000)
    snr = compute_snr(sched, timesteps)  # (1000,)
    tensors = {"alphas_cumprod": sched.alphas_cumprod, "snr": snr}
    # The same formula in float64 on float64 ᾱ, at a few timesteps, kept exact in the metadata.
    betas64 = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac64 = torch.cumprod(1.0 - betas64, dim=0)
    picks = [0, 1, 2, 10, 99, 250, 500, 777, 998, 999]
    exact = {"timesteps": picks, "alphas_cumprod": [float(ac64[t]) for t in picks], "weights": {}}
    for gamma in (1.0, 5.0, 20.0):
        for pred in ("epsilon", "v_prediction"):
            key = f"{pred}.gamma{gamma:g}"
            tensors[key] = min_snr_weights(snr, gamma, pred)
            a = ac64[picks]
            snr64 = (a ** 0.5 / (1.0 - a) ** 0.5) ** 2
            exact["weights"][key] = [float(x) for x in min_snr_weights(snr64, gamma, pred)]
    common.save("optim/min_snr.safetensors", tensors, meta={"exact": json.dumps(exact)})


# DeepSpeed's own LR schedules and loss scaler ------------------------------

STUBS = {
    "deepspeed/__init__.py": "",
    "deepspeed/utils.py": (
        "import logging\n"
        "logger = logging.getLogger('deepspeed')\n"
        "def log_dist(message, ranks=None, level=logging.INFO):\n"
        "    logger.log(level, message)\n"
    ),
    "deepspeed/comm.py": "def get_rank():\n    return 0\n",
    "deepspeed/runtime/__init__.py": "",
    "deepspeed/runtime/config_utils.py": "class DeepSpeedConfigObject(object):\n    pass\n",
    "deepspeed/runtime/utils.py": (
        "import torch\n"
        "def has_inf_or_nan(x):\n"
        "    return bool((~torch.isfinite(x)).any())\n"
    ),
    "deepspeed/runtime/fp16/__init__.py": "",
}


def deepspeed_modules(tmp):
    """DeepSpeed's lr_schedules and loss_scaler modules, imported from its sdist."""
    sdist = os.environ.get("ZD_DEEPSPEED_SDIST")
    if not sdist:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"deepspeed=={DEEPSPEED_VERSION}", "-d", tmp], check=True)
        sdist = glob.glob(os.path.join(tmp, "deepspeed-*.tar.gz"))[0]
    pkg = os.path.join(tmp, "pkg")
    for rel, text in STUBS.items():
        path = os.path.join(pkg, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            for rel in ("deepspeed/runtime/lr_schedules.py", "deepspeed/runtime/fp16/loss_scaler.py"):
                if member.name.endswith("/" + rel) and member.name.count("/") == rel.count("/") + 1:
                    with open(os.path.join(pkg, rel), "wb") as f:
                        f.write(tar.extractfile(member).read())
    # An installed DeepSpeed (gen_deepspeed.py's) may already be imported in
    # this process: set it aside so that the copies above are the ones
    # imported, with their stubs, then put it back.
    def ours(name):
        return name == "deepspeed" or name.startswith("deepspeed.")
    saved = {k: v for k, v in sys.modules.items() if ours(k)}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, pkg)
    try:
        from deepspeed.runtime import lr_schedules
        from deepspeed.runtime.fp16 import loss_scaler
    finally:
        sys.path.remove(pkg)
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
    return lr_schedules, loss_scaler


LR_CASES = [
    ("WarmupLR", {"warmup_min_lr": 0, "warmup_max_lr": 1e-4, "warmup_num_steps": 10}, 3e-4),
    ("WarmupLR", {"warmup_min_lr": 1e-6, "warmup_max_lr": 3e-4, "warmup_num_steps": 7,
                  "warmup_type": "linear"}, 3e-4),
    ("WarmupLR", {"warmup_num_steps": 1}, 2e-4),
    ("WarmupLR", {"warmup_min_lr": 5e-5, "warmup_num_steps": 25, "warmup_type": "log"}, 1e-4),
    ("WarmupDecayLR", {"total_num_steps": 30, "warmup_min_lr": 0, "warmup_max_lr": 1e-4,
                       "warmup_num_steps": 5, "warmup_type": "linear"}, 1e-4),
    ("WarmupDecayLR", {"total_num_steps": 20, "warmup_num_steps": 10}, 1e-4),
    ("WarmupDecayLR", {"total_num_steps": 3, "warmup_min_lr": 1e-5, "warmup_max_lr": 2e-4,
                       "warmup_num_steps": 5}, 1e-4),
    ("WarmupCosineLR", {"total_num_steps": 40, "warmup_min_ratio": 0.1, "warmup_num_steps": 8,
                        "cos_min_ratio": 0.01, "warmup_type": "linear"}, 1e-4),
    ("WarmupCosineLR", {"total_num_steps": 50, "warmup_num_steps": 10}, 3e-4),
    ("WarmupCosineLR", {"total_num_steps": 4, "warmup_num_steps": 6, "warmup_min_ratio": 0.5,
                        "cos_min_ratio": 0.2}, 1e-3),
]
FAR_ITERATIONS = [100, 999, 1000, 1001, 123456]


def gen_lr_schedules(lr_schedules):
    cases = []
    for kind, params, opt_lr in LR_CASES:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=opt_lr)
        sched = getattr(lr_schedules, kind)(opt, **params)
        # After construction (last_batch_iteration = -1) the optimizer holds LR(-1);
        # each step() advances last_batch_iteration by one, as DeepSpeed's engine
        # does after every optimizer step that was not skipped.
        iters = [-1]
        lrs = [opt.param_groups[0]["lr"]]
        n = max(params.get("total_num_steps", 0), params["warmup_num_steps"]) + 8
        for _ in range(n):
            sched.step()
            iters.append(sched.last_batch_iteration)
            lrs.append(opt.param_groups[0]["lr"])
        for it in FAR_ITERATIONS:
            sched.step(last_batch_iteration=it)
            iters.append(it)
            lrs.append(opt.param_groups[0]["lr"])
        cases.append({"scheduler": {"type": kind, "params": params}, "optimizer_lr": opt_lr,
                      "iterations": iters, "lrs": [float(x) for x in lrs]})
    write_json("lr_schedules.json", DEEPSPEED_VERSION, cases)


def overflow_pattern(seed, n):
    rnd = random.Random(seed)
    out = []
    while len(out) < n:
        if rnd.random() < 0.3:
            out.extend([True] * rnd.randint(1, 4))
        else:
            out.extend([False] * rnd.randint(1, 11))
    return out[:n]


SCALER_CASES = [
    ("defaults_short_window", dict(initial_scale_power=16, loss_scale_window=4, hysteresis=2,
                                   consecutive_hysteresis=False, min_loss_scale=1), 11),
    ("consecutive", dict(initial_scale_power=12, loss_scale_window=3, hysteresis=3,
                         consecutive_hysteresis=True, min_loss_scale=1), 12),
    ("window1", dict(initial_scale_power=8, loss_scale_window=1, hysteresis=1,
                     consecutive_hysteresis=False, min_loss_scale=0.25), 13),
    ("floor", dict(initial_scale_power=3, loss_scale_window=50, hysteresis=1,
                   consecutive_hysteresis=False, min_loss_scale=1), None),
    ("floor_not_power_of_two", dict(initial_scale_power=2, loss_scale_window=2, hysteresis=2,
                                    consecutive_hysteresis=False, min_loss_scale=3), None),
]
FIXED_PATTERNS = {
    "floor": [True] * 3 + [False] * 5 + [True] * 6,
    "floor_not_power_of_two": [True, True, False, False, False, True, False, True, True, True],
}


def gen_loss_scaler(loss_scaler):
    cases = []
    for name, cfg, seed in SCALER_CASES:
        pattern = overflow_pattern(seed, 120) if seed is not None else FIXED_PATTERNS[name]
        # The keyword mapping of deepspeed/runtime/precision_config.py (dynamic_loss_scale_args).
        s = loss_scaler.DynamicLossScaler(init_scale=2 ** cfg["initial_scale_power"],
                                          scale_window=cfg["loss_scale_window"],
                                          min_scale=cfg["min_loss_scale"],
                                          delayed_shift=cfg["hysteresis"],
                                          consecutive_hysteresis=cfg["consecutive_hysteresis"])
        scales, hyst, raised_at = [], [], None
        for i, ov in enumerate(pattern):
            scales.append(float(s.cur_scale))
            try:
                s.update_scale(ov)
            except Exception:
                raised_at = i
                break
            hyst.append(s.cur_hysteresis)
        cases.append({"name": name, "config": cfg, "overflow": pattern[:len(scales)],
                      "scale_before": scales, "hysteresis_after": hyst, "raises_at": raised_at,
                      "final_scale": float(s.cur_scale)})
    write_json("loss_scaler.json", DEEPSPEED_VERSION, cases)
