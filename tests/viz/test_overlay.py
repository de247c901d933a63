"""Overlay drawing: shape, dtype, colours where segments are, JPEG output."""

import numpy as np
import torch
from PIL import Image

from panoptic_detr.data.categories import Category, CategoryList
from panoptic_detr.viz.colors import category_color, text_color_for
from panoptic_detr.viz.overlay import boundaries, label_point, overlay, save_jpeg

CATS = CategoryList([Category(1, "rebar", True, (255, 0, 0)), Category(2, "ground", False, (0, 255, 0))])


def scene():
    img = np.full((60, 80, 3), 100, np.uint8)
    ids = np.zeros((60, 80), np.int32)
    ids[10:30, 10:40] = 1  # thing
    ids[40:, :] = 2  # stuff
    info = [
        {"id": 1, "category_id": 1, "isthing": True, "score": 0.97, "bbox": [10, 10, 30, 20], "area": 600},
        {"id": 2, "category_id": 2, "isthing": False, "score": 0.9, "bbox": [0, 40, 80, 20], "area": 1600},
    ]
    return img, ids, info


def test_overlay_shape_dtype_and_tint():
    img, ids, info = scene()
    out = overlay(img, ids, info, CATS, legend=False, labels=False, outlines=False)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[ids == 0] == img[ids == 0]).all()  # VOID untouched
    thing = out[ids == 1].astype(int)
    assert (thing[:, 0] > 150).all() and (thing[:, 1] < 100).all()  # reddish
    stuff = out[ids == 2].astype(int)
    assert (stuff[:, 1] > 150).all() and (stuff[:, 0] < 100).all()  # greenish


def test_overlay_with_outlines_labels_and_legend():
    img, ids, info = scene()
    out = overlay(img, torch.from_numpy(ids), info, CATS)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] >= 60 and out.shape[1] > 80  # legend panel on the right
    core = out[:60, :80]
    assert not np.array_equal(core[ids > 0], img[ids > 0])
    # the outline between the thing and VOID is white
    assert tuple(core[10, 25]) == (255, 255, 255)
    # a label was drawn around the thing's centre: some pixels differ from the plain tint
    plain = overlay(img, ids, info, CATS, legend=False, labels=False)
    assert not np.array_equal(core[12:28, 12:38], plain[12:28, 12:38])
    # the legend panel is not blank
    assert out[:, 80:].std() > 0


def test_overlay_without_categories_and_without_segments():
    img, ids, info = scene()
    out = overlay(img, ids, info, None)
    assert out.shape[0] >= 60 and out.dtype == np.uint8
    empty = overlay(img, np.zeros((60, 80), np.int32), [], CATS, legend=False)
    np.testing.assert_array_equal(empty, img)


def test_helpers(tmp_path):
    _, ids, info = scene()
    x, y = label_point(ids, 1, info[0]["bbox"])
    assert ids[y, x] == 1
    # concave shape: the centroid is outside, the label point is still inside
    c = np.zeros((20, 20), np.int32)
    c[0:3, :] = 5
    c[:, 0:3] = 5
    x, y = label_point(c, 5)
    assert c[y, x] == 5
    edges = boundaries(ids)
    assert edges[10, 20] and not edges[20, 20] and not edges[0, 0]
    assert category_color(1, CATS) == (255, 0, 0)
    assert category_color(99, CATS) == category_color(99)
    assert text_color_for((255, 255, 255)) == (0, 0, 0)
    img, ids, info = scene()
    path = tmp_path / "o.jpg"
    save_jpeg(path, overlay(img, ids, info, CATS))
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
