"""Figures 1 and 2: encoder self-attention of reference points, decoder attention per object."""

import numpy as np
import pytest
import torch

from explain_support import FIRING, explanation, scene, titles
from panoptic_detr.viz.attention import decoder_attention_figure, encoder_attention_figure, grid_extent
from panoptic_detr.viz.figures import render_rgb


def test_attention_shapes_and_rows_sum_to_one():
    e = explanation()
    h, w = e.feature_size
    assert e.valid_size == (h, w)  # one image alone: no padding
    assert e.encoder_attention.shape == (h * w, h * w)
    assert e.decoder_attention.shape == (e.num_queries, h * w)
    torch.testing.assert_close(e.encoder_attention.sum(-1), torch.ones(h * w), atol=1e-5, rtol=0)
    torch.testing.assert_close(e.decoder_attention.sum(-1), torch.ones(e.num_queries), atol=1e-5, rtol=0)
    # the processed input is 160 x 213: a ceil(160/32) x ceil(213/32) grid
    assert e.processed_size == (160, 213) and (h, w) == (5, 7)


def test_reference_points_map_to_their_cell():
    e = explanation()
    H, W = e.original_size
    h, w = e.feature_size
    assert e.token_at(0, 0) == 0
    assert e.token_at(W - 1, H - 1) == h * w - 1
    # a point in the middle of cell (row 2, col 3)
    ch, cw = e.cell_size
    assert e.token_at(3.5 * cw, 2.5 * ch) == 2 * w + 3
    m = e.encoder_map(3.5 * cw, 2.5 * ch)
    assert m.shape == (h, w)
    torch.testing.assert_close(m.flatten(), e.encoder_attention[2 * w + 3])
    assert float(m.sum()) == pytest.approx(1.0, abs=1e-5)
    # the grid's extent on the original image covers it (the last cells overhang)
    left, right, bottom, top = e.grid_extent()
    assert left == 0 and top == 0 and right >= W and bottom >= H and right - W < cw and bottom - H < ch + 1e-9


def test_padding_is_cropped_from_the_maps():
    e = explanation()
    h, w = e.feature_size
    e2 = type(e)(**{**e.__dict__, "valid_size": (h - 1, w - 2)})
    assert e2.decoder_map(next(iter(FIRING))).shape == (h - 1, w - 2)
    assert e2.encoder_map(10_000, 10_000).shape == (h - 1, w - 2)
    assert e2.token_at(10_000, 10_000) == (h - 2) * w + (w - 3)  # clamped to the last valid cell


def test_encoder_figure():
    e = explanation()
    points = e.auto_points()
    assert 1 <= len(points) <= 4
    maps = [e.encoder_map(x, y).numpy() for x, y in points]
    fig = encoder_attention_figure(e.image, maps, points, extent=e.grid_extent())
    t = titles(fig)
    assert any("Encoder self-attention" in s for s in t)
    assert sum(s.startswith("point ") for s in t) == len(points)
    # image panel + one map and one colourbar per point
    assert len(fig.get_axes()) == 1 + 2 * len(points)
    labels = [ax.get_ylabel() for ax in fig.get_axes()]
    assert labels.count("attention weight") == len(points)
    assert render_rgb(fig).std() > 10


def test_encoder_figure_checks_its_inputs():
    with pytest.raises(ValueError):
        encoder_attention_figure(scene(), [np.ones((2, 2))], [(1, 1), (2, 2)])
    # no point at all still draws the image
    fig = encoder_attention_figure(scene(), [], [])
    assert len(fig.get_axes()) == 1


def test_decoder_figure_one_panel_per_object():
    e = explanation()
    q = e.keep.tolist()
    assert q == sorted(FIRING)
    boxes = e.boxes_xyxy()
    assert boxes.shape == (len(q), 4)
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
    fig = decoder_attention_figure(e.image, [e.decoder_map(i).numpy() for i in q], boxes,
                                   [int(e.labels[i]) for i in q], [float(e.scores[i]) for i in q], q,
                                   e.categories, extent=e.grid_extent())
    t = titles(fig)
    for i in q:
        assert any(s.startswith(f"query {i}: {e.categories.name_of(FIRING[i])}") for s in t)
    assert len(fig.get_axes()) == 2 * len(q)


def test_grid_extent_default_stretches_over_the_image():
    assert grid_extent((100, 200), (4, 8)) == (0.0, 200.0, 100.0, 0.0)
    assert grid_extent((100, 200), (4, 8), (32.0, 32.0)) == (0.0, 256.0, 128.0, 0.0)


def test_decoder_figure_shows_every_query_above_the_threshold_and_marks_duplicates():
    """Figure 2 once showed 12 of 16 detected objects under a caption saying "every": now
    all of them, with the ones --dedup dropped marked."""
    import dataclasses

    import torch

    from explain_support import explanation
    from panoptic_detr.engine.explain_states import QueryStates
    from panoptic_detr.viz.explain_figures import captions, render_figures

    e = explanation()
    Q = e.num_queries
    state = ["kept"] * 16 + ["threshold"] * (Q - 16)
    state[3] = "duplicate"
    many = dataclasses.replace(e, keep=torch.arange(16), mask_attention=None, panoptic=None,
                               states=QueryStates(state, [0] * Q, [False] * Q))
    figs = render_figures(many, points=[(10.0, 10.0)])
    panels = [t for t in titles(figs["decoder"]) if t.startswith("query ")]
    assert len(panels) == 16
    assert any("all 16 queries above the threshold" in t for t in titles(figs["decoder"]))
    assert [t for t in panels if "dropped by --dedup" in t] == [next(t for t in panels if t.startswith("query 3:"))]
    caption = captions(many)["decoder"][2]
    assert "all 16 queries" in caption and "Query 3 was dropped as a duplicate by --dedup" in caption
