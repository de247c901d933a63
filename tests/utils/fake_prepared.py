"""Writes tiny prepared datasets (the layout of docs/DESIGN.md) for tests.

Each image: "sky" over "ground" (stuff), plus a few things: axis-aligned "box"es and
"disc"s in fixed colours; optionally one crowd "box" segment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [
    {"id": 1, "name": "box", "isthing": 1, "color": [220, 20, 60], "supercategory": "thing"},
    {"id": 2, "name": "disc", "isthing": 1, "color": [0, 80, 200], "supercategory": "thing"},
    {"id": 3, "name": "sky", "isthing": 0, "color": [120, 180, 240], "supercategory": "stuff"},
    {"id": 4, "name": "ground", "isthing": 0, "color": [120, 90, 40], "supercategory": "stuff"},
]
COLORS = {1: (230, 40, 40), 2: (30, 60, 220), 3: (150, 200, 250), 4: (110, 80, 40)}


def id2rgb(ids: np.ndarray) -> np.ndarray:
    out = np.zeros(ids.shape + (3,), dtype=np.uint8)
    v = ids.astype(np.int64).copy()
    for c in range(3):
        out[..., c] = v % 256
        v //= 256
    return out


def draw_scene(rng: np.random.Generator, h: int, w: int, n_things: int, crowd: bool):
    ids = np.zeros((h, w), dtype=np.int32)
    segs = []
    horizon = int(rng.integers(h // 3, 2 * h // 3))
    ids[:horizon] = 1
    ids[horizon:] = 2
    segs += [{"id": 1, "category_id": 3, "iscrowd": 0}, {"id": 2, "category_id": 4, "iscrowd": 0}]
    yy, xx = np.mgrid[:h, :w]
    for k in range(n_things + int(crowd)):
        sid = 10 + k
        cat = 1 if (k % 2 == 0 or k == n_things) else 2
        s = int(rng.integers(min(h, w) // 6, min(h, w) // 3))
        y0, x0 = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        if cat == 1:
            region = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s)
        else:
            r = s / 2
            region = (yy - y0 - r) ** 2 + (xx - x0 - r) ** 2 <= r * r
        ids[region] = sid
        segs.append({"id": sid, "category_id": cat, "iscrowd": int(k == n_things)})
    image = np.zeros((h, w, 3), dtype=np.uint8)
    for s in segs:
        image[ids == s["id"]] = COLORS[s["category_id"]]
    noise = rng.integers(-12, 13, size=image.shape)
    image = np.clip(image.astype(np.int32) + noise, 0, 255).astype(np.uint8)
    present = []
    for s in segs:
        m = ids == s["id"]
        if m.any():
            ys, xs = np.nonzero(m)
            s = dict(s, area=int(m.sum()), bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)])
            present.append(s)
    return image, ids, present


def write_prepared(root, n_train: int = 4, n_val: int = 2, size=(64, 80), n_things: int = 2, crowd: bool = True, seed: int = 0) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "panoptic" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            image, ids, segs = draw_scene(rng, h, w, n_things, crowd)
            name = f"{split}_{i:03d}"
            Image.fromarray(image).save(root / "images" / split / f"{name}.png")
            Image.fromarray(id2rgb(ids)).save(root / "panoptic" / split / f"{name}.png")
            images.append({"id": i + 1, "file_name": f"{name}.png", "height": h, "width": w})
            anns.append({"image_id": i + 1, "file_name": f"{name}.png", "segments_info": segs})
        (root / "annotations" / f"panoptic_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES})
        )
    (root / "categories.json").write_text(json.dumps(CATEGORIES))
    (root / "dataset.yaml").write_text("name: fake\n")
    return root


# A very small panoptic model and small images: a training step takes a fraction of a second.
TINY_SETTINGS = [
    "model_overrides={enc_layers: 1, dec_layers: 2, dim_feedforward: 128, num_queries: 8, dropout: 0.0}",
    "data.scales=[64]",
    "data.max_size=96",
    "data.crop_resize=[64]",
    "data.crop_min=48",
    "data.crop_max=64",
    "data.eval_size=64",
    "data.eval_max_size=96",
    "optim.warmup_steps=0",
    "log_every=1",
    "eval.every=-1",
]


def tiny_config(data_dir, out_dir, *settings, **top):
    """A TrainConfig from the `tiny` preset with TINY_SETTINGS, then `settings` (key=value)."""
    from panoptic_detr.engine.train_config import load_train_config, parse_overrides

    from panoptic_detr.config import _deep_update

    overrides = parse_overrides(TINY_SETTINGS + list(settings))
    overrides.setdefault("data", {})["workers"] = 0
    _deep_update(overrides, dict(data_dir=str(data_dir), out_dir=str(out_dir), progress=False, **top))
    return load_train_config("tiny", overrides)


def one_thread():
    """Context manager: torch on one thread (2 busy shared cores make OpenMP threads thrash)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def cm():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)

    return cm()
