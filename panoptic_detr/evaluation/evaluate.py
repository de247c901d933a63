"""Evaluate a panoptic model on a prepared split: PQ (panopticapi rules) and COCO AP.

`evaluate_model` runs a predictor (an `engine.predict.Predictor`, built by the caller:
evaluation never imports the engine) over the split's images, writes the predictions as
COCO-panoptic results (PNGs + JSON), scores every image against the ground truth as soon
as it is predicted (the same per-image function as `pq_compute`, on the id map in memory,
which equals the PNG written), and computes box / mask AP of the thing classes when the
split has an `instances_{split}.json`. `format_metrics` renders the result as a table.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_detr.data.annotated import ANNOTATED_KEY, NOT_EXHAUSTIVE_KEY
from panoptic_detr.errors import DataError
from panoptic_detr.evaluation.coco_ap import STAT_NAMES, coco_ap, segments_to_coco_results
from panoptic_detr.evaluation.panoptic_quality import (
    PQStat,
    image_pq_stats,
    load_panoptic_json,
    normalise_categories,
    pq_from_stats,
    warn_area_mismatches,
)
from panoptic_detr.evaluation.federated import FEDERATED_RULE, federated_events, unannotated_of_images
from panoptic_detr.evaluation.pq_inputs import all_segments

__all__ = ["evaluate_model", "format_metrics"]

PREDICTIONS_JSON = "predictions.json"
PREDICTIONS_DIR = "predictions"


def _load_split_image(path: Path, expected_hw: tuple[int, int] | None) -> np.ndarray:
    """The image as HxWx3 uint8; EXIF orientation applied unless that contradicts the
    ground truth's size while the stored pixels fit it."""
    from panoptic_detr.data.image_io import load_image

    arr = load_image(path)
    if expected_hw is not None and arr.shape[:2] != tuple(expected_hw):
        from PIL import Image

        from panoptic_detr.data.image_io import to_rgb_array

        with Image.open(path) as im:
            raw = to_rgb_array(im)
        if raw.shape[:2] == tuple(expected_hw):
            return raw
    return arr


def _model_category_remap(model_categories, cats: dict[int, dict], gt_name: str, category_map=None
                          ) -> tuple[dict[int, int] | None, list[str]]:
    """Model class id -> dataset category id, matched by name (`alignment.match_categories`;
    a model category named `class_<id>`, i.e. unnamed, keeps its id), and notes; None
    when the model has no category list."""
    if not model_categories:
        return None, []
    from panoptic_detr.evaluation.alignment import category_names, match_categories

    names = category_names(model_categories, "the model's categories")
    names = {cid: (cats[cid]["name"] if name == f"class_{cid}" and cid in cats else name) for cid, name in names.items()}
    gt_names = {cid: c["name"] for cid, c in cats.items()}
    return match_categories(gt_names, names, names, gt_name, "the model's categories", category_map)


