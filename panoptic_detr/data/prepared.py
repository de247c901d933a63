"""A prepared dataset described by data: the one place that says where a split's files are.

    images/{split}/*                       the images
    panoptic/{split}/*.png                 COCO-panoptic PNGs
    annotations/panoptic_{split}.json      COCO-panoptic JSON
    annotations/instances_{split}.json     COCO instances JSON (things; box and mask AP)
    categories.json                        the category list (ids = class indices)
    dataset.yaml                           how it was prepared

`PreparedDataset(root).split("val")` gives a `SplitFiles`; every module that reads or
writes a prepared dataset (prepare, the torch dataset, evaluation, training, explain, the
report, the demo) goes through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from panoptic_detr.errors import DataError

__all__ = ["PreparedDataset", "SplitFiles", "SPLITS"]

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SplitFiles:
    """Where the files of one split are."""

    root: Path
    name: str

    @property
    def images_dir(self) -> Path:
        return self.root / "images" / self.name

    @property
    def panoptic_dir(self) -> Path:
        return self.root / "panoptic" / self.name

    @property
    def panoptic_json(self) -> Path:
        return self.root / "annotations" / f"panoptic_{self.name}.json"

    @property
    def instances_json(self) -> Path:
        return self.root / "annotations" / f"instances_{self.name}.json"

    def exists(self) -> bool:
        return self.panoptic_json.is_file()

    def require(self) -> "SplitFiles":
        """Self, or a DataError when the split's panoptic JSON is missing."""
        if not self.exists():
            raise DataError(f"{self.panoptic_json}: not found (is {self.root} a prepared dataset with a "
                            f"'{self.name}' split?)")
        return self


@dataclass(frozen=True)
class PreparedDataset:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def split(self, name: str) -> SplitFiles:
        return SplitFiles(self.root, name)

    @property
    def annotations_dir(self) -> Path:
        return self.root / "annotations"

    @property
    def categories_json(self) -> Path:
        return self.root / "categories.json"

    @property
    def dataset_yaml(self) -> Path:
        return self.root / "dataset.yaml"

    def looks_prepared(self) -> bool:
        """A folder with `images/` and either `dataset.yaml` or `annotations/`."""
        return (self.root / "images").is_dir() and (self.dataset_yaml.exists() or self.annotations_dir.is_dir())

    def split_names(self) -> list[str]:
        """The splits that have an images folder, sorted."""
        images = self.root / "images"
        return sorted(d.name for d in images.iterdir() if d.is_dir()) if images.is_dir() else []

    def categories(self):
        """The CategoryList from categories.json (a DataError when it is missing)."""
        from panoptic_detr.data.categories import CategoryList

        if not self.categories_json.exists():
            raise DataError(f"{self.categories_json}: not found")
        return CategoryList.load(self.categories_json)
