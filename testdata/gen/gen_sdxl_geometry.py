"""Golden file for internal/prepare: SDXL's per-image micro-conditioning as
diffusers' examples/text_to_image/train_text_to_image_sdxl.py
(preprocess_train) records it without buckets: original_size is the image's
(height, width) before resizing; the image is resized with
transforms.Resize(resolution) (shorter side to resolution) and, with
--center_crop, cropped at (y1, x1) = (max(0, int(round((h - resolution) /
2.0))), max(0, int(round((w - resolution) / 2.0)))) of the resized image,
which is crop_top_left. The script is not part of the diffusers package, so
its lines are written out here and run on blank PIL images with torchvision.

File (testdata/golden/prepare/sdxl_geometry.json): for each resolution and
source size (width, height), original_size and crop_top_left.

Run through main.py (`main.py gen_sdxl_geometry`).
"""
import json
import os

from PIL import Image
from torchvision import transforms

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "prepare", "sdxl_geometry.json")

RESOLUTIONS = [32, 64]
SIZES = [(32, 32), (48, 32), (32, 48), (45, 32), (32, 45), (77, 51), (51, 77), (100, 33), (33, 100),
         (64, 64), (97, 64), (64, 131), (129, 67), (300, 200)]


def preprocess(width, height, resolution):
    # train_text_to_image_sdxl.py preprocess_train, --center_crop, no flip.
    image = Image.new("RGB", (width, height))
    original_size = (image.height, image.width)
    image = transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR)(image)
    y1 = max(0, int(round((image.height - resolution) / 2.0)))
    x1 = max(0, int(round((image.width - resolution) / 2.0)))
    image = transforms.CenterCrop(resolution)(image)
    assert image.size == (resolution, resolution)
    return original_size, (y1, x1)


def generate():
    cases = []
    for r in RESOLUTIONS:
        for w, h in SIZES:
            orig, crop = preprocess(w, h, r)
            cases.append({"resolution": r, "width": w, "height": h, "original_size": list(orig), "crop_top_left": list(crop)})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"cases": cases}, f, indent=1)
        f.write("\n")
