"""Figures 5 and 6: the mask head's attention maps, the binary masks and the argmax."""

import numpy as np
import torch

from explain_support import FIRING, SHORT_SIDE, THRESHOLD, explanation, shared_model, scene, titles
from panoptic_detr.engine.predict import Predictor
from panoptic_detr.viz.masks import binary_masks_figure, colorize_ids, mask_attention_figure


def test_mask_attention_sums_to_one_over_heads_and_positions():
    e = explanation()
    Q, nheads = e.num_queries, e.config.nheads
    assert e.mask_attention.shape == (Q, nheads, *e.feature_size)
    torch.testing.assert_close(e.mask_attention.flatten(1).sum(-1), torch.ones(Q), atol=1e-5, rtol=0)
    for q in e.keep.tolist():
        m = e.mask_attention_maps(q)
        assert m.shape == (nheads, *e.valid_size)


def test_mask_attention_figure_rows_and_heads():
    e = explanation()
    q = e.keep.tolist()
    att = np.stack([e.mask_attention_maps(i).numpy() for i in q])
    fig = mask_attention_figure(e.image, att, e.boxes_xyxy(), [int(e.labels[i]) for i in q],
                                [float(e.scores[i]) for i in q], q, e.categories, extent=e.grid_extent())
    t = titles(fig)
    assert any("8 heads per object at stride 32" in s for s in t)
    # per object: the object panel, its 8 head maps side by side, a colourbar
    assert len(fig.get_axes()) == len(q) * 3
    heads = fig.get_axes()[1]
    assert [x.get_text() for x in heads.texts] == [f"head {h}" for h in range(1, 9)]
    assert len(heads.get_images()) == 8
    np.testing.assert_array_equal(heads.get_images()[3].get_array(), att[0, 3])
    row_labels = [ax.get_ylabel() for ax in fig.get_axes() if "(q" in ax.get_ylabel()]
    assert len(row_labels) == len(q)


def test_masks_and_argmax_equal_predict():
    e = explanation()
    H, W = e.original_size
    # the masks of the kept queries are the full forward's
    model = shared_model()
    pred = Predictor(model, threshold=THRESHOLD, short_side=SHORT_SIDE)
    x, _ = pred.preprocess(scene())
    with torch.inference_mode():
        full = model(x[None])["pred_masks"][0]
    torch.testing.assert_close(e.mask_logits, full[e.keep], atol=1e-4, rtol=1e-4)
    masks = e.binary_masks()
    assert masks.shape == (len(FIRING), H, W) and masks.dtype == bool
    # the argmax map is predict's panoptic map, segment for segment
    out = pred(scene())
    np.testing.assert_array_equal(e.panoptic.id_map_numpy(), out.id_map_numpy())
    assert e.panoptic.segments_info == out.segments_info
    assert len(out.segments_info) >= 2


def test_binary_masks_figure():
    e = explanation()
    q = e.keep.tolist()
    ids = e.panoptic.id_map_numpy()
    fig = binary_masks_figure(e.image, e.binary_masks(), [int(e.labels[i]) for i in q],
                              [float(e.scores[i]) for i in q], q, ids, e.panoptic.segments_info, None, e.categories)
    t = titles(fig)
    for i in q:
        assert any(s.startswith(f"q{i} {e.categories.name_of(FIRING[i])}") for s in t)
    assert any("pixel-wise argmax" in s for s in t)
    assert any("final panoptic segmentation" in s for s in t)
    # the argmax panel shows the id map: one colour per segment, void black
    argmax_ax = next(ax for ax in fig.get_axes() if "pixel-wise argmax" in ax.get_title())
    shown = argmax_ax.get_images()[0].get_array()
    colours = colorize_ids(ids, {s["id"]: (s["id"] / 10, 0.5, 0.5) for s in e.panoptic.segments_info})
    assert shown.shape == colours.shape
    legend = [t.get_text() for t in argmax_ax.get_legend().get_texts()]
    assert legend[-1] == "0: void" and len(legend) == len(e.panoptic.segments_info) + 1


def test_binary_masks_figure_without_objects():
    img = scene()
    H, W = img.shape[:2]
    fig = binary_masks_figure(img, np.zeros((0, H, W), bool), [], [], [], np.zeros((H, W), np.int32), [])
    assert any("no object" in t.get_text() for ax in fig.get_axes() for t in ax.texts)
