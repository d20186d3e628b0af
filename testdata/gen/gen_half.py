"""Golden values for float32 -> float16/bfloat16 rounding (internal/tensor/half.go).

Writes testdata/golden/half.safetensors: float32 inputs `x` (edge cases, exact
rounding ties and their neighbours, random bit patterns) and torch's .half()
and .bfloat16() results as raw 16-bit patterns widened to int64 (`f16`,
`bf16`), so Go compares its conversions bit for bit.
"""
import numpy as np
import torch

import common


def f32(bits):
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def inputs():
    rng = np.random.default_rng(1234)
    edge = np.array([
        0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan,
        1.0, -1.0, 65504.0, 65519.996, 65520.0, -65520.0, 65536.0, 1e6, -1e6,
        2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 1.5 * 2.0 ** -24, 2.5 * 2.0 ** -24,
        2.0 ** -26, 2.0 ** -14, (1023 / 1024) * 2.0 ** -14, (2047 / 2048) * 2.0 ** -14,
        np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny,
        1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
    ], dtype=np.float32)
    edge = np.concatenate([edge, f32([0x00000001, 0x80000001, 0x007fffff, 0x7f7fffff, 0x7f7f8000,
                                      0x7f7f7fff, 0x7fc00000, 0xffc00001, 0x7f800001, 0x7fa00000])])

    # Exact float16 rounding ties: the midpoint between consecutive halves
    # (normal and subnormal, both signs) and the float32 values either side.
    h = rng.integers(0, 0x7bff, size=600, dtype=np.uint16)
    h = np.concatenate([h, np.arange(0, 40, dtype=np.uint16), np.arange(0x3f0, 0x410, dtype=np.uint16),
                        np.array([0x7bfe, 0x7bff - 1], dtype=np.uint16)])
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).view(np.float16).astype(np.float64)
    mid = ((lo + hi) / 2).astype(np.float32)
    mid_bits = mid.view(np.uint32)
    ties16 = np.concatenate([mid, f32(mid_bits - 1), f32(mid_bits + 1)])
    ties16 = np.concatenate([ties16, -ties16])

    # Exact bfloat16 ties: low 16 bits 0x8000, and their neighbours.
    b = rng.integers(0, 0x7f7f, size=400, dtype=np.uint32) << 16 | 0x8000
    b = np.concatenate([b, np.array([0x7f7f8000, 0x3f808000, 0x3f818000, 0x00008000, 0x00018000], dtype=np.uint32)])
    tiesbf = np.concatenate([f32(b), f32(b - 1), f32(b + 1)])
    tiesbf = np.concatenate([tiesbf, -tiesbf])

    # Random bit patterns over the whole float32 range, and values near 1.
    rand_bits = f32(rng.integers(0, 2 ** 32, size=1000, dtype=np.uint64).astype(np.uint32))
    rand_small = (rng.standard_normal(500) * np.exp2(rng.integers(-30, 20, size=500))).astype(np.float32)
    return np.concatenate([edge, ties16, tiesbf, rand_bits, rand_small]).astype(np.float32)


def generate():
    x = torch.from_numpy(inputs())
    f16 = x.half().view(torch.int16).to(torch.int64) & 0xFFFF
    bf16 = x.bfloat16().view(torch.int16).to(torch.int64) & 0xFFFF
    common.save("half.safetensors", {"x": x, "f16": f16, "bf16": bf16},
                meta={"doc": "x float32 inputs; f16/bf16 torch .half()/.bfloat16() bit patterns as int64"})
