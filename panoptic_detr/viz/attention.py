"""Figures 1 and 2: encoder self-attention of reference points, decoder attention per object.

Both take plain arrays: the original image (HxWx3 uint8), attention maps already reshaped
to the valid (unpadded) stride-32 feature grid, and the extent of that grid in original
image pixels, so they can be drawn from any model or from synthetic data.
"""

from __future__ import annotations

import string
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.viz.figures import LABEL_SIZE, SUBTITLE_SIZE, TICK_SIZE, TITLE_SIZE
from panoptic_detr.viz.figures import (
    add_colorbar,
    as_uint8_image,
    category_color,
    draw_box,
    grid_shape,
    heatmap_limits,
    image_axes,
    new_figure,
    object_label,
)

# Colours of reference points A, B, C, ... (distinct on photos and on the viridis maps).
POINT_COLORS = ["#ff2d2d", "#00e5ff", "#ffd400", "#ff66ff", "#7dff4d", "#ff9900", "#ffffff", "#3d7dff"]


def point_name(i: int) -> str:
    letters = string.ascii_uppercase
    return letters[i % 26] + ("" if i < 26 else str(i // 26))


def grid_extent(image_size: tuple[int, int], grid_size: tuple[int, int],
                cell_size: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """The imshow extent (left, right, bottom, top) of a feature grid over the image.

    `cell_size` is the (height, width) of one cell in original pixels; by default the
    grid is stretched exactly over the image.
    """
    H, W = image_size
    h, w = grid_size
    if cell_size is None:
        cell_size = (H / h, W / w)
    return (0.0, w * cell_size[1], h * cell_size[0], 0.0)


def _mark_point(ax, x: float, y: float, color: str, name: str, size: float = 11) -> None:
    ax.plot([x], [y], marker="o", markersize=size, markerfacecolor="none", markeredgecolor="black",
            markeredgewidth=3.2)
    ax.plot([x], [y], marker="o", markersize=size, markerfacecolor="none", markeredgecolor=color,
            markeredgewidth=1.8)
    ax.plot([x], [y], marker="+", markersize=size * 0.7, color=color, markeredgewidth=1.5)
    ax.annotate(name, (x, y), xytext=(7, 7), textcoords="offset points", color=color, fontsize=LABEL_SIZE + 1,
                fontweight="bold", bbox=dict(facecolor="black", alpha=0.55, edgecolor="none", pad=1.2))


def encoder_attention_figure(
    image,
    maps: Sequence[np.ndarray] | np.ndarray,
    points: Sequence[Sequence[float]],
    extent: tuple[float, float, float, float] | None = None,
    stride: int = 32,
    title: str = "Encoder self-attention (last layer, mean over heads)",
    max_cols: int = 3,
) -> Figure:
    """Figure 1: each reference point's self-attention map over the image.

    `maps[i]` is the [h, w] attention of the token under `points[i]` (x, y in original
    pixels) over the valid feature grid; `extent` places that grid on the image
    (`grid_extent`). The image with all points is on the left; one map per point on the right.
    """
    image = as_uint8_image(image)
    H, W = image.shape[:2]
    maps = [np.asarray(m, dtype=np.float64) for m in maps]
    points = [tuple(float(v) for v in p) for p in points]
    if len(maps) != len(points):
        raise ValueError(f"{len(maps)} maps for {len(points)} points")
    n = len(maps)
    rows, cols = grid_shape(n, max_cols) if n else (1, 1)
    aspect = H / max(W, 1)
    panel_w = 4.2
    panel_h = max(2.4, panel_w * aspect) + 0.6
    img_w = 5.5
    fig = new_figure(img_w + cols * (panel_w + 0.9) + 0.4, max(rows * panel_h, img_w * aspect + 1.0) + 0.8,
                     constrained=True)
    gs = GridSpec(rows, cols + 1, figure=fig, width_ratios=[img_w / panel_w * 1.15] + [1.0] * cols)
    fig.suptitle(title, fontsize=TITLE_SIZE, fontweight="bold")

    ax_img = fig.add_subplot(gs[:, 0])
    image_axes(ax_img, image, "Input image and reference points")
    for i, (x, y) in enumerate(points):
        _mark_point(ax_img, x, y, POINT_COLORS[i % len(POINT_COLORS)], point_name(i))
    if not n:
        ax_img.set_xlabel("x (pixels) - no reference point (nothing detected and no --points)", fontsize=TICK_SIZE + 1)

    for i, (m, (x, y)) in enumerate(zip(maps, points)):
        ax = fig.add_subplot(gs[i // cols, 1 + i % cols])
        ext = extent if extent is not None else grid_extent((H, W), m.shape)
        vmin, vmax = heatmap_limits(m)
        im = ax.imshow(m, extent=ext, cmap="viridis", interpolation="nearest", vmin=vmin, vmax=vmax)
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        _mark_point(ax, x, y, POINT_COLORS[i % len(POINT_COLORS)], point_name(i), size=9)
        ax.set_title(f"point {point_name(i)} at ({x:.0f}, {y:.0f})", fontsize=SUBTITLE_SIZE)
        ax.set_xlabel(f"x (pixels; {m.shape[1]} cells of stride {stride})", fontsize=TICK_SIZE + 1)
        ax.set_ylabel(f"y (pixels; {m.shape[0]} cells)", fontsize=TICK_SIZE + 1)
        ax.tick_params(labelsize=TICK_SIZE)
        add_colorbar(fig, im, ax, "attention weight")
    return fig


def _dimmed(image: np.ndarray) -> np.ndarray:
    """A grey, darkened copy of the image so a heat map on top reads clearly."""
    g = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    g = 40 + 0.55 * g
    return np.repeat(g[..., None], 3, axis=2).astype(np.uint8)


def decoder_attention_figure(
    image,
    maps: Sequence[np.ndarray] | np.ndarray,
    boxes_xyxy: Sequence[Sequence[float]] | np.ndarray,
    category_ids: Sequence[int],
    scores: Sequence[float],
    queries: Sequence[int],
    categories: CategoryList | None = None,
    extent: tuple[float, float, float, float] | None = None,
    title: str = "Decoder cross-attention per detected object (last layer, mean over heads)",
    max_cols: int = 4,
    notes: Sequence[str] | None = None,
) -> Figure:
    """Figure 2: for each detected object, its query's attention over the image.

    `maps[k]` is the [h, w] cross-attention of query `queries[k]` over the valid feature
    grid; boxes are (x0, y0, x1, y1) in original pixels; `notes[k]` (e.g. "dropped by
    --dedup") is added to the panel's title.
    """
    image = as_uint8_image(image)
    H, W = image.shape[:2]
    n = len(maps)
    rows, cols = grid_shape(n, max_cols)
    aspect = H / max(W, 1)
    panel_w = 4.0
    panel_h = panel_w * aspect + 0.7
    fig = new_figure(cols * (panel_w + 0.9) + 0.3, rows * panel_h + 0.8, constrained=True)
    gs = GridSpec(rows, cols, figure=fig)
    fig.suptitle(title, fontsize=TITLE_SIZE, fontweight="bold")
    if n == 0:
        ax = fig.add_subplot(gs[0, 0])
        image_axes(ax, image, "no object above the threshold")
        return fig
    dim = _dimmed(image)
    for k in range(n):
        ax = fig.add_subplot(gs[k // cols, k % cols])
        m = np.asarray(maps[k], dtype=np.float64)
        color = category_color(categories, category_ids[k])
        image_axes(ax, dim)
        ext = extent if extent is not None else grid_extent((H, W), m.shape)
        vmin, vmax = heatmap_limits(m)
        im = ax.imshow(m, extent=ext, cmap="inferno", alpha=0.7, interpolation="bilinear", vmin=vmin, vmax=vmax)
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        label = object_label(categories, category_ids[k], float(scores[k]))
        draw_box(ax, boxes_xyxy[k], color, label)
        note = notes[k] if notes is not None and notes[k] else ""
        ax.set_title(f"query {int(queries[k])}: {label}" + (f"\n({note})" if note else ""), fontsize=SUBTITLE_SIZE,
                     color="#b35900" if note else "black")
        add_colorbar(fig, im, ax, "attention weight")
    return fig
