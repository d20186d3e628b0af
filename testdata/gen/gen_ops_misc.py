"""Golden tensors for the small CPU kernels: elementwise ops, channel bias,
concat/split/permute, nearest 2x upsampling, the diffusers timestep embedding,
embedding lookup and the (weighted) MSE loss of diffusers' training scripts.

Sizes are odd on purpose (batch 1 and 3, channel counts that are not
multiples of 8) so that no kernel passes by luck of an aligned shape.
Gradients come from torch autograd with random upstream gradients.
"""
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding

import common


def grad_of(out, inputs, dy):
    """Gradients of <out, dy> with respect to inputs, by autograd, as copies:
    autograd may hand back dy itself or views of it, which safetensors refuses."""
    return tuple(d.clone() for d in torch.autograd.grad(out, inputs, grad_outputs=dy))


def elementwise():
    g = common.seeded(101)
    t = {}
    for name, shape in (("b1", (1, 3, 5, 7)), ("b3", (3, 13, 6, 5))):
        a = common.randn(g, *shape)
        b = common.randn(g, *shape)
        t[f"{name}.a"] = a
        t[f"{name}.b"] = b
        t[f"{name}.add"] = a + b
        t[f"{name}.mul"] = a * b
        t[f"{name}.axpy"] = torch.add(a, b, alpha=-0.37)
        t[f"{name}.scale"] = b * 1.7
        n, c = shape[0], shape[1]
        x = common.randn(g, *shape).requires_grad_(True)
        bias = common.randn(g, n, c).requires_grad_(True)
        y = x + bias[:, :, None, None]
        dy = common.randn(g, *shape)
        dx, dbias = grad_of(y, (x, bias), dy)
        t[f"{name}.bias_x"] = x
        t[f"{name}.bias"] = bias
        t[f"{name}.bias_y"] = y
        t[f"{name}.bias_dy"] = dy
        t[f"{name}.bias_dx"] = dx
        t[f"{name}.bias_dbias"] = dbias
    common.save("ops/elementwise.safetensors", t,
                meta={"cases": "b1,b3", "axpy_alpha": -0.37, "scale_alpha": 1.7})


# Concat cases: (name, shapes of the inputs, axis).
CONCATS = (
    ("ax0", ((1, 3, 4, 5), (3, 3, 4, 5)), 0),
    ("ax1", ((3, 5, 2, 3), (3, 7, 2, 3), (3, 1, 2, 3)), 1),
    ("ax2", ((1, 3, 2, 5), (1, 3, 5, 5)), 2),
    ("ax3", ((3, 2, 3, 1), (3, 2, 3, 6), (3, 2, 3, 4)), 3),
    ("axneg1", ((3, 4, 5), (3, 4, 9)), -1),
)

# Permute cases: (name, shape of x, permutation).
PERMUTES = (
    ("nchw_nhwc_b1", (1, 5, 7, 9), (0, 2, 3, 1)),
    ("nchw_nhwc_b3", (3, 13, 11, 6), (0, 2, 3, 1)),
    ("nhwc_nchw_b1", (1, 7, 9, 5), (0, 3, 1, 2)),
    ("nhwc_nchw_b3", (3, 11, 6, 13), (0, 3, 1, 2)),
    ("heads_b1", (1, 9, 5, 7), (0, 2, 1, 3)),
    ("heads_b3", (3, 17, 3, 10), (0, 2, 1, 3)),
    ("transpose2d", (37, 45), (1, 0)),
    ("mixed4d", (3, 4, 5, 6), (2, 0, 3, 1)),
    ("mixed5d", (2, 3, 1, 5, 4), (3, 1, 4, 0, 2)),
    ("lastkept5d", (2, 3, 4, 5, 6), (2, 0, 3, 1, 4)),
)


def layout():
    g = common.seeded(202)
    t = {}
    for name, shapes, axis in CONCATS:
        xs = [common.randn(g, *s).requires_grad_(True) for s in shapes]
        y = torch.cat(xs, dim=axis)
        dy = common.randn(g, *y.shape)
        dxs = grad_of(y, xs, dy)
        for i, (x, dx) in enumerate(zip(xs, dxs)):
            t[f"cat.{name}.x{i}"] = x
            t[f"cat.{name}.dx{i}"] = dx
        t[f"cat.{name}.y"] = y
        t[f"cat.{name}.dy"] = dy
    for name, shape, perm in PERMUTES:
        x = common.randn(g, *shape).requires_grad_(True)
        y = x.permute(*perm)
        dy = common.randn(g, *y.shape)
        (dx,) = grad_of(y, (x,), dy)
        t[f"perm.{name}.x"] = x
        t[f"perm.{name}.y"] = y
        t[f"perm.{name}.dy"] = dy
        t[f"perm.{name}.dx"] = dx
    meta = {"concat_cases": ",".join(c[0] for c in CONCATS),
            "permute_cases": ",".join(c[0] for c in PERMUTES)}
    for name, shapes, axis in CONCATS:
        meta[f"cat.{name}.axis"] = axis
        meta[f"cat.{name}.n"] = len(shapes)
    for name, _, perm in PERMUTES:
        meta[f"perm.{name}.perm"] = ",".join(str(p) for p in perm)
    common.save("ops/layout.safetensors", t, meta=meta)


