"""Golden tensors for the neural-network kernels of the CPU backend: group norm,
layer norm, softmax, scaled dot-product attention, the activations (SiLU,
exact GELU, CLIP's QuickGELU) and diffusers' GEGLU.

Sizes are odd on purpose (batch 1 and 3, channel counts that are not
multiples of 8, token counts like 17 and 77, head dims 40, 64, 80, 160 and an
odd one). Outputs come from torch in float32; gradients of the inputs and of
the weights come from autograd with a random upstream gradient. Saved
statistics (mean, rstd, log-sum-exp) come from torch's native kernels, or for
the log-sum-exp from the scores in float64.
"""
import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from transformers.activations import QuickGELUActivation

import common


def grad_of(out, inputs, dy):
    """Gradients of <out, dy> with respect to inputs, by autograd, as copies."""
    return tuple(d.clone() for d in torch.autograd.grad(out, inputs, grad_outputs=dy))


# Group norm cases: (name, x shape, groups, eps, mean offset of x).
GROUP_NORM = (
    ("c0", (1, 12, 5, 7), 1, 1e-5, 0.0),
    ("c1", (3, 12, 5, 3), 3, 1e-6, 0.5),
    ("c2", (3, 24, 4, 3), 8, 1e-5, 0.0),
    ("c3", (1, 64, 3, 5), 32, 1e-6, 3.0),
    ("c4", (3, 6, 11), 3, 1e-5, -1.0),
)


def group_norm():
    g = common.seeded(201)
    t, meta = {}, {"cases": ",".join(c[0] for c in GROUP_NORM)}
    for name, shape, groups, eps, offset in GROUP_NORM:
        n, c = shape[0], shape[1]
        x = (common.randn(g, *shape) * 1.5 + offset).requires_grad_(True)
        w = (1 + common.randn(g, c, scale=0.3)).requires_grad_(True)
        b = common.randn(g, c, scale=0.3).requires_grad_(True)
        y = F.group_norm(x, groups, w, b, eps)
        hw = x[0, 0].numel()
        _, mean, rstd = torch.ops.aten.native_group_norm(x.detach(), w.detach(), b.detach(), n, c, hw, groups, eps)
        dy = common.randn(g, *shape)
        dx, dw, db = grad_of(y, (x, w, b), dy)
        t.update({f"{name}.x": x, f"{name}.w": w, f"{name}.b": b, f"{name}.y": y,
                  f"{name}.mean": mean, f"{name}.rstd": rstd, f"{name}.dy": dy,
                  f"{name}.dx": dx, f"{name}.dw": dw, f"{name}.db": db})
        meta[f"{name}.groups"] = groups
        meta[f"{name}.eps"] = eps
    common.save("ops/group_norm.safetensors", t, meta=meta)


# Layer norm cases: (name, x shape, eps, mean offset of x).
LAYER_NORM = (
    ("c0", (1, 7, 37), 1e-5, 0.0),
    ("c1", (3, 5, 77), 1e-6, 0.0),
    ("c2", (9, 20), 1e-5, 2.0),
    ("c3", (1, 4, 320), 1e-5, -0.5),
)


def layer_norm():
    g = common.seeded(202)
    t, meta = {}, {"cases": ",".join(c[0] for c in LAYER_NORM)}
    for name, shape, eps, offset in LAYER_NORM:
        c = shape[-1]
        x = (common.randn(g, *shape) * 1.5 + offset).requires_grad_(True)
        w = (1 + common.randn(g, c, scale=0.3)).requires_grad_(True)
        b = common.randn(g, c, scale=0.3).requires_grad_(True)
        y = F.layer_norm(x, (c,), w, b, eps)
        _, mean, rstd = torch.ops.aten.native_layer_norm(x.detach(), (c,), w.detach(), b.detach(), eps)
        dy = common.randn(g, *shape)
        dx, dw, db = grad_of(y, (x, w, b), dy)
        t.update({f"{name}.x": x, f"{name}.w": w, f"{name}.b": b, f"{name}.y": y,
                  f"{name}.mean": mean.reshape(-1), f"{name}.rstd": rstd.reshape(-1), f"{name}.dy": dy,
                  f"{name}.dx": dx, f"{name}.dw": dw, f"{name}.db": db})
        meta[f"{name}.eps"] = eps
    common.save("ops/layer_norm.safetensors", t, meta=meta)


# Softmax cases: (name, x shape, scale of x); the scale-20 rows overflow a
# naive exp, the length-1 rows are all ones with zero gradient.
SOFTMAX = (
    ("c0", (3, 5, 17), 1.0),
    ("c1", (4, 77), 20.0),
    ("c2", (2, 3, 1), 1.0),
)


