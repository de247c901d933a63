"""Every bad input of issue 3: one line naming the file and the item, exit 2, nothing written."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panoptic_detr.cli import main
from panoptic_detr.data.formats.coco_panoptic import id2rgb
from panoptic_detr.data.prepare import PrepareOptions, prepare
from prep_helpers import check_prepared, rect, write_export, write_image

W, H = 24, 16


def good_export(folder: Path, n: int = 3, cls: str = "aac_blocks") -> Path:
    imgs = [{"id": i, "file_name": f"img_{i:03d}.png", "width": W, "height": H} for i in range(1, n + 1)]
    anns = [{"id": 10 + i, "image_id": i, "category": cls, "segmentation": [rect(2, 2, 10, 10)],
             "bbox": [2, 2, 8, 8], "area": 64.0} for i in range(1, n + 1)]
    return write_export(folder, imgs, anns, [cls])


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def run_cli(capsys, out: Path, *inputs: str, extra=()):
    code = main(["prepare", "--class-map", "demo", "--out", str(out), "--quiet", *inputs, *extra])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_failed_cleanly(code, err, out: Path, *words):
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "temporary output left behind"


def test_missing_image(tmp_path, capsys):
    js = good_export(tmp_path / "exp")
    (tmp_path / "exp" / "images" / "img_002.png").unlink()
    code, _, err = run_cli(capsys, tmp_path / "ds", "--things", str(js))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(js), "image id 2", "img_002.png", "not found")


def test_unreadable_image(tmp_path, capsys):
    js = good_export(tmp_path / "exp")
    (tmp_path / "exp" / "images" / "img_003.png").write_text("not an image")
    code, _, err = run_cli(capsys, tmp_path / "ds", "--things", str(js))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(js), "image id 3", "cannot read image")


def test_image_size_differs(tmp_path, capsys):
    js = good_export(tmp_path / "exp")
    write_image(tmp_path / "exp" / "images" / "img_001.png", W + 1, H)
    code, _, err = run_cli(capsys, tmp_path / "ds", "--things", str(js))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(js), "image id 1", f"{W + 1}x{H}", f"{W}x{H}")


def test_polygon_with_two_points(tmp_path, capsys):
    js = good_export(tmp_path / "exp")
    edit_json(js, lambda d: d["annotations"][1].update(segmentation=[[1, 1, 5, 5]]))
    code, _, err = run_cli(capsys, tmp_path / "ds", "--things", str(js))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(js), "image id 2", "annotation 12", "fewer than 3")


def test_zero_area_and_outside_polygons_are_warnings(tmp_path, capsys):
    js = good_export(tmp_path / "exp")

    def fn(d):
        d["annotations"][0]["segmentation"] = [[1, 1, 5, 1, 9, 1]]  # zero area
        d["annotations"][1]["segmentation"] = [rect(-5, -5, 6, 6)]  # partly outside: clipped
        d["annotations"][2]["segmentation"] = [rect(100, 100, 120, 120)]  # entirely outside

    edit_json(js, fn)
    code, out, err = run_cli(capsys, tmp_path / "ds", "--things", str(js))
    assert code == 0
    assert "annotation 11" in err and "zero area" in err
    assert "annotation 12" in err and "clipped" in err
    assert "annotation 13" in err and "outside" in err
    pans = check_prepared(tmp_path / "ds")
    areas = {im["file_name"]: [s["area"] for s in a["segments_info"]]
             for p in pans.values() for im, a in zip(p["images"], p["annotations"])}
    assert areas == {"img_001.png": [], "img_002.png": [36], "img_003.png": []}
    assert "clipped" in (tmp_path / "ds" / "prepare-report.txt").read_text()


def test_unknown_category_lists_known(tmp_path, capsys):
    js = good_export(tmp_path / "exp", cls="aac_blockz")
    code, _, err = run_cli(capsys, tmp_path / "ds", "--things", str(js))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(js), "image id 1", "annotation 11", "unknown category 'aac_blockz'",
                          "known: aac_blocks, rcc_hume_pipes")


def test_duplicate_file_names_across_folders(tmp_path, capsys):
    a = good_export(tmp_path / "a")
    b = good_export(tmp_path / "b", n=1)
    code, _, err = run_cli(capsys, tmp_path / "ds", "--things", str(a), str(b))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(b), "image id 1", "duplicate file name 'img_001.png'", str(a))


@pytest.mark.parametrize("text, words", [('{"images": [{"id": 1', "invalid JSON"), ("", "invalid JSON"), ("[1, 2]", "not a COCO")])
def test_truncated_or_invalid_json(tmp_path, capsys, text, words):
    js = good_export(tmp_path / "exp")
    js.write_text(text)
    code, _, err = run_cli(capsys, tmp_path / "ds", "--things", str(js))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(js), words)


def _panoptic_set(root: Path, png_ids_extra: bool):
    (root / "png").mkdir(parents=True)
    write_image(root / "img" / "a.jpg", 8, 6)
    m = np.full((6, 8), 5, np.int64)
    if png_ids_extra:
        m[0, 0] = 77  # an id the JSON does not list
    Image.fromarray(id2rgb(m)).save(root / "png" / "a.png")
    js = root / "panoptic.json"
    js.write_text(json.dumps({
        "images": [{"id": 42, "file_name": "a.jpg", "width": 8, "height": 6}],
        "annotations": [{"image_id": 42, "file_name": "a.png", "segments_info": [{"id": 5, "category_id": 187, "iscrowd": 0}]}],
        "categories": [{"id": 187, "name": "sky-other-merged", "isthing": 0}]}))
    return js


def test_png_ids_do_not_match_segments_info(tmp_path, capsys):
    js = _panoptic_set(tmp_path / "pan", True)
    code, _, err = run_cli(capsys, tmp_path / "ds", "--coco-panoptic", str(js), str(tmp_path / "pan" / "png"),
                           str(tmp_path / "pan" / "img"))
    assert_failed_cleanly(code, err, tmp_path / "ds", str(js), "image id 42", "a.png", "[77]")


def test_check_lists_every_problem_and_writes_nothing(tmp_path, capsys):
    js = good_export(tmp_path / "exp", n=4)
    (tmp_path / "exp" / "images" / "img_002.png").unlink()
    edit_json(js, lambda d: d["annotations"][2].update(segmentation=[[1, 1]]))
    pan = _panoptic_set(tmp_path / "pan", True)
    code, out, err = run_cli(capsys, tmp_path / "ds", "--things", str(js), "--coco-panoptic", str(pan),
                             str(tmp_path / "pan" / "png"), str(tmp_path / "pan" / "img"), extra=["--check"])
    assert code == 2
    problems = [l for l in err.splitlines() if l.startswith("problem: ")]
    assert len(problems) == 3
    assert any("image id 2" in p and "not found" in p for p in problems)
    assert any("annotation 13" in p and "fewer than 3" in p for p in problems)
    assert any("image id 42" in p and "[77]" in p for p in problems)
    assert not (tmp_path / "ds").exists()
    # and a clean input passes
    js2 = good_export(tmp_path / "exp2")
    code, out, err = run_cli(capsys, tmp_path / "ds", "--things", str(js2), extra=["--check"])
    assert code == 0 and "check passed" in out and not (tmp_path / "ds").exists()


def test_skip_bad_skips_and_reports(tmp_path, capsys):
    js = good_export(tmp_path / "exp", n=4)
    (tmp_path / "exp" / "images" / "img_002.png").unlink()
    edit_json(js, lambda d: d["annotations"][2].update(segmentation=[[1, 1]]))
    pan = _panoptic_set(tmp_path / "pan", True)
    code, out, err = run_cli(capsys, tmp_path / "ds", "--things", str(js), "--coco-panoptic", str(pan),
                             str(tmp_path / "pan" / "png"), str(tmp_path / "pan" / "img"), extra=["--skip-bad"])
    assert code == 0, err
    assert "skipped 3 bad image(s)" in out
    report = (tmp_path / "ds" / "prepare-report.txt").read_text()
    for name in ("img_002.png", "img_003.png", "a.jpg"):
        assert name in report
    pans = check_prepared(tmp_path / "ds")
    kept = sorted(im["file_name"] for p in pans.values() for im in p["images"])
    assert kept == ["img_001.png", "img_004.png"]


def test_api_raises_one_line_error(tmp_path):
    js = good_export(tmp_path / "exp")
    (tmp_path / "exp" / "images" / "img_001.png").unlink()
    from panoptic_detr.errors import DataError

    with pytest.raises(DataError) as e:
        prepare(PrepareOptions("demo", tmp_path / "ds", things=[js], progress=False), log=lambda m: None)
    assert "\n" not in str(e.value) and "image id 1" in str(e.value)
    assert not (tmp_path / "ds").exists()
