"""One synthetic scene: stuff, then things placed in perspective, rasterised as `prepare`
will rasterise their polygons, culled when too hidden, painted back to front, then lit."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from panoptic_detr.data.formats.common import Annotation, annotation_rle, clip_polygon, decode_rle, polygon_area
from panoptic_detr.data.synth.classes import DEMO_CLASSES, THING_MAKERS
from panoptic_detr.data.synth.shapes import ThingShape, mirrored
from panoptic_detr.data.synth.stuff import layout_stuff, paint_stuff


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
def _sensor_noise_bank(H, W):
    """Sensor noise (sigma 2.5), fixed per size; scenes take it at a random offset."""
    bank = np.random.default_rng(12345).standard_normal((H + 32, W + 32, 3), dtype=np.float32) * 2.5
    bank.flags.writeable = False
    return bank


@functools.lru_cache(maxsize=4)
def _grids(H, W):
    """Pixel-centre coordinates X, Y (float32 [H, W], read-only)."""
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
    lab, hz0, struct = layout_stuff(rng, H, W, X, Y)
    img = paint_stuff(rng, lab, hz0, X, Y, struct)
    shapes = _place_things(rng, classes, primary, hz0, H, W)
    kept = _keep_visible(_rasterise(shapes, H, W), H, W)
    _paint_things(img, kept, X, Y)
    image = _light(rng, img)
    return Scene(image=image, stuff=lab, instances=[i for i, _ in kept])


def _place_things(rng, classes, primary, hz0, H, W) -> list[tuple[str, ThingShape]]:
    """1-4 instances of the primary class, sometimes one of another, sorted back to front."""
    n_primary = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.25, 0.15]))
    wanted = [primary] * n_primary
    others = [c for c in classes if c != primary]
    if others and rng.random() < 0.35:
        wanted.append(others[int(rng.integers(len(others)))])
    shapes: list[tuple[str, ThingShape]] = []
    for cls in wanted:
        maker, scale = THING_MAKERS[cls]
        yb = hz0 + (H - hz0) * rng.uniform(0.3, 1.08)
        t = np.clip((yb - hz0) / max(H - hz0, 1.0), 0.1, 1.1)
        s = H * (0.17 + 0.36 * t) * scale * rng.uniform(0.85, 1.15)
        cx = W * rng.uniform(0.05, 0.95)
        shape = maker(rng, cx, yb, s)
        if rng.random() < 0.5:
            shape = mirrored(shape, shape.cx)
        shapes.append((cls, shape))
    shapes.sort(key=lambda cs: cs[1].yb)  # back to front
    return shapes


def _rasterise(shapes, H, W) -> list[tuple[Instance, ThingShape]]:
    """Instances with their full masks, rasterised exactly as prepare will (clipped,
    rounded polygons through pycocotools); tiny ones are dropped."""
    insts: list[tuple[Instance, ThingShape]] = []
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
    return insts


def _keep_visible(insts, H, W) -> list[tuple[Instance, ThingShape]]:
    """The instances that stay visible enough (at least 45%), deciding from the front;
    sets their visible masks."""
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
    return kept


def _paint_things(img, kept, X, Y) -> None:
    """Paint back to front, each with a contact shadow on what is behind it."""
    H, W = img.shape[:2]
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


def _light(rng, img: np.ndarray) -> np.ndarray:
    """Global light (a soft gradient, a tint) and sensor noise; the uint8 image."""
    H, W = img.shape[:2]
    gx, gy = rng.uniform(-0.12, 0.12, 2)
    xs = np.arange(W, dtype=np.float32) / W - 0.5
    ys = np.arange(H, dtype=np.float32) / H - 0.5
    tint = rng.uniform(0.96, 1.04, 3).astype(np.float32) * rng.uniform(0.85, 1.1)
    img *= (1.0 + gy * ys)[:, None, None] * tint
    img *= (1.0 + gx * xs)[None, :, None]
    bank = _sensor_noise_bank(H, W)
    oy, ox = int(rng.integers(0, 32)), int(rng.integers(0, 32))
    img += bank[oy : oy + H, ox : ox + W]
    np.clip(img, 0, 255, out=img)
    return (img + 0.5).astype(np.uint8)
