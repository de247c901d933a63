"""Box and mask AP of panoptic predictions through pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

import pq_synthetic as synth
from panoptic_detr.evaluation.coco_ap import (
    coco_ap,
    coco_ap_from_panoptic,
    segments_to_coco_results,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def instances_from_panoptic(items, categories):
    """A COCO instances JSON from panoptic (image_id, ids, segments): one annotation per
    thing segment, masks as RLE."""
    thing_ids = {c["id"] for c in categories if c["isthing"]}
    images, anns = [], []
    for image_id, ids, segs in items:
        h, w = ids.shape
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": h, "width": w})
        for s in segs:
            if s["category_id"] not in thing_ids:
                continue
            rle = mask_utils.encode(np.asfortranarray((ids == s["id"]).astype(np.uint8)))
            box = [float(v) for v in mask_utils.toBbox(rle)]
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": s["category_id"],
                    "segmentation": rle,
                    "bbox": box,
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": s["iscrowd"],
                }
            )
    cats = [{"id": c["id"], "name": c["name"]} for c in categories if c["isthing"]]
    return {"images": images, "annotations": anns, "categories": cats}


def scenes(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return [(i, *synth.random_scene(rng, 120, 160, n_things=5, void=False)) for i in range(1, n + 1)]


def predictions_from(items, shift=0, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for image_id, ids, segs in items:
        pred = np.where(np.isin(ids, [s["id"] for s in segs if s["iscrowd"]]), 0, ids)
        if shift:
            moved = np.zeros_like(pred)
            moved[shift:, shift:] = pred[:-shift, :-shift]
            pred = moved
        cats = {s["id"]: s["category_id"] for s in segs}
        out.append((image_id, pred, synth.segments_of(pred, cats, rng)))
    return out


def test_predictions_equal_to_ground_truth_score_one(tmp_path):
    items = scenes()
    instances = instances_from_panoptic(items, synth.CATEGORIES)
    assert any(a["iscrowd"] for a in instances["annotations"])
    paths = synth.write_set(tmp_path, items, predictions_from(items))
    r = coco_ap_from_panoptic(instances, paths[2], paths[3], synth.CATEGORIES)
    assert r["bbox"]["AP"] == pytest.approx(1.0)
    assert r["segm"]["AP"] == pytest.approx(1.0)
    assert r["segm"]["AP50"] == pytest.approx(1.0)


def test_shifted_predictions_score_less(tmp_path):
    items = scenes()
    instances = instances_from_panoptic(items, synth.CATEGORIES)
    paths = synth.write_set(tmp_path, items, predictions_from(items, shift=4))
    r = coco_ap_from_panoptic(instances, paths[2], paths[3], synth.CATEGORIES)
    for kind in ("bbox", "segm"):
        assert 0.0 < r[kind]["AP"] < 1.0
        assert r[kind]["AP75"] <= r[kind]["AP50"]


def test_stuff_segments_are_not_detections():
    ids = np.array([[1, 1, 2], [1, 3, 2]])
    segs = [
        {"id": 1, "category_id": 10, "isthing": False},
        {"id": 2, "category_id": 2, "isthing": True, "score": 0.5},
        {"id": 3, "category_id": 3},
    ]
    boxes, masks = segments_to_coco_results(7, ids, segs)
    assert [b["category_id"] for b in boxes] == [2, 3]
    assert boxes[0] == {"image_id": 7, "category_id": 2, "bbox": [2.0, 0.0, 1.0, 2.0], "score": 0.5}
    assert masks[1]["score"] == 1.0 and isinstance(masks[1]["segmentation"]["counts"], str)
    json.dumps(masks)
    boxes, _ = segments_to_coco_results(7, ids, segs, thing_ids=[3])
    assert [b["category_id"] for b in boxes] == [3]


def test_no_detections(tmp_path):
    items = scenes(n=1)
    instances = instances_from_panoptic(items, synth.CATEGORIES)
    r = coco_ap(instances, [], [])
    assert r["bbox"]["AP"] == 0.0 and r["segm"]["AR100"] == 0.0
    assert coco_ap(instances, None, []).keys() == {"segm"}
