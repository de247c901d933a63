"""The output folders of `explain` and `explain-queries`, and the images they read.

`explain_to_folder` explains one image with a `Predictor` built by the command and writes
every figure and `index.html`; `explain_queries_to_folder` writes figure 3 over many
images with the raw boxes. Both build their folder atomically. `images_of` /
`sibling_images` find the images for figure 3.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from panoptic_detr.errors import PanopticDetrError

__all__ = ["images_of", "sibling_images", "explain_to_folder", "explain_queries_to_folder", "read_query_boxes"]


def images_of(data: str | os.PathLike, split: str = "val") -> list[Path]:
    """The image files of DATA: a prepared dataset (its `images/<split>`), a folder of
    images (recursively) or an image file."""
    from panoptic_detr.data.image_io import find_images
    from panoptic_detr.data.prepared import PreparedDataset

    p = Path(data)
    if not p.exists():
        raise PanopticDetrError(f"{p}: not found")
    dataset = PreparedDataset(p)
    if p.is_dir() and dataset.looks_prepared():
        p = dataset.split(split).images_dir
        if not p.is_dir():
            have = ", ".join(dataset.split_names()) or "none"
            raise PanopticDetrError(f"{dataset.root}: prepared dataset has no split '{split}' (splits: {have})")
    paths, problems = find_images([p])
    if not paths:
        raise PanopticDetrError(problems[0] if problems else f"{p}: no images")
    return paths


def sibling_images(image: str | os.PathLike, limit: int) -> list[Path]:
    """Up to `limit` images of the folder holding `image` (not recursive), `image` first."""
    from panoptic_detr.data.image_io import is_image_file

    image = Path(image)
    others = sorted(p for p in image.parent.iterdir() if p.is_file() and is_image_file(p) and p != image)
    return [image] + others[: max(0, limit - 1)]


def _query_images(image: Path, arr: np.ndarray, query_images, split: str, max_images: int,
                  min_query_images: int) -> tuple[list, str]:
    """The images of figure 3 (paths, then crops of `arr` when fewer than
    min(`min_query_images`, `max_images`)) and where they come from, for the caption."""
    from panoptic_detr.engine.explain import crops_for_queries

    paths = images_of(query_images, split) if query_images is not None else sibling_images(image, max_images)
    items: list = list(paths[:max_images])
    note = f" from {query_images if query_images is not None else image.parent}"
    want = min(min_query_images, max_images)
    if len(items) < want:
        extra = crops_for_queries(arr, want - len(items) + 1, seed=0)[1:]  # [0] is the image itself
        items += extra
        note += f" plus {len(extra)} crop{'s' if len(extra) != 1 else ''} of this image"
    return items, note


def explain_to_folder(
    predictor,
    image: str | os.PathLike,
    out: str | os.PathLike,
    points: Sequence[tuple[float, float]] | None = None,
    num_queries: int = 20,
    query_images: str | os.PathLike | None = None,
    split: str = "val",
    max_images: int = 8,
    query_short_side: int | None = None,
    min_query_images: int = 8,
    overwrite: bool = False,
    source: str | None = None,
    dpi: int = 110,
    log: Callable[[str], None] | None = None,
    explorer=None,
    explorer_query_boxes: str | os.PathLike | None = None,
) -> Path:
    """The `explain` command: every figure for `image`, `index.html` and `explorer.html`,
    in `out` (built atomically), with `predictor` (an `engine.predict.Predictor`: its
    threshold, resize and dedup apply). Figure 3 runs the model over up to `max_images`
    images of `query_images` (a folder or prepared dataset; default: `image`'s folder) at
    `query_short_side` (default half the predictor's short side); when fewer than
    min(`min_query_images`, `max_images`) are found, crops of `image` make up the difference.
    `explorer`: a `viz.explorer_data.ExplorerOptions` (default options), or False for no
    explorer; `explorer_query_boxes`: an `explain-queries` output (its folder or
    `query_boxes.npz`) whose boxes the explorer shows (default: figure 3's images)."""
    from panoptic_detr.data.image_io import load_image
    from panoptic_detr.engine.explain import explain_image, query_boxes
    from panoptic_detr.utils.io import atomic_dir
    from panoptic_detr.viz.explain_page import write_explanation
    from panoptic_detr.viz.explorer_data import ExplorerOptions

    say = log or (lambda msg: print(msg, file=sys.stderr))
    image = Path(image)
    arr = load_image(image)
    H, W = arr.shape[:2]
    for x, y in points or []:
        if not (0 <= x < W and 0 <= y < H):
            raise PanopticDetrError(f"--points {x:g},{y:g}: outside the {W} x {H} image {image}")
    if explorer is None:
        explorer = ExplorerOptions()
    dataset_boxes = read_query_boxes(explorer_query_boxes) if explorer and explorer_query_boxes else None
    t0 = time.perf_counter()
    expl = explain_image(predictor, arr, encoder_heads=explorer.encoder_heads if explorer else "last")
    t1 = time.perf_counter()
    if dataset_boxes is not None and dataset_boxes[0].boxes.shape[1] != expl.num_queries:
        raise PanopticDetrError(f"{explorer_query_boxes}: boxes of {dataset_boxes[0].boxes.shape[1]} queries, "
                                f"the model has {expl.num_queries}")
    say(f"explain: {len(expl.keep)} of {expl.num_queries} queries above {expl.threshold:g} "
        f"(forward with attention {expl.timings['forward']:.1f} s)")

    items, note = _query_images(image, arr, query_images, split, max_images, min_query_images)
    qs = query_short_side or max(32, predictor.short_side // 2)
    note += f", resized to short side {qs}"
    errors: list[str] = []
    stats = query_boxes(predictor, items, short_side=qs, max_size=predictor.max_size, device=predictor.device,
                        on_error=errors.append)
    for msg in errors:
        say(f"skipped: {msg}")
    t2 = time.perf_counter()
    meta = {"checkpoint": source or "", "image": str(image)}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        written = write_explanation(tmp, expl, points, stats, query_source=" (" + note.strip() + ")",
                                    num_queries=num_queries, source=meta, dpi=dpi, explorer=bool(explorer))
        if explorer:
            boxes, where = dataset_boxes or (stats, " (" + note.strip() + ")")
            report = _write_explorer(tmp, expl, explorer, boxes, where, written, image.name)
            say(f"explain: explorer.html {report}")
    t3 = time.perf_counter()
    say(f"explain: {len(written) - 1} figures and index.html in {out} "
        f"(model {t1 - t0:.1f} s, {stats.num_images} images for figure 3 {t2 - t1:.1f} s, drawing {t3 - t2:.1f} s)")
    return Path(out) / "index.html"


def _write_explorer(folder: Path, expl, options, boxes, where: str, figures: list, name: str) -> str:
    """explorer.html in `folder`, linking the static figures; returns its size report."""
    from panoptic_detr.viz.explorer import EXPLORER_FILE, write_explorer

    links = [(Path(p).name, Path(p).stem.split("_", 1)[-1].replace("_", " ")) for p in figures]
    _, report = write_explorer(folder / EXPLORER_FILE, expl, options, boxes, where,
                               links=[("index.html", "all figures")] + links[:-1], source=name)
    return report


def read_query_boxes(path: str | os.PathLike):
    """(`engine.explain.QueryBoxes`, caption) of an `explain-queries` output: its folder
    or its `query_boxes.npz`."""
    from panoptic_detr.engine.explain import QueryBoxes

    p = Path(path)
    npz = p / "query_boxes.npz" if p.is_dir() else p
    if not npz.is_file():
        raise PanopticDetrError(f"{p}: no query_boxes.npz (the output of `panoptic-detr explain-queries`)")
    try:
        with np.load(npz, allow_pickle=False) as z:
            boxes = QueryBoxes(z["boxes"].astype(np.float32), z["scores"], z["labels"], [str(v) for v in z["images"]])
    except (KeyError, ValueError, OSError) as e:
        raise PanopticDetrError(f"{npz}: not an explain-queries output ({e})") from None
    if boxes.boxes.ndim != 3 or boxes.boxes.shape[-1] != 4:
        raise PanopticDetrError(f"{npz}: boxes must be [images, queries, 4], got {list(boxes.boxes.shape)}")
    return boxes, f" (explain-queries output {npz.parent})"


def explain_queries_to_folder(
    model,
    data: str | os.PathLike,
    out: str | os.PathLike,
    num_queries: int = 20,
    split: str = "val",
    max_images: int | None = 200,
    short_side: int = 800,
    max_size: int | None = 1333,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    dpi: int = 110,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The `explain-queries` command: figure 3 over the images of `data` (a folder or a
    prepared dataset's split), plus the raw boxes (`query_boxes.npz`) and `index.html`.
    `model` may be a detection model (figure 3 needs no mask head)."""
    from panoptic_detr.engine.explain import query_boxes
    from panoptic_detr.utils.io import atomic_dir, atomic_path
    from panoptic_detr.viz.explain_figures import FIGURES
    from panoptic_detr.viz.explain_page import write_query_figure

    say = log or (lambda msg: print(msg, file=sys.stderr))
    paths = images_of(data, split)
    if max_images:
        paths = paths[:max_images]
    errors: list[str] = []
    stats = query_boxes(model, paths, short_side=short_side, max_size=max_size, device=device, progress=progress,
                        on_error=errors.append)
    for msg in errors:
        say(f"skipped: {msg}")
    if stats.num_images == 0:
        raise PanopticDetrError(f"{data}: no readable image")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_query_figure(tmp, stats, num_queries, caption_source=f" of {data}", dpi=dpi)
        with atomic_path(tmp / "query_boxes.npz") as f:
            with open(f, "wb") as fh:
                np.savez_compressed(fh, boxes=stats.boxes, scores=stats.scores, labels=stats.labels,
                                    images=np.array(stats.sources))
    say(f"explain-queries: {stats.num_images} images, figure in {Path(out) / FIGURES['queries'][0]}")
    return Path(out) / "index.html"