def upsample():
    g = common.seeded(303)
    t = {}
    for name, shape in (("b1", (1, 3, 1, 5)), ("b3", (3, 5, 4, 7))):
        x = common.randn(g, *shape).requires_grad_(True)
        y = F.interpolate(x, scale_factor=2, mode="nearest")
        dy = common.randn(g, *y.shape)
        (dx,) = grad_of(y, (x,), dy)
        t[f"{name}.x"] = x
        t[f"{name}.y"] = y
        t[f"{name}.dy"] = dy
        t[f"{name}.dx"] = dx
    common.save("ops/upsample.safetensors", t, meta={"cases": "b1,b3"})


def timestep_embedding():
    # Integer timesteps at both ends of the 1000-step schedule and fractional
    # ones, as the Euler and DPM samplers produce them.
    ts = torch.tensor([0.0, 1.0, 0.5, 17.25, 261.7, 500.0, 998.125, 999.0], dtype=torch.float32)
    t = {"t": ts}
    cases = []
    for dim in (320, 32, 7):
        for flip in (True, False):
            for shift in (0, 1):
                name = f"d{dim}_flip{int(flip)}_shift{shift}_p10000"
                t[name] = get_timestep_embedding(ts, dim, flip_sin_to_cos=flip,
                                                 downscale_freq_shift=shift, scale=1, max_period=10000)
                cases.append(name)
    name = "d32_flip1_shift1_p100"
    t[name] = get_timestep_embedding(ts, 32, flip_sin_to_cos=True, downscale_freq_shift=1,
                                     scale=1, max_period=100)
    cases.append(name)
    common.save("ops/timestep_embedding.safetensors", t, meta={"cases": ",".join(cases)})


def embedding():
    g = common.seeded(404)
    t = {}
    for name, vocab, dim, ids_shape in (("b1", 7, 5, (1, 4)), ("b3", 11, 13, (3, 5))):
        table = common.randn(g, vocab, dim).requires_grad_(True)
        ids = torch.randint(0, vocab, ids_shape, generator=g, dtype=torch.int64)
        ids[0, 0] = vocab - 1
        ids[-1, -1] = ids[0, 1]  # a repeated id: its gradient rows must add up
        y = F.embedding(ids, table)
        dy = common.randn(g, *y.shape)
        (dtable,) = grad_of(y, (table,), dy)
        t[f"{name}.table"] = table
        t[f"{name}.ids"] = ids
        t[f"{name}.y"] = y
        t[f"{name}.dy"] = dy
        t[f"{name}.dtable"] = dtable
    common.save("ops/embedding.safetensors", t, meta={"cases": "b1,b3"})


def mse():
    g = common.seeded(505)
    t = {}
    cases = []
    for name, shape in (("b1", (1, 3, 5, 7)), ("b3", (3, 4, 6, 5))):
        for weighted in (False, True):
            case = f"{name}_w{int(weighted)}"
            pred = common.randn(g, *shape).requires_grad_(True)
            target = common.randn(g, *shape)
            if weighted:
                # Min-SNR-γ weights lie in (0, 1]; any positive values do here.
                weight = torch.rand(shape[0], generator=g, dtype=torch.float32) + 0.1
                loss = F.mse_loss(pred, target, reduction="none")
                loss = loss.mean(dim=list(range(1, len(loss.shape)))) * weight
                loss = loss.mean()
                t[f"{case}.weight"] = weight
            else:
                loss = F.mse_loss(pred, target)
            dloss = torch.tensor(0.73, dtype=torch.float32)
            (dpred,) = grad_of(loss, (pred,), dloss)
            t[f"{case}.pred"] = pred
            t[f"{case}.target"] = target
            t[f"{case}.loss"] = loss.reshape(1)
            t[f"{case}.dpred"] = dpred
            cases.append(case)
    common.save("ops/mse.safetensors", t, meta={"cases": ",".join(cases), "dloss": 0.73})


def generate():
    elementwise()
    layout()
    upsample()
    timestep_embedding()
    embedding()
    mse()