def evaluate_model(
    predictor,
    dataset_dir: str | os.PathLike,
    split: str = "val",
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 2,
    progress: bool = True,
    max_images: int | None = None,
    category_map: dict[str, str] | None = None,
    log=None,
    shard=None,
    federated: bool = False,
    ground_truth: tuple | None = None,
) -> dict | None:
    """Run `predictor` over a prepared split and score it.

    predictor: an `engine.predict.Predictor`, or any object with
        `predict_batch(list of HxWx3 uint8) -> list of outputs` (or a plain call on one
        image) whose outputs have `id_map` (HxW) and `segments_info`; its `categories`,
        when it has them, are checked against the dataset's.
    dataset_dir: a prepared dataset (`data.prepared.PreparedDataset`).
    out_dir: where `predictions/*.png` and `predictions.json` go (a temporary folder,
        removed afterwards, when None).
    batch_size: images handed to the predictor at once.
    max_images: score only the first N images of the split (quick periodic checks).
    category_map: {model category name: dataset category name} for deliberate renames;
        the model's categories are otherwise matched to the dataset's by name.
    log: receives one-line notes (how the model's categories were matched).
    shard: for several processes (`torchrun`): an object with `rank`, `world` and
        `gather(obj) -> [obj of each process]` (`engine.sharding.Shard`). Each process
        predicts the images rank, rank + world, ... (writing their PNGs into `out_dir`, which
        all processes must see), the per-image results are gathered and process 0 scores
        them in split order (the metrics equal one process's exactly) and writes
        `predictions.json`; the other processes return None. Every process must call it.
    federated: also `panoptic_federated`, PQ by LVIS's rule (`evaluation.federated`): a
        predicted segment of a thing class not annotated in its image is no false positive.
    ground_truth: (json, png_dir) of another COCO-panoptic ground truth of the same images
        (e.g. `synth`'s full `truth/`): the split's images are scored against its
        annotations, matched by file name (no AP then: it has no instances JSON).

    Returns ``{"panoptic": {All, Things, Stuff, per_class, per_category, num_images},
    "bbox": {AP, AP50, ...}, "segm": {...}}`` (fractions; AP only with an instances JSON);
    None on a shard other than 0.
    """
    from panoptic_detr.data.prepared import PreparedDataset

    files = PreparedDataset(dataset_dir).split(split).require()
    gt_json_path, gt_dir, image_dir = files.panoptic_json, files.panoptic_dir, files.images_dir
    gt, gt_name = load_panoptic_json(gt_json_path, "ground-truth")
    if ground_truth is not None:
        gt, gt_name, gt_dir = _other_ground_truth(gt, gt_name, ground_truth)
    if not isinstance(gt.get("categories"), list):
        raise DataError(f"{gt_name}: no 'categories' list")
    if not gt["annotations"]:
        raise DataError(f"{gt_name}: the '{split}' split has no images; nothing to evaluate")
    cats = normalise_categories(gt["categories"], where=gt_name, segments=all_segments(gt["annotations"]))
    thing_ids = [cid for cid, c in cats.items() if c["isthing"]]
    images = {img.get("id"): img for img in gt.get("images", []) if isinstance(img, dict)}
    annotations = gt["annotations"][: max_images if max_images is not None else None]
    remap, notes = _model_category_remap(getattr(predictor, "categories", None), cats, gt_name, category_map)
    for note in notes if log is not None else ():
        log(note)
    for ann in annotations:
        if ann.get("image_id") not in images or not images[ann["image_id"]].get("file_name"):
            raise DataError(f"{gt_name}: image id {ann.get('image_id')} has no entry with a 'file_name' in 'images'")

    instances = None
    image_id_map: dict[Any, Any] = {}
    if files.instances_json.is_file() and ground_truth is None:
        from panoptic_detr.evaluation.coco_ap import load_instances, match_image_ids

        instances, _ = load_instances(files.instances_json)
        image_id_map = match_image_ids(
            instances["images"], [(a["image_id"], images[a["image_id"]]["file_name"]) for a in annotations]
        )

    unannotated = (unannotated_of_images(images, [a["image_id"] for a in annotations], thing_ids)
                   if federated else None)
    return _evaluate(predictor, gt, gt_name, cats, thing_ids, images, annotations, gt_dir, image_dir,
                     instances, image_id_map, out_dir, batch_size, progress, split, remap, shard,
                     unannotated)  # fmt: skip


def _other_ground_truth(split_gt: dict, split_name: str, ground_truth: tuple) -> tuple[dict, str, Path]:
    """The split's images with their annotations from another ground truth (matched by
    file-name stem; the ids, file names and image sizes stay the split's); its name and
    PNG folder. Its categories must be the split's (same ids and names)."""
    gt_json, gt_dir = ground_truth
    other, other_name = load_panoptic_json(gt_json, "ground-truth")
    names = {c.get("id"): c.get("name") for c in split_gt.get("categories") or []}
    for c in other.get("categories") or []:
        if c.get("id") in names and names[c["id"]] != c.get("name"):
            raise DataError(f"{other_name}: category id {c['id']} is '{c.get('name')}' but '{names[c['id']]}' in "
                            f"{split_name}: not the same categories")
    other_images = {im.get("id"): im for im in other.get("images", []) if isinstance(im, dict)}
    by_stem: dict[str, tuple[dict, dict]] = {}
    for ann in other["annotations"]:
        im = other_images.get(ann.get("image_id"), {})
        for name in (ann.get("file_name"), im.get("file_name")):
            if name:
                by_stem.setdefault(Path(str(name)).stem, (ann, im))
    images, annotations = [], []
    for im in split_gt.get("images", []):
        found = by_stem.get(Path(str(im.get("file_name"))).stem)
        if found is None:
            raise DataError(f"{other_name}: no annotation for image '{im.get('file_name')}' of {split_name}")
        ann, other_im = found
        keys = {k: v for k, v in other_im.items() if k in (ANNOTATED_KEY, NOT_EXHAUSTIVE_KEY)}
        images.append({"id": im["id"], "file_name": im["file_name"], "width": im.get("width"),
                       "height": im.get("height"), **keys})
        annotations.append({**ann, "image_id": im["id"]})
    gt = {**other, "images": images, "annotations": annotations, "categories": other.get("categories") or
          split_gt.get("categories")}
    return gt, other_name, Path(gt_dir)


