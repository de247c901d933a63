"""The stuff of a scene: the label layout (sky, ground, road, walls, building, trees) and
its painting, one texture painter per label."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from panoptic_detr.data.synth.noise import fractal_noise, jittered_colour, value_noise, value_noise_1d

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


# ------------------------------------------------------------------------------ layout
def layout_stuff(rng, H: int, W: int, X: np.ndarray, Y: np.ndarray):
    """Stuff labels (indices into STUFF_NAMES), the horizon height and where the wall and
    building start (their textures are aligned to them)."""
    hz0 = H * rng.uniform(0.28, 0.46)
    hz = hz0 + (value_noise_1d(rng, W, W / 3) - 0.5) * 0.05 * H
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
        g = value_noise(rng, H, W, H / 4)
        lab[below & (g > 0.62) & (lab != ROAD) & (lab != PAVEMENT)] = GRASS
    if rng.random() < 0.25:  # a puddle
        cx, cy = W * rng.uniform(0.15, 0.85), hz0 + (H - hz0) * rng.uniform(0.35, 0.8)
        rx = W * rng.uniform(0.1, 0.22)
        ry = rx * rng.uniform(0.2, 0.35)
        wob = value_noise(rng, H, W, 12) * 0.35
        lab[below & (((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 + wob < 1.0)] = WATER
    struct = {}
    if rng.random() < 0.55:  # a building behind
        struct["building"] = _add_building(rng, lab, hz0, hz, X, Y)
    if rng.random() < 0.5:  # trees on the horizon
        _add_trees(rng, lab, hz0, hz, X, Y)
    if rng.random() < 0.6:  # a wall in front of them
        struct["wall"] = _add_wall(rng, lab, hz0, X, Y)
    return lab, hz0, struct


def _add_building(rng, lab, hz0, hz, X, Y) -> tuple[float, float]:
    """A building of three blocks of different heights; returns its (left, top)."""
    H, W = lab.shape
    x0 = W * rng.uniform(-0.1, 0.6)
    x1 = x0 + W * rng.uniform(0.25, 0.6)
    tops = hz0 - H * rng.uniform(0.14, 0.36, size=3)
    edges = np.linspace(x0, x1, 4)
    top = np.select([X < edges[1], X < edges[2]], [tops[0], tops[1]], tops[2])
    lab[(X >= x0) & (X < x1) & (Y >= top) & (Y < hz[None, :] + 1)] = BUILDING
    return (x0, float(tops.min()))


def _add_trees(rng, lab, hz0, hz, X, Y) -> None:
    H, W = lab.shape
    n = int(rng.integers(1, 4))
    field_ = value_noise(rng, H, W, 10) * 0.45
    for _ in range(n):
        cx = W * rng.uniform(0, 1)
        r = H * rng.uniform(0.07, 0.15)
        cy = hz0 - r * rng.uniform(0.05, 0.6)
        d = np.sqrt(((X - cx) / (r * 1.2)) ** 2 + ((Y - cy) / r) ** 2) + field_
        lab[(d < 1.0) & (Y < hz[None, :] + 2)] = TREE


def _add_wall(rng, lab, hz0, X, Y) -> tuple[float, float]:
    """A brick or concrete wall along the horizon; returns its (left, top)."""
    H, W = lab.shape
    if rng.random() < 0.4:
        x0, x1 = -1.0, W + 1.0
    else:
        x0 = W * rng.uniform(-0.2, 0.5)
        x1 = x0 + W * rng.uniform(0.3, 0.8)
    top = hz0 - H * rng.uniform(0.05, 0.15)
    bottom = hz0 + H * rng.uniform(0.01, 0.06)
    lab[(X >= x0) & (X < x1) & (Y >= top) & (Y < bottom)] = BRICK if rng.random() < 0.6 else CONCRETE
    return (x0, top)


# ------------------------------------------------------------------------------ painting
class Band(NamedTuple):
    """The rows of the image where one label occurs: textures are computed there only."""

    X: np.ndarray  # pixel-centre coordinate grids of those rows
    Y: np.ndarray
    rows: int
    width: int
    height: int  # of the whole image
    horizon: float
    struct: dict  # from layout_stuff


def paint_stuff(rng, lab: np.ndarray, hz0: float, X, Y, struct) -> np.ndarray:
    """Float RGB [H, W, 3] of the stuff; the painters run in label order (the rng draws
    depend on it)."""
    H, W = lab.shape
    img = np.zeros((H, W, 3), np.float32)
    rows = np.bincount((lab.astype(np.int64) * H + np.arange(H)[:, None]).ravel(), minlength=len(STUFF_NAMES) * H)
    rows = rows.reshape(len(STUFF_NAMES), H) > 0
    for label, painter in enumerate(_PAINTERS):
        r = np.flatnonzero(rows[label])
        if not r.size:
            continue
        r0, r1 = int(r[0]), int(r[-1]) + 1
        col = painter(rng, Band(X[r0:r1], Y[r0:r1], r1 - r0, W, H, hz0, struct))
        np.copyto(img[r0:r1], col, where=(lab[r0:r1] == label)[..., None])
    return img


def _paint_sky(rng, b: Band):
    overcast = rng.random() < 0.2
    top = jittered_colour(rng, (150, 155, 165) if overcast else (65, 125, 200), 15)
    hor = jittered_colour(rng, (200, 200, 205) if overcast else (190, 215, 235), 10)
    tt = np.clip(b.Y / max(b.horizon, 1.0), 0, 1)[..., None]
    col = top * (1 - tt) + hor * tt
    H = b.height
    clouds = fractal_noise(rng, b.rows, b.width, (H / 3, H / 8, 6), (0.5, 0.35, 0.15))
    c = np.clip((clouds - rng.uniform(0.45, 0.62)) * 3.0, 0, 1)
    return col * (1 - c[..., None]) + jittered_colour(rng, (245, 245, 248), 5) * c[..., None]


def _paint_dirt(rng, b: Band):
    base = jittered_colour(rng, (128, 96, 66), 14)
    n = fractal_noise(rng, b.rows, b.width, (30, 10, 3))
    col = base * (0.7 + 0.6 * n)[..., None]
    spots = value_noise(rng, b.rows, b.width, 2.5) > 0.78
    col[spots] *= 0.7
    return col


def _paint_gravel(rng, b: Band):
    base = jittered_colour(rng, (142, 138, 130), 12)
    peb = value_noise(rng, b.rows, b.width, 2.2)
    tint = value_noise(rng, b.rows, b.width, 3.0)
    col = base * (0.55 + 0.8 * peb)[..., None]
    col[..., 0] += (tint - 0.5) * 25
    return col


def _paint_sand(rng, b: Band):
    base = jittered_colour(rng, (206, 182, 134), 10)
    rip = 0.05 * np.sin(b.Y * rng.uniform(0.5, 0.9) + 6 * value_noise(rng, b.rows, b.width, 20))
    return base * (0.9 + 0.15 * fractal_noise(rng, b.rows, b.width, (24, 8, 2)) + rip)[..., None]


def _paint_road(rng, b: Band):
    base = jittered_colour(rng, (72, 72, 75), 8)
    return base * (0.85 + 0.3 * value_noise(rng, b.rows, b.width, 1.5))[..., None]


def _paint_pavement(rng, b: Band):
    Xb, Yb = b.X, b.Y
    base = jittered_colour(rng, (168, 162, 152), 10)
    s = rng.uniform(10, 18)
    seam = ((Yb % s) < 1.2) | (((Xb + (np.floor(Yb / s) % 2) * s / 2) % (1.6 * s)) < 1.2)
    col = base * (0.9 + 0.15 * value_noise(rng, b.rows, b.width, 2))[..., None]
    col[seam] *= 0.7
    return col


def _paint_brick(rng, b: Band):
    bh = rng.uniform(5, 9)
    bw = bh * rng.uniform(2.0, 2.6)
    x0, top = b.struct.get("wall", (0.0, 0.0))
    yy = b.Y - top
    row = np.floor(yy / bh)
    xx = b.X - x0 + (row % 2) * bw / 2
    colno = np.floor(xx / bw)
    table = rng.uniform(0.75, 1.15, 997).astype(np.float32)
    var = table[((row * 31 + colno * 17) % 997).astype(np.int64)]
    brick = jittered_colour(rng, (158, 72, 50), 18)
    col = brick * (var * (0.9 + 0.2 * value_noise(rng, b.rows, b.width, 2)))[..., None]
    mortar = ((yy % bh) < 1.3) | ((xx % bw) < 1.3)
    col[mortar] = jittered_colour(rng, (190, 184, 172), 8)
    return col


def _paint_concrete(rng, b: Band):
    base = jittered_colour(rng, (150, 150, 146), 12)
    col = base * (0.82 + 0.3 * fractal_noise(rng, b.rows, b.width, (20, 6, 2)))[..., None]
    px, py = rng.uniform(30, 50), rng.uniform(20, 32)
    x0, top = b.struct.get("wall", (0.0, 0.0))
    seam = (((b.X - x0) % px) < 1.2) | (((b.Y - top) % py) < 1.2)
    holes = ((((b.X - x0) % px) - px / 4) ** 2 + (((b.Y - top) % py) - py / 2) ** 2) < 2.0
    col[seam] *= 0.72
    col[holes] *= 0.45
    return col


def _paint_building(rng, b: Band):
    facade = jittered_colour(rng, [(190, 180, 165), (160, 160, 166), (205, 195, 175)][int(rng.integers(3))], 10)
    col = facade * (0.92 + 0.12 * value_noise(rng, b.rows, b.width, 4))[..., None]
    x0, top = b.struct.get("building", (0.0, 0.0))
    cw, ch = rng.uniform(12, 22), rng.uniform(14, 24)
    u, v = (b.X - x0) % cw / cw, (b.Y - top) % ch / ch
    if rng.random() < 0.7:  # windows
        win = (u > 0.22) & (u < 0.78) & (v > 0.25) & (v < 0.8)
        glass = jittered_colour(rng, (70, 85, 105), 10) * (0.8 + 0.4 * v)[..., None]
        return np.where(win[..., None], glass, col)
    # an unfinished concrete frame: dark openings between slabs and columns
    hole = (u > 0.15) & (v > 0.3)
    return np.where(hole[..., None], col * 0.35, col)


def _paint_tree(rng, b: Band):
    leaf = jittered_colour(rng, (52, 98, 44), 12)
    h, w = b.rows, b.width
    return leaf * (0.55 + 0.8 * value_noise(rng, h, w, 3) * (0.6 + 0.4 * value_noise(rng, h, w, 12)))[..., None]


def _paint_grass(rng, b: Band):
    g = jittered_colour(rng, (84, 138, 58), 12)
    return g * (0.65 + 0.6 * value_noise(rng, b.rows, b.width, 6, 1.2))[..., None]


def _paint_water(rng, b: Band):
    wcol = jittered_colour(rng, (72, 102, 126), 10)
    rip = 0.12 * np.sin(b.Y * rng.uniform(0.8, 1.4) + 4 * value_noise(rng, b.rows, b.width, 10))
    return wcol * (0.95 + rip)[..., None]


# indexed by label (SKY, DIRT, ... WATER)
_PAINTERS = (_paint_sky, _paint_dirt, _paint_gravel, _paint_sand, _paint_road, _paint_pavement, _paint_brick,
             _paint_concrete, _paint_building, _paint_tree, _paint_grass, _paint_water)
assert len(_PAINTERS) == len(STUFF_NAMES)
