"""Painters of the `demo` things (construction materials): each `make_<class>(rng, cx, yb, s)`
returns the ThingShape of one instance standing at (cx, yb), about `s` pixels tall or wide."""

from __future__ import annotations

import math

import numpy as np

from panoptic_detr.data.synth.noise import jittered_colour, value_noise
from panoptic_detr.data.synth.shapes import ThingShape, box_shape, ellipse, texture_grain


def make_aac(rng, cx, yb, s):
    w = s * rng.uniform(1.0, 1.5)
    h = s * rng.uniform(0.55, 0.9)
    dx, dy = w * rng.uniform(0.18, 0.3), h * rng.uniform(0.15, 0.3)
    x0 = cx - w / 2
    base = jittered_colour(rng, (214, 214, 206), 8)
    nr = int(rng.integers(3, 6))
    pallet = h * 0.1 if rng.random() < 0.6 else 0.0
    bh = (h - pallet) / nr
    bw = bh * rng.uniform(2.4, 3.0)
    wood = jittered_colour(rng, (150, 112, 70), 10)
    sub = np.random.default_rng(rng.integers(1 << 63))

    def front(u, v):
        col = np.empty(u.shape + (3,), np.float32)
        col[:] = base
        vv = v - pallet
        row = np.floor(vv / bh)
        seam = ((vv % bh) < 1.1) | (((u + (row % 2) * bw / 2) % bw) < 1.1)
        col[seam] *= 0.78
        pores = value_noise(sub, *u.shape, 1.0) > 0.86
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

    return box_shape(rng, x0, yb, w, h, dx, dy, front, base * 1.1, base * 0.76, seams)


def make_hollow(rng, cx, yb, s):
    nc, nr = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    bw = s * rng.uniform(0.38, 0.48)
    bh = bw * rng.uniform(0.45, 0.55)
    w, h = nc * bw, nr * bh
    dx, dy = w * rng.uniform(0.12, 0.25), h * rng.uniform(0.15, 0.3)
    x0 = cx - w / 2
    base = jittered_colour(rng, (128, 127, 121), 10)
    hole_col = jittered_colour(rng, (42, 42, 40), 5)

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

    return box_shape(rng, x0, yb, w, h, dx, dy, front, base * 1.12, base * 0.72, seams)


def make_pipe(rng, cx, yb, s):
    D = s * rng.uniform(0.5, 0.75)
    L = D * rng.uniform(1.6, 2.6)
    a = D / 2 * rng.uniform(0.25, 0.45)
    x0 = cx - L / 2
    yc = yb - D / 2
    polys = [np.array([[x0, yc - D / 2], [x0 + L, yc - D / 2], [x0 + L, yc + D / 2], [x0, yc + D / 2]]),
             ellipse(x0, yc, a, D / 2), ellipse(x0 + L, yc, a, D / 2)]
    conc = jittered_colour(rng, (176, 170, 158), 10)
    inner = jittered_colour(rng, (48, 46, 44), 6)
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
        return col * texture_grain(sub, X.shape, 1.2, 0.1)[..., None]

    return ThingShape(polys, paint, yb, cx)


def make_tank(rng, cx, yb, s):
    Wt = s * rng.uniform(0.6, 0.85)
    Ht = Wt * rng.uniform(0.9, 1.3)
    r = Wt / 2
    ryb = Wt * 0.1
    ryd = Wt * rng.uniform(0.18, 0.26)
    ytop = yb - ryb - Ht
    body = np.concatenate([ellipse(cx, yb - ryb, r, ryb, 0, math.pi, 18), ellipse(cx, ytop, r, ryd, math.pi, 2 * math.pi, 24)])
    lid = np.array([[cx - 0.16 * Wt, ytop - ryd * 0.8], [cx + 0.16 * Wt, ytop - ryd * 0.8],
                    [cx + 0.16 * Wt, ytop - ryd - 0.09 * Wt], [cx - 0.16 * Wt, ytop - ryd - 0.09 * Wt]])
    dark = rng.random() < 0.8
    base = jittered_colour(rng, (34, 34, 36) if dark else (225, 222, 210), 6)
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
        return col * texture_grain(sub, X.shape, 1.5, 0.05)[..., None]

    return ThingShape([body, lid], paint, yb, cx)


def make_extinguisher(rng, cx, yb, s):
    Hb = s * rng.uniform(0.75, 0.95)
    r = Hb * rng.uniform(0.14, 0.18)
    ytop = yb - Hb
    body = np.concatenate([ellipse(cx, yb - r * 0.15, r, r * 0.15, 0, math.pi, 10), ellipse(cx, ytop, r, r * 0.7, math.pi, 2 * math.pi, 16)])
    valve = np.array([[cx - 0.3 * r, ytop - 0.6 * r], [cx + 0.3 * r, ytop - 0.6 * r], [cx + 0.3 * r, ytop - 1.15 * r], [cx - 0.3 * r, ytop - 1.15 * r]])
    lever = np.array([[cx - 0.3 * r, ytop - 1.15 * r], [cx + 1.1 * r, ytop - 1.35 * r], [cx + 1.1 * r, ytop - 1.55 * r], [cx - 0.3 * r, ytop - 1.4 * r]])
    hose = np.array([[cx + 0.3 * r, ytop - 0.9 * r], [cx + 1.25 * r, ytop - 0.2 * r], [cx + 1.25 * r, ytop + 0.55 * Hb],
                     [cx + 0.95 * r, ytop + 0.55 * Hb], [cx + 0.95 * r, ytop], [cx + 0.3 * r, ytop - 0.6 * r]])
    red = jittered_colour(rng, (200, 28, 26), 12)
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
        col[metal] = np.array([30, 30, 32], np.float32) + 25 * value_noise(sub, *X.shape, 2)[metal][:, None]
        return col

    return ThingShape([body, valve, lever, hose], paint, yb, cx)
