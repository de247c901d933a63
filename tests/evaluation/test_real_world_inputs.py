"""Evaluation on inputs nobody on this project wrote (issue #18): predictions from another
producer, ground truth from annotation tools, numbers that are not numbers. Each test
builds the situation; its docstring says where it comes from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import pq_synthetic as synth
from panoptic_detr.cli import main
from panoptic_detr.data.formats.coco_panoptic import read_id_png
from panoptic_detr.errors import DataError, PanopticDetrError
from panoptic_detr.evaluation.coco_ap import coco_ap, coco_ap_from_panoptic
from panoptic_detr.evaluation.evaluate import evaluate_model
from panoptic_detr.evaluation.panoptic_quality import pq_compute
from test_coco_ap import instances_from_panoptic
from test_evaluate import StubPredictor, write_dataset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def files(tmp_path):
    """A ground truth and perturbed predictions (3 images); the PQ they score."""
    paths = synth.random_set(tmp_path, 5, n_images=3)
    return paths, pq_compute(*paths)


def rewrite(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    out = path.with_name("changed_" + path.name)
    out.write_text(json.dumps(data))
    return out


def evaluate_files(gt_json, gt_dir, pred_json, pred_dir, *extra) -> int:
    return main(["evaluate", "--predictions", str(pred_json), str(pred_dir), "--ground-truth", str(gt_json),
                 str(gt_dir), "--no-progress", "--no-per-class", *extra])


def renumber_categories(data, offset=100):
    for c in data["categories"]:
        c["id"] += offset
    for a in data["annotations"]:
        for s in a["segments_info"]:
            s["category_id"] += offset


def test_prediction_categories_are_matched_by_name(files, tmp_path, capsys):
    """A model trained elsewhere numbers its classes its own way (its `vehicle` is id 5,
    the ground truth's id 5 is `sky`): the prediction JSON's own `categories` decide,
    by name. Before: read through the ground truth's ids, PQ 0, exit 0, no warning."""
    (gt_json, gt_dir, pred_json, pred_dir), expected = files
    moved = rewrite(pred_json, renumber_categories)
    assert pq_compute(gt_json, gt_dir, moved, pred_dir) == expected
    assert evaluate_files(gt_json, gt_dir, moved, pred_dir, "--out", str(tmp_path / "m")) == 0
    err = capsys.readouterr().err
    assert "evaluate: categories matched by name: " in err and "predicted id(s) differ" in err
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["panoptic"]["All"] == pytest.approx(expected["All"])

    def rename(data):  # the model calls thing1 "vehicle"
        renumber_categories(data)
        next(c for c in data["categories"] if c["name"] == "thing1")["name"] = "vehicle"

    renamed = rewrite(pred_json, rename)
    assert evaluate_files(gt_json, gt_dir, renamed, pred_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "predicted category 'vehicle' (id 101) is not a category of" in err
    assert "--category-map" in err and "Traceback" not in err
    cmap = tmp_path / "map.yaml"
    cmap.write_text("vehicle: thing1\n")
    assert pq_compute(gt_json, gt_dir, renamed, pred_dir, category_map={"vehicle": "thing1"}) == expected
    assert evaluate_files(gt_json, gt_dir, renamed, pred_dir, "--category-map", str(cmap)) == 0
    assert "renamed by the category map: 'vehicle' -> 'thing1'" in capsys.readouterr().err
    cmap.write_text("vehicle: lorry\n")
    assert evaluate_files(gt_json, gt_dir, renamed, pred_dir, "--category-map", str(cmap)) == 2
    assert "error: category map: 'vehicle' -> 'lorry': 'lorry' is not a category of" in capsys.readouterr().err


def test_images_fall_back_to_file_names_when_ids_differ(files, capsys):
    """`predict` names images by file stem while `prepare` renumbers them from 10000:
    predict -> evaluate on a real split failed with "no prediction for the image with
    id 10000". The file name stem pairs them, and one line says so."""
    (gt_json, gt_dir, pred_json, pred_dir), expected = files

    def stems(data):
        for a in data["annotations"]:
            a["image_id"] = Path(a["file_name"]).stem

    by_name = rewrite(pred_json, stems)
    assert pq_compute(gt_json, gt_dir, by_name, pred_dir) == expected
    assert evaluate_files(gt_json, gt_dir, by_name, pred_dir) == 0
    assert "evaluate: 3 image(s) matched to the predictions by file name" in capsys.readouterr().err
    assert evaluate_files(gt_json, gt_dir, pred_json, pred_dir) == 0
    assert "evaluate: 3 image(s) matched to the predictions by image_id" in capsys.readouterr().err

    def drop_one(data):
        stems(data)
        data["annotations"].pop()

    missing = rewrite(pred_json, drop_one)
    with pytest.raises(DataError, match="no prediction for the image with id 3 .file '000003'.* 3 of 3 image.s. have no "
                                        "prediction of their id, 1 none of their file name"):
        pq_compute(gt_json, gt_dir, missing, pred_dir)


def test_box_and_mask_ap_cover_only_the_evaluated_images(tmp_path, capsys):
    """An instances file covering 500 images scored against predictions for 1: every
    other image's objects counted as missed (a perfect prediction got box AP 0.6). AP is
    now over the evaluated images only, as PQ."""
    root, _ = write_dataset(tmp_path / "ds", n=3)
    ann_path = root / "annotations" / "panoptic_val.json"
    gt = json.loads(ann_path.read_text())
    perfect = {}
    for i, ann in enumerate(gt["annotations"], start=1):
        ids = read_id_png(root / "panoptic" / "val" / ann["file_name"])
        segs = [dict(s, isthing=s["category_id"] in synth.THINGS) for s in ann["segments_info"]]
        perfect[i] = (ids, segs)
    gt["annotations"] = gt["annotations"][:1]  # evaluate one image; the instances file has three
    ann_path.write_text(json.dumps(gt))
    m = evaluate_model(StubPredictor(perfect), root, out_dir=tmp_path / "out", progress=False)
    assert m["bbox"]["AP"] > 0.99 and m["segm"]["AP"] > 0.99
    out = tmp_path / "out"
    instances = root / "annotations" / "instances_val.json"
    bbox, segm = _results(instances, out)
    assert coco_ap(instances, bbox, segm, synth.THINGS)["bbox"]["AP"] < 0.9  # all three images: the old number
    evaluated = [(a["image_id"], a["file_name"]) for a in gt["annotations"]]
    ap = coco_ap_from_panoptic(instances, out / "predictions.json", out / "predictions", synth.CATEGORIES, evaluated)
    assert ap == {k: m[k] for k in ("bbox", "segm")}
    assert evaluate_files(ann_path, root / "panoptic" / "val", out / "predictions.json", out / "predictions",
                          "--instances", str(instances), "--out", str(tmp_path / "m")) == 0
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["bbox"]["AP"] > 0.99


def _results(instances, out):
    from panoptic_detr.evaluation.coco_ap import load_instances, match_image_ids, panoptic_to_coco_results

    pred = json.loads((out / "predictions.json").read_text())
    data, _ = load_instances(instances)
    ids = match_image_ids(data["images"], [(a["image_id"], a["file_name"]) for a in pred["annotations"]])
    return panoptic_to_coco_results(pred, out / "predictions", synth.THINGS, ids)


def test_ground_truth_area_that_is_not_the_pixel_count_warns_once(files, capsys):
    """A hand-edited or tool-written ground truth whose segment `area` is not its PNG
    pixel count: a self-evaluation scored PQ 100.3 (as the panopticapi, which we follow).
    The numbers stay; one warning gives the count, printed as a `warning:` line."""
    (gt_json, gt_dir, _, _), _ = files
    gt = json.loads(gt_json.read_text())
    self_pred = {"annotations": gt["annotations"], "categories": gt["categories"]}
    pred_json = gt_json.with_name("self.json")
    pred_json.write_text(json.dumps(self_pred))

    def shrink(data):
        for ann in data["annotations"][:2]:
            seg = next(s for s in ann["segments_info"] if not s["iscrowd"])
            seg["area"] -= 3

    bad_gt = rewrite(gt_json, shrink)
    with pytest.warns(UserWarning, match=r"2 ground-truth segment\(s\) have a JSON 'area' that differs") as record:
        result = pq_compute(bad_gt, gt_dir, pred_json, gt_dir)
    assert len([w for w in record if "JSON 'area'" in str(w.message)]) == 1
    assert result["All"]["pq"] > 1.0  # the panopticapi's number, kept
    assert evaluate_files(bad_gt, gt_dir, pred_json, gt_dir) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and "2 ground-truth segment(s)" in err and "UserWarning" not in err


def test_categories_without_isthing(files):
    """COCO-style category lists from other tools often lack `isthing`; every class
    silently became a thing. It now comes from the segments when they carry it (our
    predictions do), else an error names the category."""
    (gt_json, gt_dir, pred_json, pred_dir), expected = files

    def strip(data):
        for c in data["categories"]:
            c.pop("isthing")

    def mark_with(source):  # the segments carry isthing, as some tools write them
        cats = {c["id"]: c["isthing"] for c in json.loads(source.read_text())["categories"]}

        def mark(data):
            for a in data["annotations"]:
                for s in a["segments_info"]:
                    s["isthing"] = cats[s["category_id"]]

        return mark

    bare_gt = rewrite(gt_json, strip)
    with pytest.raises(DataError, match=r"category 1 'thing1' has no 'isthing' and no segment says"):
        pq_compute(bare_gt, gt_dir, pred_json, pred_dir)
    marked_gt = rewrite(bare_gt, mark_with(gt_json))
    with pytest.raises(DataError, match=r"category 7 'thing7' has no 'isthing'"):  # only predicted, unmarked
        pq_compute(marked_gt, gt_dir, pred_json, pred_dir)
    marked_pred = rewrite(pred_json, mark_with(gt_json))
    assert pq_compute(marked_gt, gt_dir, marked_pred, pred_dir) == expected


def test_empty_split_is_an_error(tmp_path, capsys):
    """`prepare` with one image gives "1 train + 0 val": evaluating that val split printed
    PQ 0.0 with exit 0. It is an error now."""
    root, preds = write_dataset(tmp_path / "ds", n=1, instances=False)
    path = root / "annotations" / "panoptic_val.json"
    data = json.loads(path.read_text())
    data["images"], data["annotations"] = [], []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="the 'val' split has no images; nothing to evaluate"):
        evaluate_model(StubPredictor(preds), root, progress=False)
    assert evaluate_files(path, root / "panoptic" / "val", path, root / "panoptic" / "val") == 2
    assert "no images (an empty split?); nothing to evaluate" in capsys.readouterr().err


def test_instances_with_empty_segmentation(tmp_path):
    """CVAT and course exports hold box-only objects as `"segmentation": []`; COCOeval
    crashed with an IndexError in frPyObjects. They count for box AP and are left out of
    mask AP, with one counted warning."""
    rng = np.random.default_rng(0)
    ids, segs = synth.random_scene(rng, 48, 64, n_things=4, crowd=False)
    inst = instances_from_panoptic([(1, ids, segs)], synth.CATEGORIES)
    for a in inst["annotations"][:2]:
        a["segmentation"] = []
    inst["annotations"][2]["segmentation"] = [[]]
    for a in inst["annotations"]:
        a.pop("area")
    from panoptic_detr.evaluation.coco_ap import segments_to_coco_results

    things = [dict(s, isthing=True) for s in segs if s["category_id"] in synth.THINGS]
    bbox, segm = segments_to_coco_results(1, ids, things, synth.THINGS)
    with pytest.warns(UserWarning, match=r"3 annotation\(s\) without a mask .* left out of mask AP"):
        ap = coco_ap(inst, bbox, segm, synth.THINGS)
    assert ap["bbox"]["AP"] == pytest.approx(1.0)  # the box-only objects were found: counted for boxes
    # the other mask is perfect; the detections on the box-only objects are no false positives
    assert ap["segm"]["AP"] == pytest.approx(1.0)
    assert coco_ap(inst, bbox[1:], None, synth.THINGS)["bbox"]["AP"] < 1.0  # a box-only object missed


def test_infinite_segment_id_is_a_one_line_error(files, capsys):
    """`Infinity` in a predicted segment id (JSON writers emit it for float overflow):
    an OverflowError traceback before; one `error:` line naming the image now."""
    (gt_json, gt_dir, pred_json, pred_dir), _ = files

    def inf(data):
        data["annotations"][0]["segments_info"][0]["id"] = math.inf

    bad = rewrite(pred_json, inf)
    assert "Infinity" in bad.read_text()
    with pytest.raises(PanopticDetrError, match="image id 1: predicted segment without a valid 'id'"):
        pq_compute(gt_json, gt_dir, bad, pred_dir)
    assert evaluate_files(gt_json, gt_dir, bad, pred_dir) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and "{'id': inf" in err and "Traceback" not in err