def _evaluate(predictor, gt, gt_name, cats, thing_ids, images, annotations, gt_dir, image_dir,
              instances, image_id_map, out_dir, batch_size, progress, split, remap, shard=None,
              unannotated=None) -> dict | None:  # fmt: skip
    """Predict and score the images of this process (all of them without a shard), then
    accumulate every image's result in split order: the same sums in the same order
    whatever the number of processes, so sharded metrics equal single-process ones exactly."""
    from panoptic_detr.utils.io import write_json

    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    acc = _Accumulator(federated=unannotated is not None)
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="panoptic-detr-eval-")))
        else:
            out = Path(out_dir)
        pred_dir = out / PREDICTIONS_DIR
        pred_dir.mkdir(parents=True, exist_ok=True)
        mine = [(i, annotations[i]) for i in range(rank, len(annotations), world)]
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm

            desc = f"evaluate {split}" + (f" (rank 0 of {world})" if world > 1 else "")
            bar = stack.enter_context(tqdm(total=len(mine), desc=desc, unit="img"))
        ap_ids = image_id_map if instances is not None else None
        records = _predict_images(predictor, mine, images, image_dir, pred_dir, gt_dir, cats, gt_name,
                                  remap, batch_size, bar, ap_ids, thing_ids)
        if world == 1:
            for index, record in records:
                acc.add(record, unannotated[index] if unannotated is not None else None)
        else:
            gathered = _gather_records(shard, records)
            if rank != 0:
                return None
            for index, record in sorted((r for part in gathered for r in part), key=lambda r: r[0]):
                acc.add(record, unannotated[index] if unannotated is not None else None)
        write_json(out / PREDICTIONS_JSON, {"annotations": acc.pred_anns, "categories": gt["categories"]})

    if acc.dropped:
        warnings.warn(f"evaluate: {acc.dropped} predicted segment(s) of classes that are not in {gt_name} scored as VOID")
    warn_area_mismatches(acc.stat, gt_name)
    panoptic = pq_from_stats(acc.stat, cats)
    panoptic["num_images"] = len(annotations)
    metrics: dict[str, Any] = {"panoptic": panoptic}
    if acc.fed_stat is not None:  # beside the standard PQ, never instead
        metrics["panoptic_federated"] = dict(pq_from_stats(acc.fed_stat, cats), num_images=len(annotations),
                                             rule=FEDERATED_RULE)
    if instances is not None:  # AP over the evaluated images only, as PQ
        metrics.update(coco_ap(instances, acc.bbox, acc.segm, thing_ids, image_ids=image_id_map.values()))
    return metrics


def _gather_records(shard, records) -> list[list]:
    """Every process's (index, record) list; a failure on any process is raised on all of
    them (none is left waiting in a collective)."""
    try:
        payload: Any = list(records)
    except Exception as e:  # noqa: BLE001 - re-raised below, after the others know
        failure, payload = e, {"error": f"{type(e).__name__}: {e}"}
    else:
        failure = None
    gathered = shard.gather(payload)
    if failure is not None:
        raise failure
    for r, part in enumerate(gathered):
        if isinstance(part, dict):
            raise DataError(f"evaluate: process {r} of {len(gathered)} failed ({part['error'].splitlines()[0]})")
    return gathered


class _Accumulator:
    """Scores and results of images added in split order (the PQ sums, AP inputs, JSON)."""

    def __init__(self, federated: bool = False):
        self.stat = PQStat()
        self.fed_stat = PQStat() if federated else None
        self.dropped = 0
        self.pred_anns: list[dict] = []
        self.bbox: list[dict] = []
        self.segm: list[dict] = []

    def add(self, record: tuple, unannotated: frozenset | None = None) -> None:
        pred_ann, events, bbox, segm, dropped = record
        self.pred_anns.append(pred_ann)
        self.stat.add(events)
        if self.fed_stat is not None:
            self.fed_stat.add(federated_events(events, unannotated or frozenset()))
        self.bbox += bbox
        self.segm += segm
        self.dropped += dropped


