"""Issue 18, data side: annotation-tool conventions of real exports (labelme, CVAT, COCO).

Each test builds the situation in a fixture; its docstring says which real-world export
it stands for.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from panoptic_detr.cli import main
from prep_helpers import check_prepared, one_line_error, read_png_ids, rect, write_export, write_image

W, H = 40, 30


def run_prepare(capsys, out: Path, *args: str):
    """The CLI on one-image inputs (all in train: --val-ratio 0 asks for no val split)."""
    code = main(["prepare", "--out", str(out), "--quiet", "--val-ratio", "0", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def class_map(tmp_path: Path, things=("a", "b"), stuff=None) -> Path:
    p = tmp_path / "class-map.yaml"
    p.write_text(yaml.safe_dump({"things": list(things), "stuff": stuff or {"ground": ["ground"]}}, sort_keys=False))
    return p


def labelme_file(folder: Path, name: str, shapes: list[dict], w: int = W, h: int = H) -> Path:
    write_image(folder / f"{name}.png", w, h)
    js = folder / f"{name}.json"
    js.write_text(json.dumps({"version": "5.4.1", "flags": {}, "imagePath": f"{name}.png", "imageData": None,
                              "imageWidth": w, "imageHeight": h, "shapes": shapes}))
    return js


def shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "shape_type": shape_type, "flags": {}}


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def prepared_map(ds: Path) -> tuple[np.ndarray, dict]:
    """(id map, {segment id: category name}) of the only image of a prepared dataset."""
    pans = check_prepared(ds)
    cats = {c["id"]: c["name"] for c in json.loads((ds / "categories.json").read_text())}
    for split, pan in pans.items():
        for a in pan["annotations"]:
            ids = read_png_ids(ds / "panoptic" / split / a["file_name"])
            return ids, {s["id"]: (cats[s["category_id"]], s["iscrowd"]) for s in a["segments_info"]}
    raise AssertionError("no image")


def test_labelme_ignore_background_groups_and_drawn_shapes(tmp_path, capsys):
    """labelme's own conventions (examples/semantic_segmentation, labelme2voc.py, the wheel
    example of labelmeai/examples): `__ignore__` regions are VOID (255 in labelme2voc's
    PNGs); `_background_` is class 0, so a `_background_` shape drawn over an object cuts a
    hole in it; shapes sharing a label and a group_id are one instance, painted in file
    order (a same-group shape inside another is no hole); circles, lines, linestrips and
    points are drawn as `labelme.utils.shape_to_mask` draws them."""
    d = tmp_path / "lm"
    labelme_file(d, "site", [
        shape("ground", box(0, 0, 40, 30)),  # stuff everywhere
        shape("a", box(2, 2, 20, 20), group_id=1),
        shape("_background_", box(8, 8, 12, 12)),  # a hole in 'a'
        shape("b", box(14, 14, 24, 24)),  # over 'a'
        shape("a", box(22, 2, 30, 10), group_id=1),  # 'a' again: the same instance
        shape("b", box(32, 2, 39, 12), group_id=7),
        shape("b", box(34, 4, 36, 6), group_id=7),  # inside its group mate: no hole
        shape("__ignore__", box(30, 18, 38, 26)),  # VOID
        shape("a", [[3, 26], [12, 26]], "line"),  # 10 px wide as labelme draws it
        shape("b", [[26, 26], [27, 26]], "circle"),
        shape("a", [[18, 27]], "point"),
    ])
    ds = tmp_path / "ds"
    code, out, err = run_prepare(capsys, ds, "--class-map", str(class_map(tmp_path)), "--labelme", str(d))
    assert code == 0, err
    ids, segs = prepared_map(ds)
    name = {sid: n for sid, (n, _) in segs.items()}
    a_segs = [s for s, n in name.items() if n == "a"]
    assert len(a_segs) == 3  # the group, the line, the point
    group = ids[3, 3]
    assert name[group] == "a" and ids[5, 25] == group  # both parts of group 1: one segment
    assert name[ids[10, 10]] == "ground"  # the _background_ hole shows the stuff
    assert name[ids[15, 15]] == "b"  # the later 'b' is over 'a'
    assert ids[5, 35] == ids[3, 33] and name[ids[5, 35]] == "b"  # same-group shape inside: no hole
    assert (ids[18:26, 30:38] == 0).all() and ids[17, 34] != 0  # __ignore__: VOID
    assert "_background_" not in name.values() and "__ignore__" not in name.values()
    line = ids == ids[26, 5]
    assert name[ids[26, 5]] == "a" and line[22:31, 3:13].all() and not line[20, 5]  # 10 px wide
    # the circle: exactly labelme's shape_to_mask (PIL ellipse with its outline)
    ref = Image.new("L", (W, H), 0)
    ImageDraw.Draw(ref).ellipse([25, 25, 27, 27], outline=1, fill=1)
    circle = ids == ids[26, 26]
    assert name[ids[26, 26]] == "b" and np.array_equal(circle, np.asarray(ref, dtype=bool))
    assert "warning" not in err


def test_labelme_unknown_shape_type_is_a_per_shape_error(tmp_path, capsys):
    """labelme forks write other shape types (e.g. 'cuboid', 'ellipse'): each is named in
    one error line, with the shape types that are read."""
    d = tmp_path / "lm"
    js = labelme_file(d, "x", [shape("a", box(2, 2, 9, 9)), shape("a", [[1, 1], [5, 5]], "ellipse")])
    ds = tmp_path / "ds"
    code, _, err = run_prepare(capsys, ds, "--class-map", str(class_map(tmp_path)), "--labelme", str(d))
    one_line_error(code, err, ds, str(js), "shape #1 ('a')", "unsupported shape_type 'ellipse'", "linestrip")


def cvat_brush_export(folder: Path, cvat: bool = True) -> Path:
    """One image with a polygon and a brush mask (RLE) marked crowd, as CVAT writes it."""
    m = np.zeros((H, W), np.uint8)
    m[10:20, 20:35] = 1
    counts, flat, run, cur = [], m.ravel(order="F"), 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            run, cur = 0, v
        run += 1
    counts.append(run)
    anns = [{"image_id": 1, "category": "a", "segmentation": [rect(2, 2, 12, 12)], "bbox": [2, 2, 10, 10], "area": 100.0},
            {"image_id": 1, "category": "a", "segmentation": {"size": [H, W], "counts": counts}, "iscrowd": 1,
             "bbox": [20, 10, 15, 10], "area": 150.0}]
    js = write_export(folder, [{"id": 1, "file_name": "img_001.png", "width": W, "height": H}], anns, ["a"])
    if not cvat:  # a plain COCO file: no CVAT attributes
        data = json.loads(js.read_text())
        for a in data["annotations"]:
            a.pop("attributes")
        js.write_text(json.dumps(data))
    return js


@pytest.mark.parametrize("cvat, flag, crowd_after, warned", [
    (True, None, 0, "1 RLE mask(s) marked iscrowd 1 read as ordinary instances"),
    (True, "keep", 1, None),
    (False, None, 1, None),
    (False, "instances", 0, "1 crowd annotation(s) (iscrowd 1) read as ordinary instances (--crowd instances)"),
])
def test_cvat_brush_masks_marked_crowd(tmp_path, capsys, cvat, flag, crowd_after, warned):
    """cvat-ai/cvat#7030 ("iscrowd always 1"): CVAT's COCO 1.0 export writes every
    brush-tool mask as RLE with iscrowd 1. Read as crowd, a team that labelled with the
    brush would train on nothing; so a CVAT export's crowd RLE masks are instances by
    default (counted warning), `--crowd keep` keeps them, and a plain COCO file (real
    crowds, no CVAT attributes) keeps its crowds unless `--crowd instances`."""
    js = cvat_brush_export(tmp_path / "exp", cvat)
    ds = tmp_path / "ds"
    extra = ["--crowd", flag] if flag else []
    code, out, err = run_prepare(capsys, ds, "--class-map", str(class_map(tmp_path)), "--things", str(js), *extra)
    assert code == 0, err
    ids, segs = prepared_map(ds)
    assert segs[ids[15, 25]] == ("a", crowd_after) and segs[ids[5, 5]] == ("a", 0)
    warnings = [l for l in err.splitlines() if l.startswith("warning: ")]
    if warned:
        assert len(warnings) == 1 and warned in warnings[0] and str(js) in warnings[0], err
    else:
        assert not warnings, err


def test_coco_empty_segmentation_fills_the_box(tmp_path, capsys):
    """Real CVAT / course exports carry `"segmentation": []` with a bbox (a box-only
    label): prepare fills the box, with a warning naming the annotation."""
    js = write_export(tmp_path / "exp", [{"id": 1, "file_name": "img_001.png", "width": W, "height": H}],
                      [{"id": 5, "image_id": 1, "category": "a", "segmentation": [], "bbox": [4, 6, 10, 8],
                        "area": 80.0}], ["a"])
    ds = tmp_path / "ds"
    code, out, err = run_prepare(capsys, ds, "--class-map", str(class_map(tmp_path)), "--things", str(js))
    assert code == 0, err
    ids, segs = prepared_map(ds)
    assert segs[ids[6, 4]] == ("a", 0) and (ids == ids[6, 4]).sum() == 80
    assert "annotation 5: no segmentation; its bbox is filled as a rectangle" in err


def test_annotation_id_listed_twice(tmp_path, capsys):
    """Exports merged by hand (two CVAT jobs concatenated) repeat annotation ids: an error,
    as repeated image ids are."""
    imgs = [{"id": i, "file_name": f"img_{i:03d}.png", "width": W, "height": H} for i in (1, 2)]
    anns = [{"id": 7, "image_id": i, "category": "a", "segmentation": [rect(2, 2, 9, 9)], "bbox": [2, 2, 7, 7],
             "area": 49.0} for i in (1, 2)]
    js = write_export(tmp_path / "exp", imgs, anns, ["a"])
    ds = tmp_path / "ds"
    code, _, err = run_prepare(capsys, ds, "--class-map", str(class_map(tmp_path)), "--things", str(js))
    one_line_error(code, err, ds, str(js), "image id 2 annotation 7: annotation id listed twice (also on image id 1)")


def test_labelme_mask_and_linestrip_shapes_and_bad_point_counts(tmp_path):
    """labelme >= 5.3 saves AI / brush masks as `shape_type: mask` (a base64 PNG over the
    box of its two points); linestrips are drawn 10 px wide; a circle with 3 points (a
    hand-edited file) is an error naming the shape."""
    import base64
    import io

    from panoptic_detr.data.formats.common import annotation_rle, check_geometry, decode_rle
    from panoptic_detr.data.formats.labelme import read_labelme_dir

    m = np.zeros((4, 6), np.uint8)
    m[1:3, 2:5] = 255
    buf = io.BytesIO()
    Image.fromarray(m).save(buf, format="PNG")
    mask_shape = dict(shape("a", [[10, 5], [15, 8]], "mask"), mask=base64.b64encode(buf.getvalue()).decode())
    d = tmp_path / "lm"
    labelme_file(d, "x", [mask_shape, shape("b", [[2, 20], [10, 20], [10, 28]], "linestrip"),
                          shape("b", [[1, 1], [2, 2], [3, 3]], "circle")])
    (item,), problems = read_labelme_dir(d)
    assert not problems and not item.problems
    mask, strip, circle = item.annotations
    got = decode_rle(annotation_rle(mask, H, W))
    assert got.sum() == 6 and got[6:8, 12:15].all()  # the PNG's 2x3 block, placed at (10, 5)
    got = decode_rle(annotation_rle(strip, H, W))
    assert got[20, 6] and got[24, 10] and got[16:25, 6].sum() >= 9  # 10 px wide
    errs, _ = check_geometry(circle, H, W)
    assert errs == ["annotation shape #2: circle shape needs 2 point(s), has 3"]
