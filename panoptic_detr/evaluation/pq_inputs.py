"""The inputs of PQ: COCO-panoptic JSONs (loaded and checked), categories in any of the
forms the project uses, and the segment ids' conventions."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from panoptic_detr.errors import DataError

VOID = 0
OFFSET = 256 * 256 * 256  # ids are 24-bit: (gt, pred) pairs are packed as gt * OFFSET + pred
ID_MASK = OFFSET - 1


def normalise_categories(categories: Any, where: str = "categories", segments: Iterable[Mapping] | None = None
                         ) -> dict[int, dict]:
    """`{id: {"id", "name", "isthing"}}` in the given order from a list of category dicts,
    a `{id: dict}` mapping or a `CategoryList`.

    A category dict without `isthing` takes it from `segments` (segment dicts with
    `category_id` and `isthing`, e.g. a prediction's `segments_info`) when they carry it;
    otherwise it is an error naming the category (guessing "thing" would score every
    stuff class by thing rules). A category that no segment uses counts nowhere: it
    needs no `isthing` when `segments` are given."""
    if categories is None:
        raise DataError(f"{where}: no categories")
    if isinstance(categories, Mapping):
        items: Iterable = categories.values()
    else:
        items = categories
    out: dict[int, dict] = {}
    undecided: list[tuple[int, str]] = []
    for i, c in enumerate(items):
        if hasattr(c, "id") and hasattr(c, "isthing") and not isinstance(c, Mapping):
            cid, name, isthing = int(c.id), str(c.name), bool(c.isthing)
        else:
            try:
                cid = int_field(c["id"])
                name = str(c.get("name", f"class_{cid}"))
                isthing = _isthing(c.get("isthing"))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise DataError(f"{where}: category #{i} has no valid 'id' (or a non-integer 'isthing')") from None
            if isthing is None:
                undecided.append((cid, name))
        if cid in out:
            raise DataError(f"{where}: duplicate category id {cid}")
        out[cid] = {"id": cid, "name": name, "isthing": isthing}
    if undecided:
        segments = None if segments is None else list(segments)
        derived = _isthing_of_segments(segments or (), where)
        used = None if segments is None else {s.get("category_id") for s in segments if isinstance(s, Mapping)}
        for cid, name in undecided:
            if cid not in derived and used is not None and cid not in used:
                out[cid]["isthing"] = False  # in no segment: in no count, its kind changes nothing
                continue
            if cid not in derived:
                raise DataError(
                    f"{where}: category {cid} '{name}' has no 'isthing' and no segment says whether it is a thing; "
                    f"add \"isthing\": 1 (thing) or 0 (stuff) to it"
                )
            out[cid]["isthing"] = derived[cid]
    return out


def _isthing(v: Any) -> bool | None:
    """A category's or segment's `isthing` (1/0, true/false), None when absent."""
    if v is None or isinstance(v, bool):
        return v
    return int_field(v) == 1


def _isthing_of_segments(segments: Iterable[Mapping], where: str) -> dict[int, bool]:
    """category id -> isthing, from the segments that carry `isthing`."""
    seen: dict[int, bool] = {}
    for s in segments:
        if not isinstance(s, Mapping) or s.get("isthing") is None:
            continue
        try:
            cid, isthing = int_field(s["category_id"]), _isthing(s["isthing"])
        except (KeyError, TypeError, ValueError):
            continue  # reported where the segment is read
        if seen.setdefault(cid, isthing) != isthing:
            raise DataError(f"{where}: the segments of category {cid} disagree on 'isthing' (some 0, some 1)")
    return seen


def all_segments(*annotation_lists: Iterable[Mapping]) -> Iterable[Mapping]:
    """Every segment dict of the given annotation lists (for `normalise_categories`)."""
    for anns in annotation_lists:
        for ann in anns:
            segs = ann.get("segments_info") if isinstance(ann, Mapping) else None
            if isinstance(segs, list):
                yield from segs


def int_field(v: Any) -> int:
    """An integer JSON value (an int, or a float with an integral value): a ValueError for
    anything else, infinities and NaN included (int() would raise OverflowError for
    those, or truncate 2.5 to 2)."""
    if isinstance(v, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        return int(v)  # a ValueError for anything but digits
    raise ValueError(f"not an integer: {v!r}")


def load_panoptic_json(source: Any, what: str) -> tuple[dict, str]:
    """A COCO-panoptic JSON (path or loaded dict; a bare list is taken as `annotations`)
    and a name for error messages."""
    if isinstance(source, (str, os.PathLike)):
        from panoptic_detr.utils.io import read_json

        data = read_json(source)
        name = str(source)
    else:
        data = source
        name = f"{what} JSON"
    if isinstance(data, list):
        data = {"annotations": data}
    if not isinstance(data, Mapping) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{name}: no 'annotations' list (not a COCO-panoptic JSON)")
    return data, name


def annotation_segments(ann: Mapping, name: str, image_id: Any, kind: str) -> dict[int, tuple[int, bool, Any]]:
    """`{segment id: (category id, iscrowd, area or None)}` of one image's annotation in
    JSON order, checked."""
    segs = ann.get("segments_info")
    if not isinstance(segs, list):
        raise DataError(f"{name}: image id {image_id}: {kind} annotation has no 'segments_info' list")
    out: dict[int, tuple[int, bool, Any]] = {}
    for s in segs:
        try:
            sid = int_field(s["id"])
            cid = int_field(s["category_id"])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{name}: image id {image_id}: {kind} segment without a valid 'id' and 'category_id': {s!r:.80}"
            ) from None
        if sid == VOID:
            raise DataError(f"{name}: image id {image_id}: {kind} segment id 0 is reserved for VOID")
        if sid in out:
            raise DataError(f"{name}: image id {image_id}: {kind} segment id {sid} appears twice")
        out[sid] = (cid, s.get("iscrowd", 0) == 1, s.get("area"))
    return out


def annotation_file_name(ann: Mapping, name: str, image_id: Any) -> str:
    fn = ann.get("file_name")
    if not isinstance(fn, str) or not fn:
        raise DataError(f"{name}: image id {image_id}: annotation has no 'file_name'")
    return fn
