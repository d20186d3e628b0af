"""Golden tensors for the GEMM-bound CPU kernels: batched matmul with every
transpose and alpha/beta, linear layers (with and without bias, 2-D and 3-D
input) and 2-D convolutions (3x3 stride 1 and 2, 1x1, 5x5), forward and
backward.

Sizes are odd on purpose (batch 1 and 3, channel counts 5, 13, 20) so that no
kernel passes by luck of an aligned shape. Gradients come from torch autograd
with a random upstream gradient: for matmul with respect to a and b, for
linear and conv with respect to the input, weight and bias.
"""
import torch
import torch.nn.functional as F

import common


def grad_of(out, inputs, dy):
    """Gradients of <out, dy> with respect to inputs, by autograd, as copies."""
    return tuple(d.clone() for d in torch.autograd.grad(out, inputs, grad_outputs=dy))


# Matmul cases: (name, shape of a as stored, shape of b as stored, transA, transB, alpha, beta).
# c = alpha·op(a)·op(b) + beta·c0; a 2-D b is shared by the batch.
MATMULS = (
    ("nn", (3, 5, 13), (3, 13, 20), False, False, 1.0, 0.0),
    ("tn", (3, 13, 5), (3, 13, 20), True, False, 0.5, 1.0),
    ("nt", (1, 17, 13), (1, 20, 13), False, True, -1.25, 0.5),
    ("tt", (3, 33, 7), (3, 21, 33), True, True, 1.0, -2.0),
    ("nt_shared", (3, 17, 13), (20, 13), False, True, 1.0, 0.0),
    ("nn_2d", (37, 70), (70, 29), False, False, 0.75, 0.0),
)


def matmul():
    g = common.seeded(201)
    t = {}
    for name, sa, sb, ta, tb, alpha, beta in MATMULS:
        a = common.randn(g, *sa).requires_grad_(True)
        b = common.randn(g, *sb).requires_grad_(True)
        opa = a.transpose(-1, -2) if ta else a
        opb = b.transpose(-1, -2) if tb else b
        prod = opa @ opb
        c0 = common.randn(g, *prod.shape)
        c = alpha * prod + beta * c0
        dc = common.randn(g, *c.shape)
        da, db = grad_of(c, (a, b), dc)
        t.update({f"{name}.a": a, f"{name}.b": b, f"{name}.c0": c0, f"{name}.c": c,
                  f"{name}.dc": dc, f"{name}.da": da, f"{name}.db": db})
    meta = {"cases": ",".join(m[0] for m in MATMULS)}
    for name, _, _, ta, tb, alpha, beta in MATMULS:
        meta.update({f"{name}.transA": int(ta), f"{name}.transB": int(tb),
                     f"{name}.alpha": alpha, f"{name}.beta": beta})
    common.save("ops/matmul.safetensors", t, meta=meta)


# Linear cases: (name, shape of x, out features, bias).
LINEARS = (
    ("bias_2d", (3, 13), 20, True),
    ("nobias_2d", (5, 20), 13, False),
    ("bias_3d", (3, 5, 13), 20, True),
    ("bias_3d_wide", (1, 37, 70), 33, True),
)


def linear():
    g = common.seeded(202)
    t = {}
    for name, sx, out, bias in LINEARS:
        x = common.randn(g, *sx).requires_grad_(True)
        w = common.randn(g, out, sx[-1], scale=sx[-1] ** -0.5).requires_grad_(True)
        inputs = [x, w]
        b = None
        if bias:
            b = common.randn(g, out).requires_grad_(True)
            inputs.append(b)
        y = F.linear(x, w, b)
        dy = common.randn(g, *y.shape)
        grads = grad_of(y, inputs, dy)
        t.update({f"{name}.x": x, f"{name}.w": w, f"{name}.y": y, f"{name}.dy": dy,
                  f"{name}.dx": grads[0], f"{name}.dw": grads[1]})
        if bias:
            t.update({f"{name}.b": b, f"{name}.db": grads[2]})
    common.save("ops/linear.safetensors", t, meta={"cases": ",".join(c[0] for c in LINEARS)})


# Conv cases: (name, shape of x, out channels, kernel size, stride, pad, bias).
CONVS = (
    ("k3s1p1", (3, 5, 9, 11), 13, 3, 1, 1, True),
    ("k3s2p1", (1, 13, 10, 9), 20, 3, 2, 1, True),
    ("k1s1p0", (3, 20, 6, 7), 13, 1, 1, 0, True),
    ("k3s1p1_nobias", (1, 20, 7, 8), 5, 3, 1, 1, False),
    ("k5s2p2", (3, 5, 12, 11), 13, 5, 2, 2, True),
    ("k1s2p0", (1, 13, 9, 8), 5, 1, 2, 0, True),
)


def conv2d():
    g = common.seeded(203)
    t = {}
    for name, sx, co, k, stride, pad, bias in CONVS:
        ci = sx[1]
        x = common.randn(g, *sx).requires_grad_(True)
        w = common.randn(g, co, ci, k, k, scale=(ci * k * k) ** -0.5).requires_grad_(True)
        inputs = [x, w]
        b = None
        if bias:
            b = common.randn(g, co).requires_grad_(True)
            inputs.append(b)
        y = F.conv2d(x, w, b, stride=stride, padding=pad)
        dy = common.randn(g, *y.shape)
        grads = grad_of(y, inputs, dy)
        t.update({f"{name}.x": x, f"{name}.w": w, f"{name}.y": y, f"{name}.dy": dy,
                  f"{name}.dx": grads[0], f"{name}.dw": grads[1]})
        if bias:
            t.update({f"{name}.b": b, f"{name}.db": grads[2]})
    meta = {"cases": ",".join(c[0] for c in CONVS)}
    for name, _, _, _, stride, pad, _ in CONVS:
        meta.update({f"{name}.stride": stride, f"{name}.pad": pad})
    common.save("ops/conv2d.safetensors", t, meta=meta)


def generate():
    matmul()
    linear()
    conv2d()
