"""What `prepare` is asked to do (`PrepareOptions`) and what it reports (`PrepareSummary`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.formats.coco_instances import CROWD_MODES
from panoptic_detr.errors import DataError, PanopticDetrError

__all__ = ["PrepareOptions", "PrepareSummary", "Teacher"]

# teacher(image HxWx3 uint8) -> (id_map int32 HxW, segments_info, categories), or an object
# with .id_map, .segments_info and .categories (e.g. engine.predict.Predictor.panoptic);
# one with `batch(images) -> list` and `window` labels windows of images (`teach.py`)
Teacher = Callable[[np.ndarray], tuple]


@dataclass
class PrepareOptions:
    """The inputs and options of one `prepare` run (the CLI flags of `panoptic-detr prepare`).

    coco_panoptic: one (json, png_dir, image_dir) triple or a list of them.
    stuff_truth: (json, png_dir) of the true stuff of custom images (matched by name).
    stuff_from: what the teacher is (its checkpoint), recorded in dataset.yaml; the teacher
        itself is passed to `prepare` (data/ builds no model).
    check: validate everything (PNG ids included), write nothing; problems are returned
        (`summary.problems`), never raised.
    val_ratio: fraction of images in val, in [0, 1]; 1.0 prepares an evaluation-only set
        (every image in val).
    crowd: what `iscrowd: 1` annotations of COCO-instances inputs become: "auto" (RLE
        masks of CVAT exports are read as instances, CVAT marks every brush mask crowd;
        other crowds stay), "keep", "instances" (see `formats.coco_instances`).
    labelme_per_folder: a labelme file in a folder named after a thing class (its first
        folder under the input) annotates only that class (else: every class).
    """

    class_map: str | os.PathLike | ClassMap
    out: str | os.PathLike | None
    things: Sequence[str | os.PathLike] = ()
    labelme: Sequence[str | os.PathLike] = ()
    coco_panoptic: Sequence | None = None
    stuff_from: str | os.PathLike | None = None
    stuff_truth: Sequence | None = None
    teacher_mask_things: bool = False
    labelme_per_folder: bool = False  # labelme files under `<class folder>/` annotate only that class
    val_ratio: float = 0.2
    seed: int = 0
    crowd: str = "auto"
    check: bool = False
    skip_bad: bool = False
    overwrite: bool = False
    progress: bool = True
    compress_level: int = 1
    workers: int = 1  # processes decoding, building and writing images (the output does not depend on it)
    # a helper process of a sharded teacher (torchrun ranks > 0): read, validate, split, then
    # only call the teacher's `batch` on the same windows as the main process; write nothing
    teacher_only: bool = False
    max_logged_warnings: int = 20

    def panoptic_inputs(self) -> list[tuple]:
        """`coco_panoptic` as a list of (json, png_dir, image_dir) triples."""
        sets = self.coco_panoptic
        if sets and isinstance(sets[0], (str, os.PathLike)):
            sets = [sets]
        return [tuple(t) for t in (sets or [])]

    def validate(self, has_teacher: bool) -> None:
        """A one-line error for options that cannot work, before any input is read."""
        for t in self.panoptic_inputs():
            if len(t) != 3:
                raise DataError("--coco-panoptic takes JSON PNG_DIR IMAGE_DIR")
        if self.stuff_truth is not None and len(self.stuff_truth) != 2:
            raise DataError("--stuff-truth takes JSON PNG_DIR")
        if not (self.things or self.labelme or self.coco_panoptic):
            raise DataError("nothing to prepare: give --things, --labelme and/or --coco-panoptic")
        if not 0.0 <= float(self.val_ratio) <= 1.0:
            raise DataError(f"--val-ratio must be in [0, 1] (1.0: every image in val), got {self.val_ratio}")
        if int(self.workers) < 1:
            raise DataError(f"--workers must be at least 1, got {self.workers}")
        if self.crowd not in CROWD_MODES:
            raise DataError(f"--crowd must be one of {', '.join(CROWD_MODES)}, got {self.crowd!r}")
        if self.teacher_only and not has_teacher:
            raise PanopticDetrError("teacher_only: no teacher was passed to prepare")
        if self.out is not None and not self.check and not self.teacher_only and Path(self.out).exists() \
                and not self.overwrite:
            raise PanopticDetrError(f"{self.out}: output exists; pass --overwrite to replace it")
        if self.out is None and not self.check:
            raise DataError("prepare needs an output folder")
        if self.stuff_from is not None and not has_teacher:
            raise PanopticDetrError(f"--stuff-from {self.stuff_from}: no teacher was passed to prepare")


@dataclass
class PrepareSummary:
    out: str | None
    images: dict = field(default_factory=dict)  # split -> number of images
    segments: dict = field(default_factory=dict)  # split -> number of segments
    num_categories: int = 0
    problems: list = field(default_factory=list)  # errors (check mode, or skipped with skip_bad)
    skipped: list = field(default_factory=list)  # names of images left out (skip_bad)
    warnings: list = field(default_factory=list)
    checked: bool = False
    report: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return asdict(self)
