"""The PQ events of one image, with the panopticapi's exact rules (see `panoptic_quality`):
read both id maps, count the (gt id, pred id) pairs, check PNGs against JSONs, match,
then the false negatives and false positives. Everything after the counting works on the
few hundred distinct pairs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_detr.data.formats.png_decode import read_packed_rgb
from panoptic_detr.errors import DataError
from panoptic_detr.evaluation.pq_inputs import VOID, annotation_file_name, annotation_segments
from panoptic_detr.evaluation.pq_pair_counts import known_ids, pair_counts

Events = list[tuple[int, int, int, int, float]]  # (category_id, tp, fp, fn, iou)


class ImageEvents(list):
    """One image's events, plus the count of its ground-truth segments whose JSON `area`
    differs from their PNG pixel count (scored with the JSON area, as the panopticapi;
    reported once for all images by the caller)."""

    area_mismatches: int = 0


def image_pq_stats(
    gt_ann: Mapping,
    pred_ann: Mapping,
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    categories: Mapping[int, Any],
    gt_name: str = "ground-truth JSON",
    pred_name: str = "prediction JSON",
    check_gt: bool = True,
    gt_ids: np.ndarray | None = None,
    pred_ids: np.ndarray | None = None,
    release_gil: bool = False,
) -> ImageEvents:
    """The PQ statistics of one image as `(category_id, tp, fp, fn, iou)` events in the
    panopticapi's order (matches by ascending (gt id, pred id), then false negatives in
    ground-truth order, then false positives in prediction order).

    `gt_ids` / `pred_ids` (uint32/int HxW id maps) skip reading the PNGs.
    `release_gil=True` decodes PNGs with PIL, which lets other threads run meanwhile,
    instead of the faster pyspng, which does not (see `png_decode`).
    `check_gt=False` accepts ground truth whose PNG and JSON disagree, exactly as the
    panopticapi does (PNG ids missing from the JSON are ignored, JSON segments missing
    from the PNG count as false negatives).
    """
    image_id = gt_ann.get("image_id")
    gt_segms = annotation_segments(gt_ann, gt_name, image_id, "ground-truth")
    pred_segms = annotation_segments(pred_ann, pred_name, image_id, "predicted")
    gt_file, gt_flat, gt_shape = _id_pixels(gt_ann, gt_ids, gt_dir, gt_name, image_id, "ground-truth", release_gil)
    pred_file, pred_flat, pred_shape = _id_pixels(pred_ann, pred_ids, pred_dir, pred_name, image_id, "predicted",
                                                  release_gil)
    if gt_shape != pred_shape:
        raise DataError(
            f"{pred_file}: image id {image_id}: prediction is {pred_shape[1]}x{pred_shape[0]} "
            f"but the ground truth {gt_file.name} is {gt_shape[1]}x{gt_shape[0]} (width x height)"
        )
    # One pass over the pixels: count every (gt id, pred id) pair. The JSONs list the ids
    # to expect, so the counting needs no sort (PNG ids missing from them are still
    # counted, and reported by the checks).
    pair_gt, pair_pred, counts = pair_counts(gt_flat, pred_flat, known_ids(gt_segms), known_ids(pred_segms))
    im = _Image(image_id, gt_name, pred_name, gt_file, pred_file, gt_segms, pred_segms, pair_gt, pair_pred, counts)
    pred_area = _predicted_areas(im, categories)
    gt_area_png = _ground_truth_png_areas(im, categories, check_gt)
    result = ImageEvents()
    if gt_area_png:
        result.area_mismatches = sum(
            1 for gid, seg in gt_segms.items() if seg[2] is not None and seg[2] != gt_area_png.get(gid, 0)
        )

    is_void_gt = pair_gt == VOID
    void_of_pred = dict(zip(pair_pred[is_void_gt].tolist(), counts[is_void_gt].tolist()))
    events, gt_matched, pred_matched = _matches(im, pred_area, gt_area_png, void_of_pred)
    crowd_of_category: dict[int, int] = {}
    for gid, gseg in gt_segms.items():
        if gid in gt_matched:
            continue
        if gseg[1]:
            crowd_of_category[gseg[0]] = gid  # one crowd region per category: the last one
            continue
        events.append((gseg[0], 0, 0, 1, 0.0))
    if len(pred_matched) < len(pred_segms):
        events += _false_positives(im, pred_matched, pred_area, void_of_pred, crowd_of_category)
    result += events
    return result


@dataclass
class _Image:
    """One image's segments (from the JSONs) and distinct pixel pairs (from the PNGs)."""

    image_id: Any
    gt_name: str
    pred_name: str
    gt_file: Path
    pred_file: Path
    gt_segms: dict[int, tuple[int, bool, Any]]
    pred_segms: dict[int, tuple[int, bool, Any]]
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    counts: np.ndarray


def _id_pixels(ann, ids, folder, name, image_id, kind, release_gil) -> tuple[Path, np.ndarray, tuple]:
    """(file, flat uint32 pixels, (height, width)) of the annotation's PNG, or of `ids`
    when given (the PNG is then not read; the file is only named in errors)."""
    if ids is None:
        file = Path(folder) / annotation_file_name(ann, name, image_id)
        flat, shape = read_packed_rgb(file, f"{file} (image id {image_id})", release_gil)
        return file, flat, shape
    file = Path(str(ann.get("file_name", f"<{kind} id map>")))
    return file, np.asarray(ids).astype(np.uint32, copy=False).ravel(), np.shape(ids)


