"""Figures 3 and 4: where the queries look over many images, which queries fired."""

import numpy as np
import pytest

from explain_support import FIRING, SHORT_SIDE, explanation, shared_model, scene, titles
from panoptic_detr.engine.explain import crops_for_queries, query_boxes
from panoptic_detr.viz.figures import query_grid_shape
from panoptic_detr.viz.queries import active_queries_figure, box_size_colors, query_boxes_figure


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
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["small box", "large, horizontal box", "large, vertical box"]
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
