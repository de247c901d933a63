import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from panoptic_detr.data.formats.coco_instances import read_things
from panoptic_detr.data.formats.coco_panoptic import check_png_ids, id2rgb, rgb2id, segments_from_id_map
from panoptic_detr.data.formats.common import Annotation, annotation_rle, check_geometry, decode_rle
from panoptic_detr.data.formats.labelme import read_labelme_dir
from panoptic_detr.errors import DataError
from prep_helpers import rect, write_export, write_image


def test_rgb_id_roundtrip_vectorised():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256**3, size=(7, 9))
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (7, 9, 3)
    assert np.array_equal(rgb2id(rgb), ids)
    assert rgb2id(np.array([1, 2, 3])) == 1 + 2 * 256 + 3 * 65536
    assert list(id2rgb(np.array(65536 * 3 + 256 * 2 + 1))) == [1, 2, 3]


def test_segments_from_id_map_small_and_large_ids():
    m = np.zeros((20, 30), np.int32)
    m[2:5, 3:9] = 4
    m[10:, :] = 1
    m[0, 29] = 7
    for scale in (1, 100003):
        st = segments_from_id_map(m * scale)
        assert st[4 * scale] == {"area": 18, "bbox": [3, 2, 6, 3]}
        assert st[1 * scale] == {"area": 300, "bbox": [0, 10, 30, 10]}
        assert st[7 * scale] == {"area": 1, "bbox": [29, 0, 1, 1]}
        assert 0 not in st


def test_check_png_ids():
    m = np.zeros((4, 4), np.int32)
    m[0, 0] = 5
    check_png_ids(m, [{"id": 5}], "x")
    with pytest.raises(DataError, match="not in segments_info.*\\[5\\]"):
        check_png_ids(m, [], "x.json: image id 1")
    with pytest.raises(DataError, match="absent from the PNG"):
        check_png_ids(m, [{"id": 5}, {"id": 6}], "x")


def test_geometry_checks_and_masks():
    ok = Annotation(1, "a", "polygons", [rect(1, 1, 5, 4)])
    assert check_geometry(ok, 10, 10) == ([], [])
    assert decode_rle(annotation_rle(ok, 10, 10)).sum() == 12
    two = Annotation(2, "a", "polygons", [[1, 1, 5, 5]])
    errs, _ = check_geometry(two, 10, 10)
    assert errs and "fewer than 3" in errs[0] and "annotation 2" in errs[0]
    out = Annotation(3, "a", "polygons", [rect(-5, 2, 4, 6)])
    errs, warns = check_geometry(out, 10, 10)
    assert not errs and "clipped" in warns[0]
    assert decode_rle(annotation_rle(out, 10, 10)).sum() == 16
    gone = Annotation(4, "a", "polygons", [rect(20, 20, 30, 30)])
    errs, warns = check_geometry(gone, 10, 10)
    assert not errs and "outside" in warns[0] and gone.data == []
    flat = Annotation(5, "a", "polygons", [[1, 1, 5, 1, 9, 1]])
    errs, warns = check_geometry(flat, 10, 10)
    assert not errs and "zero area" in warns[0]
    rle = Annotation(6, "a", "rle", {"size": [8, 10], "counts": [80]})
    errs, _ = check_geometry(rle, 10, 10)
    assert "RLE size" in errs[0]


def test_read_coco_export_rle_kinds(tmp_path):
    from pycocotools import mask as mu

    m = np.zeros((12, 16), np.uint8, order="F")
    m[2:6, 3:9] = 1
    comp = mu.encode(m)
    comp["counts"] = comp["counts"].decode()
    unc = {"size": [12, 16], "counts": [30, 4, 8, 4, 8, 4, 134]}
    write_export(
        tmp_path / "exp",
        [{"id": 1, "file_name": "a.png", "width": 16, "height": 12}],
        [
            {"image_id": 1, "category": "x", "segmentation": comp, "bbox": [3.0, 2.0, 6.0, 4.0], "area": 24.0},
            {"image_id": 1, "category": "x", "segmentation": unc, "iscrowd": 1, "bbox": [2, 6, 3, 4], "area": 12},
            {"image_id": 1, "category": "x", "segmentation": rect(0, 0, 2, 2), "bbox": [0, 0, 2, 2], "area": 4},
        ],
        ["x"],
    )
    items, problems = read_things(tmp_path / "exp" / "coco.json", crowd="keep")
    assert not problems and len(items) == 1
    kinds = [a.kind for a in items[0].annotations]
    assert kinds == ["rle", "rle", "polygons"]
    assert decode_rle(annotation_rle(items[0].annotations[0], 12, 16)).sum() == 24
    assert decode_rle(annotation_rle(items[0].annotations[1], 12, 16)).sum() == 12
    assert items[0].annotations[1].iscrowd == 1
    # the default reads a CVAT export's crowd RLE as an instance, with a counted warning
    warns = []
    items, _ = read_things(tmp_path / "exp" / "coco.json", warnings=warns)
    assert items[0].annotations[1].iscrowd == 0
    assert len(warns) == 1 and "1 RLE mask(s) marked iscrowd 1" in warns[0]


def test_labelme_reader(tmp_path):
    d = tmp_path / "lm"
    write_image(d / "one.jpg", 40, 30)
    (d / "one.json").write_text(json.dumps({
        "version": "5.2.1", "flags": {}, "imagePath": "one.jpg", "imageData": None, "imageHeight": 30, "imageWidth": 40,
        "shapes": [
            {"label": "a", "points": [[1, 1], [10, 1], [10, 8]], "shape_type": "polygon", "group_id": None, "flags": {}},
            {"label": "b", "points": [[20, 20], [12, 12]], "shape_type": "rectangle", "group_id": None, "flags": {}},
            {"label": "b", "points": [[30, 5], [34, 5]], "shape_type": "circle", "group_id": None, "flags": {}},
            {"label": "a", "points": [[30, 20], [38, 20], [38, 28]], "shape_type": "polygon", "group_id": 1, "flags": {}},
            {"label": "a", "points": [[20, 25], [25, 25], [25, 29]], "shape_type": "polygon", "group_id": 1, "flags": {}},
            {"label": "a", "points": [[5, 5]], "shape_type": "point", "group_id": None, "flags": {}},
        ]}))
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 20, 30)).save(buf, format="PNG")
    (d / "sub").mkdir()
    (d / "sub" / "two.json").write_text(json.dumps({
        "imagePath": "../missing/two.png", "imageData": base64.b64encode(buf.getvalue()).decode(),
        "imageHeight": 10, "imageWidth": 20, "shapes": []}))
    items, problems = read_labelme_dir(d)
    assert not problems
    one, two = items
    assert one.name == "one.jpg" and one.image_path == d / "one.jpg"
    assert [a.label for a in one.annotations] == ["a", "b", "b", "a", "a", "a"]
    assert [a.kind for a in one.annotations] == ["polygons", "polygons", "shape", "polygons", "polygons", "shape"]
    # group_id 1: two shapes of one instance (painted as one segment by prepare)
    assert one.annotations[3].instance == one.annotations[4].instance == ("a", 1)
    assert one.annotations[0].instance is None
    assert decode_rle(annotation_rle(one.annotations[1], 30, 40)).sum() == 64  # 8x8 rectangle
    # a point is drawn as labelme draws it: a disc of radius 5 (PIL, outline included)
    point = decode_rle(annotation_rle(one.annotations[5], 30, 40))
    assert point.sum() == 97 and point[5, 5] and point[0, 5] and not point[0, 0]
    assert two.image_path is None and two.image_bytes is not None and two.name == "two.png"
