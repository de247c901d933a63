"""COCO-panoptic sets as `prepare` inputs: their images with their own segments.

`read_panoptic_sources` turns a set (JSON, PNG folder, image folder) into `SourceImage`s
of kind "panoptic" (the PNGs are opened later, by `read_checked_png`, when the id map is
built or checked); a missing image or PNG is a problem of that image only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from panoptic_detr.data.formats.coco_panoptic import check_png_ids, read_coco_panoptic, read_id_png
from panoptic_detr.data.formats.common import SourceImage
from panoptic_detr.errors import DataError

__all__ = ["read_panoptic_sources", "read_checked_png"]


def read_panoptic_sources(json_path: str | os.PathLike, png_dir: str | os.PathLike,
                          image_dir: str | os.PathLike) -> list[SourceImage]:
    """The images of one COCO-panoptic set; a `DataError` when its JSON is bad."""
    pset = read_coco_panoptic(json_path)
    names = {cid: str(c["name"]) for cid, c in pset.categories.items()}
    sources = []
    for pim in pset.images:
        src = SourceImage(
            name=Path(pim.file_name).name,
            source=str(json_path),
            ref=f"image id {pim.image_id}",
            image_path=Path(image_dir) / pim.file_name,
            width=pim.width,
            height=pim.height,
            relpath=pim.file_name,
            kind="panoptic",
            png_path=Path(png_dir) / pim.png_name,
            segments=pim.segments,
            seg_labels=names,
            annotated=list(names.values()),  # a COCO-panoptic set annotates all its categories
        )
        if not src.image_path.is_file():
            src.problems.append(f"{json_path}: {src.ref}: image file {src.image_path} not found")
            src.image_path = None
        if not src.png_path.is_file():
            src.problems.append(f"{json_path}: {src.ref}: panoptic PNG {src.png_path} not found")
        sources.append(src)
    return sources


def read_checked_png(path: Path, segments: list[dict], h: int | None, w: int | None, where: str) -> np.ndarray:
    """The id map of a panoptic PNG, checked against the image size and its segments_info
    (a one-line `DataError` naming `where` and the PNG otherwise)."""
    ids = read_id_png(path)
    if h is not None and w is not None and ids.shape != (h, w):
        raise DataError(f"{where}: PNG {path.name} is {ids.shape[1]}x{ids.shape[0]} but the image is {w}x{h}")
    check_png_ids(ids, segments, f"{where} ({path.name})")
    return ids
