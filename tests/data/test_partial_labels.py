"""Partial labels: `synth --partial-labels`, the annotated sets `prepare` writes per input
kind (LVIS's `annotated_category_ids` / `not_exhaustive_category_ids`), their readers."""

import json
from collections import Counter

import numpy as np
import pytest
import yaml

from panoptic_detr.data.annotated import ANNOTATED_KEY, NOT_EXHAUSTIVE_KEY, annotated_ids, unannotated_things
from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.dataset import PanopticDataset
from panoptic_detr.data.formats.coco_panoptic import id2rgb
from panoptic_detr.data.prepare import PrepareOptions, prepare
from panoptic_detr.data.stats import dataset_stats, format_stats
from panoptic_detr.data.synth import synth
from panoptic_detr.data.synth.export import FOLDER_NAMES

from prep_helpers import rect, write_export, write_image

SIZE = (96, 128)
CATS = ClassMap.load("demo").categories()
THINGS = [c.id for c in CATS if c.isthing]
STUFF = [c.id for c in CATS if not c.isthing]


@pytest.fixture(scope="module")
def both_synths(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    full = synth(root / "full", 15, seed=5, classes="demo", size=SIZE, progress=False)
    part = synth(root / "part", 15, seed=5, classes="demo", size=SIZE, progress=False, partial_labels=True)
    return root, full, part


def _exports(raw):
    out = {}
    for folder in sorted((raw / "things").iterdir()):
        out[folder.name] = json.loads((folder / "coco.json").read_text())
    return out


def test_synth_partial_export_lacks_exactly_the_secondary_instances(both_synths):
    root, full, part = both_synths
    truth = json.loads((root / "part" / "truth" / "panoptic.json").read_text())
    assert truth == json.loads((root / "full" / "truth" / "panoptic.json").read_text())  # same scenes, same truth
    truth_by_name = {a["file_name"]: a for a in truth["annotations"]}
    full_exp, part_exp = _exports(root / "full"), _exports(root / "part")
    missing = Counter()
    for folder, exp in part_exp.items():
        cls = {v: k for k, v in FOLDER_NAMES.items()}.get(folder, folder)
        names = {c["id"]: c["name"] for c in exp["categories"]}
        assert exp["images"] == full_exp[folder]["images"]
        for im in exp["images"]:
            labelled = Counter(names[a["category_id"]] for a in exp["annotations"] if a["image_id"] == im["id"])
            full_labelled = Counter(names[a["category_id"]] for a in full_exp[folder]["annotations"]
                                    if a["image_id"] == im["id"])
            t = truth_by_name[f"{cls}_{im['file_name']}"]
            in_truth = Counter(CATS.name_of(s["category_id"]) for s in t["segments_info"]
                               if CATS.by_id[s["category_id"]].isthing)
            assert full_labelled == in_truth  # without the flag every drawn object is labelled
            assert set(labelled) <= {cls} and labelled[cls] == in_truth[cls]  # the folder's class, all of it
            for name, n in in_truth.items():
                if name != cls:
                    missing[name] += n  # exactly the secondary-class instances are left out
        # the labelled annotations are the full export's, less the other classes
        kept = [a for a in full_exp[folder]["annotations"] if names[a["category_id"]] == cls]
        strip = lambda a: {k: v for k, v in a.items() if k != "id"}  # noqa: E731
        assert [strip(a) for a in exp["annotations"]] == [strip(a) for a in kept]
    assert sum(missing.values()) > 0, "the test scenes should hold secondary objects"
    assert part["unlabelled_per_class"] == {n: missing[n] for n in part["unlabelled_per_class"]}
    assert full["unlabelled_per_class"] == {n: 0 for n in full["unlabelled_per_class"]}


def _prepare(raw, out, **kw):
    prepare(PrepareOptions("demo", out, things=[raw / "things"],
                           stuff_truth=(raw / "stuff" / "panoptic.json", raw / "stuff" / "panoptic"),
                           progress=False, **kw), log=lambda m: None)
    return {sp: json.loads((out / "annotations" / f"panoptic_{sp}.json").read_text()) for sp in ("train", "val")}


def test_prepare_per_class_folders_annotate_their_class(both_synths, tmp_path):
    root, _, _ = both_synths
    for kind in ("part", "full"):
        pans = _prepare(root / kind, tmp_path / kind)
        n_not_exhaustive = 0
        for sp, p in pans.items():
            inst = json.loads((tmp_path / kind / "annotations" / f"instances_{sp}.json").read_text())
            assert [im[ANNOTATED_KEY] for im in inst["images"]] == [im[ANNOTATED_KEY] for im in p["images"]]
            for im, a in zip(p["images"], p["annotations"]):
                cls = CATS.by_name[im["file_name"].split("_img_")[0]].id
                assert im[ANNOTATED_KEY] == sorted([cls] + STUFF)  # its folder's class, and all stuff
                present = {s["category_id"] for s in a["segments_info"] if CATS.by_id[s["category_id"]].isthing}
                assert im[NOT_EXHAUSTIVE_KEY] == sorted(present - {cls})
                n_not_exhaustive += len(im[NOT_EXHAUSTIVE_KEY])
                assert unannotated_things(im, THINGS) == sorted(set(THINGS) - {cls})
        # partial exports never label another class; the full ones do (labelled, not exhaustive)
        assert (n_not_exhaustive == 0) == (kind == "part")
        described = yaml.safe_load((tmp_path / kind / "dataset.yaml").read_text())["partially_annotated_images"]
        assert (described["train"], described["val"]) == (len(pans["train"]["images"]), len(pans["val"]["images"]))
    stats = dataset_stats(tmp_path / "part")
    c = stats["splits"]["train"]["classes"]
    n = stats["splits"]["train"]["images"]
    assert sum(c[CATS.name_of(t)]["annotated"] for t in THINGS) == n  # one class per image
    assert all(c[CATS.name_of(t)]["annotated"] + c[CATS.name_of(t)]["possible"] == n for t in THINGS)
    assert all(c[CATS.name_of(s)]["possible"] == 0 for s in STUFF)
    assert "merely possible" in format_stats(stats)


def test_prepare_single_json_labelme_and_panoptic_inputs(tmp_path):
    # one COCO instances JSON listing two classes: those two are annotated
    exp = tmp_path / "exp"
    write_export(exp, [{"id": 1, "file_name": "a.png", "width": 30, "height": 20},
                       {"id": 2, "file_name": "b.png", "width": 30, "height": 20}],
                 [{"image_id": 1, "category": "water_tank", "segmentation": [rect(2, 2, 9, 9)], "bbox": [2, 2, 7, 7],
                   "area": 49}], ["water_tank", "aac_blocks"])
    # labelme: every class, unless per folder
    lm = tmp_path / "lm"
    for folder, name in (("rcc_hume_pipes", "p1"), (".", "loose")):
        write_image(lm / folder / f"{name}.jpg", 30, 20)
        (lm / folder / f"{name}.json").write_text(json.dumps({
            "imagePath": f"{name}.jpg", "imageData": None, "imageHeight": 20, "imageWidth": 30,
            "shapes": [{"label": "rcc_hume_pipes", "points": [[2, 2], [12, 12]], "shape_type": "rectangle"}]}))
    # COCO-panoptic with one demo thing class among its categories
    pan = tmp_path / "pan"
    (pan / "png").mkdir(parents=True)
    write_image(pan / "img" / "000001.jpg", 20, 10)
    m = np.full((10, 20), 1000, np.int64)
    m[2:6, 2:6] = 2000
    from PIL import Image

    Image.fromarray(id2rgb(m)).save(pan / "png" / "000001.png")
    (pan / "p.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000001.jpg", "width": 20, "height": 10}],
        "annotations": [{"image_id": 1, "file_name": "000001.png", "segments_info": [
            {"id": 1000, "category_id": 187, "iscrowd": 0}, {"id": 2000, "category_id": 7, "iscrowd": 0}]}],
        "categories": [{"id": 187, "name": "sky-other-merged", "isthing": 0},
                       {"id": 7, "name": "fire_extinguishers", "isthing": 1}]}))
    expected = {"a.png": {"water_tank", "aac_blocks"}, "b.png": {"water_tank", "aac_blocks"},
                "p1.jpg": None, "loose.jpg": None, "000001.jpg": {"fire_extinguishers"}}
    for per_folder in (False, True):
        out = tmp_path / f"ds{int(per_folder)}"
        prepare(PrepareOptions("demo", out, things=[exp], labelme=[lm],
                               coco_panoptic=(pan / "p.json", pan / "png", pan / "img"), val_ratio=0.0,
                               labelme_per_folder=per_folder, progress=False), log=lambda m_: None)
        images = json.loads((out / "annotations" / "panoptic_train.json").read_text())["images"]
        assert sorted(im["file_name"] for im in images) == sorted(expected)
        for im in images:
            want = expected[im["file_name"]]
            if per_folder and im["file_name"] == "p1.jpg":
                want = {"rcc_hume_pipes"}
            things = {CATS.name_of(c) for c in annotated_ids(im, THINGS) if c in THINGS}
            assert things == (set(CATS.name_of(t) for t in THINGS) if want is None else want), im["file_name"]
            assert set(STUFF) <= set(im[ANNOTATED_KEY])  # stuff always annotated


def test_files_without_the_keys_are_fully_annotated(both_synths, tmp_path):
    root, _, _ = both_synths
    out = tmp_path / "ds"
    _prepare(root / "part", out)
    ds = PanopticDataset(out, "train")
    assert len(ds[0][1]["unannotated"]) == len(THINGS) - 1  # partial: 4 of 5 thing classes
    path = out / "annotations" / "panoptic_train.json"
    data = json.loads(path.read_text())
    for im in data["images"]:
        del im[ANNOTATED_KEY], im[NOT_EXHAUSTIVE_KEY]
    path.write_text(json.dumps(data))
    ds = PanopticDataset(out, "train")
    assert all(len(ds[i][1]["unannotated"]) == 0 for i in range(3))
    assert unannotated_things({"id": 1}, THINGS) == [] and annotated_ids({}, [1, 2]) == {1, 2}
    stats = dataset_stats(out)
    assert all(c["possible"] == 0 for c in stats["splits"]["train"]["classes"].values())
