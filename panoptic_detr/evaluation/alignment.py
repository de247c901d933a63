"""Which prediction belongs to which ground-truth image, and which predicted category is
which ground-truth category, so that files from another producer cannot be mis-scored.

- Categories are matched by name (`match_categories`): a model's `vehicle` (id 5) is the
  ground truth's `vehicle` whatever its id there; a name the ground truth lacks is an
  error naming it, unless a category map renames it (`{predicted name: ground-truth
  name}`). Predictions without a `categories` list keep their ids (said in a note).
- Images are matched by `image_id`, or, when the ids do not all match, by file name stem
  (`match_images`): `predict` names images by file stem, `prepare` renumbers them.

`align_predictions` applies both and returns the predictions rewritten in the ground
truth's terms (image ids and category ids), plus one-line notes saying what was used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from panoptic_detr.errors import DataError
from panoptic_detr.evaluation.pq_inputs import int_field

__all__ = ["align_predictions", "match_categories", "match_images", "category_names"]


def category_names(categories: Iterable[Any], where: str) -> dict[int, str]:
    """`{id: name}` of a category list (dicts or objects with `id` and `name`)."""
    out: dict[int, str] = {}
    if isinstance(categories, Mapping):
        categories = categories.values()
    for i, c in enumerate(categories):
        try:
            cid = int_field(c["id"] if isinstance(c, Mapping) else c.id)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DataError(f"{where}: category #{i} has no valid 'id'") from None
        name = c.get("name") if isinstance(c, Mapping) else getattr(c, "name", None)
        out[cid] = str(name) if name is not None else f"class_{cid}"
    return out


def match_categories(
    gt_names: Mapping[int, str],
    pred_names: Mapping[int, str] | None,
    used: Iterable[int],
    gt_name: str,
    pred_name: str,
    category_map: Mapping[str, str] | None = None,
) -> tuple[dict[int, int], list[str]]:
    """(predicted id -> ground-truth id for every id in `used`, notes).

    `pred_names` None: the predictions name no categories; their ids are taken as the
    ground truth's. An unknown predicted name (after `category_map`) is a DataError."""
    used = sorted(set(used))
    if pred_names is None:
        return {c: c for c in used}, [f"{pred_name} has no 'categories' list: its category ids are taken as "
                                      f"those of {gt_name}"]
    category_map = dict(category_map or {})
    for src, dst in category_map.items():
        if dst not in gt_names.values():
            raise DataError(f"category map: '{src}' -> '{dst}': '{dst}' is not a category of {gt_name}")
    unused = sorted(set(category_map) - set(pred_names.values()))
    if unused:
        warnings.warn(f"category map: {', '.join(map(repr, unused))} not among the categories of {pred_name}; ignored")
    by_name: dict[str, list[int]] = {}
    for cid, name in gt_names.items():
        by_name.setdefault(name, []).append(cid)
    remap: dict[int, int] = {}
    for pid in used:
        if pid not in pred_names:
            continue  # a segment's error, reported with its image (`align_predictions`)
        name = category_map.get(pred_names[pid], pred_names[pid])
        candidates = by_name.get(name, [])
        if not candidates:
            raise DataError(
                f"{pred_name}: predicted category '{pred_names[pid]}' (id {pid}) is not a category of {gt_name}; "
                f"rename it with a category map (--category-map FILE.yaml: '{pred_names[pid]}: <ground-truth name>')"
            )
        if pid in candidates or len(candidates) == 1:
            remap[pid] = pid if pid in candidates else candidates[0]
        else:
            raise DataError(f"{gt_name}: category name '{name}' is ambiguous (ids {candidates}); "
                            f"{pred_name} uses it as id {pid}")
    notes = []
    moved = [(pid, gid) for pid, gid in remap.items() if pid != gid]
    renamed = sorted({(pred_names[p], category_map[pred_names[p]]) for p in remap if pred_names[p] in category_map})
    if moved or renamed:
        ex = ", ".join(f"'{pred_names[p]}' {p} -> {g}" for p, g in moved[:3]) + (" ..." if len(moved) > 3 else "")
        ren = ", ".join(f"'{a}' -> '{b}'" for a, b in renamed[:3]) + (" ..." if len(renamed) > 3 else "")
        notes.append(f"categories matched by name: {len(moved)} predicted id(s) differ from the ground truth's"
                     + (f" ({ex})" if moved else "") + (f"; renamed by the category map: {ren}" if renamed else ""))
    return remap, notes


def _stem(file_name: Any) -> str | None:
    return Path(str(file_name)).stem if isinstance(file_name, str) and file_name else None


