"""pq_compute against hand-computed values, the panopticapi re-implementation
(`panopticapi_reference.py`) on synthetic and real COCO data, and its errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import panopticapi_reference as reference
import pq_synthetic as synth
from panoptic_detr.errors import PanopticDetrError
from panoptic_detr.data.formats.coco_panoptic import read_id_png
from panoptic_detr.evaluation.panoptic_quality import pq_compute

TOL = 1e-9


def assert_same(ours: dict, ref: dict) -> None:
    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq"):
            assert ours[group][key] == pytest.approx(ref[group][key], abs=TOL), (group, key)
        assert ours[group]["n"] == ref[group]["n"], group
    by_id = {c["id"]: c for c in ours["per_category"]}
    for cid, ref_class in ref["per_class"].items():
        c = by_id[cid]
        for key in ("pq", "sq", "rq"):
            assert c[key] == pytest.approx(ref_class[key], abs=TOL), (cid, key)
    for cid, s in ref["stat"].items():
        if cid not in by_id:
            continue
        c = by_id[cid]
        assert (c["tp"], c["fp"], c["fn"]) == (s["tp"], s["fp"], s["fn"]), cid
        assert c["iou"] == pytest.approx(s["iou"], abs=TOL), cid
    for cid, c in by_id.items():
        if cid not in ref["stat"]:
            assert c["tp"] == c["fp"] == c["fn"] == 0


# ----------------------------------------------------------------------------- by hand
TOY_CATEGORIES = [
    {"id": 1, "name": "A", "isthing": 1},
    {"id": 2, "name": "S", "isthing": 0},
    {"id": 4, "name": "D", "isthing": 1},
]


def toy_set(root: Path):
    """Two 4x5 images whose PQ is worked out on paper in `test_hand_computed_values`."""
    gt1 = np.array([[1, 1, 1, 2, 2], [1, 1, 1, 2, 2], [0, 0, 5, 5, 5], [0, 0, 5, 5, 5]])
    pred1 = np.array([[7, 7, 7, 8, 8], [7, 7, 0, 8, 8], [7, 7, 9, 9, 9], [0, 0, 9, 9, 9]])
    gt2 = np.array([[1, 1, 2, 2, 2], [1, 1, 2, 2, 2], [1, 1, 2, 2, 2], [0, 0, 0, 0, 0]])
    pred2 = np.array([[4, 4, 4, 6, 6], [4, 4, 4, 6, 6], [0, 0, 0, 6, 6], [5, 5, 5, 5, 5]])
    gt_items = [
        (1, gt1, [
            {"id": 1, "category_id": 1, "iscrowd": 0, "area": 6},
            {"id": 2, "category_id": 2, "iscrowd": 0, "area": 4},
            {"id": 5, "category_id": 1, "iscrowd": 1, "area": 6},
        ]),
        (2, gt2, [
            {"id": 1, "category_id": 1, "iscrowd": 0, "area": 6},
            {"id": 2, "category_id": 2, "iscrowd": 0, "area": 9},
        ]),
    ]  # fmt: skip
    pred_items = [
        (1, pred1, [{"id": 7, "category_id": 1}, {"id": 8, "category_id": 2}, {"id": 9, "category_id": 1}]),
        (2, pred2, [{"id": 4, "category_id": 1}, {"id": 6, "category_id": 2}, {"id": 5, "category_id": 4}]),
    ]
    return synth.write_set(root, gt_items, pred_items, TOY_CATEGORIES, name="toy")


def test_hand_computed_values(tmp_path):
    # image 1: A 7 vs gt 1: I=5, pred area 7 with 2 on VOID, union 7+6-5-2=6 -> IoU 5/6 (TP);
    #          S 8 = gt 2 (TP, IoU 1); A 9 lies on the crowd A region -> ignored.
    # image 2: A 4 vs gt 1: I=4, union 6+6-4=8 -> IoU 1/2, not > 1/2: FN + FP;
    #          S 6 vs gt 2: I=6, union 6+9-6=9 -> IoU 2/3 (TP); D 5 lies on VOID -> ignored.
    # A: tp 1 fp 1 fn 1 iou 5/6 -> PQ 5/12, SQ 5/6, RQ 1/2
    # S: tp 2 iou 5/3 -> PQ 5/6, SQ 5/6, RQ 1;  D: absent (not counted in n)
    r = pq_compute(*toy_set(tmp_path))
    assert r["All"] == pytest.approx({"pq": 0.625, "sq": 5 / 6, "rq": 0.75, "n": 2}, abs=1e-12)
    assert r["Things"] == pytest.approx({"pq": 5 / 12, "sq": 5 / 6, "rq": 0.5, "n": 1}, abs=1e-12)
    assert r["Stuff"] == pytest.approx({"pq": 5 / 6, "sq": 5 / 6, "rq": 1.0, "n": 1}, abs=1e-12)
    assert r["per_class"]["A"] == pytest.approx({"pq": 5 / 12, "sq": 5 / 6, "rq": 0.5, "tp": 1, "fp": 1, "fn": 1})
    assert r["per_class"]["S"] == pytest.approx({"pq": 5 / 6, "sq": 5 / 6, "rq": 1.0, "tp": 2, "fp": 0, "fn": 0})
    assert r["per_class"]["D"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert r["num_images"] == 2
    assert_same(r, reference.pq_compute(*toy_set(tmp_path)))


def test_crowd_of_other_category_does_not_excuse(tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = toy_set(tmp_path)
    pred = json.loads(pred_json.read_text())
    pred["annotations"][0]["segments_info"][2]["category_id"] = 4  # 9 on the crowd of A, but is D
    r = pq_compute(gt_json, gt_dir, pred, pred_dir)
    assert r["per_class"]["D"]["fp"] == 1
    assert r["All"]["n"] == 3
    assert_same(r, reference.pq_compute(gt_json, gt_dir, pred, pred_dir))


# ----------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_sets_equal_reference(tmp_path, seed):
    paths = synth.random_set(tmp_path, seed, n_images=5)
    assert_same(pq_compute(*paths), reference.pq_compute(*paths))


@pytest.mark.parametrize(
    "ops",
    [("drop",), ("merge",), ("shift",), ("relabel",), ("erode",), ("fp",), ("fp_void",), ("fp_crowd",), ("only_pred",)],
)
def test_each_perturbation_equals_reference(tmp_path, ops):
    paths = synth.random_set(tmp_path, 7, n_images=3, ops=ops + ("keep",), p=0.9)
    ours = pq_compute(*paths)
    assert_same(ours, reference.pq_compute(*paths))


def test_loaded_dicts_and_workers_give_the_same(tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = synth.random_set(tmp_path, 11, n_images=5)
    a = pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=1)
    b = pq_compute(json.loads(gt_json.read_text()), gt_dir, json.loads(pred_json.read_text()), pred_dir, workers=3)
    assert a == b


def test_perfect_prediction(tmp_path):
    rng = np.random.default_rng(5)
    items = [(i, *synth.random_scene(rng, 40, 50, crowd=False)) for i in range(1, 3)]
    preds = [(i, ids, [dict(s) for s in segs]) for i, ids, segs in items]
    r = pq_compute(*synth.write_set(tmp_path, items, preds))
    assert r["All"]["pq"] == r["All"]["sq"] == r["All"]["rq"] == 1.0


def test_empty_predictions_and_no_stuff(tmp_path):
    rng = np.random.default_rng(3)
    ids, segs = synth.random_scene(rng, 30, 40, n_stuff=1)
    segs = [s for s in segs if s["category_id"] in synth.THINGS]  # no stuff: stuff pixels -> VOID
    keep = np.isin(ids, [s["id"] for s in segs])
    ids = np.where(keep, ids, 0)
    empty = np.zeros_like(ids)
    paths = synth.write_set(tmp_path, [(1, ids, segs), (2, empty, [])], [(1, empty, []), (2, empty, [])])
    r = pq_compute(*paths)
    assert r["Stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert r["Things"]["pq"] == 0.0 and r["Things"]["n"] > 0
    assert_same(r, reference.pq_compute(*paths))


def test_nothing_at_all(tmp_path):
    empty = np.zeros((8, 8), dtype=np.int64)
    r = pq_compute(*synth.write_set(tmp_path, [(1, empty, [])], [(1, empty, [])]))
    for group in ("All", "Things", "Stuff"):
        assert r[group] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}


def test_two_crowd_regions_of_one_category_last_counts(tmp_path):
    # as the panopticapi: one crowd region per category and image, the last one listed,
    # so a prediction on the first of two crowd regions of its class is a false positive
    ids = np.zeros((10, 20), dtype=np.int64)
    ids[:, :10] = 3
    ids[:, 10:] = 4
    pred = np.zeros_like(ids)
    pred[2:8, 2:8] = 9  # on the first crowd region
    gt_segs = [
        {"id": 3, "category_id": 1, "iscrowd": 1, "area": 100},
        {"id": 4, "category_id": 1, "iscrowd": 1, "area": 100},
    ]
    paths = synth.write_set(tmp_path, [(1, ids, gt_segs)], [(1, pred, [{"id": 9, "category_id": 1}])])
    r = pq_compute(*paths)
    assert r["per_class"]["thing1"]["fp"] == 1
    assert_same(r, reference.pq_compute(*paths))
    gt_segs.reverse()
    paths = synth.write_set(tmp_path, [(1, ids, gt_segs)], [(1, pred, [{"id": 9, "category_id": 1}])], name="rev")
    assert pq_compute(*paths)["per_class"]["thing1"]["fp"] == 0


def test_half_on_void_is_still_a_false_positive(tmp_path):
    ids = np.zeros((4, 8), dtype=np.int64)
    ids[:, 4:] = 2
    pred = np.zeros_like(ids)
    pred[0:2, 2:6] = 5  # 8 pixels, 4 on VOID: 4 / 8 is not > 1/2
    pred[2:4, 1:6] = 6  # 10 pixels, 6 on VOID: ignored
    pred_segs = [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 1}]
    paths = synth.write_set(tmp_path, [(1, ids, [{"id": 2, "category_id": 10, "iscrowd": 0, "area": 16}])], [(1, pred, pred_segs)])
    r = pq_compute(*paths)
    assert r["per_class"]["thing1"]["fp"] == 1
    assert r["per_class"]["stuff10"]["fn"] == 1
    assert_same(r, reference.pq_compute(*paths))


def test_gt_inconsistencies_accepted_without_check_as_panopticapi(tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = synth.random_set(tmp_path, 4, n_images=3)
    gt = json.loads(gt_json.read_text())
    gt["annotations"][0]["segments_info"].pop(1)  # its pixels stay in the PNG
    gt["annotations"][1]["segments_info"].append({"id": 77, "category_id": 2, "iscrowd": 0, "area": 30})
    with pytest.raises(PanopticDetrError, match="ground-truth PNG but not in"):
        pq_compute(gt, gt_dir, pred_json, pred_dir)
    assert_same(pq_compute(gt, gt_dir, pred_json, pred_dir, check_gt=False), reference.pq_compute(gt, gt_dir, pred_json, pred_dir))


# ----------------------------------------------------------------------------- real COCO data
def coco_fixture_set(root: Path, fixtures_dir: Path):
    """Panoptic ground truth from the six real COCO images' instance polygons (things, one
    crowd), unlabeled pixels split into two stuff classes around a VOID band; predictions
    are perturbed copies."""
    from pycocotools import mask as mask_utils

    from panoptic_detr.data.categories import coco_panoptic_categories

    data = json.loads((fixtures_dir / "coco-instances-sample" / "annotations.json").read_text())
    cats = coco_panoptic_categories().to_json()
    things = [c["id"] for c in cats if c["isthing"]]
    stuff = [c["id"] for c in cats if not c["isthing"]]
    rng = np.random.default_rng(0)
    gt_items, pred_items = [], []
    for img in data["images"]:
        h, w = img["height"], img["width"]
        anns = sorted((a for a in data["annotations"] if a["image_id"] == img["id"]), key=lambda a: -a["area"])
        ids = np.zeros((h, w), dtype=np.int64)
        segs = []
        for k, a in enumerate(anns):
            rles = mask_utils.frPyObjects(a["segmentation"], h, w)
            m = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles).astype(bool)
            sid = 1000 + 37 * k
            ids[m] = sid
            segs.append({"id": sid, "category_id": a["category_id"], "iscrowd": int(a["iscrowd"])})
        rest = ids == 0
        yy = np.arange(h)[:, None]
        ids[rest & (yy < h // 2 - 3)] = 500000
        ids[rest & (yy > h // 2 + 3)] = 600000
        segs += [{"id": 500000, "category_id": 184, "iscrowd": 0}, {"id": 600000, "category_id": 199, "iscrowd": 0}]
        present, counts = np.unique(ids, return_counts=True)
        area = dict(zip(present.tolist(), counts.tolist()))
        segs = [dict(s, area=area[s["id"]]) for s in segs if s["id"] in area]
        pred, psegs = synth.perturb(rng, ids, segs, p=0.5, things=things, stuff=stuff, only_pred=1)
        gt_items.append((img["id"], ids, segs))
        pred_items.append((img["id"], pred, psegs))
    assert any(s["iscrowd"] for _, _, segs in gt_items for s in segs)
    return synth.write_set(root, gt_items, pred_items, cats, name="coco")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_real_coco_images_equal_reference(tmp_path, fixtures_dir):
    paths = coco_fixture_set(tmp_path, fixtures_dir)
    ours = pq_compute(*paths)
    assert_same(ours, reference.pq_compute(*paths))
    assert ours["Things"]["n"] > 3 and ours["Stuff"]["n"] >= 2
    assert 0.2 < ours["All"]["pq"] < 1.0


# ----------------------------------------------------------------------------- errors
@pytest.fixture
def small_set(tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = synth.random_set(tmp_path, 21, n_images=2, crowd=False)
    return json.loads(gt_json.read_text()), gt_dir, json.loads(pred_json.read_text()), pred_dir


def one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(PanopticDetrError, match=match) as e:
        pq_compute(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_error_png_segment_missing_from_json(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    seg = pred["annotations"][1]["segments_info"].pop(0)
    msg = one_line_error("in the PNG but not in the segments_info", gt, gt_dir, pred, pred_dir)
    assert f"segment id {seg['id']}" in msg and "image id 2" in msg and "000002.png" in msg


def test_error_json_segment_missing_from_png(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    pred["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 1})
    msg = one_line_error("not in the PNG", gt, gt_dir, pred, pred_dir)
    assert "4242" in msg and "image id 1" in msg


def test_error_unknown_category(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    seg = pred["annotations"][0]["segments_info"][0]
    seg["category_id"] = 999
    msg = one_line_error("unknown category_id 999", gt, gt_dir, pred, pred_dir)
    assert f"segment id {seg['id']}" in msg


def test_error_duplicate_segment_id(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    segs = pred["annotations"][0]["segments_info"]
    segs.append(copy.deepcopy(segs[0]))
    one_line_error(f"segment id {segs[0]['id']} appears twice", gt, gt_dir, pred, pred_dir)


def test_error_size_mismatch(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    path = Path(pred_dir) / pred["annotations"][0]["file_name"]
    Image.open(path).crop((0, 0, 50, 40)).save(path)
    one_line_error(r"prediction is 50x40 but the ground truth .* is 128x96", gt, gt_dir, pred, pred_dir)


def test_error_missing_prediction(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    pred["annotations"].pop(1)
    one_line_error("no prediction for the image with id 2", gt, gt_dir, pred, pred_dir)


def test_error_missing_png_and_bad_inputs(small_set, tmp_path):
    gt, gt_dir, pred, pred_dir = small_set
    (Path(pred_dir) / pred["annotations"][0]["file_name"]).unlink()
    one_line_error("000001.png .*file not found", gt, gt_dir, pred, pred_dir)
    one_line_error("PNG folder not found", gt, gt_dir, pred, tmp_path / "nope")
    one_line_error("file not found", gt, gt_dir, tmp_path / "nope.json", pred_dir)
    one_line_error("no 'annotations' list", gt, gt_dir, {"images": []}, pred_dir)


def test_error_not_rgb_png(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    path = Path(pred_dir) / pred["annotations"][0]["file_name"]
    Image.open(path).convert("L").save(path)
    one_line_error(r"not an RGB panoptic PNG \(mode L\)", gt, gt_dir, pred, pred_dir)


def test_error_gt_segment_missing_from_png(small_set):
    gt, gt_dir, pred, pred_dir = small_set
    gt["annotations"][0]["segments_info"].append({"id": 99, "category_id": 1, "iscrowd": 0, "area": 5})
    one_line_error("ground-truth segment id 99 is not in the PNG", gt, gt_dir, pred, pred_dir)


def test_read_id_png_round_trip(tmp_path):
    ids = np.array([[0, 1, 256], [65536, 16777215, 12345]])
    synth.write_png(tmp_path / "x.png", ids)
    assert (read_id_png(tmp_path / "x.png") == ids).all()


def test_pair_counts_equal_numpy_unique():
    from panoptic_detr.evaluation.pq_inputs import OFFSET
    from panoptic_detr.evaluation.pq_pair_counts import pair_counts

    rng = np.random.default_rng(0)
    gt = rng.choice([0, 5, 70000, 16777215], size=5000).astype(np.uint32)
    pred = np.repeat(rng.choice([0, 1, 9, 300], size=500), 10).astype(np.uint32)
    keys, counts = np.unique(gt.astype(np.int64) * OFFSET + pred, return_counts=True)
    for g, p in ((gt, pred), (gt | np.uint32(0xFF000000), pred | np.uint32(0xFF000000))):
        pg, pp, c = pair_counts(g, p)
        assert (pg * OFFSET + pp == keys).all() and (c == counts).all()
    # padding bytes that vary between pixels are ignored
    noisy = gt | (rng.integers(0, 256, gt.size).astype(np.uint32) << np.uint32(24))
    pg, pp, c = pair_counts(noisy, pred)
    assert (pg * OFFSET + pp == keys).all() and (c == counts).all()
    assert all(x.size == 0 for x in pair_counts(gt[:0], pred[:0]))


def test_categories_argument_and_bogus_gt_area(small_set):
    from panoptic_detr.data.categories import CategoryList

    gt, gt_dir, pred, pred_dir = small_set
    a = pq_compute(gt, gt_dir, pred, pred_dir)
    b = pq_compute(gt, gt_dir, pred, pred_dir, categories=CategoryList.from_json(synth.CATEGORIES))
    assert a == b
    things_only = [c for c in synth.CATEGORIES if c["isthing"]]
    gt_things = dict(gt, annotations=[dict(a, segments_info=[s for s in a["segments_info"] if s["category_id"] in synth.THINGS]) for a in gt["annotations"]])
    # the predictions' stuff classes are not among the categories scored: named
    with pytest.raises(PanopticDetrError, match="predicted category 'stuff1[0-3]' .id 1[0-3]. is not a category of"):
        pq_compute(gt_things, gt_dir, pred, pred_dir, categories=things_only, check_gt=False)
    seg = next(s for s in gt["annotations"][0]["segments_info"] if s["category_id"] in synth.STUFF)
    seg["area"] = 0
    one_line_error(f"segment id {seg['id']} has area 0 in the JSON", gt, gt_dir, pred, pred_dir)
