"""Colours for categories: the category's own colour when known, a stable default otherwise."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from panoptic_detr.data.categories import CategoryList, default_color

__all__ = ["category_color", "segment_colors", "text_color_for", "darken"]


def category_color(category_id: int, categories: CategoryList | None = None) -> tuple[int, int, int]:
    """The RGB colour of a category: its `color` in `categories`, else `default_color(id)`."""
    if categories is not None:
        c = categories.by_id.get(int(category_id))
        if c is not None:
            return tuple(int(v) for v in c.color)
    return default_color(int(category_id))


def segment_colors(segments_info: Iterable[dict], categories: CategoryList | None, max_id: int) -> np.ndarray:
    """A lookup table uint8 [max_id + 1, 3]: row = segment id, colour of its category.

    Row 0 (VOID) and ids without a segment are black.
    """
    lut = np.zeros((max_id + 1, 3), dtype=np.uint8)
    for s in segments_info:
        sid = int(s["id"])
        if 0 < sid <= max_id:
            lut[sid] = category_color(int(s["category_id"]), categories)
    return lut


def text_color_for(rgb) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `rgb` (relative luminance)."""
    r, g, b = (float(v) for v in rgb[:3])
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def darken(rgb, factor: float = 0.6) -> tuple[int, int, int]:
    return tuple(int(round(float(v) * factor)) for v in rgb[:3])