def match_images(gt_anns: list, gt_images: Mapping[Any, Mapping], pred_anns: list, gt_name: str, pred_name: str
                 ) -> tuple[list[Mapping], str]:
    """(the prediction of each ground-truth annotation, in ground-truth order, and the key
    used: "image_id" or "file_name"). By image id when every ground-truth image has a
    prediction of that id; else by file name stem when every one has a prediction of that
    stem; else a DataError naming the first image without one."""
    by_id: dict[Any, Mapping] = {}
    by_stem: dict[str, Mapping | None] = {}  # None: two predictions share the stem
    for i, ann in enumerate(pred_anns):
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise DataError(f"{pred_name}: annotation #{i} has no 'image_id'")
        if ann["image_id"] in by_id:
            raise DataError(f"{pred_name}: image id {ann['image_id']} appears twice")
        by_id[ann["image_id"]] = ann
        stem = _stem(ann.get("file_name"))
        if stem is not None:
            by_stem[stem] = None if stem in by_stem else ann
    for i, ann in enumerate(gt_anns):
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise DataError(f"{gt_name}: annotation #{i} has no 'image_id'")
    if all(ann["image_id"] in by_id for ann in gt_anns):
        return [by_id[ann["image_id"]] for ann in gt_anns], "image_id"

    def gt_stem(ann):
        return _stem(ann.get("file_name")) or _stem((gt_images.get(ann["image_id"]) or {}).get("file_name"))

    found = [by_stem.get(gt_stem(ann) or "") for ann in gt_anns]
    if all(p is not None for p in found):
        return found, "file_name"
    missing = [ann for ann, p in zip(gt_anns, found) if p is None and ann["image_id"] not in by_id]
    first = missing[0] if missing else next(a for a in gt_anns if a["image_id"] not in by_id)
    n_id = sum(a["image_id"] not in by_id for a in gt_anns)
    n_stem = sum(p is None for p in found)
    raise DataError(
        f"{pred_name}: no prediction for the image with id {first['image_id']} (file '{gt_stem(first)}') of "
        f"{gt_name}; {n_id} of {len(gt_anns)} image(s) have no prediction of their id, {n_stem} none of their file name"
    )


def align_predictions(gt: Mapping, gt_name: str, pred: Mapping, pred_name: str,
                      category_map: Mapping[str, str] | None = None, categories: Any = None
                      ) -> tuple[dict, list[str]]:
    """The predictions (a COCO-panoptic results dict) in the ground truth's terms: one
    annotation per ground-truth image, in its order, with its `image_id`, and category
    ids translated by name into those of `categories` (default: the ground truth's).
    Returns (aligned dict, one-line notes of what was matched how). Aligning an aligned
    dict changes nothing."""
    if categories is None:
        if not isinstance(gt.get("categories"), list):
            raise DataError(f"{gt_name}: no 'categories' list")
        categories = gt["categories"]
    gt_names = category_names(categories, gt_name)
    gt_images = {img.get("id"): img for img in gt.get("images", []) if isinstance(img, Mapping)}
    preds, key = match_images(gt["annotations"], gt_images, pred["annotations"], gt_name, pred_name)
    used = set()
    for p in preds:
        for s in p.get("segments_info") or []:
            try:
                used.add(int_field(s["category_id"]))
            except (KeyError, TypeError, ValueError):
                pass  # reported with its image where the segments are read
    pred_cats = pred.get("categories")
    pred_names = category_names(pred_cats, pred_name) if isinstance(pred_cats, list) else None
    remap, notes = match_categories(gt_names, pred_names, used, gt_name, pred_name, category_map)
    how = "image_id" if key == "image_id" else "file name (the prediction ids are not the ground truth's)"
    notes.insert(0, f"{len(preds)} image(s) matched to the predictions by {how}")
    annotations = []
    for g, p in zip(gt["annotations"], preds):
        segs = p.get("segments_info")
        if isinstance(segs, list):
            segs = [_recategorised(s, remap, pred_names, pred_name, g["image_id"]) for s in segs]
        annotations.append({**p, "image_id": g["image_id"], "segments_info": segs})
    aligned_categories = [{"id": cid, "name": name} for cid, name in gt_names.items()]
    return {**pred, "annotations": annotations, "categories": aligned_categories}, notes


def _recategorised(seg: Any, remap: Mapping[int, int], pred_names, pred_name: str, image_id) -> Any:
    if not isinstance(seg, Mapping):
        return seg
    try:
        cid = int_field(seg["category_id"])
    except (KeyError, TypeError, ValueError):
        return seg  # reported where the segments are read
    if pred_names is not None and cid not in pred_names:
        raise DataError(f"{pred_name}: image id {image_id}: segment id {seg.get('id')} has unknown category_id {cid} "
                        f"(not in its 'categories' list)")
    return {**seg, "category_id": remap.get(cid, cid)}
