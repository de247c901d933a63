"""A plain, loop-by-loop re-implementation of the COCO panopticapi's PQ algorithm.

Written for the tests (and `bench/pq.py`) as an independent check of the vectorised
`panoptic_detr.evaluation.panoptic_quality.pq_compute`. It follows the panopticapi's
`pq_compute.py` step by step, the way the original works: one image after the other in a
single process, PNGs read into uint32 arrays and turned into ids with `rgb2id`, Python
dicts of segments, the confusion between ground truth and prediction from one `np.unique`
over `gt * OFFSET + pred`, then Python loops for matches, false negatives and false
positives. Errors are bare `KeyError`s, as in the original.

Deviation: a group without any category present (n = 0) averages to 0 instead of raising
ZeroDivisionError.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
from PIL import Image

OFFSET = 256 * 256 * 256
VOID = 0


def rgb2id(color):
    if isinstance(color, np.ndarray) and len(color.shape) == 3:
        if color.dtype == np.uint8:
            color = color.astype(np.int32)
        return color[:, :, 0] + 256 * color[:, :, 1] + 256 * 256 * color[:, :, 2]
    return int(color[0] + 256 * color[1] + 256 * 256 * color[2])


class CatStat:
    def __init__(self):
        self.iou = 0.0
        self.tp = 0
        self.fp = 0
        self.fn = 0


class Stat:
    def __init__(self):
        self.per_cat = defaultdict(CatStat)

    def __getitem__(self, category_id):
        return self.per_cat[category_id]

    def average(self, categories, isthing):
        pq, sq, rq, n = 0, 0, 0, 0
        per_class = {}
        for label, info in categories.items():
            if isthing is not None and isthing != (info["isthing"] == 1):
                continue
            s = self.per_cat[label]
            if s.tp + s.fp + s.fn == 0:
                per_class[label] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            pq_class = s.iou / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
            sq_class = s.iou / s.tp if s.tp != 0 else 0
            rq_class = s.tp / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
            per_class[label] = {"pq": pq_class, "sq": sq_class, "rq": rq_class}
            pq += pq_class
            sq += sq_class
            rq += rq_class
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def score_images(pairs, gt_folder, pred_folder, categories):
    stat = Stat()
    for gt_ann, pred_ann in pairs:
        pan_gt = np.array(Image.open(os.path.join(gt_folder, gt_ann["file_name"])), dtype=np.uint32)
        pan_gt = rgb2id(pan_gt)
        pan_pred = np.array(Image.open(os.path.join(pred_folder, pred_ann["file_name"])), dtype=np.uint32)
        pan_pred = rgb2id(pan_pred)

        gt_segms = {el["id"]: dict(el) for el in gt_ann["segments_info"]}
        pred_segms = {el["id"]: dict(el) for el in pred_ann["segments_info"]}

        # areas of the predicted segments from the PNG, and sanity checks
        pred_labels_set = set(el["id"] for el in pred_ann["segments_info"])
        labels, labels_cnt = np.unique(pan_pred, return_counts=True)
        for label, label_cnt in zip(labels, labels_cnt):
            if label not in pred_segms:
                if label == VOID:
                    continue
                raise KeyError(f"image {gt_ann['image_id']}: segment {label} in PNG, not in JSON")
            pred_segms[label]["area"] = label_cnt
            pred_labels_set.remove(label)
            if pred_segms[label]["category_id"] not in categories:
                raise KeyError(f"image {gt_ann['image_id']}: segment {label} has an unknown category")
        if len(pred_labels_set) != 0:
            raise KeyError(f"image {gt_ann['image_id']}: segments {list(pred_labels_set)} in JSON, not in PNG")

        # confusion between ground truth and prediction
        pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
        gt_pred_map = {}
        labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
        for label, intersection in zip(labels, labels_cnt):
            gt_id = label // OFFSET
            pred_id = label % OFFSET
            gt_pred_map[(gt_id, pred_id)] = intersection

        # matches
        gt_matched = set()
        pred_matched = set()
        for (gt_label, pred_label), intersection in gt_pred_map.items():
            if gt_label not in gt_segms:
                continue
            if pred_label not in pred_segms:
                continue
            if gt_segms[gt_label]["iscrowd"] == 1:
                continue
            if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
                continue
            union = (
                pred_segms[pred_label]["area"]
                + gt_segms[gt_label]["area"]
                - intersection
                - gt_pred_map.get((VOID, pred_label), 0)
            )
            iou = intersection / union
            if iou > 0.5:
                stat[gt_segms[gt_label]["category_id"]].tp += 1
                stat[gt_segms[gt_label]["category_id"]].iou += iou
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)

        # false negatives (and the crowd region of each category)
        crowd_labels_dict = {}
        for gt_label, gt_info in gt_segms.items():
            if gt_label in gt_matched:
                continue
            if gt_info["iscrowd"] == 1:
                crowd_labels_dict[gt_info["category_id"]] = gt_label
                continue
            stat[gt_info["category_id"]].fn += 1

        # false positives
        for pred_label, pred_info in pred_segms.items():
            if pred_label in pred_matched:
                continue
            intersection = gt_pred_map.get((VOID, pred_label), 0)
            if pred_info["category_id"] in crowd_labels_dict:
                intersection += gt_pred_map.get((crowd_labels_dict[pred_info["category_id"]], pred_label), 0)
            if intersection / pred_info["area"] > 0.5:
                continue
            stat[pred_info["category_id"]].fp += 1
    return stat


def pq_compute(gt_json, gt_folder, pred_json, pred_folder):
    """Same arguments as the package's `pq_compute` (paths or loaded dicts); returns the
    panopticapi's result dict (per_class keyed by category id) plus `stat` (raw counts)."""
    if not isinstance(gt_json, dict):
        with open(gt_json) as f:
            gt_json = json.load(f)
    if not isinstance(pred_json, dict):
        with open(pred_json) as f:
            pred_json = json.load(f)
    categories = {el["id"]: el for el in gt_json["categories"]}
    pred_annotations = {el["image_id"]: el for el in pred_json["annotations"]}
    pairs = []
    for gt_ann in gt_json["annotations"]:
        image_id = gt_ann["image_id"]
        if image_id not in pred_annotations:
            raise Exception(f"no prediction for the image with id: {image_id}")
        pairs.append((gt_ann, pred_annotations[image_id]))

    stat = score_images(pairs, gt_folder, pred_folder, categories)

    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.average(categories, isthing=isthing)
        if name == "All":
            results["per_class"] = per_class
    results["stat"] = {
        cid: {"tp": s.tp, "fp": s.fp, "fn": s.fn, "iou": s.iou} for cid, s in stat.per_cat.items()
    }
    return results
