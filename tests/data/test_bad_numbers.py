"""Issue 18, data side: numbers that crashed or hung prepare / dataset-stats, undecodable
images, class-map names no input has, and empty splits. Each case is built in a fixture;
the docstrings say which real file it stands for."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from panoptic_detr.cli import main
from panoptic_detr.data.formats.coco_panoptic import id2rgb
from prep_helpers import check_prepared, one_line_error, rect, write_export, write_image

W, H = 24, 16


def run_prepare(capsys, out: Path, *args: str, class_map: str = "demo"):
    code = main(["prepare", "--class-map", class_map, "--out", str(out), "--quiet", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def export(folder: Path, n: int = 2, **ann_extra) -> Path:
    imgs = [{"id": i, "file_name": f"img_{i:03d}.png", "width": W, "height": H} for i in range(1, n + 1)]
    anns = [{"id": 10 + i, "image_id": i, "category": "aac_blocks", "segmentation": [rect(2, 2, 10, 10)],
             "bbox": [2, 2, 8, 8], "area": 64.0, **ann_extra} for i in range(1, n + 1)]
    return write_export(folder, imgs, anns, ["aac_blocks"])


def edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))  # json writes NaN / Infinity as Python's json reads them


@pytest.mark.parametrize("bbox, words", [
    ([2, 2, float("nan"), 8], "bbox [2, 2, nan, 8] has a non-finite coordinate"),
    ([2, float("inf"), 8, 8], "bbox [2, inf, 8, 8] has a non-finite coordinate"),
    ([2, 2, -8, 8], "bbox [2, 2, -8, 8] has a negative width or height"),
])
def test_bad_bbox_of_a_box_only_annotation(tmp_path, capsys, bbox, words):
    """A box-only COCO annotation (`segmentation: []`) whose bbox holds NaN (a script that
    divided by zero) made pycocotools grow to ~19 GB; a negative width (x1 - x0 of swapped
    corners) was called "zero area". Both are one error line now, before pycocotools."""
    js = export(tmp_path / "exp")
    edit(js, lambda d: d["annotations"][1].update(segmentation=[], bbox=bbox))
    code, _, err = run_prepare(capsys, tmp_path / "ds", "--things", str(js))
    one_line_error(code, err, tmp_path / "ds", str(js), "image id 2 annotation 12", words)


def test_huge_finite_box_is_clipped_not_rasterised_whole(tmp_path, capsys):
    """A box of 1e12 pixels (a unit mix-up) is clipped to the image before pycocotools,
    whose rasteriser walks every boundary pixel: it fills the image, in milliseconds."""
    js = export(tmp_path / "exp")
    edit(js, lambda d: d["annotations"][1].update(segmentation=[], bbox=[-1e12, -1e12, 2e12, 2e12]))
    code, _, err = run_prepare(capsys, tmp_path / "ds", "--things", str(js), "--val-ratio", "0")
    assert code == 0, err
    pans = check_prepared(tmp_path / "ds")
    areas = sorted(s["area"] for a in pans["train"]["annotations"] for s in a["segments_info"])
    assert areas == [64, W * H]


def test_infinite_integer_fields(tmp_path, capsys):
    """`Infinity` in integer fields (a COCO image width, a labelme imageWidth, a panoptic
    segment id) printed an OverflowError traceback; each is one error line now."""
    js = export(tmp_path / "exp")
    edit(js, lambda d: d["images"][0].update(width=float("inf")))
    code, _, err = run_prepare(capsys, tmp_path / "ds", "--things", str(js))
    one_line_error(code, err, tmp_path / "ds", str(js), "image id 1", "missing or invalid width/height")

    lm = tmp_path / "lm"
    write_image(lm / "a.png", W, H)
    (lm / "a.json").write_text(json.dumps({"imagePath": "a.png", "imageWidth": float("inf"), "imageHeight": H,
                                           "shapes": []}))
    code, _, err = run_prepare(capsys, tmp_path / "ds", "--labelme", str(lm))
    one_line_error(code, err, tmp_path / "ds", str(lm / "a.json"), "missing or invalid imageWidth/imageHeight")

    pan = tmp_path / "pan"
    (pan / "png").mkdir(parents=True)
    write_image(pan / "img" / "a.jpg", 8, 6)
    Image.fromarray(id2rgb(np.full((6, 8), 5))).save(pan / "png" / "a.png")
    (pan / "panoptic.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
        "annotations": [{"image_id": 1, "file_name": "a.png",
                         "segments_info": [{"id": float("inf"), "category_id": 187, "iscrowd": 0}]}],
        "categories": [{"id": 187, "name": "sky-other-merged", "isthing": 0}]}))
    code, _, err = run_prepare(capsys, tmp_path / "ds", "--coco-panoptic", str(pan / "panoptic.json"),
                               str(pan / "png"), str(pan / "img"))
    one_line_error(code, err, tmp_path / "ds", "panoptic.json", "image id 1", "segment #0 has a non-integer id")


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path, capsys, fmt):
    """An interrupted download leaves an image whose header is whole but whose data stops
    half way: it was copied into the dataset and `--check` said "check passed". Every
    image is decoded now (verify + a load) and reported as a missing one is."""
    ext = "png" if fmt == "PNG" else "jpg"
    imgs = [{"id": i, "file_name": f"img_{i}.{ext}", "width": 64, "height": 48} for i in (1, 2)]
    anns = [{"image_id": i, "category": "aac_blocks", "segmentation": [rect(2, 2, 10, 10)], "bbox": [2, 2, 8, 8],
             "area": 64} for i in (1, 2)]
    js = write_export(tmp_path / "exp", imgs, anns, ["aac_blocks"], make_images=False)
    rng = np.random.default_rng(0)
    (tmp_path / "exp" / "images").mkdir()
    for i in (1, 2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "exp" / "images" / f"img_{i}.{ext}")
    truncate(tmp_path / "exp" / "images" / f"img_2.{ext}", 0.5)
    words = [str(js), "image id 2", f"img_2.{ext}", "is truncated or corrupt"]
    code, _, err = run_prepare(capsys, tmp_path / "ds", "--things", str(js))
    one_line_error(code, err, tmp_path / "ds", *words)
    code, out, err = run_prepare(capsys, tmp_path / "ds", "--things", str(js), "--check")
    problems = [l for l in err.splitlines() if l.startswith("problem: ")]
    assert code == 2 and "check passed" not in out and len(problems) == 1
    assert all(w in problems[0] for w in words), problems


def test_dataset_stats_segment_without_category_id(tmp_path, capsys):
    """A hand-edited panoptic JSON with a segment lacking `category_id` gave dataset-stats
    a KeyError traceback; now one error line naming the file, image and segment."""
    js = export(tmp_path / "exp")
    ds = tmp_path / "ds"
    assert run_prepare(capsys, ds, "--things", str(js), "--val-ratio", "0")[0] == 0
    pan = ds / "annotations" / "panoptic_train.json"
    edit(pan, lambda d: d["annotations"][0]["segments_info"][0].pop("category_id"))
    code = main(["dataset-stats", str(ds)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {pan}: image id 1 segment 1: no category_id"]


def test_stuff_group_name_the_input_does_not_have(tmp_path, capsys):
    """A class map whose stuff group lists a misspelt COCO name ('gravle') left the group
    silently empty; a warning now names the class-map file, the group and the name."""
    pan = tmp_path / "pan"
    (pan / "png").mkdir(parents=True)
    write_image(pan / "img" / "a.jpg", 8, 6)
    m = np.full((6, 8), 5)
    m[3:] = 6
    Image.fromarray(id2rgb(m)).save(pan / "png" / "a.png")
    (pan / "panoptic.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 6}],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": 5, "category_id": 187, "iscrowd": 0}, {"id": 6, "category_id": 144, "iscrowd": 0}]}],
        "categories": [{"id": 187, "name": "sky-other-merged", "isthing": 0},
                       {"id": 144, "name": "gravel", "isthing": 0}]}))
    cmap = tmp_path / "map.yaml"
    cmap.write_text(yaml.safe_dump({"things": ["person"], "stuff": {"sky": ["sky-other-merged"],
                                                                     "ground": ["gravle", "gravel"]}}))
    code, out, err = run_prepare(capsys, tmp_path / "ds", "--coco-panoptic", str(pan / "panoptic.json"),
                                 str(pan / "png"), str(pan / "img"), "--val-ratio", "0", class_map=str(cmap))
    assert code == 0, err
    warnings = [l for l in err.splitlines() if l.startswith("warning: ")]
    assert len(warnings) == 1, err
    assert str(cmap) in warnings[0] and "stuff group 'ground' lists 'gravle'" in warnings[0]
    assert str(pan / "panoptic.json") in warnings[0]


def test_empty_val_split_warns_and_val_ratio_one_makes_an_evaluation_set(tmp_path, capsys):
    """One labelled image with the default --val-ratio gave "1 train + 0 val" silently (and
    evaluate then scored PQ 0); prepare warns now. --val-ratio 1.0 prepares an
    evaluation-only set (a customer's hold-out images) with no warning."""
    js = export(tmp_path / "exp", n=1)
    code, out, err = run_prepare(capsys, tmp_path / "ds", "--things", str(js))
    assert code == 0 and "1 train + 0 val" in out
    assert f"warning: {tmp_path / 'ds'}: the val split is empty (1 image(s) in all, --val-ratio 0.2)" in err
    assert "--val-ratio 1.0" in err

    js = export(tmp_path / "exp3", n=3)
    code, out, err = run_prepare(capsys, tmp_path / "ds3", "--things", str(js), "--val-ratio", "1.0")
    assert code == 0 and "0 train + 3 val" in out and "warning" not in err, err
    pans = check_prepared(tmp_path / "ds3")
    assert len(pans["val"]["images"]) == 3 and not pans["train"]["images"]
    assert yaml.safe_load((tmp_path / "ds3" / "dataset.yaml").read_text())["split"]["val"] == 3
    code, _, err = run_prepare(capsys, tmp_path / "ds4", "--things", str(js), "--val-ratio", "1.5")
    one_line_error(code, err, tmp_path / "ds4", "--val-ratio must be in [0, 1]")
