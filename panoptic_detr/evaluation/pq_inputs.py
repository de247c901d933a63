"""The inputs of PQ: COCO-panoptic JSONs (loaded and checked), categories in any of the
forms the project uses, and the segment ids' conventions."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from panoptic_detr.errors import DataError

VOID = 0
OFFSET = 256 * 256 * 256  # ids are 24-bit: (gt, pred) pairs are packed as gt * OFFSET + pred
ID_MASK = OFFSET - 1


def normalise_categories(categories: Any, where: str = "categories") -> dict[int, dict]:
    """`{id: {"id", "name", "isthing"}}` in the given order from a list of category dicts,
    a `{id: dict}` mapping or a `CategoryList`."""
    if categories is None:
        raise DataError(f"{where}: no categories")
    if isinstance(categories, Mapping):
        items: Iterable = categories.values()
    else:
        items = categories
    out: dict[int, dict] = {}
    for i, c in enumerate(items):
        if hasattr(c, "id") and hasattr(c, "isthing") and not isinstance(c, Mapping):
            cid, name, isthing = int(c.id), str(c.name), bool(c.isthing)
        else:
            try:
                cid = int(c["id"])
                name = str(c.get("name", f"class_{cid}"))
                isthing = int(c.get("isthing", 1)) == 1
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{where}: category #{i} has no valid 'id'") from None
        if cid in out:
            raise DataError(f"{where}: duplicate category id {cid}")
        out[cid] = {"id": cid, "name": name, "isthing": isthing}
    return out


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
            sid = int(s["id"])
            cid = int(s["category_id"])
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
