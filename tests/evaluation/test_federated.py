"""Federated PQ (LVIS's rule) on crafted cases, and evaluate against another ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from panoptic_detr.cli import main
from panoptic_detr.evaluation.evaluate import evaluate_model
from panoptic_detr.evaluation.federated import federated_events
from panoptic_detr.evaluation.panoptic_quality import pq_compute
from pq_synthetic import write_png

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# thing A (1), thing B (2), stuff S (10)
CATS = [{"id": 1, "name": "A", "isthing": 1}, {"id": 2, "name": "B", "isthing": 1},
        {"id": 10, "name": "S", "isthing": 0}]
H, W = 20, 30


def _maps():
    gt = np.full((H, W), 1, np.int64)  # stuff S: segment 1
    gt[2:8, 2:8] = 2  # an A: segment 2
    pred = gt.copy()
    pred[10:16, 15:25] = 3  # a B where the ground truth has none (an unlabelled B, or a wrong one)
    return gt, pred


def _write(root: Path, annotated: list) -> tuple:
    """Ground truth and predictions of len(annotated) images; image i's
    `annotated_category_ids` is annotated[i] (None: no key, i.e. every class)."""
    for d in ("gt", "pred", "img"):
        (root / d).mkdir(parents=True, exist_ok=True)
    gt_map, pred_map = _maps()
    images, gt_anns, pred_anns = [], [], []
    for i, ann_ids in enumerate(annotated, start=1):
        name = f"im{i}"
        write_png(root / "gt" / f"{name}.png", gt_map)
        write_png(root / "pred" / f"{name}.png", pred_map)
        im = {"id": i, "file_name": f"{name}.png", "width": W, "height": H}
        if ann_ids is not None:
            im["annotated_category_ids"] = ann_ids
            im["not_exhaustive_category_ids"] = []
        images.append(im)
        gt_anns.append({"image_id": i, "file_name": f"{name}.png", "segments_info": [
            {"id": 1, "category_id": 10, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0}]})
        pred_anns.append({"image_id": i, "file_name": f"{name}.png", "segments_info": [
            {"id": 1, "category_id": 10}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 2}]})
    gt = {"images": images, "annotations": gt_anns, "categories": CATS}
    pred = {"annotations": pred_anns, "categories": CATS}
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "pred.json").write_text(json.dumps(pred))
    return gt, pred


def test_federated_events_drop_only_false_positives_of_unannotated_classes():
    events = [(1, 1, 0, 0, 0.9), (2, 0, 1, 0, 0.0), (2, 0, 0, 1, 0.0), (3, 0, 1, 0, 0.0)]
    assert federated_events(events, {2}) == [(1, 1, 0, 0, 0.9), (2, 0, 0, 1, 0.0), (3, 0, 1, 0, 0.0)]
    assert federated_events(events, set()) == events


def test_correct_unannotated_prediction_is_no_false_positive(tmp_path):
    # image 1 annotates A only: its B is maybe an unlabelled B -> not a FP (federated);
    # image 2 annotates A and B: B is known absent -> a FP in both;
    # image 3 has no keys: fully annotated -> a FP in both;
    # image 4 lists B as not exhaustive: not a FP (federated)
    _write(tmp_path, [[1, 10], [1, 2, 10], None, [1, 2, 10]])
    gt = json.loads((tmp_path / "gt.json").read_text())
    gt["images"][3]["not_exhaustive_category_ids"] = [2]
    r = pq_compute(gt, tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred", federated=True)
    fed = r.pop("federated")
    assert r["per_class"]["B"]["fp"] == 4  # the standard PQ is unchanged: every B is a FP
    assert fed["per_class"]["B"]["fp"] == 2
    for name in ("A", "S"):
        assert fed["per_class"][name] == r["per_class"][name]
    assert r["per_class"]["A"]["pq"] == 1.0
    assert fed["Things"]["pq"] == r["Things"]["pq"] == 0.5  # B has no TP either way: PQ 0
    assert fed["Things"]["n"] == r["Things"]["n"] == 2
    # without the flag, the standard result alone, identical
    assert pq_compute(gt, tmp_path / "gt", tmp_path / "pred.json", tmp_path / "pred") == r
    # all annotated: an unlabelled B is not a FP only where B is unannotated
    _write(tmp_path / "all", [[1, 10], [1, 10]])
    fed = pq_compute(tmp_path / "all" / "gt.json", tmp_path / "all" / "gt", tmp_path / "all" / "pred.json",
                     tmp_path / "all" / "pred", federated=True)["federated"]
    assert fed["per_class"]["B"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert fed["Things"]["n"] == 1 and fed["Things"]["pq"] == 1.0


def _dataset(root: Path, annotated: list) -> dict:
    """A prepared-dataset layout of the same images; image i's first pixel is i."""
    _write(root / "files", annotated)
    gt = json.loads((root / "files" / "gt.json").read_text())
    for sub in ("images/val", "panoptic/val", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    preds = {}
    pred_map = _maps()[1]
    for i, im in enumerate(gt["images"], start=1):
        px = np.zeros((H, W, 3), np.uint8)
        px[0, 0, 0] = i
        Image.fromarray(px).save(root / "images" / "val" / im["file_name"])
        (root / "panoptic" / "val" / im["file_name"]).write_bytes((root / "files" / "gt" / im["file_name"]).read_bytes())
        preds[i] = SimpleNamespace(id_map=torch.from_numpy(pred_map.astype(np.int32)),
                                   segments_info=[{"id": 1, "category_id": 10}, {"id": 2, "category_id": 1},
                                                  {"id": 3, "category_id": 2}])
    (root / "annotations" / "panoptic_val.json").write_text(json.dumps(gt))
    return preds


class _Stub:
    def __init__(self, preds):
        self.preds = preds

    def predict_batch(self, images):
        return [self.preds[int(im[0, 0, 0])] for im in images]


def test_evaluate_model_federated_and_another_ground_truth(tmp_path):
    preds = _dataset(tmp_path / "ds", [[1, 10], [1, 2, 10]])
    m = evaluate_model(_Stub(preds), tmp_path / "ds", progress=False, federated=True)
    assert m["panoptic"]["per_class"]["B"]["fp"] == 2
    assert m["panoptic_federated"]["per_class"]["B"]["fp"] == 1
    assert evaluate_model(_Stub(preds), tmp_path / "ds", progress=False)["panoptic"] == m["panoptic"]
    # the full truth: the B is there; other file names' ids, matched by name
    truth = tmp_path / "truth"
    (truth / "png").mkdir(parents=True)
    gt_map, pred_map = _maps()
    anns = []
    for i, name in enumerate(("im1", "im2"), start=1):
        write_png(truth / "png" / f"{name}.png", pred_map)  # every object labelled
        anns.append({"image_id": 50 + i, "file_name": f"{name}.png", "segments_info": [
            {"id": 1, "category_id": 10, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0},
            {"id": 3, "category_id": 2, "iscrowd": 0}]})
    (truth / "t.json").write_text(json.dumps({
        "images": [{"id": 50 + i, "file_name": f"im{i}.png", "width": W, "height": H} for i in (1, 2)],
        "annotations": anns, "categories": CATS}))
    full = evaluate_model(_Stub(preds), tmp_path / "ds", progress=False, federated=True,
                          ground_truth=(truth / "t.json", truth / "png"))
    assert full["panoptic"]["All"]["pq"] == 1.0 and full["panoptic"]["per_class"]["B"]["tp"] == 2
    assert full["panoptic_federated"]["All"] == full["panoptic"]["All"]  # the truth annotates everything
    # a truth without one of the split's images: one error line
    data = json.loads((truth / "t.json").read_text())
    data["annotations"] = data["annotations"][:1]
    (truth / "t1.json").write_text(json.dumps(data))
    with pytest.raises(Exception, match="no annotation for image 'im2.png'"):
        evaluate_model(_Stub(preds), tmp_path / "ds", progress=False, ground_truth=(truth / "t1.json", truth / "png"))


def test_command_files_mode_writes_both(tmp_path, capsys):
    _write(tmp_path, [[1, 10], [1, 2, 10]])
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(tmp_path / "pred.json"), str(tmp_path / "pred"),
                 "--ground-truth", str(tmp_path / "gt.json"), str(tmp_path / "gt"), "--federated",
                 "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["panoptic"]["per_class"]["B"]["fp"] == 2 and m["panoptic_federated"]["per_class"]["B"]["fp"] == 1
    assert "federated" in capsys.readouterr().out
