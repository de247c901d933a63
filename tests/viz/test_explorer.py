"""explorer.html's data (no browser): what the page embeds decodes to the attention captured
in Python within the stated quantisation error, query states, and the size budget."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import torch

from explain_support import FIRING, SHORT_SIDE, THRESHOLD, make_queries_fire, scene, shared_model
from panoptic_detr.viz.explorer_data import (
    MASK_LOGIT_STEP,
    ExplorerOptions,
    decode_array,
    dequantize_maps,
    pack_explorer,
    quantize_maps,
)


@functools.lru_cache(maxsize=None)
def full_explanation(dedup=None):
    """The firing model's explanation with every encoder layer per head."""
    from panoptic_detr.engine.explain import explain_image
    from panoptic_detr.engine.predict import Predictor

    predictor = Predictor(shared_model(), threshold=THRESHOLD, short_side=SHORT_SIDE, dedup=dedup)
    return explain_image(predictor, scene(), encoder_heads="all")


def decoded(blobs, name):
    return decode_array(blobs[name]).astype(np.float32)


def valid_tokens(expl):
    vh, vw = expl.valid_size
    return (np.arange(vh)[:, None] * expl.feature_size[1] + np.arange(vw)[None, :]).reshape(-1)


def within_quantisation(decoded_maps, truth):
    """Every value within max(map) / 510 (half a uint8 step) of the truth, map = last axis."""
    bound = truth.max(axis=-1, keepdims=True) / 510 + 1e-7
    return np.all(np.abs(decoded_maps - truth) <= bound)


def test_quantize_round_trip_error_is_half_a_step():
    rng = np.random.default_rng(0)
    maps = rng.dirichlet(np.ones(50), size=(3, 7)).astype(np.float32)
    q, scale = quantize_maps(maps)
    assert q.dtype == np.uint8 and scale.shape == (3, 7)
    err = np.abs(dequantize_maps(q, scale) - maps)
    assert np.all(err <= maps.max(-1, keepdims=True) / 510 + 1e-8)
    assert err.max() > maps.max() / 5000  # it is a real quantisation (the bound is not vacuous)
    assert np.all(q.max(-1) == 255)  # each map uses its whole range


def test_capture_per_head_matches_the_head_average():
    from panoptic_detr.engine.predict import Predictor
    from panoptic_detr.model.attention import model_attention

    model = shared_model()
    x, _ = Predictor(model, threshold=THRESHOLD, short_side=SHORT_SIDE).preprocess(scene())
    with torch.no_grad():
        plain = model(x[None])
        with model_attention(model, all_encoder_layers=True, heads=True) as rec:
            out = model(x[None])
    assert torch.equal(plain["pred_logits"], out["pred_logits"])  # capture changes nothing
    L, H = model.config.enc_layers, model.config.nheads
    assert len(rec.encoder_heads) == L and rec.encoder_heads[0].shape[1] == H
    for mean, heads in zip(rec.encoder + rec.decoder, rec.encoder_heads + rec.decoder_heads):
        torch.testing.assert_close(heads.mean(1), mean)
        torch.testing.assert_close(heads.sum(-1), torch.ones_like(heads.sum(-1)))  # each head's rows sum to 1
    with model_attention(model, all_encoder_layers=True, heads="last") as rec:
        model(x[None])
    assert len(rec.encoder_heads) == 1 and torch.equal(rec.encoder_heads[0], rec.encoder_heads[-1])
    torch.testing.assert_close(rec.encoder_heads[0].mean(1), rec.encoder[-1])


def test_embedded_encoder_attention_decodes_to_the_captured_one():
    expl = full_explanation()
    meta, blobs = pack_explorer(expl, ExplorerOptions(encoder_heads="all"))
    tok = valid_tokens(expl)
    sel = np.ix_(tok, tok)
    mean = dequantize_maps(decode_array(blobs["enc_mean"]), decode_array(blobs["enc_mean_scale"]))
    truth = np.stack([a.numpy()[sel] for a in expl.encoder_layers])
    assert mean.shape == truth.shape == (3, len(tok), len(tok))
    assert within_quantisation(mean, truth)
    heads = dequantize_maps(decode_array(blobs["enc_heads"]), decode_array(blobs["enc_heads_scale"]))
    truth_h = expl.encoder_heads.numpy()[:, :, tok][:, :, :, tok]
    assert heads.shape == truth_h.shape and within_quantisation(heads, truth_h)
    assert meta["encoder_head_layers"] == [0, 1, 2]
    # default budget: the last layer only per head
    meta, blobs = pack_explorer(expl)
    assert meta["encoder_head_layers"] == [2] and decode_array(blobs["enc_heads"]).shape[0] == 1


