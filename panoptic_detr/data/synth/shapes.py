"""Thing shapes: polygons (what the annotations hold) with a painter (what the image shows),
and the primitives the class painters are built from (ellipses, shaded boxes, grain)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from panoptic_detr.data.synth.noise import value_noise


@dataclass
class ThingShape:
    polys: list  # list of [N, 2] arrays (image coordinates)
    paint: Callable  # paint(X, Y) -> [h, w, 3] float colours (X, Y: window coordinate grids)
    yb: float  # where it stands (depth order)
    cx: float


def ellipse(cx, cy, rx, ry, t0=0.0, t1=2 * math.pi, n=36) -> np.ndarray:
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def mirrored(shape: ThingShape, cx: float) -> ThingShape:
    polys = [np.stack([2 * cx - p[:, 0], p[:, 1]], 1) for p in shape.polys]
    paint = shape.paint
    return ThingShape(polys, lambda X, Y: paint(2 * cx - X, Y), shape.yb, shape.cx)


def texture_grain(rng, shape, cell=1.5, amp=0.12):
    """Per-pixel texture noise factor for a window, generated lazily at paint time."""
    h, w = shape
    return 1.0 + amp * (value_noise(rng, h, w, cell) - 0.5) * 2


def box_shape(rng, x0, yb, w, h, dx, dy, front_fn, top_col, side_col, seams=None):
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
        return out * texture_grain(sub, X.shape)[..., None]

    return ThingShape([poly], paint, yb, x0 + w / 2)
