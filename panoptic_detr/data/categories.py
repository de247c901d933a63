"""The category id space shared by datasets, checkpoints and the model.

Convention (the official DETR one): a category's id *is* the model's class index.
Prepared datasets number their categories 1..C contiguously (things first, in class-map
order, then the stuff groups in map order, `misc` where the map lists it), index 0 is
never used, so a model for such a
dataset has `num_classes = C + 1` and its "no object" class is index `num_classes`.
Official COCO checkpoints use the COCO ids (max 200) with `num_classes = 250`.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from panoptic_detr.errors import DataError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]
    supercategory: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d["isthing"] = int(self.isthing)
        d["color"] = list(self.color)
        return d


class CategoryList(Sequence[Category]):
    """An ordered list of categories with lookups by id and by name."""

    def __init__(self, categories: Iterable[Category]):
        self._items = list(categories)
        self.by_id = {c.id: c for c in self._items}
        self.by_name = {c.name: c for c in self._items}
        if len(self.by_id) != len(self._items):
            raise DataError("categories: duplicate category id")
        if len(self.by_name) != len(self._items):
            raise DataError("categories: duplicate category name")

    def __getitem__(self, i):
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"CategoryList({len(self)} categories, {len(self.thing_ids)} things)"

    @property
    def num_classes(self) -> int:
        """The model's `num_classes` for this id space (max id + 1, as in DETR)."""
        return max(self.by_id) + 1 if self._items else 1

    @property
    def thing_ids(self) -> list[int]:
        return [c.id for c in self._items if c.isthing]

    @property
    def stuff_ids(self) -> list[int]:
        return [c.id for c in self._items if not c.isthing]

    def names(self) -> list[str]:
        return [c.name for c in self._items]

    def isthing_table(self) -> list[bool]:
        """`table[class_index]` is True for thing classes; unused indices are False."""
        table = [False] * self.num_classes
        for c in self._items:
            table[c.id] = c.isthing
        return table

    def name_of(self, category_id: int) -> str:
        c = self.by_id.get(category_id)
        return c.name if c else f"class_{category_id}"

    def to_json(self) -> list[dict]:
        return [c.to_json() for c in self._items]

    @classmethod
    def from_json(cls, items: list[dict], where: str = "categories") -> "CategoryList":
        cats = []
        for i, d in enumerate(items):
            try:
                cats.append(
                    Category(
                        id=int(d["id"]),
                        name=str(d["name"]),
                        isthing=bool(d.get("isthing", 1)),
                        color=tuple(int(v) for v in d.get("color") or default_color(int(d["id"]))),
                        supercategory=str(d.get("supercategory", "")),
                    )
                )
            except KeyError as e:
                raise DataError(f"{where}: category #{i} has no key {e}") from None
            except (TypeError, ValueError) as e:
                raise DataError(f"{where}: category #{i} is malformed: {e}") from None
        return cls(cats)

    @classmethod
    def load(cls, path: str | Path) -> "CategoryList":
        """From a categories.json (a list) or any COCO JSON with a `categories` key."""
        from panoptic_detr.utils.io import read_json

        data = read_json(path)
        if isinstance(data, dict):
            if "categories" not in data:
                raise DataError(f"{path}: no 'categories' key")
            data = data["categories"]
        return cls.from_json(data, where=str(path))


def default_color(index: int) -> tuple[int, int, int]:
    """A stable, well-spread colour for a class index (golden-ratio hue steps)."""
    h = (index * 0.618033988749895) % 1.0
    s = 0.55 + 0.35 * ((index * 7) % 3) / 2
    v = 0.75 + 0.25 * ((index * 5) % 2)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def coco_panoptic_categories() -> CategoryList:
    """The 133 COCO-panoptic categories (ids 1-200) shipped with the package."""
    return CategoryList.from_json(
        json.loads((RESOURCES / "panoptic_coco_categories.json").read_text()),
        where="panoptic_coco_categories.json",
    )


def official_categories(num_classes: int) -> CategoryList | None:
    """The categories of an official COCO checkpoint by its class count (250: COCO
    panoptic, 91: COCO detection), else None."""
    if num_classes == 250:
        return coco_panoptic_categories()
    if num_classes == 91:
        return CategoryList(c for c in coco_panoptic_categories() if c.isthing)
    return None


def default_categories(num_classes: int) -> CategoryList:
    """Categories for a model whose checkpoint carries none: the official COCO lists for
    their class counts, otherwise `class_<i>` for i in 1..num_classes-1, all things (no
    stuff merging)."""
    official = official_categories(num_classes)
    if official is not None:
        return official
    return CategoryList(Category(i, f"class_{i}", True, default_color(i)) for i in range(1, num_classes))
