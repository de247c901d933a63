"""Shared helpers for the explain figures.

Figures are built on `matplotlib.figure.Figure` directly (Agg canvas, no pyplot), so
building them never touches a GUI backend or pyplot's global figure list, and they are
freed as soon as the caller drops them.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.viz import colors

TITLE_SIZE = 15
SUBTITLE_SIZE = 11
LABEL_SIZE = 10
TICK_SIZE = 8
SAVE_DPI = 110


def new_figure(width: float, height: float, constrained: bool = False) -> Figure:
    """A figure of `width` x `height` inches with an Agg canvas attached."""
    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = SAVE_DPI) -> None:
    """Write `fig` as a PNG atomically (no half-written file on interruption)."""
    from panoptic_detr.utils.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", facecolor="white")


def render_rgb(fig: Figure, dpi: int = 60) -> np.ndarray:
    """The figure rasterised as an HxWx3 uint8 array (used by tests)."""
    fig.set_dpi(dpi)
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    """Rows and columns for `n` panels, at most `max_cols` wide, close to square."""
    n = max(1, n)
    cols = min(max_cols, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    return rows, cols


def query_grid_shape(n: int) -> tuple[int, int]:
    """A near-square grid for `n` query slots: 10x10 for 100, 4x5 for 20, 10x30 for 300."""
    n = max(1, n)
    top = int(math.floor(math.sqrt(n)))
    low = max(1, int(math.ceil(math.sqrt(n / 2))))
    for rows in range(top, low - 1, -1):
        if n % rows == 0:
            return rows, n // rows
    return top, math.ceil(n / top)


def as_uint8_image(image) -> np.ndarray:
    """An HxWx3 uint8 array from a numpy array, PIL image or CHW/HWC tensor in 0..1 or 0..255."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = np.transpose(image, (1, 2, 0))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if arr.max() <= 1.0 + 1e-6:
            arr = arr * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return arr


def category_color(categories: CategoryList | None, category_id: int) -> tuple[float, float, float]:
    """The category's colour (`viz.colors.category_color`) as matplotlib RGB floats."""
    return tuple(v / 255.0 for v in colors.category_color(category_id, categories))


def category_name(categories: CategoryList | None, category_id: int) -> str:
    if categories is None:
        return f"class {int(category_id)}"
    return categories.name_of(int(category_id))


def object_label(categories: CategoryList | None, category_id: int, score: float | None = None,
                 query: int | None = None) -> str:
    """`name 0.93 (q17)`, the label used on boxes and panel titles."""
    text = category_name(categories, category_id)
    if score is not None:
        text += f" {score:.2f}"
    if query is not None:
        text += f" (q{query})"
    return text


def text_color_for(rgb: Sequence[float]) -> str:
    """Black or white, whichever reads better on `rgb`."""
    r, g, b = rgb[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def draw_box(ax, box_xyxy: Sequence[float], color, label: str | None = None,
             linewidth: float = 2.0, fontsize: float = LABEL_SIZE - 1) -> None:
    """A box outline with an optional filled label tag above its top-left corner."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth))
    if label:
        y_lo, y_hi = sorted(ax.get_ylim())
        inside = y0 - y_lo < 0.07 * (y_hi - y_lo)  # no room above the box: put the tag inside it
        ax.text(x0 + (1 if inside else 0), y0, label, fontsize=fontsize, color=text_color_for(color),
                va="top" if inside else "bottom", ha="left",
                bbox=dict(facecolor=color, edgecolor="none", alpha=0.85, pad=1.5), clip_on=True)


def image_axes(ax, image: np.ndarray, title: str | None = None, fontsize: float = SUBTITLE_SIZE) -> None:
    """Show an image on pixel axes (x right, y down) labelled in pixels."""
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0), interpolation="bilinear")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xlabel("x (pixels)", fontsize=TICK_SIZE + 1)
    ax.set_ylabel("y (pixels)", fontsize=TICK_SIZE + 1)
    ax.tick_params(labelsize=TICK_SIZE)
    if title:
        ax.set_title(title, fontsize=fontsize)


def hide_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def empty_panel(ax, message: str) -> None:
    """A blank panel saying why there is nothing to show."""
    hide_axes(ax)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=SUBTITLE_SIZE, wrap=True,
            transform=ax.transAxes, color="0.3")


def heatmap_limits(values: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) spanning `values`, kept apart so that a constant map still draws."""
    vmin = float(values.min())
    return vmin, max(float(values.max()), vmin + 1e-12)


def add_colorbar(fig: Figure, mappable, ax, label: str, fontsize: float = TICK_SIZE + 1):
    cb = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label(label, fontsize=fontsize)
    cb.ax.tick_params(labelsize=TICK_SIZE)
    return cb
