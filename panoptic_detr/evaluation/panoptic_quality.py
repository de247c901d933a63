"""Panoptic quality (PQ, SQ, RQ) with the COCO panopticapi's exact rules, vectorised.

The numbers equal those of the panopticapi's `pq_compute` (to floating-point summation
order) on the same files:

- segment ids come from the PNGs by ``id = R + 256 G + 256^2 B``; id 0 is VOID;
- a predicted and a ground-truth segment match when they have the same category, the
  ground truth is not crowd, and ``IoU = intersection / (union - predicted pixels on
  VOID)`` is strictly above 0.5 (ground-truth areas come from the ground-truth JSON,
  predicted areas from the prediction PNG, as in the panopticapi);
- unmatched non-crowd ground truth is a false negative; an unmatched prediction is a false
  positive unless more than half of it lies on VOID plus the crowd region of its category
  (like the panopticapi, one crowd region per category and image: the last one listed);
- per category ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``,
  ``RQ = TP / (TP + FP/2 + FN/2)``, averaged over the categories with TP + FP + FN > 0.

Per image, the (ground-truth id, predicted id) pairs of all pixels are counted without
sorting pixels (the panopticapi runs `np.unique` over a 64-bit key per pixel): runs of
equal pixels along the rows are found with two compares, and their lengths are added up
per pair with one `np.bincount` over small indices taken from the JSONs' segment ids.
Everything after that works on the few hundred distinct pairs. PNGs are decoded with
pyspng when it is installed (about twice as fast as PIL, same pixels; see `png_decode`).
Images are independent, so `workers > 1` spreads them over forked worker processes
(pyspng holds the GIL, so threads could not decode in parallel), or over threads for
small sets, where starting processes would cost more than it saves.

Where the panopticapi raises a bare KeyError (or computes garbage), this module raises a
one-line `DataError` naming the file, the image id and the segment id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_detr.errors import DataError
from panoptic_detr.evaluation.forked_map import fork_available, forked_map
from panoptic_detr.data.formats.png_decode import read_packed_rgb

VOID = 0
OFFSET = 256 * 256 * 256  # ids are 24-bit: (gt, pred) pairs are packed as gt * OFFSET + pred
_ID_MASK = OFFSET - 1

__all__ = [
    "VOID",
    "OFFSET",
    "CategoryStat",
    "PQStat",
    "pq_compute",
    "pq_from_stats",
    "image_pq_stats",
    "load_panoptic_json",
    "normalise_categories",
]


# ----------------------------------------------------------------------------- statistics
@dataclass
class CategoryStat:
    """Raw counts of one category: true/false positives, false negatives, summed IoU."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


@dataclass
class PQStat:
    """Per-category statistics accumulated over images (category id -> CategoryStat)."""

    per_category: dict[int, CategoryStat] = field(default_factory=dict)

    def __getitem__(self, category_id: int) -> CategoryStat:
        stat = self.per_category.get(category_id)
        if stat is None:
            stat = self.per_category[category_id] = CategoryStat()
        return stat

    def add(self, events: Iterable[tuple[int, int, int, int, float]]) -> None:
        """Adds the `(category_id, tp, fp, fn, iou)` events of one image, in order."""
        for cid, tp, fp, fn, iou in events:
            s = self[cid]
            s.tp += tp
            s.fp += fp
            s.fn += fn
            s.iou += iou


# ----------------------------------------------------------------------------- inputs
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


def _read_packed(
    path: str | os.PathLike, where: str, release_gil: bool = False
) -> tuple[np.ndarray, tuple[int, int]]:
    """Pixels of an RGB PNG as flat little-endian uint32 ``R + 256 G + 256^2 B + 256^3 X``
    (X: alpha or padding, not part of the id), and (height, width). See `png_decode`."""
    return read_packed_rgb(path, where, release_gil)


