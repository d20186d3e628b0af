"""Shared helpers for the golden-file generator.

Every generator module (gen_*.py beside this file) defines generate(out_root)
and writes small safetensors files under testdata/golden/ with save().
Tensors are written as float32 (or int64) so Go compares exact reference values.
"""
import json
import os
import struct

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "golden")


def versions():
    """Versions of the reference stack, stored in every golden file's metadata."""
    out = {"torch": torch.__version__}
    for name in ("diffusers", "transformers", "peft"):
        try:
            mod = __import__(name)
            out[name] = mod.__version__
        except ImportError:
            pass
    return out


def save(rel, tensors, meta=None):
    """Write tensors (name -> torch tensor) to testdata/golden/<rel>."""
    path = os.path.join(GOLDEN, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    out = {}
    for k, v in tensors.items():
        v = v.detach().contiguous().cpu()
        if v.dtype in (torch.float16, torch.bfloat16, torch.float64):
            v = v.float()
        out[k] = v
    m = {k: str(v) for k, v in versions().items()}
    if meta:
        m.update({k: str(v) for k, v in meta.items()})
    save_file(out, path, metadata=m)
    _sort_header(path)
    return path


def _sort_header(path):
    """Rewrite the header with sorted keys: the safetensors writer orders
    metadata at random, and regenerated golden files must be byte-identical."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > n:
            raise RuntimeError(f"{path}: sorted header grew")
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def seeded(seed):
    """A torch generator with a fixed seed, so every run writes the same bytes."""
    g = torch.Generator().manual_seed(seed)
    return g


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale
