"""Golden file for internal/bucket: kohya's aspect-ratio buckets, computed by
the rules of sd-scripts (library/model_util.py make_bucket_resolutions and
library/train_util.py BucketManager.select_bucket, the upscaling branch)
written out here in plain Python, so it needs neither torch nor numpy.

File (testdata/golden/bucket/buckets.json): for each rule set (resolution,
min, max, step) the sorted bucket table, and for each image size the bucket
chosen and the size the image is resized to before the crop.

Run alone (`python testdata/gen/gen_buckets.py`) or through main.py.
"""
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "bucket", "buckets.json")


def make_bucket_resolutions(max_reso, min_size=256, max_size=1024, divisible=64):
    # sd-scripts library/model_util.py make_bucket_resolutions.
    max_width, max_height = max_reso
    max_area = (max_width // divisible) * (max_height // divisible)
    resos = set()
    size = int(math.sqrt(max_area)) * divisible
    resos.add((size, size))
    size = min_size
    while size <= max_size:
        width = size
        height = min(max_size, (max_area // (width // divisible)) * divisible)
        resos.add((width, height))
        resos.add((height, width))
        size += divisible
    resos = list(resos)
    resos.sort()
    return resos


def select_bucket(resos, image_width, image_height):
    # sd-scripts library/train_util.py BucketManager.select_bucket with
    # no_upscale False; np.abs(...).argmin() is the first smallest error.
    aspect_ratio = image_width / image_height
    reso = (image_width, image_height)
    if reso not in set(resos):
        errs = [abs(w / h - aspect_ratio) for w, h in resos]
        reso = resos[errs.index(min(errs))]
    ar_reso = reso[0] / reso[1]
    if aspect_ratio > ar_reso:
        scale = reso[1] / image_height
    else:
        scale = reso[0] / image_width
    resized = (int(image_width * scale + 0.5), int(image_height * scale + 0.5))
    return resos.index(reso), resized


RULES = [(512, 256, 1024, 64), (768, 384, 1280, 64), (256, 128, 512, 32), (1024, 512, 2048, 64)]
SIZES = [(512, 512), (640, 480), (480, 640), (1920, 1080), (1080, 1920), (3000, 1000), (1000, 3000),
         (10000, 100), (100, 10000), (1, 1), (37, 61), (800, 533), (1024, 768), (384, 640), (640, 384),
         (4032, 3024), (3024, 4032), (2048, 1365), (333, 999), (1234, 567), (700, 700), (513, 512),
         # aspect ratios exactly between two buckets: the first bucket wins (argmin)
         (27, 8), (27, 91), (23, 35), (35, 16), (16, 15), (16, 17), (9, 64), (15, 8)]


def generate():
    cases = []
    for res, lo, hi, step in RULES:
        resos = make_bucket_resolutions((res, res), lo, hi, step)
        picks = []
        for w, h in SIZES:
            b, (rw, rh) = select_bucket(resos, w, h)
            picks.append({"width": w, "height": h, "bucket": b, "resized": [rw, rh]})
        cases.append({"resolution": res, "min": lo, "max": hi, "step": step,
                      "buckets": [[w, h] for w, h in resos], "images": picks})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    generate()
