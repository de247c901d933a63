"""Synthetic construction-site scenes, written in the raw forms users have (CLI `synth`).

A scene: sky (gradient, clouds) over ground (dirt, gravel or sand, sometimes a road,
grass or a puddle), often a brick or concrete wall, a building and trees on the horizon;
in front, a few thing instances standing on the ground, drawn back to front so that they
occlude each other (every kept instance stays at least 45% visible). Each image has one
"primary" class (its export folder) with 1-4 instances, sometimes one instance of
another class. All drawing is vectorised numpy on the instance's window.

`classes="demo"`: aac_blocks, rcc_hume_pipes, water_tank, fire_extinguishers,
hollow_concrete_blocks (construction materials; class map preset `demo`).
`classes="base"`: crate, barrel, cone, ball, vehicle (generic objects for the base model;
preset `base`). Both presets share the stuff groups sky, ground, wall, building, plant,
water (+ misc).

Output of `synth(out, n)`::

    out/things/<folder>/coco.json           CVAT-style "COCO 1.0" export of one class folder:
    out/things/<folder>/images/img_NNN.png  image and annotation ids restart at 1 per folder,
                                            polygons (some instances as RLE, compressed or
                                            not), float bbox/area, `attributes`; the
                                            water_tank / vehicle folders carry an alias name
    out/stuff/panoptic.json, stuff/panoptic/*.png   the true stuff as COCO-panoptic with COCO
                                            category ids and names (images named by their
                                            path under things/), for `prepare --stuff-truth`
    out/truth/panoptic.json, truth/panoptic/*.png, truth/categories.json
                                            the full truth in the class map's id space, named as
                                            `prepare` names the images (`<class>_img_NNN.png`)
    out/class-map.yaml, out/synth.yaml      the class map to prepare with, and what was drawn

Deterministic: image i depends only on (seed, i, classes, size), not on the image count.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from panoptic_detr.data.categories import RESOURCES, coco_panoptic_categories
from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.formats.common import Annotation, annotation_rle, clip_polygon, decode_rle, encode_mask, polygon_area
from panoptic_detr.data.formats.coco_panoptic import segments_from_id_map, write_id_png
from panoptic_detr.errors import DataError
from panoptic_detr.utils.io import atomic_dir

__all__ = ["synth", "render_scene", "Scene", "DEMO_CLASSES", "BASE_CLASSES", "FOLDER_NAMES", "STUFF_NAMES"]

DEMO_CLASSES = ("aac_blocks", "rcc_hume_pipes", "water_tank", "fire_extinguishers", "hollow_concrete_blocks")
BASE_CLASSES = ("crate", "barrel", "cone", "ball", "vehicle")
CLASS_SETS = {"demo": DEMO_CLASSES, "base": BASE_CLASSES}
# export folders named differently from their class (a quirk of the real exports)
FOLDER_NAMES = {"water_tank": "water_tank_(sintex)", "vehicle": "vehicle_(car_truck)"}

# stuff label index -> COCO-panoptic category name
STUFF_NAMES = (
    "sky-other-merged",  # 0
    "dirt-merged",  # 1
    "gravel",  # 2
    "sand",  # 3
    "road",  # 4
    "pavement-merged",  # 5
    "wall-brick",  # 6
    "wall-other-merged",  # 7
    "building-other-merged",  # 8
    "tree-merged",  # 9
    "grass-merged",  # 10
    "water-other",  # 11
)
SKY, DIRT, GRAVEL, SAND, ROAD, PAVEMENT, BRICK, CONCRETE, BUILDING, TREE, GRASS, WATER = range(12)


# ------------------------------------------------------------------------ noise helpers
def _noise(rng, h: int, w: int, cell_y: float, cell_x: float | None = None) -> np.ndarray:
    """Smooth value noise in [0, 1] (bicubic upsampling of a random grid), float32 [h, w]."""
    cell_x = cell_y if cell_x is None else cell_x
    gh = int(math.ceil(h / cell_y)) + 3
    gw = int(math.ceil(w / cell_x)) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    big = Image.fromarray(grid, "F").resize((int(gw * cell_x), int(gh * cell_y)), Image.BICUBIC)
    arr = np.asarray(big)
    oy = int(rng.integers(0, max(1, int(cell_y))))
    ox = int(rng.integers(0, max(1, int(cell_x))))
    return np.clip(arr[oy : oy + h, ox : ox + w], 0.0, 1.0)


def _fractal(rng, h: int, w: int, cells=(40, 16, 6), weights=(0.55, 0.3, 0.15)) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for c, wt in zip(cells, weights):
        out += wt * _noise(rng, h, w, c)
    return out / sum(weights)


def _noise1d(rng, n: int, cell: float) -> np.ndarray:
    return _noise(rng, 1, n, 1, cell)[0] if n else np.zeros(0, np.float32)


def _col(rng, base, jitter=12.0) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-jitter, jitter, 3).astype(np.float32), 0, 255)


# ------------------------------------------------------------------------------- stuff
def _layout(rng, H: int, W: int, X: np.ndarray, Y: np.ndarray):
    """Stuff labels (indices into STUFF_NAMES) and the horizon height."""
    hz0 = H * rng.uniform(0.28, 0.46)
    hz = hz0 + (_noise1d(rng, W, W / 3) - 0.5) * 0.05 * H
    lab = np.full((H, W), rng.choice([DIRT, GRAVEL, SAND], p=[0.45, 0.35, 0.2]), np.uint8)
    sky = Y < hz[None, :]
    lab[sky] = SKY
    below = ~sky
    t = np.clip((Y - hz0) / max(H - hz0, 1.0), 0, 1)
    if rng.random() < 0.35:  # a road or paved strip in perspective
        xc_bottom = W * rng.uniform(0.15, 0.85)
        xc_top = W * rng.uniform(0.3, 0.7)
        half_bottom = W * rng.uniform(0.15, 0.3)
        xc = xc_top + (xc_bottom - xc_top) * t
        half = 0.02 * W + (half_bottom - 0.02 * W) * t
        lab[below & (np.abs(X - xc) < half)] = ROAD if rng.random() < 0.6 else PAVEMENT
    if rng.random() < 0.3:  # grass patches
        g = _noise(rng, H, W, H / 4)
        lab[below & (g > 0.62) & (lab != ROAD) & (lab != PAVEMENT)] = GRASS
    if rng.random() < 0.25:  # a puddle
        cx, cy = W * rng.uniform(0.15, 0.85), hz0 + (H - hz0) * rng.uniform(0.35, 0.8)
        rx = W * rng.uniform(0.1, 0.22)
        ry = rx * rng.uniform(0.2, 0.35)
        wob = _noise(rng, H, W, 12) * 0.35
        lab[below & (((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 + wob < 1.0)] = WATER
    struct = {}
    if rng.random() < 0.55:  # a building behind
        x0 = W * rng.uniform(-0.1, 0.6)
        x1 = x0 + W * rng.uniform(0.25, 0.6)
        tops = hz0 - H * rng.uniform(0.14, 0.36, size=3)
        edges = np.linspace(x0, x1, 4)
        top = np.select([X < edges[1], X < edges[2]], [tops[0], tops[1]], tops[2])
        lab[(X >= x0) & (X < x1) & (Y >= top) & (Y < hz[None, :] + 1)] = BUILDING
        struct["building"] = (x0, float(tops.min()))
    if rng.random() < 0.5:  # trees on the horizon
        n = int(rng.integers(1, 4))
        field_ = _noise(rng, H, W, 10) * 0.45
        for _ in range(n):
            cx = W * rng.uniform(0, 1)
            r = H * rng.uniform(0.07, 0.15)
            cy = hz0 - r * rng.uniform(0.05, 0.6)
            d = np.sqrt(((X - cx) / (r * 1.2)) ** 2 + ((Y - cy) / r) ** 2) + field_
            lab[(d < 1.0) & (Y < hz[None, :] + 2)] = TREE
    if rng.random() < 0.6:  # a wall in front of them
        if rng.random() < 0.4:
            x0, x1 = -1.0, W + 1.0
        else:
            x0 = W * rng.uniform(-0.2, 0.5)
            x1 = x0 + W * rng.uniform(0.3, 0.8)
        top = hz0 - H * rng.uniform(0.05, 0.15)
        bottom = hz0 + H * rng.uniform(0.01, 0.06)
        lab[(X >= x0) & (X < x1) & (Y >= top) & (Y < bottom)] = BRICK if rng.random() < 0.6 else CONCRETE
        struct["wall"] = (x0, top)
    return lab, hz0, struct


def _paint_stuff(rng, lab: np.ndarray, hz0: float, X, Y, struct) -> np.ndarray:
    H, W = lab.shape
    img = np.zeros((H, W, 3), np.float32)
    rows = np.bincount((lab.astype(np.int64) * H + np.arange(H)[:, None]).ravel(), minlength=len(STUFF_NAMES) * H)
    rows = rows.reshape(len(STUFF_NAMES), H) > 0
    present = set(np.flatnonzero(rows.any(1)).tolist())

    def band(label):
        """Textures are computed on the rows where the label occurs only."""
        r = np.flatnonzero(rows[label])
        r0, r1 = int(r[0]), int(r[-1]) + 1
        m = lab[r0:r1] == label
        sub = img[r0:r1]

        def put(_label, colour):
            np.copyto(sub, colour, where=m[..., None])

        return X[r0:r1], Y[r0:r1], r1 - r0, put

    if SKY in present:
        Xb, Yb, Hb, put = band(SKY)
        overcast = rng.random() < 0.2
        top = _col(rng, (150, 155, 165) if overcast else (65, 125, 200), 15)
        hor = _col(rng, (200, 200, 205) if overcast else (190, 215, 235), 10)
        tt = np.clip(Yb / max(hz0, 1.0), 0, 1)[..., None]
        col = top * (1 - tt) + hor * tt
        c = np.clip((_fractal(rng, Hb, W, (H / 3, H / 8, 6), (0.5, 0.35, 0.15)) - rng.uniform(0.45, 0.62)) * 3.0, 0, 1)
        col = col * (1 - c[..., None]) + _col(rng, (245, 245, 248), 5) * c[..., None]
        put(SKY, col)
    if DIRT in present:
        Xb, Yb, Hb, put = band(DIRT)
        base = _col(rng, (128, 96, 66), 14)
        n = _fractal(rng, Hb, W, (30, 10, 3))
        col = base * (0.7 + 0.6 * n)[..., None]
        spots = _noise(rng, Hb, W, 2.5) > 0.78
        col[spots] *= 0.7
        put(DIRT, col)
    if GRAVEL in present:
        Xb, Yb, Hb, put = band(GRAVEL)
        base = _col(rng, (142, 138, 130), 12)
        peb = _noise(rng, Hb, W, 2.2)
        tint = _noise(rng, Hb, W, 3.0)
        col = base * (0.55 + 0.8 * peb)[..., None]
        col[..., 0] += (tint - 0.5) * 25
        put(GRAVEL, col)
    if SAND in present:
        Xb, Yb, Hb, put = band(SAND)
        base = _col(rng, (206, 182, 134), 10)
        rip = 0.05 * np.sin(Yb * rng.uniform(0.5, 0.9) + 6 * _noise(rng, Hb, W, 20))
        col = base * (0.9 + 0.15 * _fractal(rng, Hb, W, (24, 8, 2)) + rip)[..., None]
        put(SAND, col)
    if ROAD in present:
        Xb, Yb, Hb, put = band(ROAD)
        base = _col(rng, (72, 72, 75), 8)
        col = base * (0.85 + 0.3 * _noise(rng, Hb, W, 1.5))[..., None]
        put(ROAD, col)
    if PAVEMENT in present:
        Xb, Yb, Hb, put = band(PAVEMENT)
        base = _col(rng, (168, 162, 152), 10)
        s = rng.uniform(10, 18)
        seam = ((Yb % s) < 1.2) | (((Xb + (np.floor(Yb / s) % 2) * s / 2) % (1.6 * s)) < 1.2)
        col = base * (0.9 + 0.15 * _noise(rng, Hb, W, 2))[..., None]
        col[seam] *= 0.7
        put(PAVEMENT, col)
    if BRICK in present:
        Xb, Yb, Hb, put = band(BRICK)
        bh = rng.uniform(5, 9)
        bw = bh * rng.uniform(2.0, 2.6)
        x0, top = struct.get("wall", (0.0, 0.0))
        yy = Yb - top
        row = np.floor(yy / bh)
        xx = Xb - x0 + (row % 2) * bw / 2
        colno = np.floor(xx / bw)
        table = rng.uniform(0.75, 1.15, 997).astype(np.float32)
        var = table[((row * 31 + colno * 17) % 997).astype(np.int64)]
        brick = _col(rng, (158, 72, 50), 18)
        col = brick * (var * (0.9 + 0.2 * _noise(rng, Hb, W, 2)))[..., None]
        mortar = ((yy % bh) < 1.3) | ((xx % bw) < 1.3)
        col[mortar] = _col(rng, (190, 184, 172), 8)
        put(BRICK, col)
    if CONCRETE in present:
        Xb, Yb, Hb, put = band(CONCRETE)
        base = _col(rng, (150, 150, 146), 12)
        col = base * (0.82 + 0.3 * _fractal(rng, Hb, W, (20, 6, 2)))[..., None]
        px, py = rng.uniform(30, 50), rng.uniform(20, 32)
        x0, top = struct.get("wall", (0.0, 0.0))
        seam = (((Xb - x0) % px) < 1.2) | (((Yb - top) % py) < 1.2)
        holes = ((((Xb - x0) % px) - px / 4) ** 2 + (((Yb - top) % py) - py / 2) ** 2) < 2.0
        col[seam] *= 0.72
        col[holes] *= 0.45
        put(CONCRETE, col)
    if BUILDING in present:
        Xb, Yb, Hb, put = band(BUILDING)
        facade = _col(rng, [(190, 180, 165), (160, 160, 166), (205, 195, 175)][int(rng.integers(3))], 10)
        col = facade * (0.92 + 0.12 * _noise(rng, Hb, W, 4))[..., None]
        x0, top = struct.get("building", (0.0, 0.0))
        cw, ch = rng.uniform(12, 22), rng.uniform(14, 24)
        u, v = (Xb - x0) % cw / cw, (Yb - top) % ch / ch
        if rng.random() < 0.7:  # windows
            win = (u > 0.22) & (u < 0.78) & (v > 0.25) & (v < 0.8)
            glass = _col(rng, (70, 85, 105), 10) * (0.8 + 0.4 * v)[..., None]
            col = np.where(win[..., None], glass, col)
        else:  # an unfinished concrete frame: dark openings between slabs and columns
            hole = (u > 0.15) & (v > 0.3)
            col = np.where(hole[..., None], col * 0.35, col)
        put(BUILDING, col)
    if TREE in present:
        Xb, Yb, Hb, put = band(TREE)
        leaf = _col(rng, (52, 98, 44), 12)
        col = leaf * (0.55 + 0.8 * _noise(rng, Hb, W, 3) * (0.6 + 0.4 * _noise(rng, Hb, W, 12)))[..., None]
        put(TREE, col)
    if GRASS in present:
        Xb, Yb, Hb, put = band(GRASS)
        g = _col(rng, (84, 138, 58), 12)
        col = g * (0.65 + 0.6 * _noise(rng, Hb, W, 6, 1.2))[..., None]
        put(GRASS, col)
    if WATER in present:
        Xb, Yb, Hb, put = band(WATER)
        wcol = _col(rng, (72, 102, 126), 10)
        rip = 0.12 * np.sin(Yb * rng.uniform(0.8, 1.4) + 4 * _noise(rng, Hb, W, 10))
        col = wcol * (0.95 + rip)[..., None]
        put(WATER, col)
    return img


# ------------------------------------------------------------------------------ things
@dataclass
class _Shape:
    polys: list  # list of [N, 2] arrays (image coordinates)
    paint: Callable  # paint(X, Y) -> [h, w, 3] float colours (X, Y: window coordinate grids)
    yb: float  # where it stands (depth order)
    cx: float


def _ellipse(cx, cy, rx, ry, t0=0.0, t1=2 * math.pi, n=36) -> np.ndarray:
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _mirror(shape: _Shape, cx: float) -> _Shape:
    polys = [np.stack([2 * cx - p[:, 0], p[:, 1]], 1) for p in shape.polys]
    paint = shape.paint
    return _Shape(polys, lambda X, Y: paint(2 * cx - X, Y), shape.yb, shape.cx)


def _grain(rng, shape, cell=1.5, amp=0.12):
    """Per-pixel texture noise factor for a window, generated lazily at paint time."""
    h, w = shape
    return 1.0 + amp * (_noise(rng, h, w, cell) - 0.5) * 2


def _box(rng, x0, yb, w, h, dx, dy, front_fn, top_col, side_col, seams=None):
    """A box seen from the front-right-top: hexagon outline, three shaded faces."""
    poly = np.array([[x0, yb], [x0 + w, yb], [x0 + w + dx, yb - dy], [x0 + w + dx, yb - h - dy], [x0 + dx, yb - h - dy], [x0, yb - h]])
    sub = np.random.default_rng(rng.integers(1 << 63))

    def paint(X, Y):
        u = X - x0
        front = (u <= w) & (Y >= yb - h)
        side = (u > w) & (Y >= (yb - h) - (u - w) * dy / max(dx, 1e-6))
        top = ~front & ~side
        out = np.empty(X.shape + (3,), np.float32)
        out[:] = top_col
        out[side] = side_col
        f = front_fn(u, yb - Y)
        out[front] = f[front]
        # seams that run across the top and side faces
        if seams is not None:
            seams(out, u, yb - Y, top, side)
        return out * _grain(sub, X.shape)[..., None]

    return _Shape([poly], paint, yb, x0 + w / 2)


def _make_aac(rng, cx, yb, s):
    w = s * rng.uniform(1.0, 1.5)
    h = s * rng.uniform(0.55, 0.9)
    dx, dy = w * rng.uniform(0.18, 0.3), h * rng.uniform(0.15, 0.3)
    x0 = cx - w / 2
    base = _col(rng, (214, 214, 206), 8)
    nr = int(rng.integers(3, 6))
    pallet = h * 0.1 if rng.random() < 0.6 else 0.0
    bh = (h - pallet) / nr
    bw = bh * rng.uniform(2.4, 3.0)
    wood = _col(rng, (150, 112, 70), 10)
    sub = np.random.default_rng(rng.integers(1 << 63))

    def front(u, v):
        col = np.empty(u.shape + (3,), np.float32)
        col[:] = base
        vv = v - pallet
        row = np.floor(vv / bh)
        seam = ((vv % bh) < 1.1) | (((u + (row % 2) * bw / 2) % bw) < 1.1)
        col[seam] *= 0.78
        pores = _noise(sub, *u.shape, 1.0) > 0.86
        col[pores] *= 0.88
        if pallet:
            pl = v < pallet
            col[pl] = wood
            col[pl & ((u % (w / 5)) < w / 14)] *= 0.35
        return col

    def seams(out, u, v, top, side):
        vv = v - pallet + (np.maximum(u - w, 0)) * dy / max(dx, 1e-6)
        m = side & ((vv % bh) < 1.1)
        out[m] *= 0.8
        tm = top & (((u - (v - h) * dx / max(dy, 1e-6)) % bw) < 1.1)
        out[tm] *= 0.85

    return _box(rng, x0, yb, w, h, dx, dy, front, base * 1.1, base * 0.76, seams)


def _make_hollow(rng, cx, yb, s):
    nc, nr = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    bw = s * rng.uniform(0.38, 0.48)
    bh = bw * rng.uniform(0.45, 0.55)
    w, h = nc * bw, nr * bh
    dx, dy = w * rng.uniform(0.12, 0.25), h * rng.uniform(0.15, 0.3)
    x0 = cx - w / 2
    base = _col(rng, (128, 127, 121), 10)
    hole_col = _col(rng, (42, 42, 40), 5)

    def front(u, v):
        col = np.empty(u.shape + (3,), np.float32)
        col[:] = base
        fu, fv = (u % bw) / bw, (v % bh) / bh
        seam = (fu < 0.03) | (fv < 0.05)
        hole = (fv > 0.22) & (fv < 0.78) & (((fu > 0.12) & (fu < 0.45)) | ((fu > 0.55) & (fu < 0.88)))
        col[seam] *= 0.7
        col[hole] = hole_col * (0.8 + 0.4 * fv[hole])[:, None]
        return col

    def seams(out, u, v, top, side):
        m = side & ((((v + np.maximum(u - w, 0) * dy / max(dx, 1e-6)) % bh) / bh) < 0.05)
        out[m] *= 0.75

    return _box(rng, x0, yb, w, h, dx, dy, front, base * 1.12, base * 0.72, seams)


def _make_pipe(rng, cx, yb, s):
    D = s * rng.uniform(0.5, 0.75)
    L = D * rng.uniform(1.6, 2.6)
    a = D / 2 * rng.uniform(0.25, 0.45)
    x0 = cx - L / 2
    yc = yb - D / 2
    polys = [np.array([[x0, yc - D / 2], [x0 + L, yc - D / 2], [x0 + L, yc + D / 2], [x0, yc + D / 2]]),
             _ellipse(x0, yc, a, D / 2), _ellipse(x0 + L, yc, a, D / 2)]
    conc = _col(rng, (176, 170, 158), 10)
    inner = _col(rng, (48, 46, 44), 6)
    ring = rng.uniform(0.72, 0.84)
    sub = np.random.default_rng(rng.integers(1 << 63))

    def paint(X, Y):
        v = np.clip((Y - yc) / (D / 2), -1, 1)
        shade = 0.5 + 0.5 * np.sqrt(1 - v**2) + 0.18 * np.exp(-(((v + 0.45) / 0.2) ** 2))
        col = conc * shade[..., None]
        r = np.sqrt(((X - (x0 + L)) / a) ** 2 + ((Y - yc) / (D / 2)) ** 2)
        end = r <= 1.0
        face = end & (r > ring)
        hole = end & (r <= ring)
        col[face] = conc * 1.05
        t = ((X - (x0 + L)) / a)[hole]
        col[hole] = inner * (0.7 + 0.5 * np.clip(t + 0.5, 0, 1))[:, None]
        return col * _grain(sub, X.shape, 1.2, 0.1)[..., None]

    return _Shape(polys, paint, yb, cx)


def _make_tank(rng, cx, yb, s):
    Wt = s * rng.uniform(0.6, 0.85)
    Ht = Wt * rng.uniform(0.9, 1.3)
    r = Wt / 2
    ryb = Wt * 0.1
    ryd = Wt * rng.uniform(0.18, 0.26)
    ytop = yb - ryb - Ht
    body = np.concatenate([_ellipse(cx, yb - ryb, r, ryb, 0, math.pi, 18), _ellipse(cx, ytop, r, ryd, math.pi, 2 * math.pi, 24)])
    lid = np.array([[cx - 0.16 * Wt, ytop - ryd * 0.8], [cx + 0.16 * Wt, ytop - ryd * 0.8],
                    [cx + 0.16 * Wt, ytop - ryd - 0.09 * Wt], [cx - 0.16 * Wt, ytop - ryd - 0.09 * Wt]])
    dark = rng.random() < 0.8
    base = _col(rng, (34, 34, 36) if dark else (225, 222, 210), 6)
    rib = Ht / int(rng.integers(4, 7))
    sub = np.random.default_rng(rng.integers(1 << 63))

    def paint(X, Y):
        u = np.clip((X - cx) / r, -1, 1)
        light = 0.7 + 0.3 * np.sqrt(1 - u**2)
        spec = np.exp(-(((u + 0.45) / 0.13) ** 2)) * (70 if dark else 25)
        col = base * light[..., None] + spec[..., None]
        ribs = (((Y - ytop) % rib) < 1.6) & (Y > ytop)
        col[ribs] = col[ribs] * 0.7 + 20
        dome = Y < ytop
        col[dome] = col[dome] * 1.15 + 8
        lidm = Y < ytop - ryd * 0.8
        col[lidm] = base * 0.8 + 12
        return col * _grain(sub, X.shape, 1.5, 0.05)[..., None]

    return _Shape([body, lid], paint, yb, cx)


def _make_extinguisher(rng, cx, yb, s):
    Hb = s * rng.uniform(0.75, 0.95)
    r = Hb * rng.uniform(0.14, 0.18)
    ytop = yb - Hb
    body = np.concatenate([_ellipse(cx, yb - r * 0.15, r, r * 0.15, 0, math.pi, 10), _ellipse(cx, ytop, r, r * 0.7, math.pi, 2 * math.pi, 16)])
    valve = np.array([[cx - 0.3 * r, ytop - 0.6 * r], [cx + 0.3 * r, ytop - 0.6 * r], [cx + 0.3 * r, ytop - 1.15 * r], [cx - 0.3 * r, ytop - 1.15 * r]])
    lever = np.array([[cx - 0.3 * r, ytop - 1.15 * r], [cx + 1.1 * r, ytop - 1.35 * r], [cx + 1.1 * r, ytop - 1.55 * r], [cx - 0.3 * r, ytop - 1.4 * r]])
    hose = np.array([[cx + 0.3 * r, ytop - 0.9 * r], [cx + 1.25 * r, ytop - 0.2 * r], [cx + 1.25 * r, ytop + 0.55 * Hb],
                     [cx + 0.95 * r, ytop + 0.55 * Hb], [cx + 0.95 * r, ytop], [cx + 0.3 * r, ytop - 0.6 * r]])
    red = _col(rng, (200, 28, 26), 12)
    label_top, label_bottom = ytop + Hb * 0.3, ytop + Hb * 0.62
    sub = np.random.default_rng(rng.integers(1 << 63))

    def paint(X, Y):
        u = np.clip((X - cx) / r, -1, 1)
        light = 0.6 + 0.4 * np.sqrt(1 - u**2)
        spec = 60 * np.exp(-(((u + 0.4) / 0.15) ** 2))
        col = red * light[..., None] + spec[..., None]
        inside = np.abs(X - cx) <= r
        lab = inside & (Y > label_top) & (Y < label_bottom) & (np.abs(u) < 0.75)
        col[lab] = np.array([235, 232, 220], np.float32) * light[lab][:, None]
        lines = lab & ((((Y - label_top) / (label_bottom - label_top) * 6) % 1) < 0.25) & (np.abs(u) < 0.55)
        col[lines] = 40
        metal = (Y < ytop - 0.6 * r) | ~inside
        col[metal] = np.array([30, 30, 32], np.float32) + 25 * _noise(sub, *X.shape, 2)[metal][:, None]
        return col

    return _Shape([body, valve, lever, hose], paint, yb, cx)


def _make_crate(rng, cx, yb, s):
    w = s * rng.uniform(0.8, 1.2)
    h = w * rng.uniform(0.6, 0.9)
    dx, dy = w * rng.uniform(0.18, 0.28), h * rng.uniform(0.15, 0.28)
    x0 = cx - w / 2
    wood = _col(rng, (152, 104, 58), 14)
    plank = h / int(rng.integers(4, 7))
    fw = 0.1 * min(w, h)
    sub = np.random.default_rng(rng.integers(1 << 63))

    def front(u, v):
        col = np.empty(u.shape + (3,), np.float32)
        col[:] = wood
        grain = _noise(sub, u.shape[0], u.shape[1], 1.0, 6.0)
        col *= (0.85 + 0.3 * grain)[..., None]
        col[(v % plank) < 1.2] *= 0.6
        frame = (u < fw) | (u > w - fw) | (v < fw) | (v > h - fw)
        brace = np.abs(v - u * h / w) < fw * 0.7
        col[frame | brace] *= 0.75
        return col

    def seams(out, u, v, top, side):
        m = side & (((v + np.maximum(u - w, 0) * dy / max(dx, 1e-6)) % plank) < 1.2)
        out[m] *= 0.65

    return _box(rng, x0, yb, w, h, dx, dy, front, wood * 1.1, wood * 0.72, seams)


def _make_barrel(rng, cx, yb, s):
    Wb = s * rng.uniform(0.5, 0.65)
    Hb = Wb * rng.uniform(1.3, 1.6)
    r = Wb / 2
    ry = Wb * 0.16
    ytop = yb - ry - Hb
    body = np.concatenate([_ellipse(cx, yb - ry, r, ry, 0, math.pi, 18), _ellipse(cx, ytop, r, ry, math.pi, 2 * math.pi, 18)])
    top = _ellipse(cx, ytop, r, ry, n=28)
    colour = _col(rng, [(30, 70, 170), (230, 120, 20), (180, 30, 30), (40, 130, 60), (225, 190, 30)][int(rng.integers(5))], 10)
    sub = np.random.default_rng(rng.integers(1 << 63))

    def paint(X, Y):
        u = np.clip((X - cx) / r, -1, 1)
        light = 0.55 + 0.45 * np.sqrt(1 - u**2)
        col = colour * light[..., None] + (45 * np.exp(-(((u + 0.4) / 0.15) ** 2)))[..., None]
        rel = (Y - ytop) / Hb
        ridge = (np.abs(rel - 1 / 3) < 0.03) | (np.abs(rel - 2 / 3) < 0.03)
        col[ridge] *= 0.65
        e = ((X - cx) / r) ** 2 + ((Y - ytop) / ry) ** 2
        lid = e <= 1.0
        col[lid] = colour * 1.15 + 15
        col[lid & (e > 0.8)] = colour * 0.7
        bung = ((X - cx - 0.45 * r) / (0.12 * r)) ** 2 + ((Y - ytop) / (0.12 * ry * 2.5)) ** 2 <= 1
        col[bung] = 60
        return col * _grain(sub, X.shape, 1.5, 0.05)[..., None]

    return _Shape([body, top], paint, yb, cx)


def _make_cone(rng, cx, yb, s):
    Hc = s * rng.uniform(0.75, 0.95)
    bw = Hc * rng.uniform(0.6, 0.75)
    ph = bw * 0.16
    plate = np.array([[cx - bw / 2, yb], [cx + bw / 2, yb], [cx + bw / 2 + 0.12 * bw, yb - ph], [cx - bw / 2 + 0.12 * bw, yb - ph]])
    top_w = 0.1 * bw
    ytip = yb - ph - Hc
    body = np.array([[cx - 0.36 * bw, yb - ph * 0.6], [cx + 0.36 * bw + 0.06 * bw, yb - ph * 0.6], [cx + top_w / 2, ytip], [cx - top_w / 2, ytip]])
    orange = _col(rng, (240, 108, 24), 10)
    sub = np.random.default_rng(rng.integers(1 << 63))

    def paint(X, Y):
        rel = (yb - ph - Y) / Hc
        half = 0.38 * bw * (1 - rel) + top_w / 2 * rel
        u = np.clip((X - cx) / np.maximum(half, 1e-3), -1, 1)
        light = 0.6 + 0.4 * np.sqrt(1 - u**2)
        col = orange * light[..., None]
        stripe = ((rel > 0.38) & (rel < 0.5)) | ((rel > 0.62) & (rel < 0.7))
        col[stripe] = np.array([240, 240, 240], np.float32) * light[stripe][:, None]
        base = Y > yb - ph * 0.6
        col[base] = orange * 0.55
        return col * _grain(sub, X.shape, 1.5, 0.05)[..., None]

    return _Shape([plate, body], paint, yb, cx)


def _make_ball(rng, cx, yb, s):
    r = s * rng.uniform(0.22, 0.32)
    cy = yb - r
    hue = rng.random()
    import colorsys

    c1 = np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.9), np.float32) * 255
    c2 = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1, 0.7, 0.95), np.float32) * 255
    striped = rng.random() < 0.5
    nsect = int(rng.integers(3, 7))

    def paint(X, Y):
        dxn, dyn = (X - cx) / r, (Y - cy) / r
        z = np.sqrt(np.clip(1 - dxn**2 - dyn**2, 0, 1))
        lam = np.clip(-0.5 * dxn - 0.6 * dyn + 0.62 * z, 0, 1)
        shade = 0.3 + 0.7 * lam
        if striped:
            sect = np.floor((np.arctan2(dyn, dxn) + math.pi) / (2 * math.pi) * nsect).astype(np.int64) % 2
            base = np.where(sect[..., None] == 0, c1, c2)
        else:
            base = np.broadcast_to(c1, X.shape + (3,))
        spec = 90 * lam**20
        return base * shade[..., None] + spec[..., None]

    return _Shape([_ellipse(cx, cy, r, r, n=40)], paint, yb, cx)


def _make_vehicle(rng, cx, yb, s):
    L = s * rng.uniform(1.5, 2.1)
    Hb = L * rng.uniform(0.22, 0.3)
    wr = L * 0.12
    x0 = cx - L / 2
    yb_body = yb - wr * 0.7
    truck = rng.random() < 0.4
    c0, c1 = (0.62, 0.95) if truck else (0.25, 0.78)
    ch = Hb * (0.9 if truck else 0.7)
    hull = np.array([
        [x0, yb_body], [x0 + L, yb_body], [x0 + L, yb_body - 0.75 * Hb], [x0 + 0.95 * L, yb_body - Hb],
        [x0 + c1 * L, yb_body - Hb], [x0 + (c1 - 0.06) * L, yb_body - Hb - ch], [x0 + (c0 + 0.06) * L, yb_body - Hb - ch],
        [x0 + c0 * L, yb_body - Hb], [x0 + 0.05 * L, yb_body - Hb], [x0, yb_body - 0.7 * Hb],
    ])
    w1, w2 = _ellipse(x0 + 0.2 * L, yb - wr, wr, wr, n=28), _ellipse(x0 + 0.8 * L, yb - wr, wr, wr, n=28)
    paint_col = _col(rng, [(200, 30, 30), (235, 200, 40), (230, 230, 230), (40, 80, 170), (60, 60, 64)][int(rng.integers(5))], 10)
    glass = _col(rng, (105, 135, 160), 8)

    def paint(X, Y):
        v = (yb_body - Y) / Hb
        col = paint_col * (0.75 + 0.25 * np.clip(v, 0, 1.5))[..., None]
        cab = (Y < yb_body - Hb - 0.12 * ch) & (X > x0 + (c0 + 0.09) * L) & (X < x0 + (c1 - 0.09) * L)
        col[cab] = glass * (0.8 + 0.4 * ((yb_body - Hb - Y[cab]) / ch))[:, None]
        col[(np.abs(X - x0 - (c0 + c1) / 2 * L) < 1.0) & (v > 0.1)] *= 0.6
        col[v < 0.12] *= 0.55
        for wx in (x0 + 0.2 * L, x0 + 0.8 * L):
            d = np.sqrt((X - wx) ** 2 + (Y - (yb - wr)) ** 2) / wr
            col[d <= 1.0] = 28
            col[d <= 0.5] = 150
        return col

    return _Shape([hull, w1, w2], paint, yb, cx)


_MAKERS = {
    "aac_blocks": (_make_aac, 0.85),
    "hollow_concrete_blocks": (_make_hollow, 0.85),
    "rcc_hume_pipes": (_make_pipe, 0.9),
    "water_tank": (_make_tank, 1.0),
    "fire_extinguishers": (_make_extinguisher, 0.7),
    "crate": (_make_crate, 0.8),
    "barrel": (_make_barrel, 0.95),
    "cone": (_make_cone, 0.7),
    "ball": (_make_ball, 0.8),
    "vehicle": (_make_vehicle, 0.9),
}


# ------------------------------------------------------------------------------- scene
@dataclass
class Instance:
    cls: str
    polygons: list  # flat [x1, y1, ...] lists, clipped to the image, rounded to 0.01 px
    full: np.ndarray  # bool [H, W]: the polygons' mask (as pycocotools draws it)
    visible: np.ndarray | None = None  # bool [H, W]: what is not hidden by instances in front
    window: tuple = (0, 0, 0, 0)  # y0, y1, x0, x1 of the full mask


@dataclass
class Scene:
    image: np.ndarray  # [H, W, 3] uint8
    stuff: np.ndarray  # [H, W] uint8 indices into STUFF_NAMES
    instances: list = field(default_factory=list)  # back to front


@functools.lru_cache(maxsize=4)
def _noise_bank(H, W):
    """Sensor noise (sigma 2.5), fixed per size; scenes take it at a random offset."""
    bank = np.random.default_rng(12345).standard_normal((H + 32, W + 32, 3), dtype=np.float32) * 2.5
    bank.flags.writeable = False
    return bank


@functools.lru_cache(maxsize=4)
def _grids(H, W):
    Y, X = np.mgrid[0:H, 0:W].astype(np.float32)
    X += 0.5
    Y += 0.5
    X.flags.writeable = False
    Y.flags.writeable = False
    return X, Y


def render_scene(seed: int, index: int, classes=DEMO_CLASSES, size=(256, 320), primary: str | None = None) -> Scene:
    """One scene; deterministic for (seed, index, classes, size, primary)."""
    H, W = size
    classes = tuple(classes)
    primary = primary or classes[index % len(classes)]
    rng = np.random.default_rng([int(seed), int(index), 7919 + sum(map(ord, "".join(classes)))])
    X, Y = _grids(H, W)
    lab, hz0, struct = _layout(rng, H, W, X, Y)
    img = _paint_stuff(rng, lab, hz0, X, Y, struct)

    n_primary = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.25, 0.15]))
    wanted = [primary] * n_primary
    others = [c for c in classes if c != primary]
    if others and rng.random() < 0.35:
        wanted.append(others[int(rng.integers(len(others)))])
    shapes: list[tuple[str, _Shape]] = []
    for cls in wanted:
        maker, scale = _MAKERS[cls]
        yb = hz0 + (H - hz0) * rng.uniform(0.3, 1.08)
        t = np.clip((yb - hz0) / max(H - hz0, 1.0), 0.1, 1.1)
        s = H * (0.17 + 0.36 * t) * scale * rng.uniform(0.85, 1.15)
        cx = W * rng.uniform(0.05, 0.95)
        shape = maker(rng, cx, yb, s)
        if rng.random() < 0.5:
            shape = _mirror(shape, shape.cx)
        shapes.append((cls, shape))
    shapes.sort(key=lambda cs: cs[1].yb)  # back to front

    # rasterise exactly as prepare will (clipped, rounded polygons through pycocotools)
    insts: list[tuple[Instance, _Shape]] = []
    for cls, shape in shapes:
        polys = []
        for p in shape.polys:
            c = clip_polygon(p, W, H)
            if len(c) >= 3:
                flat = [round(float(v), 2) for v in c.ravel()]
                if polygon_area(flat) > 1.0:
                    polys.append(flat)
        if not polys:
            continue
        rle = annotation_rle(Annotation(0, cls, "polygons", polys), H, W)
        x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
        if mask_utils.area(rle) < 20:
            continue
        inst = Instance(cls, polys, decode_rle(rle))
        inst.window = (y, y + bh, x, x + bw)
        insts.append((inst, shape))
    # keep instances that stay visible enough, deciding from the front
    min_px = max(40, int(0.0025 * H * W))
    covered = np.zeros((H, W), bool)
    kept = []
    for inst, shape in reversed(insts):
        vis = inst.full & ~covered
        n_full = int(inst.full.sum())
        n_vis = int(vis.sum())
        if n_vis < min_px or n_vis < 0.45 * n_full:
            continue
        inst.visible = vis
        covered |= inst.full
        kept.append((inst, shape))
    kept.reverse()

    # paint back to front, each with a contact shadow on what is behind it
    for inst, shape in kept:
        y0, y1, x0, x1 = inst.window
        sw = (x1 - x0) * 0.6
        sy0, sy1 = max(0, int(shape.yb - sw * 0.25)), min(H, int(shape.yb + sw * 0.2) + 1)
        if sy1 > sy0:
            sx0, sx1 = max(0, int(shape.cx - sw * 1.2)), min(W, int(shape.cx + sw * 1.2) + 1)
            if sx1 > sx0:
                d = ((X[sy0:sy1, sx0:sx1] - shape.cx) / sw) ** 2 + ((Y[sy0:sy1, sx0:sx1] - shape.yb) / (sw * 0.18)) ** 2
                img[sy0:sy1, sx0:sx1] *= (1 - 0.4 * np.exp(-d))[..., None]
        win = inst.full[y0:y1, x0:x1]
        colour = shape.paint(X[y0:y1, x0:x1], Y[y0:y1, x0:x1])
        region = img[y0:y1, x0:x1]
        np.copyto(region, colour, where=win[..., None])

    # global light: a soft gradient, a tint, sensor noise
    gx, gy = rng.uniform(-0.12, 0.12, 2)
    xs = np.arange(W, dtype=np.float32) / W - 0.5
    ys = np.arange(H, dtype=np.float32) / H - 0.5
    tint = rng.uniform(0.96, 1.04, 3).astype(np.float32) * rng.uniform(0.85, 1.1)
    img *= (1.0 + gy * ys)[:, None, None] * tint
    img *= (1.0 + gx * xs)[None, :, None]
    bank = _noise_bank(H, W)
    oy, ox = int(rng.integers(0, 32)), int(rng.integers(0, 32))
    img += bank[oy : oy + H, ox : ox + W]
    np.clip(img, 0, 255, out=img)
    image = (img + 0.5).astype(np.uint8)
    return Scene(image=image, stuff=lab, instances=[i for i, _ in kept])


# ------------------------------------------------------------------------------ writer
def _png(path: Path, arr: np.ndarray, level: int = 1) -> None:
    Image.fromarray(arr).save(path, format="PNG", compress_level=level)


def synth(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    classes: str = "demo",
    size: tuple[int, int] = (256, 320),
    overwrite: bool = False,
    progress: bool = True,
    rle_fraction: float = 0.2,
) -> dict:
    """Write `num_images` synthetic scenes to `out_dir` (see the module docstring).
    Returns a summary dict (counts per class folder, instances, seconds)."""
    t0 = time.time()
    if classes not in CLASS_SETS:
        raise DataError(f"unknown synth class set '{classes}'; known: {', '.join(CLASS_SETS)}")
    if int(num_images) < 1:
        raise DataError(f"--images must be at least 1, got {num_images}")
    H, W = (int(v) for v in size)
    if H < 64 or W < 64:
        raise DataError(f"--size {H}x{W} is too small (at least 64x64)")
    names = CLASS_SETS[classes]
    cmap = ClassMap.load(classes)
    cats = cmap.categories()
    coco = coco_panoptic_categories()
    coco_json = coco.to_json()
    stuff_coco_ids = [coco.by_name[n].id for n in STUFF_NAMES]
    stuff_target = [cats.by_name[cmap.resolve(n)].id for n in STUFF_NAMES]
    cvat_cats = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(names)]
    cvat_id = {n: i + 1 for i, n in enumerate(names)}
    rle_rng = np.random.default_rng([int(seed), 104729])

    exports = {n: {"licenses": [{"name": "", "id": 0, "url": ""}],
                   "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
                   "categories": cvat_cats, "images": [], "annotations": []} for n in names}
    stuff_images, stuff_anns, truth_images, truth_anns = [], [], [], []
    n_inst = {n: 0 for n in names}
    it = range(int(num_images))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth", unit="img", leave=False, dynamic_ncols=True)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for n in names:
            (tmp / "things" / FOLDER_NAMES.get(n, n) / "images").mkdir(parents=True)
        (tmp / "stuff" / "panoptic").mkdir(parents=True)
        (tmp / "truth" / "panoptic").mkdir(parents=True)
        for i in it:
            primary = names[i % len(names)]
            scene = render_scene(seed, i, names, (H, W), primary)
            folder = FOLDER_NAMES.get(primary, primary)
            exp = exports[primary]
            local_id = len(exp["images"]) + 1
            file_name = f"img_{local_id:03d}.png"
            _png(tmp / "things" / folder / "images" / file_name, scene.image)
            exp["images"].append({"id": local_id, "width": W, "height": H, "file_name": file_name, "license": 0,
                                  "flickr_url": "", "coco_url": "", "date_captured": 0})
            for inst in scene.instances:
                ann_id = len(exp["annotations"]) + 1
                n_inst[inst.cls] += 1
                xy = np.concatenate([np.asarray(p).reshape(-1, 2) for p in inst.polygons])
                bbox = [float(xy[:, 0].min()), float(xy[:, 1].min()), float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))]
                ann = {"id": ann_id, "image_id": local_id, "category_id": cvat_id[inst.cls], "iscrowd": 0,
                       "attributes": {"occluded": bool((inst.full & ~inst.visible).any())}}
                r = rle_rng.random()
                if r < rle_fraction:  # a brush mask: RLE of what is visible
                    rle = encode_mask(inst.visible)
                    if r < rle_fraction / 2:

                        counts = _uncompressed_counts(inst.visible)  # uncompressed, as CVAT writes
                        rle = {"size": [H, W], "counts": counts}
                    ann["segmentation"] = rle
                    ann["area"] = float(inst.visible.sum())
                else:
                    ann["segmentation"] = inst.polygons
                    ann["area"] = float(sum(polygon_area(p) for p in inst.polygons))
                ann["bbox"] = bbox
                exp["annotations"].append(ann)

            # the true stuff (COCO ids), one segment per COCO category present
            rel = f"{folder}/images/{file_name}"
            out_name = f"{cmap.resolve(folder, folder=True)}_img_{local_id:03d}"
            present = np.flatnonzero(np.bincount(scene.stuff.ravel(), minlength=len(STUFF_NAMES)))
            seg_ids = np.zeros(len(STUFF_NAMES), np.int32)
            seg_ids[present] = np.arange(1, len(present) + 1)
            stuff_map = seg_ids[scene.stuff]
            stats = segments_from_id_map(stuff_map)
            segs = [{"id": int(seg_ids[k]), "category_id": stuff_coco_ids[k], "iscrowd": 0, "isthing": 0,
                     "bbox": stats[int(seg_ids[k])]["bbox"], "area": stats[int(seg_ids[k])]["area"]} for k in present]
            write_id_png(tmp / "stuff" / "panoptic" / f"{out_name}.png", stuff_map)
            stuff_images.append({"id": i + 1, "file_name": rel, "width": W, "height": H})
            stuff_anns.append({"image_id": i + 1, "file_name": f"{out_name}.png", "segments_info": segs})

            # the full truth in the class map's id space (what prepare must produce)
            group_ids: dict[int, int] = {}
            for k in present:
                group_ids.setdefault(stuff_target[k], len(group_ids) + 1)
            lut = np.zeros(len(STUFF_NAMES), np.int32)
            for k in present:
                lut[k] = group_ids[stuff_target[k]]
            truth = lut[scene.stuff]
            tsegs = [{"id": sid, "category_id": cid, "iscrowd": 0} for cid, sid in group_ids.items()]
            for inst in scene.instances:
                sid = len(tsegs) + 1
                truth[inst.visible] = sid
                tsegs.append({"id": sid, "category_id": cats.by_name[inst.cls].id, "iscrowd": 0})
            tstats = segments_from_id_map(truth)
            tsegs = [dict(s, **tstats[s["id"]]) for s in tsegs if s["id"] in tstats]
            write_id_png(tmp / "truth" / "panoptic" / f"{out_name}.png", truth)
            truth_images.append({"id": i + 1, "file_name": f"{out_name}.png", "source": rel, "width": W, "height": H})
            truth_anns.append({"image_id": i + 1, "file_name": f"{out_name}.png", "segments_info": tsegs})

        for n in names:
            with open(tmp / "things" / FOLDER_NAMES.get(n, n) / "coco.json", "w") as f:
                json.dump(exports[n], f)
        with open(tmp / "stuff" / "panoptic.json", "w") as f:
            json.dump({"info": {"description": "panoptic-detr synth: true stuff (COCO-panoptic ids)"}, "licenses": [],
                       "images": stuff_images, "annotations": stuff_anns, "categories": coco_json}, f)
        with open(tmp / "truth" / "panoptic.json", "w") as f:
            json.dump({"info": {"description": f"panoptic-detr synth: full truth ({classes} class map ids)"}, "licenses": [],
                       "images": truth_images, "annotations": truth_anns, "categories": cats.to_json()}, f)
        with open(tmp / "truth" / "categories.json", "w") as f:
            json.dump(cats.to_json(), f, indent=1)
        shutil.copyfile(RESOURCES / f"{classes}-class-map.yaml", tmp / "class-map.yaml")
        summary = {
            "images": int(num_images),
            "seed": int(seed),
            "classes": classes,
            "size": [H, W],
            "images_per_folder": {FOLDER_NAMES.get(n, n): len(exports[n]["images"]) for n in names},
            "instances_per_class": n_inst,
            "prepare": (f"panoptic-detr prepare --class-map {Path(out_dir) / 'class-map.yaml'} --things {Path(out_dir) / 'things'} "
                        f"--stuff-truth {Path(out_dir) / 'stuff' / 'panoptic.json'} {Path(out_dir) / 'stuff' / 'panoptic'} --out DATASET"),
        }
        (tmp / "synth.yaml").write_text("# panoptic-detr synth: what was drawn\n" + yaml.safe_dump(summary, sort_keys=False))
    summary["seconds"] = round(time.time() - t0, 2)
    return summary


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return [int(r) for r in runs]
