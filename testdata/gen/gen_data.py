"""Golden values for internal/data: image transforms and decoding as PIL and
torchvision do them for diffusers' train_text_to_image.py.

testdata/golden/data/resize.safetensors: small synthetic RGB images
(`src/<img>`, (H, W, 3) uint8 values as float32), and for each resolution and
filter torchvision's Resize(resolution) on the PIL image (`resized/<case>`,
(H', W', 3)), then CenterCrop + ToTensor + Normalize([0.5], [0.5])
(`out/<case>`, (3, R, R)), and for a_23 the same with a horizontal flip
after the crop (`flip/<case>`), the order train_text_to_image.py uses. Cases cover downscaling by non-integer and large factors, upscaling, both
aspect orientations and an image already at the resolution.

testdata/golden/data/decode.safetensors: image files PIL wrote (`file/<name>`,
the bytes widened to int64) and PIL's Image.open(...).convert("RGB") of them
(`rgb/<name>`, (H, W, 3)): PNG in modes RGBA, LA, P with transparency, L;
JPEG at 4:2:0, 4:2:2, 4:4:4 and grayscale; lossless WebP with alpha; GIF.

Needs torchvision (0.29.2, the newest on PyPI, declares torch >= 2.14 and was
used with torch 2.15; the PIL transforms used here run no compiled op).
"""
import io

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

import common

FILTERS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def synthetic(rng, h, w):
    """Smooth gradients, a sharp-edged disc and noise: every frequency a
    resampler can get wrong, and colour edges for chroma subsampling."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / 2.3 + y / 3.1)
    disc = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 3) ** 2
    img = np.stack([r, g, b], axis=-1)
    img[disc] = [250, 20, 60]
    img += rng.normal(0, 18, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def as_f32(a):
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32))


def resize_cases(rng):
    tensors = {}
    sources = {"a": (30, 47), "b": (64, 40), "c": (9, 13), "d": (33, 33), "e": (80, 60)}
    cases = [("a", 16), ("a", 23), ("a", 40), ("b", 16), ("b", 23), ("c", 16),
             ("d", 33), ("d", 20), ("e", 16), ("e", 37)]
    for name, (h, w) in sources.items():
        tensors[f"src/{name}"] = as_f32(synthetic(rng, h, w))
    for name, res in cases:
        img = Image.fromarray(tensors[f"src/{name}"].numpy().astype(np.uint8), "RGB")
        for fname, mode in FILTERS.items():
            case = f"{name}_{res}_{fname}"
            resized = T.Resize(res, interpolation=mode)(img)
            tensors[f"resized/{case}"] = as_f32(np.asarray(resized))
            cropped = T.CenterCrop(res)(resized)
            tail = T.Compose([T.ToTensor(), T.Normalize([0.5], [0.5])])
            tensors[f"out/{case}"] = tail(cropped)
            if name == "a" and res == 23:
                tensors[f"flip/{case}"] = tail(T.functional.hflip(cropped))
    return tensors


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decode_cases(rng):
    h, w = 29, 37  # odd sizes: the chroma planes' last sample covers one pixel
    rgb = synthetic(rng, h, w)
    alpha = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    base = Image.fromarray(rgb, "RGB")
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    gray = base.convert("L")
    pal = base.quantize(colors=64)
    pal.info["transparency"] = 3
    files = {
        "png_rgba": encode(rgba, "PNG"),
        "png_la": encode(Image.merge("LA", [gray, Image.fromarray(alpha, "L")]), "PNG"),
        "png_p_trns": encode(pal, "PNG", transparency=3),
        "png_l": encode(gray, "PNG"),
        "jpeg_420": encode(base, "JPEG", quality=90, subsampling="4:2:0"),
        "jpeg_422": encode(base, "JPEG", quality=90, subsampling="4:2:2"),
        "jpeg_444": encode(base, "JPEG", quality=90, subsampling="4:4:4"),
        "jpeg_gray": encode(gray, "JPEG", quality=90),
        "webp_lossless": encode(rgba, "WEBP", lossless=True, exact=True),
        "gif": encode(base.quantize(colors=128), "GIF"),
    }
    tensors = {}
    for name, data in files.items():
        tensors[f"file/{name}"] = torch.tensor(list(data), dtype=torch.int64)
        tensors[f"rgb/{name}"] = as_f32(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return tensors


def generate():
    rng = np.random.default_rng(20240611)
    common.save("data/resize.safetensors", resize_cases(rng), meta={"pillow": Image.__version__, "torchvision": torchvision.__version__})
    common.save("data/decode.safetensors", decode_cases(rng), meta={"pillow": Image.__version__, "torchvision": torchvision.__version__})
