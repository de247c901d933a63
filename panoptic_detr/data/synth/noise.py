"""Smooth random textures: value noise (bicubic upsampling of a random grid) and jittered colours."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def value_noise(rng, h: int, w: int, cell_y: float, cell_x: float | None = None) -> np.ndarray:
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


def fractal_noise(rng, h: int, w: int, cells=(40, 16, 6), weights=(0.55, 0.3, 0.15)) -> np.ndarray:
    """A weighted sum of value noise at several cell sizes, in [0, 1]."""
    out = np.zeros((h, w), np.float32)
    for c, wt in zip(cells, weights):
        out += wt * value_noise(rng, h, w, c)
    return out / sum(weights)


def value_noise_1d(rng, n: int, cell: float) -> np.ndarray:
    return value_noise(rng, 1, n, 1, cell)[0] if n else np.zeros(0, np.float32)


def jittered_colour(rng, base, jitter=12.0) -> np.ndarray:
    """`base` RGB with each channel moved by up to +-`jitter`, float32 in [0, 255]."""
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-jitter, jitter, 3).astype(np.float32), 0, 255)
