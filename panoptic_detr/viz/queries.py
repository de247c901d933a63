"""Figures 3 and 4: where each query slot looks over many images, and which queries fired.

Figure 3 follows the DETR paper's slot analysis: every predicted box centre of a query
over a set of images is a dot, coloured by the box's size and shape (green small, red
large and horizontal, blue large and vertical).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.patches import ConnectionPatch, Rectangle

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.viz.figures import LABEL_SIZE, SUBTITLE_SIZE, TICK_SIZE, TITLE_SIZE
from panoptic_detr.viz.figures import (
    as_uint8_image,
    category_color,
    category_name,
    grid_shape,
    image_axes,
    new_figure,
    place_box_labels,
    query_grid_shape,
    text_color_for,
)

GREEN = np.array([0.10, 0.70, 0.15])
RED = np.array([0.90, 0.10, 0.10])
BLUE = np.array([0.10, 0.25, 0.95])


def box_size_colors(w, h, large: float = 0.5) -> np.ndarray:
    """RGB colours [N, 3] for boxes of normalised size (w, h).

    The size s = sqrt(w*h) / `large` (clipped to 1) blends green (small) into a mix of
    red and blue given by the box's shape: red for wide boxes, blue for tall ones.
    """
    w = np.clip(np.asarray(w, dtype=np.float64).reshape(-1), 0, None)
    h = np.clip(np.asarray(h, dtype=np.float64).reshape(-1), 0, None)
    s = np.clip(np.sqrt(w * h) / large, 0.0, 1.0)[:, None]
    horizontal = (w / np.maximum(w + h, 1e-12))[:, None]
    # sharpen the horizontal/vertical split so that near-square boxes are not all purple
    horizontal = np.clip((horizontal - 0.5) * 2.0 + 0.5, 0.0, 1.0)
    big = horizontal * RED + (1.0 - horizontal) * BLUE
    return np.clip((1.0 - s) * GREEN + s * big, 0.0, 1.0)


def query_boxes_figure(
    boxes: np.ndarray,
    queries: Sequence[int] | int = 20,
    scores: np.ndarray | None = None,
    min_score: float = 0.0,
    title: str | None = None,
    max_cols: int = 5,
) -> Figure:
    """Figure 3: one panel per query with its predicted box centres over all images.

    `boxes` is [N_images, Q, 4] (cx, cy, w, h, normalised by the image size); `queries`
    the query indices to show (or how many, from query 0); `scores` [N_images, Q] and
    `min_score` optionally drop low-confidence predictions.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N_images, Q, 4], got {list(boxes.shape)}")
    n_img, Q = boxes.shape[:2]
    if isinstance(queries, (int, np.integer)):
        queries = list(range(min(int(queries), Q)))
    queries = [int(q) for q in queries]
    n = len(queries)
    rows, cols = grid_shape(n, max_cols)
    panel = 2.7
    fig = new_figure(max(cols * panel + 0.6, 5.0), rows * (panel + 0.35) + 2.4)
    top = 1 - 1.0 / fig.get_figheight()
    gs = GridSpec(rows, cols, figure=fig, left=0.06, right=0.98, top=top, bottom=1.7 / fig.get_figheight(),
                  wspace=0.15, hspace=0.35)
    sep = " " if cols >= 5 else "\n"  # a narrow figure: two lines, or the title is clipped
    fig.suptitle(title or f"Where the queries look:{sep}predicted box centres of {n} of {Q} queries over "
                 f"{n_img} image{'s' if n_img != 1 else ''}", fontsize=TITLE_SIZE, fontweight="bold")
    for i, q in enumerate(queries):
        ax = fig.add_subplot(gs[i // cols, i % cols])
        b = boxes[:, q]
        keep = np.ones(n_img, dtype=bool)
        if scores is not None and min_score > 0:
            keep = np.asarray(scores)[:, q] >= min_score
        b = b[keep]
        colors = box_size_colors(b[:, 2], b[:, 3])
        ax.scatter(b[:, 0], b[:, 1], s=14 if len(b) < 200 else 6, c=colors, alpha=0.75, linewidths=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_facecolor("#f7f7f7")
        ax.set_aspect("equal")
        ax.set_title(f"query {q} ({len(b)} boxes)", fontsize=SUBTITLE_SIZE - 1)
        ax.tick_params(labelsize=TICK_SIZE - 1)
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        if i % cols == 0:
            ax.set_ylabel("centre y / image height", fontsize=TICK_SIZE)
        else:
            ax.set_yticklabels([])
        if i // cols == rows - 1 or i + cols >= n:
            ax.set_xlabel("centre x / image width", fontsize=TICK_SIZE)
        else:
            ax.set_xticklabels([])
    _colour_key(fig)
    return fig


def _colour_key(fig: Figure) -> None:
    """The dots' colours as a 2-D key at the bottom of the figure (size across, shape up),
    drawn with `box_size_colors` itself, so the key shows the blends the dots have."""
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    ax = fig.add_axes(((fw - 3.2) / 2 / fw, 0.6 / fh, 3.2 / fw, 0.45 / fh))  # labels below it
    size = np.linspace(0.0, 0.6, 61)  # sqrt(w * h), fraction of the image
    aspect = np.geomspace(1 / 4, 4, 21)  # w / h: tall (bottom) to wide (top)
    s, a = np.meshgrid(size, aspect)
    w, h = s * np.sqrt(a), s / np.sqrt(a)
    ax.imshow(box_size_colors(w.ravel(), h.ravel()).reshape(*s.shape, 3), origin="lower", aspect="auto",
              extent=(0, 0.6, 0, 1))
    ax.set_yticks([0.1, 0.9], ["tall", "wide"], fontsize=TICK_SIZE)
    ax.set_xticks([0, 0.25, 0.5], ["0", "0.25", "0.5+"], fontsize=TICK_SIZE)
    ax.set_xlabel("box size sqrt(w h) / image (colour of the dots)", fontsize=TICK_SIZE)


def _active_queries_layout(image_hw: tuple[int, int], rows: int, cols: int, title: str):
    """The figure with the query grid on the left, the image on the right and the grid's
    colour bar under it (positions in inches turned into figure fractions).
    Returns (fig, grid axes, image axes, colour-bar rectangle)."""
    H, W = image_hw
    grid_w = 6.0
    grid_h = grid_w / cols * rows
    img_w = 7.5
    img_h = img_w * H / max(W, 1)
    fig = new_figure(grid_w + img_w + 2.6, max(grid_h + 2.4, img_h + 1.9))  # room for the x label
    fig.suptitle(title, fontsize=TITLE_SIZE, fontweight="bold")
    fh = fig.get_figheight()
    fw = fig.get_figwidth()
    ax_q = fig.add_axes((0.6 / fw, (fh - 1.0 - grid_h) / fh, grid_w / fw, grid_h / fh))
    ax_i = fig.add_axes(((grid_w + 1.9) / fw, (fh - 1.0 - img_h) / fh, img_w / fw, img_h / fh))
    colorbar_rect = (0.6 / fw, (fh - 1.0 - grid_h - 0.85) / fh, grid_w / fw, 0.15 / fh)
    return fig, ax_q, ax_i, colorbar_rect


def _draw_query_grid(ax_q, num_queries: int, rows: int, cols: int, fired_by_q: dict, shades: np.ndarray,
                     categories: CategoryList | None):
    """One cell per query slot: fired ones filled with their category's colour and named,
    the others shaded by `shades`. Returns the shading image (for its colour bar)."""
    grid = np.full((rows, cols), np.nan)
    for q in range(num_queries):
        grid[q // cols, q % cols] = shades[q]
    im = ax_q.imshow(grid, cmap="Greys", vmin=0.0, vmax=1.0, extent=(0, cols, rows, 0), interpolation="nearest")
    font = max(5.0, min(10.0, 75.0 / cols))
    for q in range(num_queries):
        r, c = divmod(q, cols)
        f = fired_by_q.get(q)
        if f is not None:
            color = category_color(categories, f["category_id"])
            state = f.get("state", "kept")
            ax_q.add_patch(Rectangle((c, r), 1, 1, facecolor=color, edgecolor="black", linewidth=1.5,
                                     hatch={"duplicate": "///", "small": ".."}.get(state)))
            name = category_name(categories, f["category_id"])
            short = {"duplicate": "dup", "small": "no seg."}.get(state) or (name if len(name) <= 9 else name[:8] + ".")
            ax_q.text(c + 0.5, r + 0.5, f"{q}\n{short}" if cols <= 12 else f"{q}", ha="center", va="center",
                      fontsize=font, color=text_color_for(color), fontweight="bold",
                      bbox=dict(facecolor=color, edgecolor="none", pad=0.5) if state != "kept" else None)
        else:
            ax_q.text(c + 0.5, r + 0.5, str(q), ha="center", va="center", fontsize=font,
                      color="black" if shades[q] < 0.5 else "white", alpha=0.6)
    for k in range(cols + 1):
        ax_q.axvline(k, color="0.75", linewidth=0.5)
    for k in range(rows + 1):
        ax_q.axhline(k, color="0.75", linewidth=0.5)
    ax_q.set_xlim(0, cols)
    ax_q.set_ylim(rows, 0)
    ax_q.set_xticks(np.arange(cols) + 0.5, [str(c) for c in range(cols)], fontsize=TICK_SIZE)
    ax_q.set_yticks(np.arange(rows) + 0.5, [str(r * cols) for r in range(rows)], fontsize=TICK_SIZE)
    ax_q.set_xlabel("query index (column offset)", fontsize=LABEL_SIZE)
    ax_q.set_ylabel("query index (row start)", fontsize=LABEL_SIZE)
    ax_q.set_title(f"{num_queries} query slots ({rows}x{cols})", fontsize=SUBTITLE_SIZE)
    return im


def _draw_fired_objects(fig: Figure, ax_q, ax_i, image: np.ndarray, fired: Sequence[dict], cols: int,
                        categories: CategoryList | None, max_links: int) -> None:
    """The image with each fired query's box (clipped to the image; dashed when --dedup
    dropped it), linked by an arrow to its grid cell (unless more than `max_links` fired:
    then the query numbers on the boxes are the link). The tags are placed inside the
    image without overlapping (`place_box_labels`)."""
    H, W = image.shape[:2]
    linked = len(fired) <= max_links
    image_axes(ax_i, image, "Objects found by the fired queries" + ("" if linked else " (labelled q<slot>)"))
    labels = []
    for f in sorted(fired, key=lambda f: -float(f["score"])):
        q = int(f["query"])
        color = category_color(categories, f["category_id"])
        x0, y0, x1, y1 = (min(max(float(v), 0.0), lim) for v, lim in zip(f["box"], (W, H, W, H)))
        dropped = f.get("state", "kept") != "kept"
        ax_i.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color,
                                 linewidth=1.4 if dropped else 2.0, linestyle="--" if dropped else "-"))
        note = {"duplicate": " dup", "small": " no segment"}.get(f.get("state", "kept"), "")
        labels.append(((x0, y0, x1, y1),
                       f"q{q} {category_name(categories, f['category_id'])} {float(f['score']):.2f}{note}", color))
        if not linked:
            continue
        r, c = divmod(q, cols)
        con = ConnectionPatch(xyA=(c + 1.0, r + 0.5), coordsA=ax_q.transData,
                              xyB=((x0 + x1) / 2, (y0 + y1) / 2),
                              coordsB=ax_i.transData, color=color, linewidth=1.3, alpha=0.85,
                              arrowstyle="-|>", mutation_scale=10, linestyle="--" if dropped else "-")
        fig.add_artist(con)
    place_box_labels(ax_i, labels)


def _dropped_note(fired: Sequence[dict]) -> str:
    """', 2 dropped by --dedup (hatched: 7, 12)' for the title, or ''."""
    parts = []
    for state, words, mark in (("duplicate", "dropped by --dedup", "hatched ///"),
                               ("small", "without a segment", "dotted")):
        qs = sorted(int(f["query"]) for f in fired if f.get("state") == state)
        if qs:
            parts.append(f"{len(qs)} {words} ({mark}: {', '.join(map(str, qs))})")
    return ("\n" + "; ".join(parts)) if parts else ""


def active_queries_figure(
    image,
    num_queries: int,
    fired: Sequence[dict],
    categories: CategoryList | None = None,
    query_scores: np.ndarray | None = None,
    threshold: float | None = None,
    title: str | None = None,
    max_links: int = 30,
) -> Figure:
    """Figure 4: all query slots on a near-square grid (10x10 for 100), fired ones linked to
    the objects they found.

    `fired` lists dicts with `query`, `category_id`, `score` and `box` (x0, y0, x1, y1 in
    original pixels). `query_scores` [Q] (each query's best object probability) shades
    the slots that did not fire.
    """
    image = as_uint8_image(image)
    rows, cols = query_grid_shape(num_queries)
    fig, ax_q, ax_i, colorbar_rect = _active_queries_layout(
        image.shape[:2], rows, cols,
        title or f"Active queries: {len(fired)} of {num_queries} fired"
        + (f" (score > {threshold:g})" if threshold is not None else "") + _dropped_note(fired))
    shades = np.zeros(num_queries) if query_scores is None else np.asarray(query_scores, dtype=np.float64)
    fired_by_q = {int(f["query"]): f for f in fired}
    im = _draw_query_grid(ax_q, num_queries, rows, cols, fired_by_q, shades, categories)
    cb = fig.colorbar(im, cax=fig.add_axes(colorbar_rect), orientation="horizontal")
    cb.set_label("best object-class probability of slots that did not fire", fontsize=TICK_SIZE + 1)
    cb.ax.tick_params(labelsize=TICK_SIZE)
    _draw_fired_objects(fig, ax_q, ax_i, image, fired, cols, categories, max_links)
    return fig


__all__ = ["box_size_colors", "query_boxes_figure", "active_queries_figure"]
