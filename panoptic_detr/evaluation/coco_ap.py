"""Box AP and mask AP of the thing classes through pycocotools' COCOeval.

The ground truth is a COCO instances JSON (a prepared dataset's `instances_{split}.json`);
the detections come from panoptic predictions: every predicted *thing* segment becomes one
detection with its mask (RLE), its box and its score (`score` of the segment, 1.0 when
absent). Box AP ranks the boxes, mask AP the masks; the areas that COCOeval uses for the
small/medium/large ranges are box areas for `bbox` and mask areas for `segm`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_detr.errors import DataError

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

__all__ = [
    "STAT_NAMES",
    "segments_to_coco_results",
    "panoptic_to_coco_results",
    "coco_ap",
    "coco_ap_from_panoptic",
    "match_image_ids",
    "load_instances",
]


def _mask_utils():
    from pycocotools import mask as mask_utils

    return mask_utils


def segments_to_coco_results(
    image_id: Any,
    id_map: np.ndarray,
    segments_info: Iterable[Mapping],
    thing_ids: Iterable[int] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Detections of one image: (bbox results, segm results) in the COCO results format.

    A segment counts as a thing when its category is in `thing_ids` (when given), else
    when its `isthing` is true (segments without `isthing` count as things).
    """
    mask_utils = _mask_utils()
    id_map = np.asarray(id_map)
    things = None if thing_ids is None else {int(c) for c in thing_ids}
    bbox_results: list[dict] = []
    segm_results: list[dict] = []
    for seg in segments_info:
        cat = int(seg["category_id"])
        if things is not None:
            if cat not in things:
                continue
        elif not bool(seg.get("isthing", True)):
            continue
        mask = id_map == int(seg["id"])
        if not mask.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        box = [float(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        score = float(seg.get("score", 1.0))
        bbox_results.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": score})
        segm_results.append({"image_id": image_id, "category_id": cat, "segmentation": rle, "score": score})
    return bbox_results, segm_results


def match_image_ids(instances_images: Iterable[Mapping], entries: Iterable[tuple[Any, Any]]) -> dict[Any, Any]:
    """Our image id -> the instances JSON's image id, for `(image_id, file_name)` entries:
    by file name stem (`x.png` matches `x.jpg`) when the instances JSON lists it, else by
    equal id; images found neither way are left out."""
    by_stem: dict[str, Any] = {}
    ids = set()
    for img in instances_images:
        if "id" not in img:
            continue
        ids.add(img["id"])
        if img.get("file_name"):
            by_stem.setdefault(Path(str(img["file_name"])).stem, img["id"])
    mapping = {}
    for image_id, file_name in entries:
        stem = Path(str(file_name)).stem if file_name else None
        if stem and stem in by_stem:
            mapping[image_id] = by_stem[stem]
        elif image_id in ids:
            mapping[image_id] = image_id
    return mapping


def panoptic_to_coco_results(
    pred_json: Any,
    pred_dir: str | os.PathLike,
    thing_ids: Iterable[int] | None = None,
    image_ids: Mapping[Any, Any] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Detections from COCO-panoptic prediction files (JSON path or dict + PNG folder).
    `image_ids` maps the predictions' image ids to the detections' (others are skipped)."""
    from panoptic_detr.data.formats.coco_panoptic import read_id_png
    from panoptic_detr.evaluation.pq_inputs import load_panoptic_json

    pred, name = load_panoptic_json(pred_json, "prediction")
    bbox_results: list[dict] = []
    segm_results: list[dict] = []
    for ann in pred["annotations"]:
        image_id = ann.get("image_id")
        if image_ids is not None:
            if image_id not in image_ids:
                continue
            out_id = image_ids[image_id]
        else:
            out_id = image_id
        if not ann.get("file_name"):
            raise DataError(f"{name}: image id {image_id}: annotation has no 'file_name'")
        id_map = read_id_png(Path(pred_dir) / ann["file_name"], f"{Path(pred_dir) / ann['file_name']} (image id {image_id})")
        b, s = segments_to_coco_results(out_id, id_map, ann.get("segments_info", []), thing_ids)
        bbox_results += b
        segm_results += s
    return bbox_results, segm_results


def load_instances(instances_json: Any) -> tuple[dict, str]:
    """A COCO instances dict (from a path or a dict), completed where pycocotools needs it:
    annotation ids, `iscrowd`, `area`, `info`."""
    if isinstance(instances_json, (str, os.PathLike)):
        from panoptic_detr.utils.io import read_json

        data, name = read_json(instances_json), str(instances_json)
    else:
        data, name = copy.deepcopy(instances_json), "instances JSON"
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{name}: no '{key}' list (not a COCO instances JSON)")
    images = {}
    for i, img in enumerate(data["images"]):
        if "id" not in img or "height" not in img or "width" not in img:
            raise DataError(f"{name}: image #{i} needs 'id', 'height' and 'width'")
        images[img["id"]] = img
    mask_utils = _mask_utils()
    for i, ann in enumerate(data["annotations"]):
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise DataError(f"{name}: annotation #{i} (id {ann.get('id')}) has no '{key}'")
        if ann["image_id"] not in images:
            raise DataError(f"{name}: annotation #{i} (id {ann.get('id')}) refers to unknown image id {ann['image_id']}")
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            seg = ann.get("segmentation")
            if has_mask(seg):
                img = images[ann["image_id"]]
                if isinstance(seg, Mapping) and not isinstance(seg.get("counts"), list):
                    rle = seg  # compressed RLE, as COCO's own files hold it
                else:
                    rles = mask_utils.frPyObjects(seg, img["height"], img["width"])
                    rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
                ann["area"] = float(mask_utils.area(rle))
            else:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    data.setdefault("info", {})
    return data, name


def has_mask(segmentation: Any) -> bool:
    """An RLE dict, or a polygon list with at least one polygon of 3 points or more.
    CVAT and course exports write `"segmentation": []` for box-only objects, which
    pycocotools cannot turn into a mask (IndexError in frPyObjects)."""
    if isinstance(segmentation, Mapping):
        return True
    return isinstance(segmentation, list) and any(isinstance(p, list) and len(p) >= 6 for p in segmentation)


def _box_as_ignore_region(ann: dict) -> dict:
    """For mask AP: an annotation without a mask becomes a crowd region of its box, so a
    detection of that object is neither a miss nor a false positive."""
    if has_mask(ann.get("segmentation")):
        return ann
    x, y, w, h = (float(v) for v in ann["bbox"])
    return {**ann, "iscrowd": 1, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def _gt_index(data: dict):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
    return gt


def _empty_stats(has_gt: bool) -> dict[str, float]:
    return {k: (0.0 if has_gt else -1.0) for k in STAT_NAMES}


def coco_ap(
    instances_json: Any,
    bbox_results: list[dict] | None,
    segm_results: list[dict] | None,
    thing_ids: Iterable[int] | None = None,
    image_ids: Iterable[Any] | None = None,
) -> dict[str, dict[str, float]]:
    """COCOeval summaries `{"bbox": {AP, AP50, ...}, "segm": {...}}` (fractions; -1 where
    COCO cannot define a value). A `None` result list skips that evaluation.
    `thing_ids` restricts the evaluated categories (default: all of the instances JSON),
    `image_ids` the evaluated images (default: all; pass the images that were predicted,
    or the other images' objects count as missed). Annotations without a mask
    (`"segmentation": []`) count for box AP and are left out of mask AP, with a warning."""
    from pycocotools.cocoeval import COCOeval

    data, name = load_instances(instances_json)
    cat_ids = sorted(c["id"] for c in data["categories"])
    if thing_ids is not None:
        things = {int(c) for c in thing_ids}
        cat_ids = [c for c in cat_ids if c in things]
    all_imgs = {img["id"] for img in data["images"]}
    img_ids = sorted(all_imgs if image_ids is None else {i for i in image_ids if i in all_imgs})
    known_imgs = set(img_ids)
    known_cats = set(cat_ids)
    evaluated = [a for a in data["annotations"] if a["category_id"] in known_cats and a["image_id"] in known_imgs]
    no_mask = sum(1 for a in evaluated if not has_mask(a.get("segmentation")))

    out: dict[str, dict[str, float]] = {}
    for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
        if results is None:
            continue
        gt_data = data
        if iou_type == "segm" and no_mask:
            gt_data = {**data, "annotations": [_box_as_ignore_region(a) for a in data["annotations"]]}
            warnings.warn(f"{name}: {no_mask} annotation(s) without a mask (empty 'segmentation') left out of "
                          f"mask AP (their boxes are ignored regions there); box AP counts them")
        has_gt = any(a["category_id"] in known_cats and a["image_id"] in known_imgs for a in gt_data["annotations"])
        dets = [copy.copy(r) for r in results if r["image_id"] in known_imgs and r["category_id"] in known_cats]
        if not dets or not cat_ids or not img_ids:
            out[iou_type] = _empty_stats(has_gt and bool(cat_ids))
            continue
        gt = _gt_index(gt_data)
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(dets)
            ev = COCOeval(gt, dt, iouType=iou_type)
            ev.params.catIds = cat_ids
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[iou_type] = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    return out


def coco_ap_from_panoptic(
    instances_json: Any,
    pred_json: Any,
    pred_dir: str | os.PathLike,
    categories: Any = None,
    evaluated_images: Iterable[tuple[Any, Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Box and mask AP of panoptic prediction files against an instances JSON (images
    matched by file name stem, else by id; see `match_image_ids`), over the evaluated
    images only: `evaluated_images` ((image_id, file_name) of the ground truth, whose
    ids the predictions use: see `alignment.align_predictions`), default the predicted
    images. `categories` (list of dicts with `isthing`, or a CategoryList) picks the
    thing classes."""
    thing_ids = None
    if categories is not None:
        from panoptic_detr.evaluation.pq_inputs import normalise_categories

        thing_ids = [cid for cid, c in normalise_categories(categories).items() if c["isthing"]]
    from panoptic_detr.evaluation.pq_inputs import load_panoptic_json

    data, name = load_instances(instances_json)
    pred, _ = load_panoptic_json(pred_json, "prediction")
    entries = list(evaluated_images if evaluated_images is not None
                   else [(a.get("image_id"), a.get("file_name")) for a in pred["annotations"]])
    image_ids = match_image_ids(data["images"], entries)
    if not image_ids:
        raise DataError(f"{name}: none of the {len(entries)} evaluated image(s) is in it (matched by file name or id)")
    if len(image_ids) < len(entries):
        warnings.warn(f"{name}: {len(entries) - len(image_ids)} of the {len(entries)} evaluated image(s) are not in "
                      f"it; box and mask AP cover the other {len(image_ids)}")
    bbox_results, segm_results = panoptic_to_coco_results(pred, pred_dir, thing_ids, image_ids)
    return coco_ap(data, bbox_results, segm_results, thing_ids, image_ids=image_ids.values())