def _predict_images(predictor, mine, images, image_dir, pred_dir, gt_dir, cats, gt_name, remap, batch_size, bar,
                    ap_ids, thing_ids):
    """Yields (split index, (pred_ann, PQ events, box results, mask results, dropped)) of
    each image of `mine` ([(split index, ground-truth annotation)]), writing its PNG."""
    from panoptic_detr.data.formats.coco_panoptic import segments_json, write_id_png

    run = getattr(predictor, "predict_batch", None)
    if run is None:
        run = lambda ims: [predictor(im) for im in ims]  # noqa: E731
    bs = max(1, int(batch_size))
    for start in range(0, len(mine), bs):
        chunk = mine[start : start + bs]
        batch = []
        for _, ann in chunk:
            img = images[ann["image_id"]]
            hw = (img["height"], img["width"]) if "height" in img and "width" in img else None
            batch.append(_load_split_image(image_dir / img["file_name"], hw))
        outputs = run(batch)
        if len(outputs) != len(batch):
            raise DataError(f"predictor returned {len(outputs)} results for {len(batch)} images")
        for (index, ann), output in zip(chunk, outputs):
            id_map = output.id_map
            id_map = np.asarray(id_map.detach().cpu().numpy() if hasattr(id_map, "detach") else id_map)
            segs = segments_json(list(output.segments_info))
            if remap:  # the model's class ids in the dataset's terms
                segs = [{**seg, "category_id": remap.get(seg["category_id"], seg["category_id"])} for seg in segs]
            unknown = [s["id"] for s in segs if s["category_id"] not in cats]
            if unknown:  # e.g. DETR's unused class 0: those pixels become VOID
                id_map = np.where(np.isin(id_map, unknown), 0, id_map)
                segs = [s for s in segs if s["category_id"] in cats]
            # the ground truth's PNG name when it has one (as COCO-panoptic results do)
            file_name = Path(str(ann.get("file_name") or images[ann["image_id"]]["file_name"])).stem + ".png"
            write_id_png(pred_dir / file_name, id_map)
            pred_ann = {"image_id": ann["image_id"], "file_name": file_name, "segments_info": segs}
            events = image_pq_stats(ann, pred_ann, gt_dir, pred_dir, cats, gt_name, "predictions", pred_ids=id_map)
            bbox: list = []
            segm: list = []
            if ap_ids is not None and ann["image_id"] in ap_ids:
                bbox, segm = segments_to_coco_results(ap_ids[ann["image_id"]], id_map, segs, thing_ids)
            yield index, (pred_ann, events, bbox, segm, len(unknown))
        if bar is not None:
            bar.update(len(chunk))


# ----------------------------------------------------------------------------- table
def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
        return "-"
    return f"{100.0 * float(v):.1f}"


def format_metrics(metrics: dict, per_class: bool = True) -> str:
    """A text table: PQ/SQ/RQ for All/Things/Stuff (percent), then AP, then per class."""
    lines: list[str] = []
    pan = metrics.get("panoptic")
    if pan:
        lines.append(f"{'':10} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'N':>4}")
        for group in ("All", "Things", "Stuff"):
            g = pan.get(group)
            if g is None:
                continue
            lines.append(f"{group:10} {_pct(g['pq']):>6} {_pct(g['sq']):>6} {_pct(g['rq']):>6} {g['n']:>4}")
    fed = metrics.get("panoptic_federated")
    if fed:
        lines.append("federated (no FP for classes an image did not annotate):")
        for group in ("All", "Things", "Stuff"):
            g = fed.get(group)
            if g is not None:
                lines.append(f"{group:10} {_pct(g['pq']):>6} {_pct(g['sq']):>6} {_pct(g['rq']):>6} {g['n']:>4}")
    ap_rows = [(k, metrics[k]) for k in ("bbox", "segm") if isinstance(metrics.get(k), dict)]
    if ap_rows:
        names = [n for n in STAT_NAMES[:6]]
        lines.append("")
        lines.append(f"{'':10} " + " ".join(f"{n:>6}" for n in names))
        for kind, stats in ap_rows:
            lines.append(f"{kind:10} " + " ".join(f"{_pct(stats.get(n)):>6}" for n in names))
    if pan and per_class and pan.get("per_class"):
        lines.append("")
        width = max(10, *(len(n) for n in pan["per_class"]))
        lines.append(f"{'class':{width}} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'TP':>6} {'FP':>6} {'FN':>6}")
        things = {c["name"]: c["isthing"] for c in pan.get("per_category", [])}
        for name, c in pan["per_class"].items():
            if c["tp"] + c["fp"] + c["fn"] == 0:
                pq = sq = rq = "-"
            else:
                pq, sq, rq = _pct(c["pq"]), _pct(c["sq"]), _pct(c["rq"])
            mark = "" if name not in things else (" [thing]" if things[name] else " [stuff]")
            lines.append(
                f"{name:{width}} {pq:>6} {sq:>6} {rq:>6} {c['tp']:>6} {c['fp']:>6} {c['fn']:>6}{mark}"
            )
    return "\n".join(lines)
