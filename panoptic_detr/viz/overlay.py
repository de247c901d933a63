"""A panoptic map drawn over its image: category colours, outlines, labels, legend.

`overlay(image, id_map, segments_info, categories)` returns an RGB uint8 array: the image
with every segment tinted by its category's colour, white outlines between segments,
"name score" labels at thing centres, and a legend panel to the right of the image
listing the categories present (stuff marked as such). Without a legend the result has
the image's shape. `save_jpeg` writes it atomically.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.viz.colors import category_color, segment_colors, text_color_for

__all__ = ["overlay", "save_jpeg", "label_point", "boundaries"]

LEGEND_BG = (32, 32, 32)
OUTLINE = (255, 255, 255)


@lru_cache(maxsize=16)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _as_numpy_ids(id_map) -> np.ndarray:
    if hasattr(id_map, "detach"):
        id_map = id_map.detach().cpu().numpy()
    return np.asarray(id_map).astype(np.int64, copy=False)


def boundaries(ids: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Bool map of the pixels next to a pixel with another id (VOID counts as an id)."""
    edge = np.zeros(ids.shape, dtype=bool)
    dv = ids[1:, :] != ids[:-1, :]
    dh = ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    for _ in range(max(0, thickness - 1)):  # grow by one pixel per step (4-neighbourhood)
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def label_point(ids: np.ndarray, segment_id: int, bbox=None) -> tuple[int, int] | None:
    """(x, y) of the segment's pixel nearest to its centroid (inside even when concave)."""
    if bbox is not None and bbox[2] > 0 and bbox[3] > 0:
        x0, y0, w, h = (int(v) for v in bbox)
        sub = ids[y0 : y0 + h, x0 : x0 + w]
    else:
        x0 = y0 = 0
        sub = ids
    ys, xs = np.nonzero(sub == segment_id)
    if ys.size == 0:
        return None
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(xs[i]) + x0, int(ys[i]) + y0


def overlay(
    image,
    id_map,
    segments_info: list[dict],
    categories: CategoryList | None = None,
    alpha: float = 0.55,
    outlines: bool = True,
    labels: bool = True,
    legend: bool = True,
    font_size: int | None = None,
) -> np.ndarray:
    """Draw a panoptic prediction over its image; returns RGB uint8 [H', W', 3].

    image: HxWx3 (or anything `to_rgb_array` takes); id_map: [H, W] ids (0 = VOID);
    segments_info: dicts with `id`, `category_id` and optionally `score`, `isthing`, `bbox`.
    With `legend`, a panel is appended on the right (and the canvas grows downwards if
    the legend is taller than the image); otherwise the shape is the image's.
    """
    from panoptic_detr.data.image_io import to_rgb_array

    img = to_rgb_array(image)
    ids = _as_numpy_ids(id_map)
    H, W = img.shape[:2]
    if ids.shape != (H, W):
        raise ValueError(f"id map {ids.shape} does not match image {(H, W)}")
    ids = np.where(ids < 0, 0, ids)
    max_id = max([int(ids.max()) if ids.size else 0] + [int(s["id"]) for s in segments_info])
    lut = segment_colors(segments_info, categories, max_id)
    known = np.zeros(max_id + 1, dtype=bool)
    for s in segments_info:
        if int(s["id"]) > 0:
            known[int(s["id"])] = True
    colored = known[ids]

    out = img.astype(np.float32)
    tint = lut[ids].astype(np.float32)
    out[colored] = out[colored] * (1.0 - alpha) + tint[colored] * alpha
    if outlines:
        thickness = max(1, int(round(min(H, W) / 500)))
        out[boundaries(ids, thickness)] = OUTLINE
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    size = font_size or int(np.clip(round(min(H, W) / 40), 10, 32))
    font = _font(size)
    canvas = Image.fromarray(out)

    if labels:
        draw = ImageDraw.Draw(canvas)
        for s in segments_info:
            isthing = s.get("isthing")
            if isthing is None and categories is not None:
                c = categories.by_id.get(int(s["category_id"]))
                isthing = c.isthing if c else True
            if not isthing:
                continue
            pt = label_point(ids, int(s["id"]), s.get("bbox"))
            if pt is None:
                continue
            name = _name(int(s["category_id"]), categories)
            text = f"{name} {s['score']:.2f}" if s.get("score") is not None else name
            x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
            tw, th = x1 - x0, y1 - y0
            x = int(np.clip(pt[0] - tw // 2, 0, max(0, W - tw - 2)))
            y = int(np.clip(pt[1] - th // 2, 0, max(0, H - th - 2)))
            color = category_color(int(s["category_id"]), categories)
            draw.rectangle([x, y, x + tw + 2, y + th + 2], fill=color)
            draw.text((x + 1 - x0, y + 1 - y0), text, fill=text_color_for(color), font=font)

    if legend:
        canvas = _with_legend(canvas, segments_info, categories, font, size)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _name(category_id: int, categories: CategoryList | None) -> str:
    return categories.name_of(category_id) if categories is not None else f"class_{category_id}"


def _with_legend(canvas: Image.Image, segments_info, categories, font, size: int) -> Image.Image:
    entries: dict[int, tuple[str, bool]] = {}
    for s in segments_info:
        cid = int(s["category_id"])
        isthing = s.get("isthing")
        if isthing is None:
            c = categories.by_id.get(cid) if categories is not None else None
            isthing = c.isthing if c else True
        entries[cid] = (_name(cid, categories), bool(isthing))
    order = sorted(entries, key=lambda c: (not entries[c][1], c))  # things first, then stuff
    lines = [(cid, entries[cid][0] + ("" if entries[cid][1] else " (stuff)")) for cid in order]
    if not lines:
        lines = [(None, "no segments")]
    probe = ImageDraw.Draw(canvas)
    line_h = size + max(4, size // 3)
    text_w = max(probe.textbbox((0, 0), t, font=font)[2] for _, t in lines)
    pad = max(6, size // 2)
    swatch = size
    panel_w = pad + swatch + pad + text_w + pad
    panel_h = pad + line_h * len(lines) + pad
    W, H = canvas.size
    out = Image.new("RGB", (W + panel_w, max(H, panel_h)), LEGEND_BG)
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    y = pad
    for cid, text in lines:
        if cid is not None:
            color = category_color(cid, categories)
            draw.rectangle([W + pad, y, W + pad + swatch, y + swatch], fill=color, outline=(255, 255, 255))
        draw.text((W + pad + swatch + pad, y), text, fill=(235, 235, 235), font=font)
        y += line_h
    return out


def save_jpeg(path: str | os.PathLike, array: np.ndarray, quality: int = 90) -> None:
    """Write an RGB uint8 array as a JPEG, atomically."""
    from panoptic_detr.utils.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format="JPEG", quality=quality)
