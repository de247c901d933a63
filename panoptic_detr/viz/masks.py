"""Figures 5 and 6: the mask head's attention maps per object, and the masks themselves.

Figure 5 shows, for each kept object, the `nheads` maps of the multi-head attention
module (`bbox_attention`) that feed the FPN mask head: one softmax shared by all heads and
positions, so one colour scale per object. Figure 6 shows each kept object's binary mask
(sigmoid > 0.5 after upsampling), the pixel-wise argmax that turns them into one panoptic
id map, and the final overlay.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.patches import Patch, Rectangle

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.viz.attention import grid_extent
from panoptic_detr.viz.figures import LABEL_SIZE, SUBTITLE_SIZE, TICK_SIZE, TITLE_SIZE
from panoptic_detr.viz.figures import (
    as_uint8_image,
    category_color,
    category_name,
    draw_box,
    heatmap_limits,
    hide_axes,
    image_axes,
    new_figure,
    object_label,
)


def mask_attention_figure(
    image,
    attention: np.ndarray,
    boxes_xyxy: Sequence[Sequence[float]] | np.ndarray,
    category_ids: Sequence[int],
    scores: Sequence[float],
    queries: Sequence[int],
    categories: CategoryList | None = None,
    extent: tuple[float, float, float, float] | None = None,
    stride: int = 32,
    title: str | None = None,
) -> Figure:
    """Figure 5: rows = kept objects, columns = the object's box on the image then its
    `nheads` attention maps (`attention` [K, nheads, h, w] on the valid feature grid)."""
    image = as_uint8_image(image)
    H, W = image.shape[:2]
    attention = np.asarray(attention, dtype=np.float64)
    K = attention.shape[0] if attention.ndim == 4 else 0
    nheads = attention.shape[1] if K else 8
    aspect = H / max(W, 1)
    cell = 1.75
    row_h = max(1.2, cell * aspect) + 0.35
    fig = new_figure(1.2 + cell * 1.35 + nheads * cell + 1.0, max(1, K) * row_h + 1.3)
    fh = fig.get_figheight()
    fig.suptitle(title or f"Mask-head attention maps: {nheads} heads per object at stride {stride} "
                 "(one softmax over heads x positions)", fontsize=TITLE_SIZE - 1, fontweight="bold")
    if K == 0:
        ax = fig.add_subplot(1, 1, 1)
        image_axes(ax, image, "no object above the threshold")
        return fig
    # one axes per object holds its nheads maps side by side (fewer axes: much faster to draw)
    gs = GridSpec(K, 3, figure=fig, width_ratios=[1.35, nheads * 1.06, 0.08],
                  left=1.0 / fig.get_figwidth(), right=0.96, top=1 - 1.0 / fh, bottom=0.3 / fh,
                  wspace=0.04, hspace=0.3)
    gap = 0.06 * W
    ext = extent if extent is not None else grid_extent((H, W), attention.shape[-2:])
    for k in range(K):
        color = category_color(categories, category_ids[k])
        ax0 = fig.add_subplot(gs[k, 0])
        ax0.imshow(image, extent=(0, W, H, 0))
        draw_box(ax0, boxes_xyxy[k], color, None, linewidth=1.8)
        ax0.set_xlim(0, W)
        ax0.set_ylim(H, 0)
        hide_axes(ax0)
        ax0.set_ylabel(object_label(categories, category_ids[k], float(scores[k]), int(queries[k])).replace(" (", "\n("),
                       fontsize=TICK_SIZE + 1, rotation=0, ha="right", va="center", labelpad=4)
        if k == 0:
            ax0.set_title("object", fontsize=LABEL_SIZE)
        vmin, vmax = heatmap_limits(attention[k])
        ax = fig.add_subplot(gs[k, 1])
        for h in range(nheads):
            x0 = h * (W + gap)
            im = ax.imshow(attention[k, h], cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest",
                           extent=(x0 + ext[0], x0 + ext[1], ext[2], ext[3]))
            im.set_clip_path(Rectangle((x0, 0), W, H, transform=ax.transData))
            if k == 0:
                ax.text(x0 + W / 2, -0.04 * H, f"head {h + 1}", ha="center", va="bottom", fontsize=LABEL_SIZE)
        ax.set_xlim(0, nheads * W + (nheads - 1) * gap)
        ax.set_ylim(H, 0)
        ax.set_aspect("equal")
        hide_axes(ax)
        cax = fig.add_subplot(gs[k, 2])
        cb = fig.colorbar(im, cax=cax)
        cb.ax.tick_params(labelsize=TICK_SIZE - 1)
        if k == K // 2:
            cb.set_label("attention weight", fontsize=TICK_SIZE + 1)
    return fig


def shaded_segment_colors(id_map: np.ndarray, segments_info: Sequence[dict], categories: CategoryList | None):
    """A colour per segment id: its category's colour, instances of one category told apart
    by brightness."""
    colors: dict[int, tuple[float, float, float]] = {}
    seen: dict[int, int] = {}
    for s in segments_info:
        base = np.array(category_color(categories, s["category_id"]))
        n = seen.get(int(s["category_id"]), 0)
        seen[int(s["category_id"])] = n + 1
        factor = [1.0, 0.7, 1.25, 0.5, 1.45][n % 5]
        c = np.clip(base * factor if factor <= 1 else base + (1 - base) * (factor - 1), 0, 1)
        colors[int(s["id"])] = tuple(float(v) for v in c)
    return colors


def colorize_ids(id_map: np.ndarray, colors: dict[int, tuple[float, float, float]],
                 void=(0.0, 0.0, 0.0)) -> np.ndarray:
    """An HxWx3 float image colouring each id of `id_map` (ids without a colour: `void`)."""
    id_map = np.asarray(id_map)
    out = np.empty(id_map.shape + (3,), dtype=np.float32)
    out[...] = void
    for i, c in colors.items():
        out[id_map == i] = c
    return out


def simple_overlay(image: np.ndarray, id_map: np.ndarray, colors: dict, alpha: float = 0.55) -> np.ndarray:
    """Image blended with the segment colours (used when no overlay image is given)."""
    img = image.astype(np.float32) / 255.0
    col = colorize_ids(id_map, colors)
    m = (np.asarray(id_map) != 0)[..., None]
    out = np.where(m, (1 - alpha) * img + alpha * col, img)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def _binary_masks_layout(image_hw: tuple[int, int], K: int, max_cols: int):
    """Figure, its two sub-figures (the mask grid on top, the argmax and overlay below) and
    the mask grid's rows and columns, sized for `K` masks of an image of `image_hw`."""
    H, W = image_hw
    cols = min(max(K, 1), max_cols)
    rows = -(-max(K, 1) // cols)
    aspect = H / max(W, 1)
    fig_w = 15.0
    cell_w = min(3.2, fig_w / cols)
    mask_h = rows * (cell_w * aspect + 0.75) + 0.2
    big_w = (fig_w - 3.5) / 2
    big_h = big_w * aspect + 1.0
    fig = new_figure(fig_w, mask_h + big_h + 0.8, constrained=True)
    top, bottom = fig.subfigures(2, 1, height_ratios=[mask_h, big_h])
    return fig, top, bottom, rows, cols


def _draw_mask_grid(top, image_hw: tuple[int, int], masks: np.ndarray, shown: list[int], rows: int, cols: int,
                    category_ids, scores, queries, categories: CategoryList | None, notes=None) -> None:
    """One panel per shown mask, in its category's colour on black, with its share of the image."""
    H, W = image_hw
    total = float(H * W)
    axes = top.subplots(rows, cols, squeeze=False)
    for slot in range(rows * cols):
        ax = axes[slot // cols][slot % cols]
        if slot >= len(shown):
            ax.axis("off")
            continue
        k = shown[slot]
        color = category_color(categories, category_ids[k])
        cmap = ListedColormap([(0.08, 0.08, 0.08), color])
        ax.imshow(masks[k].astype(np.uint8), cmap=cmap, vmin=0, vmax=1, extent=(0, W, H, 0),
                  interpolation="nearest")
        hide_axes(ax)
        note = notes[k] if notes is not None and notes[k] else ""
        ax.set_title(f"q{int(queries[k])} {object_label(categories, category_ids[k], float(scores[k]))}"
                     + (f"\n({note})" if note else ""), fontsize=LABEL_SIZE, color="#b35900" if note else "black")
        ax.set_xlabel(f"mask: {masks[k].sum() / total:.1%} of the image", fontsize=TICK_SIZE + 1)


def _side_legend(ax, handles: list, title: str) -> None:
    """A legend to the right of `ax`."""
    ax.legend(handles=handles, fontsize=TICK_SIZE, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              title=title, title_fontsize=TICK_SIZE + 1, frameon=False)


def _draw_argmax_panel(ax, image_hw: tuple[int, int], id_map: np.ndarray, colors: dict,
                       segments_info: Sequence[dict], categories: CategoryList | None) -> None:
    """The panoptic id map in segment colours, with a legend of segment ids (at most 18 rows)."""
    H, W = image_hw
    ax.imshow(colorize_ids(id_map, colors), extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_title("pixel-wise argmax over the kept masks\n(panoptic id map, small segments removed)",
                 fontsize=SUBTITLE_SIZE)
    ax.set_xlabel("x (pixels)", fontsize=TICK_SIZE + 1)
    ax.set_ylabel("y (pixels)", fontsize=TICK_SIZE + 1)
    ax.tick_params(labelsize=TICK_SIZE)
    handles = [Patch(facecolor=colors[int(s["id"])], edgecolor="black",
                     label=f"{int(s['id'])}: {category_name(categories, s['category_id'])}")
               for s in segments_info]
    handles.append(Patch(facecolor=(0, 0, 0), edgecolor="black", label="0: void"))
    if len(handles) > 18:
        handles = handles[:17] + [Patch(facecolor="white", edgecolor="white", label=f"... {len(handles) - 17} more")]
    _side_legend(ax, handles, "segment id")


def _draw_overlay_panel(ax, image: np.ndarray, id_map: np.ndarray, colors: dict, segments_info: Sequence[dict],
                        overlay_image: np.ndarray | None, categories: CategoryList | None) -> None:
    """The final overlay: `overlay_image` as given, or a plain blend of the segment colours
    with a legend of categories (a given overlay carries its own labels)."""
    own = overlay_image is None
    ov = simple_overlay(image, id_map, colors) if own else as_uint8_image(overlay_image)
    image_axes(ax, ov, "final panoptic segmentation (overlay)")
    if not own:
        return
    count: dict[int, int] = {}
    for seg in segments_info:
        count[int(seg["category_id"])] = count.get(int(seg["category_id"]), 0) + 1
    handles = [Patch(facecolor=category_color(categories, c), edgecolor="black",
                     label=category_name(categories, c) + (f" x{n}" if n > 1 else ""))
               for c, n in count.items()]
    if handles:
        _side_legend(ax, handles[:18], "category")


def binary_masks_figure(
    image,
    masks: np.ndarray,
    category_ids: Sequence[int],
    scores: Sequence[float],
    queries: Sequence[int],
    id_map: np.ndarray,
    segments_info: Sequence[dict],
    overlay_image: np.ndarray | None = None,
    categories: CategoryList | None = None,
    title: str | None = None,
    max_cols: int = 5,
    max_masks: int = 20,
    notes: Sequence[str] | None = None,
) -> Figure:
    """Figure 6: kept objects' binary masks, the pixel-wise argmax id map, the overlay.

    `masks` [K, H, W] bool in original pixels; `id_map` [H, W] int (0 = void) with its
    `segments_info`; `overlay_image` the final rendering (e.g. `viz.overlay.overlay`).
    At most `max_masks` masks are drawn (the best-scoring ones, in the given order);
    `notes[k]` (e.g. "dropped by --dedup") is added to mask k's title.
    """
    image = as_uint8_image(image)
    masks = np.asarray(masks).astype(bool)
    total_k = masks.shape[0] if masks.ndim == 3 else 0
    shown = sorted(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:max_masks].tolist())
    K = len(shown)
    fig, top, bottom, rows, cols = _binary_masks_layout(image.shape[:2], K, max_cols)
    fig.suptitle(title or "Binary masks of the kept objects, pixel-wise argmax, final panoptic overlay",
                 fontsize=TITLE_SIZE, fontweight="bold")
    top.suptitle(f"{total_k} kept object mask{'s' if total_k != 1 else ''}"
                 + (f" ({K} best shown)" if K < total_k else "")
                 + ": sigmoid(mask logits) > 0.5, upsampled to the image",
                 fontsize=SUBTITLE_SIZE)
    if K == 0:
        ax = top.add_subplot(1, 1, 1)
        hide_axes(ax)
        ax.text(0.5, 0.5, "no object above the threshold", ha="center", va="center", transform=ax.transAxes,
                fontsize=SUBTITLE_SIZE)
    else:
        _draw_mask_grid(top, image.shape[:2], masks, shown, rows, cols, category_ids, scores, queries, categories,
                        notes)
    colors = shaded_segment_colors(id_map, segments_info, categories)
    ax_a, ax_o = bottom.subplots(1, 2)
    _draw_argmax_panel(ax_a, image.shape[:2], id_map, colors, segments_info, categories)
    _draw_overlay_panel(ax_o, image, id_map, colors, segments_info, overlay_image, categories)
    return fig