def test_embedded_decoder_maps_and_masks_decode_to_the_captured_ones():
    from panoptic_detr.data.preprocess import resize_nearest
    from panoptic_detr.engine.inference import upsample_masks

    expl = full_explanation()
    meta, blobs = pack_explorer(expl)
    tok = valid_tokens(expl)
    keep = expl.keep.tolist()
    assert meta["stored_queries"] == keep == sorted(FIRING)
    full = dequantize_maps(decode_array(blobs["dec_full"]), decode_array(blobs["dec_full_scale"]))  # [S, L, H+1, T]
    heads = expl.decoder_heads.numpy()[:, :, keep][..., tok].transpose(2, 0, 1, 3)  # [S, L, H, T]
    means = expl.decoder_layers.numpy()[:, keep][..., tok].transpose(1, 0, 2)  # [S, L, T]
    assert within_quantisation(full[:, :, :-1], heads) and within_quantisation(full[:, :, -1], means)
    last = dequantize_maps(decode_array(blobs["dec_last"]), decode_array(blobs["dec_last_scale"]))
    assert last.shape[0] == expl.num_queries
    assert within_quantisation(last, expl.decoder_attention.numpy()[:, tok])
    att = dequantize_maps(decode_array(blobs["mask_att"]), decode_array(blobs["mask_att_scale"]))
    vh, vw = expl.valid_size
    truth = expl.mask_attention.numpy()[keep][:, :, :vh, :vw].reshape(len(keep), -1, vh * vw)
    assert within_quantisation(att, truth)
    # masks: int16 logits in steps of 1/256 -> the sigmoid at full resolution within 1/2048
    ch, cw = meta["mask_cells"]
    logits = torch.from_numpy(decode_array(blobs["mask_logits"]).astype(np.float32) * MASK_LOGIT_STEP)
    assert np.abs(logits.numpy() - np.clip(expl.mask_logits.numpy()[:, :ch, :cw], -127, 127)).max() <= MASK_LOGIT_STEP / 2
    H, W = expl.original_size
    ours = torch.sigmoid(resize_nearest(upsample_masks(logits, expl.processed_size), (H, W)))
    truth = torch.sigmoid(resize_nearest(upsample_masks(expl.mask_logits, expl.processed_size), (H, W)))
    assert (ours - truth).abs().max() <= 1 / 2048


def test_query_states_follow_the_panoptic_inference():
    from panoptic_detr.engine.inference import duplicate_queries, query_segments

    expl = full_explanation(dedup=0.0)  # any overlap with a better query of the same class: a duplicate
    st = expl.states
    Q = expl.num_queries
    assert len(st.state) == Q
    labels = expl.labels.tolist()
    C = expl.logits.shape[-1] - 1
    for q in range(Q):
        if q not in FIRING:
            assert st.state[q] in ("no-object", "threshold") and st.segment[q] == 0
            assert (st.state[q] == "no-object") == (labels[q] == C)
    # the duplicates are exactly duplicate_queries' among the kept queries
    keep = expl.keep
    table = expl.categories.isthing_table()
    isthing = torch.tensor(table + [False] * (C - len(table)))
    q_thing, _ = query_segments(expl.labels[keep], isthing)
    dup = duplicate_queries(expl.mask_logits, expl.scores[keep], expl.labels[keep], q_thing, expl.processed_size, 0.0)
    assert [q for q, d in zip(keep.tolist(), dup.tolist()) if d] == st.queries("duplicate") != []
    # every segment is headed by a query of its class, and a segment click finds it
    heads = st.segment_query()
    assert sorted(heads) == [s["id"] for s in expl.panoptic.segments_info]
    for s in expl.panoptic.segments_info:
        assert labels[heads[s["id"]]] == s["category_id"]
    kept_rows = {d["query"]: d["state"] for d in expl.kept()}
    assert set(kept_rows.values()) <= {"kept", "duplicate", "small"}
    H, W = expl.original_size
    for d in expl.kept():  # boxes in the table never leave the image
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= W and 0 <= y0 <= y1 <= H


def test_page_embeds_everything_and_is_offline(tmp_path):
    from panoptic_detr.viz.explorer import write_explorer

    expl = full_explanation()
    path, report = write_explorer(tmp_path / "explorer.html", expl, links=[("index.html", "figures")])
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    meta = json.loads(re.search(r'<script type="application/json" id="explorer-meta">(.*?)</script>', page,
                                re.S).group(1))
    assert meta["image"].startswith("data:image/jpeg;base64,")
    assert [r["state"] for r in meta["queries"]] == expl.states.state
    assert "error <= 1/510" in report and "kB" in report


def test_size_budget_r50_800x1066():
    """The default explorer of r50-panoptic at 800x1066 (random weights, 20 kept queries)
    stays under 15 MB."""
    from panoptic_detr import build_model
    from panoptic_detr.engine.explain import explain_image
    from panoptic_detr.engine.predict import Predictor
    from panoptic_detr.viz.explorer import render_explorer

    torch.manual_seed(0)
    model = build_model("r50-panoptic")
    image = scene(600, 800)
    predictor = Predictor(model, threshold=0.5, short_side=800, max_size=1333)
    x, _ = predictor.preprocess(image)
    assert tuple(x.shape[-2:]) == (800, 1066)
    firing = {q: 1 + (7 * q) % 199 for q in range(0, 100, 5)}  # 20 queries of various classes
    make_queries_fire(predictor.model, x, firing)
    expl = explain_image(predictor, image)
    assert len(expl.keep) == 20 and expl.feature_size == (25, 34)
    meta, blobs = pack_explorer(expl)
    size = len(render_explorer(meta, blobs).encode("utf-8"))
    print(f"explorer.html for r50-panoptic at 800x1066, 20 kept queries: {size / 1e6:.2f} MB")
    assert 3e6 < size < 15e6
