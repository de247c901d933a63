"""Per-class statistics of a prepared dataset (CLI `dataset-stats`).

For every split and category: the number of images containing it, of segments, and of
pixels (the segments' `area`, which `prepare` computed from the PNGs); VOID pixels are
counted per split too. Per thing class also the images where it is `annotated`
(exhaustively labelled) and where it is merely `possible` (not annotated: per-class
exports, `data.annotated`), printed as a second table when any image is partial.
`plot_stats` draws them as grouped bar charts (matplotlib, Agg).
"""

from __future__ import annotations

import os
from pathlib import Path

from panoptic_detr.data.annotated import annotated_ids
from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.prepared import PreparedDataset
from panoptic_detr.errors import DataError
from panoptic_detr.utils.io import read_json

__all__ = ["dataset_stats", "format_stats", "plot_stats"]


def dataset_stats(root: str | os.PathLike) -> dict:
    """`{"categories": [...], "splits": {split: {"images": n, "void_pixels": n,
    "pixels": n, "classes": {name: {"images", "segments", "pixels", "isthing"}}}}}`."""
    ds = PreparedDataset(root)
    if not ds.root.is_dir():
        raise DataError(f"{ds.root}: not a folder")
    # every split with a panoptic JSON, train and val first
    files = sorted(ds.annotations_dir.glob("panoptic_*.json")) if ds.annotations_dir.is_dir() else []
    if not files:
        raise DataError(f"{ds.root}: no annotations/panoptic_*.json (is it a prepared dataset?)")
    cats = CategoryList.load(ds.categories_json if ds.categories_json.exists() else files[0])
    out: dict = {"root": str(ds.root), "categories": [c.name for c in cats], "splits": {}}
    order = {"train": 0, "val": 1}
    for f in sorted(files, key=lambda p: (order.get(p.stem[len("panoptic_"):], 9), p.name)):
        out["splits"][f.stem[len("panoptic_"):]] = _split_stats(f, cats)
    return out


def _int(v, where: str) -> int:
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{where}: {v!r} is not an integer") from None


def _split_stats(path: Path, cats: CategoryList) -> dict:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO-panoptic JSON")
    sizes = {}
    for i, im in enumerate(data.get("images", [])):
        if not isinstance(im, dict) or "id" not in im or isinstance(im["id"], (list, dict)):
            raise DataError(f"{path}: image #{i} needs an 'id'")
        where = f"{path}: image id {im['id']}"
        sizes[im["id"]] = _int(im.get("width", 0), f"{where} width") * _int(im.get("height", 0), f"{where} height")
    classes = {c.name: {"images": 0, "segments": 0, "pixels": 0, "isthing": c.isthing, "annotated": 0, "possible": 0}
               for c in cats}
    all_ids = [c.id for c in cats]
    for im in data.get("images", []):
        have = annotated_ids(im, all_ids)
        for c in cats:
            classes[c.name]["annotated" if c.id in have else "possible"] += 1
    total = void = 0
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not isinstance(ann.get("segments_info", []), list):
            raise DataError(f"{path}: annotation of image id {ann.get('image_id') if isinstance(ann, dict) else '?'}: "
                            "not an object with a segments_info list")
        seen = set()
        covered = 0
        image_id = ann.get("image_id")
        for j, s in enumerate(ann.get("segments_info", [])):
            ref = f"{path}: image id {image_id} segment {s.get('id', '#' + str(j)) if isinstance(s, dict) else '#' + str(j)}"
            if not isinstance(s, dict) or "category_id" not in s:
                raise DataError(f"{ref}: no category_id")
            cid = _int(s["category_id"], f"{ref} category_id")
            c = cats.by_id.get(cid)
            if c is None:
                raise DataError(f"{ref}: unknown category_id {s['category_id']}")
            area = _int(s.get("area", 0), f"{ref} area")
            st = classes[c.name]
            st["segments"] += 1
            st["pixels"] += area
            covered += area
            seen.add(c.name)
        for n in seen:
            classes[n]["images"] += 1
        px = sizes.get(image_id, 0) if not isinstance(image_id, (list, dict)) else 0
        total += px
        void += max(0, px - covered)
    return {"images": len(data["annotations"]), "pixels": total, "void_pixels": void, "classes": classes}


def format_stats(stats: dict) -> str:
    """A plain-text table: one row per class, images/segments/pixels per split."""
    splits = list(stats["splits"])
    head = f"{'class':<28} {'kind':<5}" + "".join(f" | {s + ' images':>12} {'segments':>9} {'pixels':>11}" for s in splits)
    lines = [head, "-" * len(head)]
    for name in stats["categories"]:
        first = stats["splits"][splits[0]]["classes"][name] if splits else {"isthing": False}
        row = f"{name[:28]:<28} {'thing' if first['isthing'] else 'stuff':<5}"
        for s in splits:
            c = stats["splits"][s]["classes"][name]
            row += f" | {c['images']:>12} {c['segments']:>9} {c['pixels']:>11}"
        lines.append(row)
    lines.append("-" * len(head))
    tot = f"{'(images / VOID pixels)':<28} {'':<5}"
    for s in splits:
        sp = stats["splits"][s]
        pct = 100.0 * sp["void_pixels"] / sp["pixels"] if sp["pixels"] else 0.0
        tot += f" | {sp['images']:>12} {'':>9} {sp['void_pixels']:>11}"
        tot += f" ({pct:.1f}%)" if s == splits[-1] else ""
    lines.append(tot)
    partial = any(c["possible"] for sp in stats["splits"].values() for c in sp["classes"].values())
    if partial:
        lines += ["", "images where a class is annotated (every instance labelled) / merely possible (not annotated: "
                      "its objects may be there unlabelled)"]
        lines.append(f"{'class':<28}" + "".join(f" | {s + ' annotated':>16} {'possible':>9}" for s in splits))
        for name in stats["categories"]:
            row = f"{name[:28]:<28}"
            for s in splits:
                c = stats["splits"][s]["classes"][name]
                row += f" | {c['annotated']:>16} {c['possible']:>9}"
            lines.append(row)
    return "\n".join(lines)


def plot_stats(stats: dict, path: str | os.PathLike) -> Path:
    """Grouped bar charts (images, segments, pixels per class; one bar per split)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    names = stats["categories"]
    splits = list(stats["splits"])
    n = len(names)
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.35 * n + 3), 10), sharex=True)
    x = np.arange(n)
    width = 0.8 / max(1, len(splits))
    for ax, key in zip(axes, ("images", "segments", "pixels")):
        for k, s in enumerate(splits):
            vals = [stats["splits"][s]["classes"][c][key] for c in names]
            ax.bar(x + (k - (len(splits) - 1) / 2) * width, vals, width, label=s)
        ax.set_ylabel(key)
        if key == "pixels":
            ax.set_yscale("symlog")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    axes[0].set_title(f"dataset: {stats.get('root', '')}")
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
