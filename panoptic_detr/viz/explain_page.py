"""Writing an explain folder's figures and its `index.html` page.

`write_explanation` saves the seven figures of one image (`viz.explain_figures`) and the
page listing them with the detected objects; `write_query_figure` saves figure 3 alone
(`explain-queries`). Both write into an existing folder (the caller makes it atomic).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from panoptic_detr.viz.explain_figures import FIGURES, captions, render_figures

__all__ = ["write_explanation", "write_query_figure"]


def write_explanation(
    out_dir: str | os.PathLike,
    expl,
    points: Sequence[tuple[float, float]] | None = None,
    query_stats=None,
    query_source: str = "",
    num_queries: int = 20,
    source: dict | None = None,
    dpi: int = 110,
    explorer: bool = False,
) -> list[Path]:
    """Render every figure of `expl` (an `engine.explain.Explanation`) into `out_dir`
    (which must exist) plus `index.html`; returns the written paths. `query_stats` (an
    `engine.explain.QueryBoxes`) feeds figure 3; `source` adds lines to the page's table;
    `explorer`: the page links to `explorer.html` (written by the caller)."""
    from panoptic_detr.viz.figures import save_figure
    from panoptic_detr.viz.html import write_index

    out_dir = Path(out_dir)
    figs = render_figures(expl, points, query_stats, num_queries)
    caps = captions(expl, query_stats, query_source)
    written, entries = [], []
    for key, fig in figs.items():
        fname, head, text = caps[key]
        save_figure(fig, out_dir / fname, dpi=dpi)
        written.append(out_dir / fname)
        entries.append((fname, head, text))
    fig = None
    figs.clear()  # free each figure's memory before the page is written
    meta = dict(source or {})
    H, W = expl.original_size
    meta.setdefault("image size", f"{W} x {H} pixels (network input {expl.processed_size[1]} x {expl.processed_size[0]})")
    meta.setdefault("detected", f"{len(expl.keep)} of {expl.num_queries} queries above {expl.threshold:g}")
    objects = [
        {"query": d["query"], "label": expl.categories.name_of(d["category_id"]), "score": d["score"],
         "box": d["box"], "state": d["state"]}
        for d in expl.kept()
    ]
    links = [("explorer.html", "Interactive explorer: every pixel, query, layer and head")] if explorer else []
    written.append(write_index(out_dir / "index.html", "How DETR sees this image", entries, meta, objects,
                               links=links))
    return written


def write_query_figure(out_dir: str | os.PathLike, stats, num_queries: int = 20,
                       title: str | None = None, caption_source: str = "", dpi: int = 110) -> list[Path]:
    """Figure 3 alone (for `explain-queries`) of `stats` (an `engine.explain.QueryBoxes`:
    `boxes` [N, Q, 4], `num_images`): the PNG and a small `index.html`."""
    from panoptic_detr.viz.figures import save_figure
    from panoptic_detr.viz.html import write_index
    from panoptic_detr.viz.queries import query_boxes_figure

    out_dir = Path(out_dir)
    q = int(stats.boxes.shape[1])
    fig = query_boxes_figure(stats.boxes, min(num_queries, q), title=title)
    fname, head, text = FIGURES["queries"]
    save_figure(fig, out_dir / fname, dpi=dpi)
    text = text.format(n_images=stats.num_images, query_source=caption_source)
    index = write_index(out_dir / "index.html", "Where the queries look", [(fname, head, text)],
                        {"images": str(stats.num_images), "queries shown": f"{min(num_queries, q)} of {q}"})
    return [out_dir / fname, index]