def _runs(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gt id, pred id, length) of every run of pixels with the same (gt, pred) words along
    the flat arrays; ids masked to 24 bits (so runs that differ only in the top byte stay
    separate here and are merged by the counting)."""
    n = gt.size
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(gt[1:], gt[:-1], out=change[1:])
    pred_change = np.not_equal(pred[1:], pred[:-1])
    np.logical_or(change[1:], pred_change, out=change[1:])
    starts = np.flatnonzero(change)
    length = np.diff(starts, append=n)
    mask = np.uint32(_ID_MASK)
    return gt[starts] & mask, pred[starts] & mask, length


def _positions(values: np.ndarray, known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in the sorted id array `known` (default: the distinct values),
    and `known` itself, extended by any values it lacks (ids in a PNG that its JSON does
    not list: the caller reports or ignores them, but they must be counted exactly)."""
    if known is None or known.size == 0:
        known = np.unique(values)
    idx = np.searchsorted(known, values)
    found = known[np.minimum(idx, known.size - 1)] == values
    if not found.all():
        known = np.union1d(known, values[~found])
        idx = np.searchsorted(known, values)
    return idx, known


# Above this many (gt id, pred id) cells per image the counting table would be large
# (e.g. thousands of segments on both sides): sort the runs instead.
_MAX_TABLE_CELLS = 1 << 22


