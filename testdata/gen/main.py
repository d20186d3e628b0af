"""Regenerate the golden files: `make golden` (needs torch, diffusers,
transformers and peft from PyPI; never run by CI).

Usage: python testdata/gen/main.py [module ...]   (default: every gen_*.py)
"""
import importlib
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    names = sys.argv[1:] or sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("gen_") and f.endswith(".py"))
    for name in names:
        mod = importlib.import_module(name)
        print(f"golden: {name}", flush=True)
        mod.generate()


if __name__ == "__main__":
    main()