def softmax():
    g = common.seeded(203)
    t = {}
    for name, shape, scale in SOFTMAX:
        x = common.randn(g, *shape, scale=scale).requires_grad_(True)
        y = torch.softmax(x, dim=-1)
        dy = common.randn(g, *shape)
        (dx,) = grad_of(y, (x,), dy)
        t.update({f"{name}.x": x, f"{name}.y": y, f"{name}.dy": dy, f"{name}.dx": dx})
    common.save("ops/softmax.safetensors", t, meta={"cases": ",".join(c[0] for c in SOFTMAX)})


# Attention cases: (name, B, Tq, Tk, heads, head dim, causal, scale or None
# for 1/√D, scale of q). Cross-attention has Tk ≠ Tq; the causal case has
# CLIP's 77 tokens, more than one 64-row query block of the Go kernel.
ATTENTION = (
    ("self_d40", 1, 17, 17, 2, 40, False, None, 1.0),
    ("cross_d64", 3, 17, 7, 1, 64, False, None, 1.0),
    ("cross_d80", 1, 9, 23, 1, 80, False, None, 2.0),
    ("causal_d40", 1, 77, 77, 1, 40, True, None, 1.0),
    ("self_d160", 1, 13, 13, 1, 160, False, None, 1.0),
    ("causal_d7", 3, 11, 5, 3, 7, True, 0.3, 1.0),
)


def attention():
    g = common.seeded(204)
    t = {}
    meta = {"cases": ",".join(c[0] for c in ATTENTION)}
    for name, b, tq, tk, h, d, causal, scale, qscale in ATTENTION:
        q = common.randn(g, b, tq, h * d, scale=qscale).requires_grad_(True)
        k = common.randn(g, b, tk, h * d).requires_grad_(True)
        v = common.randn(g, b, tk, h * d).requires_grad_(True)

        def heads(x):
            return x.view(x.shape[0], x.shape[1], h, d).transpose(1, 2)  # (B, H, T, D)

        s = scale if scale is not None else d ** -0.5
        o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=causal, scale=s)
        o = o.transpose(1, 2).reshape(b, tq, h * d)  # (B, Tq, H·D)
        with torch.no_grad():
            scores = heads(q).double() @ heads(k).double().transpose(-1, -2) * s  # (B, H, Tq, Tk)
            if causal:
                mask = torch.ones(tq, tk, dtype=torch.bool).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            lse = scores.logsumexp(-1)  # (B, H, Tq)
        do = common.randn(g, b, tq, h * d)
        dq, dk, dv = grad_of(o, (q, k, v), do)
        t.update({f"{name}.q": q, f"{name}.k": k, f"{name}.v": v, f"{name}.o": o, f"{name}.lse": lse,
                  f"{name}.do": do, f"{name}.dq": dq, f"{name}.dk": dk, f"{name}.dv": dv})
        meta[f"{name}.heads"] = h
        meta[f"{name}.scale"] = repr(float(torch.tensor(s, dtype=torch.float32)))
        meta[f"{name}.causal"] = str(causal).lower()
    common.save("ops/attention.safetensors", t, meta=meta)


def act():
    g = common.seeded(205)
    x = torch.cat([torch.linspace(-10, 10, 121), common.randn(g, 136, scale=3.0)]).requires_grad_(True)
    dy = common.randn(g, x.numel())
    t = {"x": x, "dy": dy}
    for name, f in (("silu", F.silu), ("gelu", F.gelu), ("quick_gelu", QuickGELUActivation())):
        y = f(x)
        (dx,) = grad_of(y, (x,), dy)
        t[f"{name}.y"] = y
        t[f"{name}.dx"] = dx
    common.save("ops/act.safetensors", t, meta={"acts": "silu,gelu,quick_gelu"})


# GEGLU cases: (name, shape of the output y (*, C)); x is (*, 2C).
GEGLU_CASES = (
    ("c0", (3, 5, 13)),
    ("c1", (1, 4, 40)),
)


def geglu():
    g = common.seeded(206)
    t = {}
    for name, shape in GEGLU_CASES:
        c = shape[-1]
        mod = GEGLU(2 * c, c)
        mod.proj = torch.nn.Identity()  # the kernel is what follows diffusers' projection
        x = common.randn(g, *shape[:-1], 2 * c, scale=2.0).requires_grad_(True)
        y = mod(x)
        dy = common.randn(g, *shape)
        (dx,) = grad_of(y, (x,), dy)
        t.update({f"{name}.x": x, f"{name}.y": y, f"{name}.dy": dy, f"{name}.dx": dx})
    common.save("ops/geglu.safetensors", t, meta={"cases": ",".join(c[0] for c in GEGLU_CASES)})


def generate():
    group_norm()
    layer_norm()
    softmax()
    attention()
    act()
    geglu()