def _predicted_areas(im: _Image, categories: Mapping[int, Any]) -> dict[int, int]:
    """Area of each predicted segment from the PNG; PNG and JSON must list the same
    segments, of known categories."""
    pred_png_ids, inverse = np.unique(im.pair_pred, return_inverse=True)
    pred_png_area = np.bincount(inverse, weights=im.counts).astype(np.int64)
    pred_area: dict[int, int] = {}
    for pid, area in zip(pred_png_ids.tolist(), pred_png_area.tolist()):
        if pid == VOID:
            continue
        seg = im.pred_segms.get(pid)
        if seg is None:
            raise DataError(
                f"{im.pred_file}: image id {im.image_id}: segment id {pid} is in the PNG but not in the "
                f"segments_info of {im.pred_name}"
            )
        if seg[0] not in categories:
            raise DataError(f"{im.pred_name}: image id {im.image_id}: segment id {pid} has unknown category_id {seg[0]}")
        pred_area[pid] = area
    missing = [sid for sid in im.pred_segms if sid not in pred_area]
    if missing:
        raise DataError(
            f"{im.pred_name}: image id {im.image_id}: segment id(s) {missing[:10]} in segments_info "
            f"are not in the PNG {im.pred_file}"
        )
    return pred_area


def _ground_truth_png_areas(im: _Image, categories: Mapping[int, Any], check_gt: bool) -> dict[int, int]:
    """Area of each ground-truth id in the PNG (needed for the checks, and for segments
    whose JSON gives no area; else empty); with `check_gt`, PNG and JSON must agree."""
    gt_area_png: dict[int, int] = {}
    if check_gt or any(seg[2] is None for seg in im.gt_segms.values()):
        gt_png_ids, inverse = np.unique(im.pair_gt, return_inverse=True)
        gt_png_area = np.bincount(inverse, weights=im.counts).astype(np.int64)
        gt_area_png = dict(zip(gt_png_ids.tolist(), gt_png_area.tolist()))
    if not check_gt:
        return gt_area_png
    for gid in gt_area_png:
        if gid != VOID and gid not in im.gt_segms:
            raise DataError(
                f"{im.gt_file}: image id {im.image_id}: segment id {gid} is in the ground-truth PNG but not in "
                f"the segments_info of {im.gt_name}"
            )
    for gid, seg in im.gt_segms.items():
        if gid not in gt_area_png:
            raise DataError(
                f"{im.gt_name}: image id {im.image_id}: ground-truth segment id {gid} is not in the PNG {im.gt_file}"
            )
        if seg[0] not in categories:
            raise DataError(
                f"{im.gt_name}: image id {im.image_id}: ground-truth segment id {gid} has unknown category_id {seg[0]}"
            )
    return gt_area_png


def _matches(im: _Image, pred_area, gt_area_png, void_of_pred) -> tuple[Events, set[int], set[int]]:
    """True positives (same category, gt not crowd, IoU > 0.5 with the prediction's VOID
    pixels left out of the union) in ascending (gt id, pred id) order, and the matched ids."""
    events: Events = []
    gt_matched: set[int] = set()
    pred_matched: set[int] = set()
    pair_gt, pair_pred, counts = im.pair_gt, im.pair_pred, im.counts
    candidates = (pair_gt != VOID) & (pair_pred != VOID)
    for gid, pid, inter in zip(
        pair_gt[candidates].tolist(), pair_pred[candidates].tolist(), counts[candidates].tolist()
    ):
        gseg = im.gt_segms.get(gid)
        if gseg is None or gseg[1]:  # not in the JSON, or crowd
            continue
        category = gseg[0]
        if category != im.pred_segms[pid][0]:
            continue
        area = gseg[2] if gseg[2] is not None else gt_area_png.get(gid, 0)
        union = pred_area[pid] + area - inter - void_of_pred.get(pid, 0)
        if union <= 0:
            raise DataError(
                f"{im.gt_name}: image id {im.image_id}: ground-truth segment id {gid} has area {area} in the JSON "
                f"but {inter} of its pixels are in the PNG"
            )
        iou = inter / union
        if iou > 0.5:
            events.append((category, 1, 0, 0, iou))
            gt_matched.add(gid)
            pred_matched.add(pid)
    return events, gt_matched, pred_matched


def _false_positives(im: _Image, pred_matched, pred_area, void_of_pred, crowd_of_category) -> Events:
    """Unmatched predictions, in prediction order, except those more than half on VOID
    plus the crowd region of their own category."""
    on_crowd: dict[int, int] = {}  # pixels of each prediction on the crowd region of its category
    if crowd_of_category:
        crowd_ids = np.fromiter(crowd_of_category.values(), dtype=np.int64)
        sel = np.isin(im.pair_gt, crowd_ids) & (im.pair_pred != VOID)
        for gid, pid, c in zip(im.pair_gt[sel].tolist(), im.pair_pred[sel].tolist(), im.counts[sel].tolist()):
            if crowd_of_category.get(im.pred_segms[pid][0]) == gid:
                on_crowd[pid] = c
    events: Events = []
    for pid, pseg in im.pred_segms.items():
        if pid in pred_matched:
            continue
        ignored = void_of_pred.get(pid, 0) + on_crowd.get(pid, 0)
        if ignored / pred_area[pid] > 0.5:
            continue
        events.append((pseg[0], 0, 1, 0, 0.0))
    return events
