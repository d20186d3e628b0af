"""A small file written by the Python safetensors library (internal/safetensors).

Writes testdata/golden/safetensors/python.safetensors with one tensor of each
dtype zerodiff reads (F32, F16, BF16, I64), a scalar and an empty tensor, plus
metadata. Each half-precision tensor has an F32 twin holding torch's .float()
of it, so Go checks the decoding against torch's widening.
"""
import json
import os

import torch
from safetensors.torch import save_file

import common


def generate():
    g = common.seeded(7)
    f32 = common.randn(g, 2, 3, 4)
    f16 = common.randn(g, 5, 7, scale=100.0).half()
    bf16 = common.randn(g, 3, 11, scale=1e-3).bfloat16()
    tensors = {
        "f32": f32,
        "f16": f16,
        "f16_as_f32": f16.float(),
        "bf16": bf16,
        "bf16_as_f32": bf16.float(),
        "i64": torch.tensor([[0, 1, -1], [2 ** 40, -(2 ** 62), 7]], dtype=torch.int64),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
    }
    # One metadata key: the Rust writer orders metadata keys by a randomly
    # seeded hash, so several keys would change the bytes on every run.
    meta = {"versions": json.dumps(common.versions(), sort_keys=True)}
    path = os.path.join(common.GOLDEN, "safetensors", "python.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(tensors, path, metadata=meta)
