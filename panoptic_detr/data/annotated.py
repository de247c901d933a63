"""Which classes an image's labels cover: LVIS's federated annotation in COCO files.

`prepare` writes two extra keys on every image entry of the panoptic and instances JSONs
(the COCO formats tolerate extra keys):
- `annotated_category_ids`: the classes whose every instance in the image is labelled
  (every stuff class, which the truth or the teacher labels, plus the exhaustively
  labelled thing classes: a per-class export folder's own class);
- `not_exhaustive_category_ids`: thing classes with some instances labelled but not
  annotated exhaustively (LVIS's key of the same name).
An image without `annotated_category_ids` is fully annotated (every class): files from
before this key, or from other tools, read as they always did.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["ANNOTATED_KEY", "NOT_EXHAUSTIVE_KEY", "annotated_ids", "unannotated_things", "is_partial"]

ANNOTATED_KEY = "annotated_category_ids"
NOT_EXHAUSTIVE_KEY = "not_exhaustive_category_ids"


def annotated_ids(image: dict, all_ids: Iterable[int]) -> set[int]:
    """The category ids annotated (exhaustively) in `image` (a JSON image entry): its
    `annotated_category_ids` less its `not_exhaustive_category_ids`; all of `all_ids`
    when it has no such key."""
    ids = image.get(ANNOTATED_KEY)
    if ids is None:
        return set(int(c) for c in all_ids)
    return {int(c) for c in ids} - {int(c) for c in image.get(NOT_EXHAUSTIVE_KEY) or ()}


def unannotated_things(image: dict, thing_ids: Iterable[int]) -> list[int]:
    """The thing category ids NOT annotated exhaustively in `image` (sorted): the classes
    whose objects may be present there without a label."""
    thing_ids = [int(c) for c in thing_ids]
    have = annotated_ids(image, thing_ids)
    return sorted(c for c in thing_ids if c not in have)


def is_partial(images: Iterable[dict], thing_ids: Iterable[int]) -> bool:
    """Whether any image leaves a thing class unannotated."""
    thing_ids = list(thing_ids)
    return any(unannotated_things(im, thing_ids) for im in images)
