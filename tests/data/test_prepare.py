import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from panoptic_detr.cli import main
from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.formats.coco_panoptic import id2rgb
from panoptic_detr.data.prepare import MASK_FILL, PrepareOptions, prepare
from prep_helpers import check_prepared, pq_against, read_png_ids, rect, write_export, write_image

COCO_SAMPLE_MAP = {
    "things": ["person", {"vehicle": ["bicycle", "car", "motorcycle", "bus", "truck"]}, "bottle"],
    "stuff": {"misc": ["all COCO thing classes"]},
}


def _write_map(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "class-map.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_real_coco_sample(tmp_path, fixtures_dir):
    """Six real COCO images (polygons + one crowd RLE), COCO classes folded into a few things."""
    src = fixtures_dir / "coco-instances-sample" / "annotations.json"
    out = tmp_path / "ds"
    s = prepare(PrepareOptions(_write_map(tmp_path, COCO_SAMPLE_MAP), out, things=[src], progress=False), log=lambda m: None)
    assert s.images["train"] + s.images["val"] == 6 and not s.problems
    pans = check_prepared(out)
    cats = {c["name"]: c["id"] for c in json.loads((out / "categories.json").read_text())}
    assert cats == {"person": 1, "vehicle": 2, "bottle": 3, "misc": 4}
    segs = [seg for p in pans.values() for a in p["annotations"] for seg in a["segments_info"]]
    by_cat = {}
    for seg in segs:
        by_cat.setdefault(seg["category_id"], []).append(seg)
    assert len(by_cat[cats["person"]]) == 10
    assert len(by_cat[cats["bottle"]]) == 14 and sum(x["iscrowd"] for x in by_cat[cats["bottle"]]) == 1
    assert len(by_cat[cats["vehicle"]]) == 3
    # handbag x5 + skateboard + bear x3 fold into misc: one merged segment per image
    assert len(by_cat[cats["misc"]]) == 3
    # the dataset scores PQ 100 against itself
    for split in ("train", "val"):
        if pans[split]["annotations"]:
            r = pq_against(out / "annotations" / f"panoptic_{split}.json", out / "panoptic" / split,
                           out / "annotations" / f"panoptic_{split}.json", out / "panoptic" / split, [])
            assert r["pq"] == pytest.approx(1.0)
    d = yaml.safe_load((out / "dataset.yaml").read_text())
    assert d["inputs"][0]["kind"] == "coco-instances" and d["categories"]["count"] == 4


def test_cvat_per_class_folders(tmp_path):
    """CVAT quirks: alias folder names, ids restarting at 1 per folder, same image names,
    extra keys, float bbox/area, RLE compressed and uncompressed, crowd."""
    root = tmp_path / "exports"
    w, h = 48, 32
    unc = {"size": [h, w], "counts": [h * 10 + 4, 6, h - 6, 6, h - 6, 6, h * w - (h * 10 + 4) - 6 * 3 - 2 * (h - 6)]}
    write_export(root / "concrete_pump_(50%)",
                 [{"id": 1, "file_name": "img_001.png", "width": w, "height": h, "license": 0, "flickr_url": ""},
                  {"id": 2, "file_name": "img_002.png", "width": w, "height": h}],
                 [{"image_id": 1, "category": "concrete_pump", "segmentation": [rect(2.5, 3.25, 20.75, 15.5)],
                   "bbox": [2.5, 3.25, 18.25, 12.25], "area": 223.56, "segment_id": 9},
                  {"image_id": 2, "category": "concrete_pump", "segmentation": unc, "bbox": [10.0, 4.0, 3.0, 6.0], "area": 18.0}],
                 ["concrete_pump"])
    write_export(root / "dump_truck___tipper_truck",
                 [{"id": 1, "file_name": "img_001.png", "width": w, "height": h}],
                 [{"image_id": 1, "category": "dump_truck___tipper_truck", "segmentation": [rect(5, 5, 30, 25)],
                   "bbox": [5, 5, 25, 20], "area": 500.0},
                  {"image_id": 1, "category": "dump_truck___tipper_truck", "segmentation": [rect(20, 10, 40, 30)],
                   "bbox": [20, 10, 20, 20], "area": 400.0, "iscrowd": 1}],
                 ["dump_truck___tipper_truck"])
    out = tmp_path / "ds"
    s = prepare(PrepareOptions("construction", out, things=[root], val_ratio=0.34, progress=False), log=lambda m: None)
    assert sum(s.images.values()) == 3
    pans = check_prepared(out)
    names = sorted(im["file_name"] for p in pans.values() for im in p["images"])
    assert names == ["concrete_pump_img_001.png", "concrete_pump_img_002.png", "dump_truck_tipper_truck_img_001.png"]
    ids = sorted(im["id"] for p in pans.values() for im in p["images"])
    assert ids == [1, 2, 3]
    cm = ClassMap.load("construction").categories()
    seen = {}
    for split, p in pans.items():
        for a in p["annotations"]:
            fname = [im["file_name"] for im in p["images"] if im["id"] == a["image_id"]][0]
            seen[fname] = (split, a["segments_info"])
    split, segs = seen["dump_truck_tipper_truck_img_001.png"]
    assert [(x["category_id"], x["iscrowd"]) for x in segs] == [(cm.by_name["dump_truck_tipper_truck"].id, 0),
                                                                 (cm.by_name["dump_truck_tipper_truck"].id, 1)]
    # the later annotation (the crowd box) wins where they overlap
    ids_map = read_png_ids(out / "panoptic" / split / "dump_truck_tipper_truck_img_001.png")
    assert ids_map[20, 25] == segs[1]["id"] and ids_map[6, 6] == segs[0]["id"]
    assert segs[0]["area"] == 25 * 20 - 10 * 15
    split, segs = seen["concrete_pump_img_002.png"]
    assert segs[0]["area"] == 18 and segs[0]["bbox"] == [10, 4, 3, 6]
    assert (out / "images" / split / "concrete_pump_img_002.png").is_file()


def test_labelme_and_coco_panoptic_inputs(tmp_path):
    lm = tmp_path / "lm"
    write_image(lm / "site.jpg", 40, 30)
    (lm / "site.json").write_text(json.dumps({
        "imagePath": "site.jpg", "imageData": None, "imageHeight": 30, "imageWidth": 40,
        "shapes": [{"label": "aac_blocks", "points": [[2, 2], [12, 12]], "shape_type": "rectangle", "group_id": None},
                   {"label": "Water Tank", "points": [[20, 5], [35, 5], [35, 25], [20, 25]], "shape_type": "polygon"}]}))
    # a COCO-panoptic set: person (thing -> misc), sky, road (-> ground), an unmapped category
    pj = tmp_path / "pan" / "panoptic_val.json"
    (tmp_path / "pan" / "png").mkdir(parents=True)
    write_image(tmp_path / "pan" / "img" / "000001.jpg", 20, 10)
    m = np.zeros((10, 20), np.int64)
    m[:4] = 1000
    m[4:] = 2000
    m[5:8, 2:6] = 3000
    m[0, 0] = 0
    from PIL import Image

    Image.fromarray(id2rgb(m)).save(tmp_path / "pan" / "png" / "000001.png")
    pj.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000001.jpg", "width": 20, "height": 10}],
        "annotations": [{"image_id": 1, "file_name": "000001.png", "segments_info": [
            {"id": 1000, "category_id": 187, "iscrowd": 0, "bbox": [0.0, 0.0, 20.0, 4.0], "area": 79.0, "isthing": 0},
            {"id": 2000, "category_id": 149, "iscrowd": 0, "bbox": [0, 4, 20, 6], "area": 108, "segment_id": 2000},
            {"id": 3000, "category_id": 1, "iscrowd": 0, "bbox": [2, 5, 4, 3], "area": 12.0, "isthing": 1}]}],
        "categories": [{"id": 1, "name": "person", "isthing": 1}, {"id": 149, "name": "road", "isthing": 0},
                       {"id": 187, "name": "sky-other-merged", "isthing": 0}]}))
    out = tmp_path / "ds"
    s = prepare(PrepareOptions("demo", out, labelme=[lm], coco_panoptic=(pj, tmp_path / "pan" / "png", tmp_path / "pan" / "img"),
                               val_ratio=0.5, progress=False), log=lambda m_: None)
    assert sum(s.images.values()) == 2
    pans = check_prepared(out)
    cats = ClassMap.load("demo").categories()
    for split, p in pans.items():
        for im, a in zip(p["images"], p["annotations"]):
            got = sorted((cats.name_of(x["category_id"]), x["area"]) for x in a["segments_info"])
            if im["file_name"] == "site.jpg":
                assert got == [("aac_blocks", 100), ("water_tank", 300)]
            else:
                assert got == [("ground", 108), ("misc", 12), ("sky", 79)]


