import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from panoptic_detr.cli import main
from panoptic_detr.data.class_map import ClassMap
from panoptic_detr.data.synth import BASE_CLASSES, DEMO_CLASSES, render_scene, synth
from prep_helpers import check_prepared, pq_against, read_png_ids

SIZE = (128, 160)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo_synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "raw"
    summary = synth(out, 12, seed=3, classes="demo", size=SIZE, progress=False)
    return out, summary


def test_synth_layout_and_cvat_quirks(demo_synth):
    out, summary = demo_synth
    folders = sorted(p.name for p in (out / "things").iterdir())
    assert "water_tank_(sintex)" in folders and len(folders) == 5
    assert summary["images"] == 12 and sum(summary["images_per_folder"].values()) == 12
    kinds = set()
    for f in folders:
        data = json.loads((out / "things" / f / "coco.json").read_text())
        assert [im["id"] for im in data["images"]] == list(range(1, len(data["images"]) + 1))  # restart at 1
        assert data["images"][0]["file_name"] == "img_001.png"
        assert (out / "things" / f / "images" / "img_001.png").is_file()
        for a in data["annotations"]:
            assert isinstance(a["bbox"][0], float) and isinstance(a["area"], float)
            seg = a["segmentation"]
            kinds.add("polygon" if isinstance(seg, list) else ("rle-list" if isinstance(seg["counts"], list) else "rle-str"))
            # brush masks are RLE marked crowd, as CVAT writes them (cvat-ai/cvat#7030)
            assert a["iscrowd"] == (0 if isinstance(seg, list) else 1)
            assert a["attributes"]["occluded"] in (True, False)
    assert "polygon" in kinds and kinds & {"rle-list", "rle-str"}
    stuff = json.loads((out / "stuff" / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in stuff["categories"]}
    used = {names[s["category_id"]] for a in stuff["annotations"] for s in a["segments_info"]}
    assert "sky-other-merged" in used and used <= set(names.values())
    assert (out / "class-map.yaml").is_file() and (out / "synth.yaml").is_file()


def test_synth_is_deterministic(tmp_path, demo_synth):
    out, _ = demo_synth
    again = tmp_path / "again"
    synth(again, 12, seed=3, classes="demo", size=SIZE, progress=False)
    assert _digest(out / "things") == _digest(again / "things")
    assert _digest(out / "truth") == _digest(again / "truth")
    # image i does not depend on the number of images
    a = render_scene(3, 4, DEMO_CLASSES, SIZE)
    assert np.array_equal(a.image, render_scene(3, 4, DEMO_CLASSES, SIZE).image)
    assert not np.array_equal(a.image, render_scene(4, 4, DEMO_CLASSES, SIZE).image)


def test_scenes_have_occlusion_and_several_instances():
    n_multi = n_occluded = 0
    for i in range(15):
        s = render_scene(0, i, DEMO_CLASSES, SIZE)
        classes = [inst.cls for inst in s.instances]
        assert classes and classes.count(DEMO_CLASSES[i % 5]) >= 1
        n_multi += max(classes.count(c) for c in set(classes)) >= 2
        n_occluded += any((inst.full & ~inst.visible).any() for inst in s.instances)
        for inst in s.instances:
            assert inst.visible.sum() >= 0.45 * inst.full.sum()
        assert len(np.unique(s.stuff)) >= 2  # sky + ground at least
        assert s.image.std() > 20  # textured, not flat
    assert n_multi >= 5 and n_occluded >= 3


def test_synth_prepare_end_to_end_pq_100(tmp_path, demo_synth):
    """synth -> prepare (true stuff) builds exactly the synthetic truth: every truth segment
    matches one prepared segment with IoU 1, so PQ is 100."""
    raw, _ = demo_synth
    ds = tmp_path / "ds"
    code = main(["prepare", "--class-map", str(raw / "class-map.yaml"), "--out", str(ds), "--quiet",
                 "--things", str(raw / "things"),
                 "--stuff-truth", str(raw / "stuff" / "panoptic.json"), str(raw / "stuff" / "panoptic")])
    assert code == 0
    pans = check_prepared(ds)
    # the brush masks (RLE, iscrowd 1 as CVAT writes them) became ordinary instances
    assert not [s for p in pans.values() for a in p["annotations"] for s in a["segments_info"] if s["iscrowd"]]
    assert "RLE mask(s) marked iscrowd 1 read as ordinary instances" in (ds / "prepare-report.txt").read_text()
    truth = json.loads((raw / "truth" / "panoptic.json").read_text())
    t_by_name = {a["file_name"]: a for a in truth["annotations"]}
    n_segments = 0
    for split, pan in pans.items():
        for a in pan["annotations"]:
            t = t_by_name[a["file_name"]]
            P = read_png_ids(ds / "panoptic" / split / a["file_name"])
            T = read_png_ids(raw / "truth" / "panoptic" / a["file_name"])
            p_cat = {s["id"]: s["category_id"] for s in a["segments_info"]}
            assert len(a["segments_info"]) == len(t["segments_info"])
            for s in t["segments_info"]:
                m = T == s["id"]
                ids = np.unique(P[m])
                assert len(ids) == 1 and (P == ids[0]).sum() == m.sum(), "IoU 1"
                assert p_cat[int(ids[0])] == s["category_id"]
                n_segments += 1
        # the dataset against itself and against the truth: PQ 100
        cats = json.loads((ds / "categories.json").read_text())
        r = pq_against(ds / "annotations" / f"panoptic_{split}.json", ds / "panoptic" / split,
                       ds / "annotations" / f"panoptic_{split}.json", ds / "panoptic" / split, cats)
        assert r["pq"] == pytest.approx(1.0)
    assert n_segments > 40
    cats = ClassMap.load("demo").categories()
    things = {cats.name_of(s["category_id"]) for p in pans.values() for a in p["annotations"] for s in a["segments_info"]
              if cats.by_id[s["category_id"]].isthing}
    assert things == set(DEMO_CLASSES)
    d = yaml.safe_load((ds / "dataset.yaml").read_text())
    assert d["stuff_of_custom_images"]["images_by_source"] == {"truth": 12}
    # the panopticapi-compatible evaluator of the project, when present, agrees
    try:
        from panoptic_detr.evaluation.panoptic_quality import pq_compute
    except ImportError:
        return
    for split in ("train", "val"):
        res = pq_compute(ds / "annotations" / f"panoptic_{split}.json", ds / "panoptic" / split,
                         ds / "annotations" / f"panoptic_{split}.json", ds / "panoptic" / split)
        assert res["All"]["pq"] == pytest.approx(1.0)


def test_base_classes_and_cli(tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["synth", str(out), "--images", "5", "--classes", "base", "--size", "96x128", "--seed", "1", "--quiet"]) == 0
    assert "prepare" in capsys.readouterr().out
    folders = sorted(p.name for p in (out / "things").iterdir())
    assert "vehicle_(car_truck)" in folders and len(folders) == len(BASE_CLASSES)
    assert main(["synth", str(out), "--images", "5", "--classes", "base", "--size", "96x128", "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "x"), "--images", "2", "--size", "big"]) == 2
