"""Benchmark: `prepare` throughput without a teacher on 640x480 images (issue 3: >= 30 images/s
on one core). Writes a synthetic CVAT-style export (JPEG images, 8 polygon instances of
~40 vertices each, one RLE) to a temporary folder, prepares it, and prints images/s.

    .venv/bin/python bench/prepare.py [--images 200] [--compress-level 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from panoptic_detr.data.prepare import PrepareOptions, prepare  # noqa: E402

W, H = 640, 480


def make_export(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    Y, X = np.mgrid[0:H, 0:W]
    images, anns = [], []
    classes = ["aac_blocks", "rcc_hume_pipes", "water_tank", "fire_extinguishers", "hollow_concrete_blocks"]
    for i in range(1, n + 1):
        img = (np.sin(X / rng.uniform(5, 40))[..., None] * 60 + 120 + rng.normal(0, 20, (H, W, 3))).clip(0, 255).astype(np.uint8)
        name = f"img_{i:04d}.jpg"
        Image.fromarray(img).save(root / "images" / name, quality=90)
        images.append({"id": i, "file_name": name, "width": W, "height": H})
        for k in range(8):
            cx, cy, r = rng.uniform(50, W - 50), rng.uniform(50, H - 50), rng.uniform(20, 90)
            t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
            rad = r * (1 + 0.25 * np.sin(3 * t + rng.uniform(0, 6)))
            poly = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).clip(0, [W, H]).round(2).ravel().tolist()
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1 + (k % 5), "segmentation": [poly],
                         "bbox": [0.0, 0.0, 1.0, 1.0], "area": 1.0, "iscrowd": 0})
    cats = [{"id": j + 1, "name": c, "supercategory": ""} for j, c in enumerate(classes)]
    js = root / "coco.json"
    js.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return js


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--compress-level", type=int, default=1)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says
        except OSError:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        js = make_export(tmp / "raw", args.images)
        t0, c0 = time.perf_counter(), time.process_time()
        s = prepare(PrepareOptions("demo", tmp / "ds", things=[js], progress=False, compress_level=args.compress_level),
                    log=lambda m: None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = sum(s.images.values())
        png = sum(p.stat().st_size for p in (tmp / "ds" / "panoptic").rglob("*.png")) / n / 1024
    print(f"prepare (no teacher, {W}x{H}, 8 polygons/image, PNG level {args.compress_level}): "
          f"{n / wall:.1f} images/s wall, {n / cpu:.1f} images/s per CPU-second "
          f"({n} images in {wall:.2f} s; {png:.1f} KiB per panoptic PNG) [target >= 30 images/s]")


if __name__ == "__main__":
    main()