def _fake_teacher(seen: list):
    """A teacher in COCO's id space: sky on top, road below, a person (-> misc), a crate
    (unknown to the class map -> VOID)."""
    coco = [{"id": 1, "name": "person", "isthing": 1}, {"id": 149, "name": "road", "isthing": 0},
            {"id": 187, "name": "sky-other-merged", "isthing": 0}, {"id": 300, "name": "crate", "isthing": 1}]

    def teacher(image):
        seen.append(image.copy())
        h, w = image.shape[:2]
        m = np.zeros((h, w), np.int32)
        m[: h // 2] = 1
        m[h // 2:] = 2
        m[0:3, 0:3] = 3
        m[h - 2:, w - 2:] = 4
        segs = [{"id": 1, "category_id": 187}, {"id": 2, "category_id": 149}, {"id": 3, "category_id": 1},
                {"id": 4, "category_id": 300}]
        return m, segs, coco

    return teacher


def test_teacher_stuff_and_masking(tmp_path):
    exp = tmp_path / "exp"
    write_export(exp, [{"id": 1, "file_name": "a.png", "width": 30, "height": 20},
                       {"id": 2, "file_name": "b.png", "width": 30, "height": 20}],
                 [{"image_id": 1, "category": "water_tank", "segmentation": [rect(10, 5, 20, 15)], "bbox": [10, 5, 10, 10], "area": 100},
                  {"image_id": 2, "category": "water_tank", "segmentation": [rect(0, 0, 5, 5)], "bbox": [0, 0, 5, 5], "area": 25}],
                 # every demo thing class listed: fully annotated, so the teacher's misc stays misc
                 # (a partial export's becomes VOID: tests/data/test_partial_labels.py)
                 ["water_tank", "aac_blocks", "rcc_hume_pipes", "fire_extinguishers", "hollow_concrete_blocks"])
    seen = []
    out = tmp_path / "ds"
    prepare(PrepareOptions("demo", out, things=[exp], teacher_mask_things=True, progress=False),
            teacher=_fake_teacher(seen), log=lambda m: None)
    pans = check_prepared(out)
    cats = ClassMap.load("demo").categories()
    assert len(seen) == 2
    a_img = [s for s in seen if (s[10, 15] == MASK_FILL).all()]
    assert a_img, "the annotated thing is masked out before the teacher sees the image"
    for split, p in pans.items():
        for im, a in zip(p["images"], p["annotations"]):
            ids = read_png_ids(out / "panoptic" / split / a["file_name"])
            by = {x["id"]: cats.name_of(x["category_id"]) for x in a["segments_info"]}
            if im["file_name"] == "a.png":
                assert by[ids[12, 15]] == "water_tank" and by[ids[2, 25]] == "sky" and by[ids[18, 5]] == "ground"
                assert by[ids[1, 1]] == "misc"  # a COCO person folds into misc
                assert ids[19, 29] == 0  # the unknown 'crate' is VOID
            names = sorted(by.values())
            assert names.count("sky") <= 1 and names.count("ground") <= 1


def test_teacher_labels_train_and_truth_labels_val(tmp_path):
    exp = tmp_path / "exp"
    imgs = [{"id": i, "file_name": f"im{i}.png", "width": 16, "height": 12} for i in range(1, 5)]
    write_export(exp, imgs, [{"image_id": i, "category": "aac_blocks", "segmentation": [rect(1, 1, 6, 6)],
                              "bbox": [1, 1, 5, 5], "area": 25} for i in range(1, 5)], ["aac_blocks"])
    # truth: everything 'wall-brick'
    (tmp_path / "truth").mkdir()
    from PIL import Image

    ones = np.ones((12, 16), np.int64)
    anns, images = [], []
    for i in range(1, 5):
        Image.fromarray(id2rgb(ones)).save(tmp_path / "truth" / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "width": 16, "height": 12})
        anns.append({"image_id": i, "file_name": f"im{i}.png", "segments_info": [{"id": 1, "category_id": 171, "iscrowd": 0}]})
    tj = tmp_path / "truth.json"
    tj.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 171, "name": "wall-brick", "isthing": 0}]}))
    out = tmp_path / "ds"
    s = prepare(PrepareOptions("demo", out, things=[exp], stuff_truth=(tj, tmp_path / "truth"), val_ratio=0.5,
                               progress=False), teacher=_fake_teacher([]), log=lambda m: None)
    assert s.images == {"train": 2, "val": 2}
    pans = check_prepared(out)
    cats = ClassMap.load("demo").categories()
    for split, p in pans.items():
        for a in p["annotations"]:
            names = {cats.name_of(x["category_id"]) for x in a["segments_info"]}
            # the export lists only aac_blocks: other things may be there unlabelled, so the
            # teacher's misc (its person) is VOID, not misc (docs/DESIGN.md, partial labels)
            assert names == ({"aac_blocks", "wall"} if split == "val" else {"aac_blocks", "sky", "ground"})
    d = yaml.safe_load((out / "dataset.yaml").read_text())
    assert d["stuff_of_custom_images"]["images_by_source"] == {"teacher": 2, "truth": 2}


