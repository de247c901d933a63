"""Figures 3 and 4: where the queries look over many images, which queries fired."""

import numpy as np
import pytest

from explain_support import FIRING, SHORT_SIDE, explanation, shared_model, scene, titles
from panoptic_detr.engine.explain import crops_for_queries, query_boxes
from panoptic_detr.viz.figures import query_grid_shape
from panoptic_detr.viz.queries import BLUE, GREEN, RED, active_queries_figure, box_size_colors, query_boxes_figure


def test_box_size_colours():
    small, wide, tall = box_size_colors([0.05, 0.9, 0.2], [0.05, 0.3, 0.95])
    assert np.argmax(small) == 1  # green
    assert np.argmax(wide) == 0  # red
    assert np.argmax(tall) == 2  # blue
    c = box_size_colors(np.random.default_rng(0).random(50), np.random.default_rng(1).random(50))
    assert c.shape == (50, 3) and c.min() >= 0 and c.max() <= 1


@pytest.mark.parametrize("n,shape", [(100, (10, 10)), (20, (4, 5)), (300, (15, 20)), (1, (1, 1)), (7, (2, 4))])
def test_query_grid_shape(n, shape):
    assert query_grid_shape(n) == shape
    r, c = query_grid_shape(n)
    assert r * c >= n


def test_query_boxes_over_images():
    model = shared_model()
    items = crops_for_queries(scene(), 4)
    assert [name for name, _ in items][0] == "original"
    stats = query_boxes(model, items, short_side=SHORT_SIDE)
    Q = model.config.num_queries
    assert stats.boxes.shape == (4, Q, 4) and stats.scores.shape == (4, Q) and stats.labels.shape == (4, Q)
    assert np.all((stats.boxes >= 0) & (stats.boxes <= 1))
    # the first item is the image itself: its boxes are the explanation's
    np.testing.assert_allclose(stats.boxes[0], explanation().boxes.numpy(), atol=1e-5)


def test_query_boxes_figure_panels():
    rng = np.random.default_rng(0)
    boxes = rng.random((30, 20, 4))
    fig = query_boxes_figure(boxes, 12)
    t = titles(fig)
    assert any("Where the queries look" in s and "12 of 20 queries" in s and "30 images" in s for s in t)
    assert [s for s in t if s.startswith("query ")] == [f"query {q} (30 boxes)" for q in range(12)]
    ax0 = fig.get_axes()[0]
    assert "image height" in ax0.get_ylabel()
    assert len(ax0.collections[0].get_offsets()) == 30
    # the colour key shows the blends the dots have, drawn by the same function
    key = fig.get_axes()[-1].images[0].get_array()
    assert np.allclose(key[:, 0], GREEN) and np.allclose(key[-1, -1], RED) and np.allclose(key[0, -1], BLUE)
    pure = np.stack([GREEN, RED, BLUE])
    mid = key[key.shape[0] // 2, key.shape[1] // 3]
    assert np.abs(pure - mid).sum(1).min() > 0.2  # a blend, not one of the three pure colours
    assert "box size" in fig.get_axes()[-1].get_xlabel()
    with pytest.raises(ValueError):
        query_boxes_figure(boxes[0], 3)
    # low-confidence boxes can be dropped
    scores = np.zeros((30, 20))
    scores[:5] = 1
    fig = query_boxes_figure(boxes, [3], scores=scores, min_score=0.5)
    assert len(fig.get_axes()[0].collections[0].get_offsets()) == 5


def test_active_queries_figure():
    e = explanation()
    fired = e.kept()
    assert [f["query"] for f in fired] == sorted(FIRING)
    assert [f["category_id"] for f in fired] == [FIRING[q] for q in sorted(FIRING)]
    assert all(f["score"] > e.threshold for f in fired)
    # slots that did not fire are shaded by their best object probability, all below the threshold
    not_fired = np.setdiff1d(np.arange(e.num_queries), e.keep.numpy())
    assert e.object_scores.numpy()[not_fired].max() <= e.threshold
    fig = active_queries_figure(e.image, e.num_queries, fired, e.categories, e.object_scores.numpy(), e.threshold)
    t = titles(fig)
    assert any(f"{len(FIRING)} of 20 fired" in s for s in t)
    assert any("20 query slots (4x5)" in s for s in t)
    # one arrow from each fired slot to its object
    from matplotlib.patches import ConnectionPatch

    assert sum(isinstance(a, ConnectionPatch) for a in fig.artists) == len(FIRING)
    grid_ax = fig.get_axes()[0]
    texts = [t.get_text() for t in grid_ax.texts]
    for q in FIRING:
        assert f"{q}\n{e.categories.name_of(FIRING[q])}" in texts


def test_active_queries_labels_stay_inside_and_apart():
    """Boxes reaching past the image and piled on one spot: every tag lies inside the
    image axes, no two overlap, and the duplicates --dedup dropped are marked."""
    from matplotlib.transforms import Bbox

    e = explanation()
    H, W = e.original_size
    fired = [{"query": q, "category_id": 1 + q % 2, "score": 0.9 - q / 100, "state": "duplicate" if q in (7, 11) else "kept",
              "box": [W * 0.6 + q, -20.0 + q, W + 40.0, H * 0.5 + q]} for q in range(2, 14)]
    fig = active_queries_figure(e.image, e.num_queries, fired, e.categories, e.object_scores.numpy(), e.threshold)
    renderer = fig.canvas.get_renderer()
    ax_img = fig.get_axes()[1]
    frame = ax_img.get_window_extent(renderer)
    tags = [t for t in ax_img.texts if t.get_text().startswith("q")]
    assert len(tags) == len(fired)
    fig.canvas.draw()  # patches are sized on draw
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in tags]
    for b in boxes:
        assert frame.x0 - 1 <= b.x0 and b.x1 <= frame.x1 + 1 and frame.y0 - 1 <= b.y0 and b.y1 <= frame.y1 + 1
    for i in range(len(boxes)):
        for j in range(i):
            inter = Bbox.intersection(boxes[i], boxes[j])
            assert inter is None or inter.width * inter.height < 4, (tags[i].get_text(), tags[j].get_text())
    assert sum(" dup" in t.get_text() for t in tags) == 2
    assert any("2 dropped by --dedup" in s and "7, 11" in s for s in titles(fig))
    hatched = [p for p in fig.get_axes()[0].patches if p.get_hatch()]
    assert len(hatched) == 2
    for p in ax_img.patches:  # the boxes are clipped to the image
        x, y = p.get_xy()
        assert 0 <= x and 0 <= y and x + p.get_width() <= W + 1e-9 and y + p.get_height() <= H + 1e-9
