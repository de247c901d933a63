"""Painters of the `base` things (generic objects): each `make_<class>(rng, cx, yb, s)` returns
the ThingShape of one instance standing at (cx, yb), about `s` pixels tall or wide."""

from __future__ import annotations

import colorsys
import math

import numpy as np

from panoptic_detr.data.synth.noise import jittered_colour, value_noise
from panoptic_detr.data.synth.shapes import ThingShape, box_shape, ellipse, texture_grain


def make_crate(rng, cx, yb, s):
    w = s * rng.uniform(0.8, 1.2)
    h = w * rng.uniform(0.6, 0.9)
    dx, dy = w * rng.uniform(0.18, 0.28), h * rng.uniform(0.15, 0.28)
    x0 = cx - w / 2
    wood = jittered_colour(rng, (152, 104, 58), 14)
    plank = h / int(rng.integers(4, 7))
    fw = 0.1 * min(w, h)
    sub = np.random.default_rng(rng.integers(1 << 63))

    def front(u, v):
        col = np.empty(u.shape + (3,), np.float32)
        col[:] = wood
        grain = value_noise(sub, u.shape[0], u.shape[1], 1.0, 6.0)
        col *= (0.85 + 0.3 * grain)[..., None]
        col[(v % plank) < 1.2] *= 0.6
        frame = (u < fw) | (u > w - fw) | (v < fw) | (v > h - fw)
        brace = np.abs(v - u * h / w) < fw * 0.7
        col[frame | brace] *= 0.75
        return col

    def seams(out, u, v, top, side):
        m = side & (((v + np.maximum(u - w, 0) * dy / max(dx, 1e-6)) % plank) < 1.2)
        out[m] *= 0.65

    return box_shape(rng, x0, yb, w, h, dx, dy, front, wood * 1.1, wood * 0.72, seams)


def make_barrel(rng, cx, yb, s):
    Wb = s * rng.uniform(0.5, 0.65)
    Hb = Wb * rng.uniform(1.3, 1.6)
    r = Wb / 2
    ry = Wb * 0.16
    ytop = yb - ry - Hb
    body = np.concatenate([ellipse(cx, yb - ry, r, ry, 0, math.pi, 18), ellipse(cx, ytop, r, ry, math.pi, 2 * math.pi, 18)])
    top = ellipse(cx, ytop, r, ry, n=28)
    colour = jittered_colour(rng, [(30, 70, 170), (230, 120, 20), (180, 30, 30), (40, 130, 60), (225, 190, 30)][int(rng.integers(5))], 10)
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
        return col * texture_grain(sub, X.shape, 1.5, 0.05)[..., None]

    return ThingShape([body, top], paint, yb, cx)


def make_cone(rng, cx, yb, s):
    Hc = s * rng.uniform(0.75, 0.95)
    bw = Hc * rng.uniform(0.6, 0.75)
    ph = bw * 0.16
    plate = np.array([[cx - bw / 2, yb], [cx + bw / 2, yb], [cx + bw / 2 + 0.12 * bw, yb - ph], [cx - bw / 2 + 0.12 * bw, yb - ph]])
    top_w = 0.1 * bw
    ytip = yb - ph - Hc
    body = np.array([[cx - 0.36 * bw, yb - ph * 0.6], [cx + 0.36 * bw + 0.06 * bw, yb - ph * 0.6], [cx + top_w / 2, ytip], [cx - top_w / 2, ytip]])
    orange = jittered_colour(rng, (240, 108, 24), 10)
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
        return col * texture_grain(sub, X.shape, 1.5, 0.05)[..., None]

    return ThingShape([plate, body], paint, yb, cx)


def make_ball(rng, cx, yb, s):
    r = s * rng.uniform(0.22, 0.32)
    cy = yb - r
    hue = rng.random()
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

    return ThingShape([ellipse(cx, cy, r, r, n=40)], paint, yb, cx)


def make_vehicle(rng, cx, yb, s):
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
    w1, w2 = ellipse(x0 + 0.2 * L, yb - wr, wr, wr, n=28), ellipse(x0 + 0.8 * L, yb - wr, wr, wr, n=28)
    paint_col = jittered_colour(rng, [(200, 30, 30), (235, 200, 40), (230, 230, 230), (40, 80, 170), (60, 60, 64)][int(rng.integers(5))], 10)
    glass = jittered_colour(rng, (105, 135, 160), 8)

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

    return ThingShape([hull, w1, w2], paint, yb, cx)
