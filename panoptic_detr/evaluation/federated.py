"""Federated PQ: what a partially annotated ground truth can say (LVIS's rule, for PQ).

In an image whose labels cover only some thing classes (`data.annotated`: per-class
exports), a predicted segment of a class that was not annotated there may be a correct
detection of an unlabelled object: the federated PQ does not count it as a false
positive. Everything else is the standard PQ: true positives, false negatives and the
false positives of annotated classes (present or absent: an annotated class that is
absent is known to be absent). It is reported beside the standard PQ, never instead.
"""

from __future__ import annotations

from typing import Iterable

from panoptic_detr.data.annotated import unannotated_things

__all__ = ["federated_events", "unannotated_of_images", "FEDERATED_RULE"]

FEDERATED_RULE = ("LVIS's federated rule: a predicted segment of a thing class that is not annotated in its image "
                  "(annotated_category_ids / not_exhaustive_category_ids) is not a false positive")


def federated_events(events: Iterable[tuple], unannotated: set[int] | frozenset[int]) -> list[tuple]:
    """One image's PQ events `(category_id, tp, fp, fn, iou)` less the false positives of
    the classes in `unannotated`."""
    if not unannotated:
        return list(events)
    return [e for e in events if not (e[2] and not e[1] and e[0] in unannotated)]


def unannotated_of_images(images: dict, image_ids: Iterable, thing_ids: Iterable[int]) -> list[frozenset[int]]:
    """For each image id, the thing classes not annotated in it (from the ground truth's
    `images` entries by id; an image without the keys, or unknown, is fully annotated)."""
    thing_ids = list(thing_ids)
    return [frozenset(unannotated_things(images.get(i) or {}, thing_ids)) for i in image_ids]
