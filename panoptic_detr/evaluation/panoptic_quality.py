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
sorting pixels (`pq_pair_counts`); everything after that works on the few hundred
distinct pairs (`pq_image.image_pq_stats`). Modules: `pq_inputs` (JSONs, categories,
VOID / OFFSET), `pq_pair_counts`, `pq_image` (one image's events), `pq_stats` (the
accumulated counts and the averages); this module is the driver over all images. PNGs are decoded with
pyspng when it is installed (about twice as fast as PIL, same pixels; see
`data.formats.png_decode`).
Images are independent, so `workers > 1` spreads them over forked worker processes
(pyspng holds the GIL, so threads could not decode in parallel), or over threads for
small sets, where starting processes would cost more than it saves.

Where the panopticapi raises a bare KeyError (or computes garbage), this module raises a
one-line `DataError` naming the file, the image id and the segment id.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from panoptic_detr.errors import DataError
from panoptic_detr.evaluation.alignment import align_predictions
from panoptic_detr.evaluation.forked_map import fork_available, forked_map
from panoptic_detr.evaluation.pq_image import image_pq_stats
from panoptic_detr.evaluation.pq_inputs import OFFSET, VOID, all_segments, load_panoptic_json, normalise_categories
from panoptic_detr.evaluation.federated import FEDERATED_RULE, federated_events, unannotated_of_images
from panoptic_detr.evaluation.pq_stats import CategoryStat, PQStat, pq_from_stats

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
    category_map: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    names: tuple[str, str] | None = None,
    federated: bool = False,
) -> dict:
    """PQ/SQ/RQ for All, Things, Stuff and per class, as the COCO panopticapi computes them.

    `gt_json` / `pred_json`: paths to COCO-panoptic JSON files or loaded dicts (the
    predictions in the COCO-panoptic results format: `annotations` with `image_id`,
    `file_name`, `segments_info`). `gt_dir` / `pred_dir`: folders of the PNGs.
    `categories` (default: the ground truth's) decides the classes, their names and
    things/stuff. Every ground-truth image needs a prediction, matched by `image_id` or,
    when the ids differ, by file name; the predictions' own `categories` are matched by
    name, `category_map` ({predicted name: ground-truth name}) renaming some first
    (`alignment.align_predictions`); `log` receives one line saying how each was
    matched; `names` (ground truth, predictions) name loaded dicts in messages.
    Predictions for other images are ignored. `workers` score the images
    (default: up to 8, one per CPU): forked processes from `MIN_IMAGES_PER_PROCESS`
    images per worker on (where the platform forks), threads otherwise; the result does
    not depend on it. Ground-truth segments whose JSON `area` is not their PNG pixel
    count are scored with the JSON area, as the panopticapi does, with one warning.

    Returns ``{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {name: {pq, sq, rq,
    tp, fp, fn}}, "per_category": [{id, name, isthing, pq, sq, rq, tp, fp, fn, iou}],
    "num_images": N}`` with fractions in 0..1; a group with no category present has
    ``n = 0`` and zeros. `federated`: also ``"federated"``, the same dict by LVIS's rule
    (`evaluation.federated`: no false positive of a class the image did not annotate).
    """
    gt, gt_name = load_panoptic_json(gt_json, "ground-truth")
    pred, pred_name = load_panoptic_json(pred_json, "prediction")
    gt_name, pred_name = names or (gt_name, pred_name)  # the files' names for loaded dicts
    if not gt["annotations"]:
        raise DataError(f"{gt_name}: no images (an empty split?); nothing to evaluate")
    pred, notes = align_predictions(gt, gt_name, pred, pred_name, category_map, categories)
    for note in notes if log is not None else ():
        log(note)
    if categories is None:
        categories = gt["categories"]
    cats = normalise_categories(categories, where=gt_name, segments=all_segments(gt["annotations"], pred["annotations"]))
    for d, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not Path(d).is_dir():
            raise DataError(f"{d}: {what} PNG folder not found")
    pairs = list(zip(gt["annotations"], pred["annotations"]))

    def one(pair, release_gil=False):
        return image_pq_stats(
            pair[0], pair[1], gt_dir, pred_dir, cats, gt_name, pred_name, check_gt, release_gil=release_gil
        )

    unannotated = None
    if federated:
        images = {im.get("id"): im for im in gt.get("images", []) if isinstance(im, dict)}
        thing_ids = [cid for cid, c in cats.items() if c["isthing"]]
        unannotated = unannotated_of_images(images, [a.get("image_id") for a, _ in pairs], thing_ids)
    stat, fed_stat = _accumulate(one, pairs, workers, progress, unannotated)
    warn_area_mismatches(stat, gt_name)
    results = pq_from_stats(stat, cats)
    results["num_images"] = len(pairs)
    if federated:
        results["federated"] = dict(pq_from_stats(fed_stat, cats), num_images=len(pairs), rule=FEDERATED_RULE)
    return results


def warn_area_mismatches(stat: PQStat, gt_name: str) -> None:
    """One warning for all ground-truth segments whose JSON area is not their PNG count."""
    if stat.area_mismatches:
        warnings.warn(
            f"{gt_name}: {stat.area_mismatches} ground-truth segment(s) have a JSON 'area' that differs from "
            f"their pixel count in the PNG; scored with the JSON areas, as the COCO panopticapi does "
            f"(IoU, and so PQ, can exceed 100%)"
        )


def _accumulate(one, pairs: list, workers: int | None, progress: bool, unannotated: list | None = None
                ) -> tuple[PQStat, PQStat | None]:
    """`one(pair, release_gil)` over all pairs in forked processes, threads or in line (see
    `pq_compute`), its events added up in image order (deterministic sums); with
    `unannotated` (per pair), also the federated sums."""
    stat = PQStat()
    fed_stat = PQStat() if unannotated is not None else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), desc="PQ", unit="img", leave=False)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    workers = max(1, int(workers))

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
            # pyspng decodes about twice as fast as PIL but holds the GIL, so threads cannot
            # run more than one image per (two pyspng decodes + the Python part), ~4.5 ms
            # at 640x480; PIL's decoding runs in parallel. By single-thread timings, PIL
            # overtakes pyspng from three busy cores on; up to two, pyspng is as fast and
            # needs half the CPU.
            release_gil = workers > 2 and len(pairs) > 2
            pool = ThreadPoolExecutor(max_workers=workers)
            per_image = pool.map(lambda pair: one(pair, release_gil), pairs)
        for k, events in enumerate(per_image):  # accumulate in image order: deterministic sums
            stat.add(events)
            if fed_stat is not None:
                fed_stat.add(federated_events(events, unannotated[k]))
            if not isinstance(per_image, list):  # forked_map reports its own progress
                advance(1)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return stat, fed_stat