def _pair_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    gt_known: np.ndarray | None = None,
    pred_known: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (gt id, pred id) pairs of two equally long uint32 arrays (ids in the low 24
    bits, anything in the high 8) and their pixel counts, sorted by (gt id, pred id): the
    same as ``np.unique(gt * OFFSET + pred, return_counts=True)`` without sorting pixels.

    Panoptic maps are piecewise constant: find the runs along the rows (two compares),
    give each id a small index (its position among the image's ids: `gt_known` /
    `pred_known`, sorted, e.g. VOID plus the JSON's segment ids; ids not in them are added)
    and add up the run lengths per (gt index, pred index) cell with one `np.bincount`. No
    sort at all when the id lists are given, else only the runs' ids are sorted.
    """
    if gt.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    run_gt, run_pred, length = _runs(gt, pred)
    gi, gt_known = _positions(run_gt, gt_known)
    pi, pred_known = _positions(run_pred, pred_known)
    n_pred = pred_known.size
    cell = gi * n_pred + pi
    if gt_known.size * n_pred <= _MAX_TABLE_CELLS:
        table = np.bincount(cell, weights=length, minlength=gt_known.size * n_pred)
        cell = np.flatnonzero(table)  # ascending cell = ascending (gt id, pred id)
        counts = table[cell]
    else:
        cell, inverse = np.unique(cell, return_inverse=True)
        counts = np.bincount(inverse, weights=length)
    # float64 weights count exactly up to 2**53 pixels
    pair_gt = gt_known[cell // n_pred].astype(np.int64)
    pair_pred = pred_known[cell % n_pred].astype(np.int64)
    return pair_gt, pair_pred, counts.astype(np.int64)


def _segments(ann: Mapping, name: str, image_id: Any, kind: str) -> dict[int, tuple[int, bool, Any]]:
    """`{segment id: (category id, iscrowd, area or None)}` in JSON order, checked."""
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


# ----------------------------------------------------------------------------- one image
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
) -> list[tuple[int, int, int, int, float]]:
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
    gt_segms = _segments(gt_ann, gt_name, image_id, "ground-truth")
    pred_segms = _segments(pred_ann, pred_name, image_id, "predicted")

    if gt_ids is None:
        gt_file = Path(gt_dir) / _file_name(gt_ann, gt_name, image_id)
        gt_flat, gt_shape = _read_packed(gt_file, f"{gt_file} (image id {image_id})", release_gil)
    else:
        gt_file = Path(str(gt_ann.get("file_name", "<ground-truth id map>")))
        gt_flat, gt_shape = np.asarray(gt_ids).astype(np.uint32, copy=False).ravel(), np.shape(gt_ids)
    if pred_ids is None:
        pred_file = Path(pred_dir) / _file_name(pred_ann, pred_name, image_id)
        pred_flat, pred_shape = _read_packed(pred_file, f"{pred_file} (image id {image_id})", release_gil)
    else:
        pred_file = Path(str(pred_ann.get("file_name", "<predicted id map>")))
        pred_flat, pred_shape = np.asarray(pred_ids).astype(np.uint32, copy=False).ravel(), np.shape(pred_ids)
    if gt_shape != pred_shape:
        raise DataError(
            f"{pred_file}: image id {image_id}: prediction is {pred_shape[1]}x{pred_shape[0]} "
            f"but the ground truth {gt_file.name} is {gt_shape[1]}x{gt_shape[0]} (width x height)"
        )

    # One pass over the pixels: count every (gt id, pred id) pair. The JSONs list the ids
    # to expect, so the counting needs no sort (PNG ids missing from them are still
    # counted, and reported below).
    pair_gt, pair_pred, counts = _pair_counts(gt_flat, pred_flat, _known_ids(gt_segms), _known_ids(pred_segms))

    # Predicted areas from the PNG, and the checks the panopticapi makes.
    pred_png_ids, inverse = np.unique(pair_pred, return_inverse=True)
    pred_png_area = np.bincount(inverse, weights=counts).astype(np.int64)
    pred_area: dict[int, int] = {}
    for pid, area in zip(pred_png_ids.tolist(), pred_png_area.tolist()):
        if pid == VOID:
            continue
        seg = pred_segms.get(pid)
        if seg is None:
            raise DataError(
                f"{pred_file}: image id {image_id}: segment id {pid} is in the PNG but not in the "
                f"segments_info of {pred_name}"
            )
        if seg[0] not in categories:
            raise DataError(f"{pred_name}: image id {image_id}: segment id {pid} has unknown category_id {seg[0]}")
        pred_area[pid] = area
    missing = [sid for sid in pred_segms if sid not in pred_area]
    if missing:
        raise DataError(
            f"{pred_name}: image id {image_id}: segment id(s) {missing[:10]} in segments_info "
            f"are not in the PNG {pred_file}"
        )

    gt_area_png: dict[int, int] = {}
    if check_gt or any(seg[2] is None for seg in gt_segms.values()):
        gt_png_ids, inverse = np.unique(pair_gt, return_inverse=True)
        gt_png_area = np.bincount(inverse, weights=counts).astype(np.int64)
        gt_area_png = dict(zip(gt_png_ids.tolist(), gt_png_area.tolist()))
    if check_gt:
        for gid in gt_area_png:
            if gid != VOID and gid not in gt_segms:
                raise DataError(
                    f"{gt_file}: image id {image_id}: segment id {gid} is in the ground-truth PNG but not in "
                    f"the segments_info of {gt_name}"
                )
        for gid, seg in gt_segms.items():
            if gid not in gt_area_png:
                raise DataError(
                    f"{gt_name}: image id {image_id}: ground-truth segment id {gid} is not in the PNG {gt_file}"
                )
            if seg[0] not in categories:
                raise DataError(
                    f"{gt_name}: image id {image_id}: ground-truth segment id {gid} has unknown category_id {seg[0]}"
                )

    # Everything below works on the distinct (gt id, pred id) pairs only.
    is_void_gt = pair_gt == VOID
    void_of_pred = dict(zip(pair_pred[is_void_gt].tolist(), counts[is_void_gt].tolist()))

    events: list[tuple[int, int, int, int, float]] = []
    gt_matched: set[int] = set()
    pred_matched: set[int] = set()
    candidates = (~is_void_gt) & (pair_pred != VOID)
    for gid, pid, inter in zip(
        pair_gt[candidates].tolist(), pair_pred[candidates].tolist(), counts[candidates].tolist()
    ):
        gseg = gt_segms.get(gid)
        if gseg is None or gseg[1]:  # not in the JSON, or crowd
            continue
        category = gseg[0]
        if category != pred_segms[pid][0]:
            continue
        area = gseg[2] if gseg[2] is not None else gt_area_png.get(gid, 0)
        union = pred_area[pid] + area - inter - void_of_pred.get(pid, 0)
        if union <= 0:
            raise DataError(
                f"{gt_name}: image id {image_id}: ground-truth segment id {gid} has area {area} in the JSON "
                f"but {inter} of its pixels are in the PNG"
            )
        iou = inter / union
        if iou > 0.5:
            events.append((category, 1, 0, 0, iou))
            gt_matched.add(gid)
            pred_matched.add(pid)

    crowd_of_category: dict[int, int] = {}
    for gid, gseg in gt_segms.items():
        if gid in gt_matched:
            continue
        if gseg[1]:
            crowd_of_category[gseg[0]] = gid  # one crowd region per category: the last one
            continue
        events.append((gseg[0], 0, 0, 1, 0.0))

    if len(pred_matched) < len(pred_segms):
        # pixels of each prediction on the crowd region of its own category
        on_crowd: dict[int, int] = {}
        if crowd_of_category:
            crowd_ids = np.fromiter(crowd_of_category.values(), dtype=np.int64)
            sel = np.isin(pair_gt, crowd_ids) & (pair_pred != VOID)
            for gid, pid, c in zip(pair_gt[sel].tolist(), pair_pred[sel].tolist(), counts[sel].tolist()):
                if crowd_of_category.get(pred_segms[pid][0]) == gid:
                    on_crowd[pid] = c
        for pid, pseg in pred_segms.items():
            if pid in pred_matched:
                continue
            ignored = void_of_pred.get(pid, 0) + on_crowd.get(pid, 0)
            if ignored / pred_area[pid] > 0.5:
                continue
            events.append((pseg[0], 0, 1, 0, 0.0))
    return events


def _known_ids(segms: Mapping[int, Any]) -> np.ndarray:
    """VOID and the segment ids of an annotation, sorted, as uint32 (ids beyond 24 bits
    cannot be in a PNG: they are left out)."""
    ids = sorted(sid for sid in segms if 0 < sid <= _ID_MASK)
    return np.array([VOID, *ids], dtype=np.uint32)


def _file_name(ann: Mapping, name: str, image_id: Any) -> str:
    fn = ann.get("file_name")
    if not isinstance(fn, str) or not fn:
        raise DataError(f"{name}: image id {image_id}: annotation has no 'file_name'")
    return fn


# ----------------------------------------------------------------------------- averages
def pq_from_stats(stat: PQStat, categories: Mapping[int, Mapping]) -> dict:
    """The result dict (All/Things/Stuff/per_class/per_category) from accumulated stats."""
    results: dict[str, Any] = {}
    per_category: list[dict] = []
    for cid, info in categories.items():
        s = stat.per_category.get(cid, CategoryStat())
        denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
        if s.tp + s.fp + s.fn == 0:
            pq = sq = rq = 0.0
        else:
            pq = s.iou / denom
            sq = s.iou / s.tp if s.tp != 0 else 0.0
            rq = s.tp / denom
        per_category.append(
            {
                "id": cid,
                "name": info["name"],
                "isthing": bool(info["isthing"]),
                "pq": pq,
                "sq": sq,
                "rq": rq,
                "tp": s.tp,
                "fp": s.fp,
                "fn": s.fn,
                "iou": s.iou,
            }
        )
    for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        pq = sq = rq = 0.0
        n = 0
        for c in per_category:
            if isthing is not None and c["isthing"] != isthing:
                continue
            if c["tp"] + c["fp"] + c["fn"] == 0:
                continue
            n += 1
            pq += c["pq"]
            sq += c["sq"]
            rq += c["rq"]
        results[group] = {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n} if n else {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    per_class: dict[str, dict] = {}
    for c in per_category:
        name = c["name"] if c["name"] not in per_class else f"{c['name']} (id {c['id']})"
        per_class[name] = {k: c[k] for k in ("pq", "sq", "rq", "tp", "fp", "fn")}
    results["per_class"] = per_class
    results["per_category"] = per_category
    return results


# ----------------------------------------------------------------------------- entry point
#: Worker processes only pay off from this many images per worker (a fork costs a few
#: ms; an image ~3 ms); fewer images are scored in threads.
MIN_IMAGES_PER_PROCESS = 24


def pq_compute(
    gt_json: Any,
    gt_dir: str | os.PathLike,
    pred_json: Any,
    pred_dir: str | os.PathLike,
    categories: Any = None,
    workers: int | None = None,
    check_gt: bool = True,
    progress: bool = False,
) -> dict:
    """PQ/SQ/RQ for All, Things, Stuff and per class, as the COCO panopticapi computes them.

    `gt_json` / `pred_json`: paths to COCO-panoptic JSON files or loaded dicts (the
    predictions in the COCO-panoptic results format: `annotations` with `image_id`,
    `file_name`, `segments_info`). `gt_dir` / `pred_dir`: folders of the PNGs.
    `categories` (default: the ground truth's) decides the classes, their names and
    things/stuff. Every ground-truth image needs a prediction (matched by `image_id`);
    predictions for other images are ignored. `workers` score the images (default: up to
    8, one per CPU): forked processes from `MIN_IMAGES_PER_PROCESS` images per worker on
    (where the platform forks), threads otherwise; the result does not depend on it.

    Returns ``{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {name: {pq, sq, rq,
    tp, fp, fn}}, "per_category": [{id, name, isthing, pq, sq, rq, tp, fp, fn, iou}],
    "num_images": N}`` with fractions in 0..1; a group with no category present has
    ``n = 0`` and zeros.
    """
    gt, gt_name = load_panoptic_json(gt_json, "ground-truth")
    pred, pred_name = load_panoptic_json(pred_json, "prediction")
    if categories is None:
        if not isinstance(gt.get("categories"), list):
            raise DataError(f"{gt_name}: no 'categories' list")
        categories = gt["categories"]
    cats = normalise_categories(categories, where=gt_name)
    for d, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not Path(d).is_dir():
            raise DataError(f"{d}: {what} PNG folder not found")

    pred_by_image: dict[Any, Mapping] = {}
    for i, ann in enumerate(pred["annotations"]):
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise DataError(f"{pred_name}: annotation #{i} has no 'image_id'")
        pred_by_image[ann["image_id"]] = ann
    pairs = []
    for i, ann in enumerate(gt["annotations"]):
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise DataError(f"{gt_name}: annotation #{i} has no 'image_id'")
        p = pred_by_image.get(ann["image_id"])
        if p is None:
            raise DataError(f"{pred_name}: no prediction for the image with id {ann['image_id']} ({gt_name})")
        pairs.append((ann, p))

    stat = PQStat()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc="PQ", unit="img", leave=False)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    workers = max(1, int(workers))
    # pyspng decodes about twice as fast as PIL but holds the GIL, so threads cannot run
    # more than one image per (two pyspng decodes + the Python part), ~4.5 ms at 640x480;
    # PIL's decoding runs in parallel. By single-thread timings, PIL overtakes pyspng
    # from three busy cores on; up to two, pyspng is as fast and needs half the CPU.
    def one(pair, release_gil=False):
        return image_pq_stats(
            pair[0], pair[1], gt_dir, pred_dir, cats, gt_name, pred_name, check_gt, release_gil=release_gil
        )

    def advance(n: int) -> None:
        if bar is not None:
            bar.update(n)

    pool = None
    try:
        if workers > 1 and len(pairs) >= MIN_IMAGES_PER_PROCESS * workers and fork_available():
            # forked processes decode with pyspng in parallel, which threads cannot (it
            # holds the GIL); they inherit everything, only the events come back
            per_image = forked_map(one, pairs, workers, on_result=advance)
        elif workers == 1 or len(pairs) < 2:
            per_image = map(one, pairs)
        else:
            release_gil = workers > 2 and len(pairs) > 2
            pool = ThreadPoolExecutor(max_workers=workers)
            per_image = pool.map(lambda pair: one(pair, release_gil), pairs)
        for events in per_image:  # accumulate in image order: deterministic sums
            stat.add(events)
            if not isinstance(per_image, list):  # forked_map reports its own progress
                advance(1)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()

    results = pq_from_stats(stat, cats)
    results["num_images"] = len(pairs)
    return results
