"""Time the per-image work of diffusers' train_text_to_image.py preprocessing
with PIL and torchvision, on the JPEG files that internal/data's
BenchmarkDecodeResize wrote, for a side-by-side images/s figure.

    ZD_BENCH_DIR=/tmp/zdbench go test ./internal/data -run '^$' -bench DecodeResize -cpu 1
    python testdata/bench/pil_resize.py /tmp/zdbench

For each WxH folder it reads the files into memory (the Go benchmark times
in-memory bytes too), then repeatedly decodes (Image.open + convert("RGB")),
resizes to 512 on the shorter side (antialiased bilinear), center-crops 512
and converts to a normalized float tensor, on one thread. Prints one JSON
line per folder.
"""
import io
import json
import os
import sys
import time

import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T


def bench(files, seconds=3.0):
    tf = T.Compose([
        T.Resize(512, interpolation=T.InterpolationMode.BILINEAR),
        T.CenterCrop(512),
        T.ToTensor(),
        T.Normalize([0.5], [0.5]),
    ])
    n = 0
    start = time.perf_counter()
    while True:
        for b in files:
            x = tf(Image.open(io.BytesIO(b)).convert("RGB"))
            assert x.shape == (3, 512, 512)
            n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    root = sys.argv[1]
    for sub in sorted(os.listdir(root)):
        folder = os.path.join(root, sub)
        names = sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))
        files = [open(os.path.join(folder, f), "rb").read() for f in names]
        rate = bench(files)
        print(json.dumps({"size": sub, "files": len(files), "img_per_s": round(rate, 2), "threads": 1,
                          "pillow": PIL.__version__, "torchvision": torchvision.__version__}))


if __name__ == "__main__":
    main()