def test_overwrite_and_cli(tmp_path, capsys):
    exp = tmp_path / "exp"
    write_export(exp, [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
                 [{"image_id": 1, "category": "aac_blocks", "segmentation": [rect(1, 1, 5, 5)], "bbox": [1, 1, 4, 4], "area": 16}],
                 ["aac_blocks"])
    out = tmp_path / "ds"
    args = ["prepare", "--class-map", "demo", "--out", str(out), "--things", str(exp / "coco.json"), "--quiet"]
    assert main(args) == 0
    assert "prepared" in capsys.readouterr().out
    (out / "marker").write_text("old")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "marker").exists()
    assert main(args + ["--overwrite"]) == 0
    assert not (out / "marker").exists()
    check_prepared(out)
    assert main(["dataset-stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "aac_blocks" in text and (out / "dataset-stats.png").is_file()


def test_stuff_from_builds_the_predictor_lazily(tmp_path, monkeypatch, capsys):
    import panoptic_detr.engine.predict as predict_mod

    made = []

    class FakePredictor:
        def __init__(self, ckpt, **kw):
            made.append((str(ckpt), kw))
            self.panoptic = _fake_teacher([])

    monkeypatch.setattr(predict_mod, "Predictor", FakePredictor)
    exp = tmp_path / "exp"
    write_export(exp, [{"id": 1, "file_name": "a.png", "width": 12, "height": 10}],
                 [{"image_id": 1, "category": "aac_blocks", "segmentation": [rect(1, 1, 5, 5)], "bbox": [1, 1, 4, 4], "area": 16}],
                 ["aac_blocks"])
    base = ["prepare", "--class-map", "demo", "--things", str(exp), "--quiet", "--stuff-from", "teacher.pth",
            "--teacher-short-side", "128", "--teacher-threshold", "0.5"]
    assert main(base + ["--out", str(tmp_path / "ds0"), "--check"]) == 0
    assert made == []  # --check never loads the teacher
    assert main(base + ["--out", str(tmp_path / "ds")]) == 0
    assert made == [("teacher.pth", {"short_side": 128, "threshold": 0.5})]
    pans = check_prepared(tmp_path / "ds")
    cats = ClassMap.load("demo").categories()
    names = {cats.name_of(s["category_id"]) for p in pans.values() for a in p["annotations"] for s in a["segments_info"]}
    assert {"aac_blocks", "sky", "ground"} <= names


def test_exif_rotated_image_is_written_upright(tmp_path):
    from PIL import Image

    exp = tmp_path / "exp"
    write_export(exp, [{"id": 1, "file_name": "r.jpg", "width": 10, "height": 20}],
                 [{"image_id": 1, "category": "aac_blocks", "segmentation": [rect(1, 1, 5, 15)], "bbox": [1, 1, 4, 14], "area": 56}],
                 ["aac_blocks"], make_images=False)
    (exp / "images").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 10 high, displayed rotated by 90 degrees
    Image.new("RGB", (20, 10), (200, 10, 10)).save(exp / "images" / "r.jpg", exif=exif.tobytes())
    out = tmp_path / "ds"
    prepare(PrepareOptions("demo", out, things=[exp], progress=False), log=lambda m: None)
    pans = check_prepared(out)
    with Image.open(out / "images" / "train" / "r.jpg") as im:
        assert im.size == (10, 20) and im.getexif().get(0x0112, 1) == 1
