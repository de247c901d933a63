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


def place_box_labels(ax, labels: Sequence[tuple[Sequence[float], str, tuple]], fontsize: float = LABEL_SIZE - 1,
                     pad: float = 1.5) -> list:
    """Label tags for boxes (x0, y0, x1, y1 in data coordinates, y down), each placed at the
    first of its box's corners (above or inside, left or right) where it lies wholly inside
    the axes and overlaps no earlier tag; when every corner is taken, the nearest free
    place above or below the best corner (a column of tags). `labels`: (box, text, colour)
    in drawing priority. Returns the Text artists."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    grow = (pad + 0.5) * fig.dpi / 72.0  # the tag's background reaches past the text
    placed: list = []
    texts = []
    for box, text, color in labels:
        x0, y0, x1, y1 = (float(v) for v in box)
        t = ax.text(x0, y0, text, fontsize=fontsize, color=text_color_for(color), clip_on=False,
                    bbox=dict(facecolor=color, edgecolor="none", alpha=0.85, pad=pad))
        options = []
        # (anchor x, anchor y, ha, va): above-left, inside-left, below-left, the same on the right
        for anchor in ((x0, y0, "left", "bottom"), (x0, y0, "left", "top"), (x0, y1, "left", "top"),
                       (x1, y0, "right", "bottom"), (x1, y0, "right", "top"), (x0, y1, "left", "bottom")):
            t.set_position(anchor[:2])
            t.set_ha(anchor[2])
            t.set_va(anchor[3])
            e = t.get_window_extent(renderer)
            options.append((anchor, _inside((e.x0 - grow, e.y0 - grow, e.x1 + grow, e.y1 + grow), frame)))
        anchor, ext = _free_place(options, placed, frame)
        px, py = ax.transData.transform(anchor[:2])
        t.set_position(ax.transData.inverted().transform((px + ext[4], py + ext[5])))
        t.set_ha(anchor[2])
        t.set_va(anchor[3])
        placed.append(ext[:4])
        texts.append(t)
    return texts


def _inside(ext, frame) -> tuple:
    """(x0, y0, x1, y1, dx, dy): the extent shifted by (dx, dy) to lie inside `frame`."""
    x0, y0, x1, y1 = ext
    dx = max(frame.x0 - x0, 0) + min(frame.x1 - x1, 0)
    dy = max(frame.y0 - y0, 0) + min(frame.y1 - y1, 0)
    return (x0 + dx, y0 + dy, x1 + dx, y1 + dy, dx, dy)


def _free_place(options: list, placed: list, frame) -> tuple:
    """The first option overlapping no placed extent, else the first one slid up or down
    (nearest first) to a free spot inside the frame, else the least overlapping option."""
    def overlap(e) -> float:
        return sum(_overlap(e, p) for p in placed)

    for anchor, ext in options:
        if overlap(ext) == 0:
            return anchor, ext
    anchor, ext = options[0]
    height = ext[3] - ext[1]
    for k in range(1, int(frame.height // max(height, 1)) + 1):
        for sign in (-1, 1):  # display y grows upward: -1 moves the tag down the image
            d = sign * k * height
            moved = (ext[0], ext[1] + d, ext[2], ext[3] + d, ext[4], ext[5] + d)
            if frame.y0 <= moved[1] and moved[3] <= frame.y1 and overlap(moved) == 0:
                return anchor, moved
    return min(options, key=lambda o: overlap(o[1]))


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0
