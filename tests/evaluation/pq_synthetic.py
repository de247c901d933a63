"""Synthetic COCO-panoptic ground truth and perturbed predictions (tests and bench/pq.py).

Scenes: stuff bands, thing ellipses and rectangles painted over them, thin VOID seams and
VOID blobs, optionally a crowd region. Predictions are derived from the ground truth by
perturbations: missing segments, merged segments, shifted masks, relabelled segments,
false positives (some mostly on VOID or on crowd), and eroded masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import find_objects

# things 1-6, stuff 10-13; 7 appears only in predictions, 14 only in ground truth,
# 15 never (n counts only present categories).
CATEGORIES = (
    [{"id": i, "name": f"thing{i}", "isthing": 1, "color": [i * 30, 0, 0]} for i in range(1, 8)]
    + [{"id": i, "name": f"stuff{i}", "isthing": 0, "color": [0, i * 10, 0]} for i in range(10, 16)]
)
THINGS = [1, 2, 3, 4, 5, 6]
STUFF = [10, 11, 12, 13]
ONLY_PRED = 7
ONLY_GT = 14


def id2rgb(ids: np.ndarray) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype="<u4")
    return np.ascontiguousarray(ids.view(np.uint8).reshape(ids.shape + (4,))[..., :3])


def write_png(path: Path, ids: np.ndarray) -> None:
    Image.fromarray(id2rgb(ids)).save(path)


def _new_ids(rng: np.random.Generator, n: int, taken: set[int]) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        v = int(rng.integers(1, 256**3))
        if v not in taken:
            taken.add(v)
            out.append(v)
    return out


def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / max(ry, 1)) ** 2 + ((xx - cx) / max(rx, 1)) ** 2 <= 1.0


def random_scene(
    rng: np.random.Generator,
    h: int = 96,
    w: int = 128,
    n_things: int = 8,
    n_stuff: int = 3,
    crowd: bool = True,
    void: bool = True,
    only_gt: bool = False,
):
    """(id map int64 HxW, segments_info) of a random ground-truth scene. Areas from the map."""
    ids = np.zeros((h, w), dtype=np.int64)
    taken: set[int] = set()
    segs: list[dict] = []
    # stuff bands
    cuts = np.sort(rng.choice(np.arange(1, h), size=n_stuff - 1, replace=False)) if n_stuff > 1 else []
    bounds = [0, *[int(c) for c in cuts], h]
    stuff_cats = list(rng.choice(STUFF, size=n_stuff, replace=n_stuff > len(STUFF)))
    if only_gt:
        stuff_cats[-1] = ONLY_GT
    for (a, b), cat in zip(zip(bounds[:-1], bounds[1:]), stuff_cats):
        existing = [s for s in segs if s["category_id"] == int(cat)]
        if existing:  # one segment per stuff class, as in COCO
            ids[a:b] = existing[0]["id"]
            continue
        (sid,) = _new_ids(rng, 1, taken)
        ids[a:b] = sid
        segs.append({"id": sid, "category_id": int(cat), "iscrowd": 0})
    # things
    for _ in range(n_things):
        (sid,) = _new_ids(rng, 1, taken)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(3, max(4, h // 4)), rng.integers(3, max(4, w // 4))
        if rng.random() < 0.5:
            m = _ellipse(h, w, cy, cx, ry, rx)
        else:
            m = np.zeros((h, w), bool)
            m[max(0, cy - ry) : cy + ry, max(0, cx - rx) : cx + rx] = True
        ids[m] = sid
        segs.append({"id": sid, "category_id": int(rng.choice(THINGS)), "iscrowd": 0})
    if crowd:
        (sid,) = _new_ids(rng, 1, taken)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        m = _ellipse(h, w, cy, cx, rng.integers(4, h // 3), rng.integers(4, w // 3))
        ids[m] = sid
        segs.append({"id": sid, "category_id": int(rng.choice(THINGS)), "iscrowd": 1})
    if void:
        # seams between segments (as COCO's unlabeled borders) and a blob
        edge = np.zeros((h, w), bool)
        edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
        edge[1:, :] |= ids[1:, :] != ids[:-1, :]
        ids[edge & (rng.random((h, w)) < 0.7)] = 0
        ids[_ellipse(h, w, rng.integers(0, h), rng.integers(0, w), rng.integers(3, h // 5), rng.integers(3, w // 5))] = 0
    present, counts = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), counts.tolist()))
    segs = [dict(s, area=area[s["id"]]) for s in segs if s["id"] in area]
    boxes = find_objects(np.searchsorted(present, ids) + 1)
    for s in segs:
        ys, xs = boxes[int(np.searchsorted(present, s["id"]))]
        s["bbox"] = [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start]
    return ids, segs


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


PERTURBATIONS = ("keep", "drop", "shift", "relabel", "merge", "erode", "fp", "fp_void", "fp_crowd", "only_pred")


def perturb(
    rng: np.random.Generator,
    gt_ids: np.ndarray,
    gt_segs: list[dict],
    ops=PERTURBATIONS,
    p: float = 0.35,
    things=THINGS,
    stuff=STUFF,
    only_pred: int = ONLY_PRED,
):
    """A prediction (id map, segments_info with scores) derived from the ground truth.

    Each ground-truth segment is kept, dropped (pixels to VOID), shifted, relabelled,
    eroded or merged with another of its class, chosen at random among `ops`; then false
    positives are added ("fp" anywhere, "fp_void" on a VOID area, "fp_crowd" on a crowd
    region, "only_pred" of a class absent from the ground truth). `things` / `stuff`: the
    category pools for relabelling and false positives.
    """
    things, stuff = list(things), list(stuff)
    h, w = gt_ids.shape
    pred = np.zeros_like(gt_ids)
    taken = {s["id"] for s in gt_segs}
    cats: dict[int, int] = {}
    seg_ops = [o for o in ops if o in ("keep", "drop", "shift", "relabel", "merge", "erode")] or ["keep"]
    last_of_category: dict[int, int] = {}
    for s in gt_segs:
        m = gt_ids == s["id"]
        cat = s["category_id"]
        if s.get("iscrowd"):
            (nid,) = _new_ids(rng, 1, taken)
            pred[m & (rng.random((h, w)) < 0.8)] = nid
            cats[nid] = cat
            continue
        op = rng.choice(seg_ops) if rng.random() < p else "keep"
        (nid,) = _new_ids(rng, 1, taken)
        if op == "drop":
            continue
        if op == "shift":
            m = _shift(m, int(rng.integers(-6, 7)), int(rng.integers(-6, 7)))
        elif op == "relabel":
            pool = things if cat in things else stuff
            cat = int(rng.choice([c for c in pool if c != cat]))
        elif op == "erode":
            m = m & _shift(m, 1, 0) & _shift(m, -1, 0) & _shift(m, 0, 1) & _shift(m, 0, -1)
        elif op == "merge" and cat in last_of_category:
            nid = last_of_category[cat]  # one predicted segment covering two ground-truth ones
        pred[m] = nid
        cats[nid] = cat
        last_of_category[cat] = nid
    # VOID seams of the ground truth are mostly covered by the prediction
    fill = (pred == 0) & (gt_ids == 0) & (rng.random((h, w)) < 0.5)
    if fill.any():
        ys, xs = np.nonzero(fill)
        src = pred[np.clip(ys - 1, 0, h - 1), xs]
        pred[ys, xs] = src
    extra = [op for op in ops if op in ("fp", "fp_void", "fp_crowd", "only_pred") for _ in range(int(rng.integers(1, 3)))]
    for op in extra:
        (nid,) = _new_ids(rng, 1, taken)
        if op == "fp_void" and (gt_ids == 0).any():
            ys, xs = np.nonzero(gt_ids == 0)
            k = int(rng.integers(len(ys)))
            m = _ellipse(h, w, ys[k], xs[k], 4, 4) & ((gt_ids == 0) | (rng.random((h, w)) < 0.3))
            cat = int(rng.choice(things))
        elif op == "fp_crowd" and any(s.get("iscrowd") for s in gt_segs):
            crowd = [s for s in gt_segs if s.get("iscrowd")][-1]
            ys, xs = np.nonzero(gt_ids == crowd["id"])
            k = int(rng.integers(len(ys)))
            m = _ellipse(h, w, ys[k], xs[k], 5, 5)
            cat = crowd["category_id"] if rng.random() < 0.7 else int(rng.choice(things))
        else:
            m = _ellipse(h, w, rng.integers(0, h), rng.integers(0, w), rng.integers(2, 10), rng.integers(2, 10))
            cat = only_pred if op == "only_pred" else int(rng.choice(things + stuff))
        pred[m] = nid
        cats[nid] = cat
    return pred, segments_of(pred, cats, rng)


def segments_of(ids: np.ndarray, cats: dict[int, int], rng: np.random.Generator | None = None) -> list[dict]:
    present, counts = np.unique(ids, return_counts=True)
    segs = []
    for sid, area in zip(present.tolist(), counts.tolist()):
        if sid == 0:
            continue
        s = {"id": sid, "category_id": cats[sid], "area": area, "iscrowd": 0}
        if rng is not None:
            s["score"] = float(np.round(rng.uniform(0.5, 1.0), 4))
        segs.append(s)
    return segs


def write_set(root: Path, gt_items, pred_items, categories=CATEGORIES, name="set"):
    """Writes `gt.json`, `gt/`, `pred.json`, `pred/` under `root`; items are
    (image_id, id_map, segments). Returns (gt_json, gt_dir, pred_json, pred_dir)."""
    root = Path(root)
    gt_dir, pred_dir = root / f"{name}_gt", root / f"{name}_pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    images, gt_anns, pred_anns = [], [], []
    for image_id, ids, segs in gt_items:
        fn = f"{image_id:06d}.png"
        write_png(gt_dir / fn, ids)
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": ids.shape[0], "width": ids.shape[1]})
        gt_anns.append({"image_id": image_id, "file_name": fn, "segments_info": segs})
    for image_id, ids, segs in pred_items:
        fn = f"{image_id:06d}.png"
        write_png(pred_dir / fn, ids)
        pred_anns.append({"image_id": image_id, "file_name": fn, "segments_info": segs})
    gt = {"images": images, "annotations": gt_anns, "categories": list(categories)}
    pred = {"annotations": pred_anns, "categories": list(categories)}
    gt_json, pred_json = root / f"{name}_gt.json", root / f"{name}_pred.json"
    gt_json.write_text(json.dumps(gt))
    pred_json.write_text(json.dumps(pred))
    return gt_json, gt_dir, pred_json, pred_dir


def random_set(
    root: Path, seed: int, n_images: int = 6, h: int = 96, w: int = 128, ops=PERTURBATIONS, p: float = 0.35, name=None, **scene_kw
):
    """A random ground-truth set and its perturbed predictions, written under `root`."""
    rng = np.random.default_rng(seed)
    gt_items, pred_items = [], []
    for i in range(n_images):
        ids, segs = random_scene(rng, h, w, only_gt=(i == 0), **scene_kw)
        pids, psegs = perturb(rng, ids, segs, ops=ops, p=p)
        gt_items.append((i + 1, ids, segs))
        pred_items.append((i + 1, pids, psegs))
    return write_set(root, gt_items, pred_items, name=name or f"seed{seed}")
