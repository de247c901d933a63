"""panoptic_inference on crafted and random model outputs (no model needed)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from panoptic_detr.data.preprocess import nearest_indices, resize_nearest
from panoptic_detr.engine.inference import (
    duplicate_queries,
    masks_argmax,
    panoptic_inference,
    segment_boxes,
    select_queries,
    upsample_masks,
)

C = 5  # classes 0..4, no-object = 5
ISTHING = torch.tensor([False, True, True, False, False])  # 1, 2 things; 3, 4 stuff


def confident(label: int, num_queries: int = 1, score_logit: float = 10.0) -> torch.Tensor:
    row = torch.zeros(C + 1)
    row[label] = score_logit
    return row.repeat(num_queries, 1)


def region_masks(grid_h, grid_w, regions):
    """Masks [len(regions), grid_h, grid_w]: +10 inside each (y0, y1, x0, x1) cell box, -10 outside."""
    m = torch.full((len(regions), grid_h, grid_w), -10.0)
    for i, (y0, y1, x0, x1) in enumerate(regions):
        m[i, y0:y1, x0:x1] = 10.0
    return m


# --------------------------------------------------------------------------- reference
def reference(logits, masks, proc, orig, isthing, threshold=0.85, min_area=4):
    """A plain-loop implementation of the same algorithm, resizing with PIL NEAREST."""
    probs = logits.softmax(-1)
    scores, labels = probs.max(-1)
    no_obj = logits.shape[-1] - 1
    kept = [q for q in range(len(logits)) if labels[q] != no_obj and scores[q] > threshold]
    h, w = proc
    H, W = orig
    if not kept:
        return np.zeros((H, W), np.int32), []
    ch, cw = math.ceil(h / 4), math.ceil(w / 4)
    m = masks[kept][:, :ch, :cw]
    up = F.interpolate(m[None], size=(4 * ch, 4 * cw), mode="bilinear", align_corners=False)[0][:, :h, :w]
    alive = list(range(len(kept)))

    def head(a):
        lab = int(labels[kept[a]])
        if lab < len(isthing) and isthing[lab]:
            return a
        return min(b for b in range(len(kept)) if int(labels[kept[b]]) == lab)

    while True:
        if not alive:
            return np.zeros((H, W), np.int32), []
        win = up[alive].argmax(0).numpy()
        seg_small = np.vectorize(lambda j: head(alive[j]))(win).astype(np.int32)
        big = np.asarray(Image.fromarray(seg_small, mode="I").resize((W, H), Image.NEAREST))
        heads = sorted({head(a) for a in alive})
        small = {s for s in heads if (big == s).sum() <= min_area}
        if not small:
            break
        alive = [a for a in alive if head(a) not in small]
    id_map = np.zeros((H, W), np.int32)
    info = []
    for sid, s in enumerate(heads, start=1):
        sel = big == s
        id_map[sel] = sid
        ys, xs = np.nonzero(sel)
        members = [a for a in alive if head(a) == s]
        info.append(
            dict(
                id=sid,
                category_id=int(labels[kept[s]]),
                isthing=bool(int(labels[kept[s]]) < len(isthing) and isthing[int(labels[kept[s]])]),
                area=int(sel.sum()),
                bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                score=max(float(scores[kept[a]]) for a in members),
            )
        )
    return id_map, info


def assert_same(out, ref_map, ref_info):
    np.testing.assert_array_equal(out.id_map.numpy(), ref_map)
    assert len(out.segments_info) == len(ref_info)
    for a, b in zip(out.segments_info, ref_info):
        assert a["score"] == pytest.approx(b.pop("score"), abs=1e-6)
        assert {k: a[k] for k in b} == b


# --------------------------------------------------------------------------- crafted
def test_threshold_and_no_object():
    # q0: thing 1 at 0.99+; q1: class 2 at ~0.80 (below 0.85); q2: "no object"
    logits = torch.stack([confident(1)[0], torch.zeros(C + 1), confident(C)[0]])
    logits[1, 2] = math.log(0.80 * 5 / 0.20)  # softmax score 0.80 exactly
    masks = region_masks(8, 8, [(0, 4, 0, 8), (4, 8, 0, 8), (0, 8, 0, 8)])
    out = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING)
    assert out.id_map.dtype == torch.int32 and out.id_map.shape == (32, 32)
    assert [s["category_id"] for s in out.segments_info] == [1]
    s = out.segments_info[0]
    assert s["id"] == 1 and s["isthing"] is True and s["area"] == 32 * 32 and s["bbox"] == [0, 0, 32, 32]
    assert s["score"] > 0.99
    # with a lower threshold q1 is kept and owns the bottom half
    out = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING, threshold=0.7)
    assert [s["category_id"] for s in out.segments_info] == [1, 2]
    assert (out.id_map[:16] == 1).all() and (out.id_map[16:] == 2).all()
    assert out.segments_info[1]["bbox"] == [0, 16, 32, 16]
    assert out.segments_info[1]["score"] == pytest.approx(0.80, abs=1e-6)


def test_score_must_be_strictly_above_threshold():
    logits = torch.zeros(1, C + 1)
    logits[0, 1] = math.log(0.85 * 5 / 0.15)
    keep, scores, labels = select_queries(logits, 0.85)
    assert labels.item() == 1
    assert keep.item() == bool(scores.item() > 0.85)


def test_stuff_of_a_class_is_merged_things_are_not():
    # q0, q1: stuff 3 (top-left, top-right); q2, q3: thing 1 (bottom-left, bottom-right)
    logits = torch.cat([confident(3, 2), confident(1, 2)])
    masks = region_masks(8, 8, [(0, 4, 0, 4), (0, 4, 4, 8), (4, 8, 0, 4), (4, 8, 4, 8)])
    out = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING)
    info = out.segments_info
    assert [(s["id"], s["category_id"], s["isthing"]) for s in info] == [(1, 3, False), (2, 1, True), (3, 1, True)]
    assert info[0]["area"] == 16 * 32 and info[0]["bbox"] == [0, 0, 32, 16]
    assert (out.id_map[:16] == 1).all()
    assert (out.id_map[16:, :16] == 2).all() and (out.id_map[16:, 16:] == 3).all()


def test_small_segments_are_dropped_and_argmax_redone():
    # q1 wins only a 1x1-cell corner (16 px) at 32x32 ... but at the original size 8x8
    # that is 1 pixel (<= 4), so it is dropped and q0 takes its place.
    logits = confident(1, 3)
    masks = torch.full((3, 8, 8), -10.0)
    masks[0] = 5.0  # everywhere, second best
    masks[1, 0, 0] = 10.0  # a tiny corner
    masks[2, :, 4:] = 10.0  # right half
    out = panoptic_inference(logits, masks, (32, 32), (8, 8), ISTHING)
    assert [s["category_id"] for s in out.segments_info] == [1, 1]
    assert out.id_map[0, 0] == 1  # q0 (now id 1) took the corner back
    assert (out.id_map[:, :4] == 1).all() and (out.id_map[:, 4:] == 2).all()
    assert [s["area"] for s in out.segments_info] == [32, 32]
    # at the full size the corner is big enough to stay
    out = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING)
    assert len(out.segments_info) == 3


def test_removal_loops_until_stable():
    # q1 loses its pixels to q2 only once q2 exists... build a chain: after dropping a
    # small segment, the freed pixels make another one small? Use min_area high enough
    # that every segment but the biggest is removed over several rounds.
    logits = confident(2, 4)
    masks = torch.full((4, 8, 8), -10.0)
    masks[0] = 1.0
    masks[1, :, :2] = 10.0  # 8 px wide strip -> 256 px
    masks[2, :, 2:3] = 10.0  # 128 px
    masks[3, :, 3:] = 10.0  # 640 px
    out = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING, min_area=300)
    assert [s["area"] for s in out.segments_info] == [1024]
    ref_map, ref_info = reference(logits, masks, (32, 32), (32, 32), ISTHING, min_area=300)
    assert_same(out, ref_map, ref_info)


def test_no_detections_is_all_void():
    logits = confident(C, 4)  # all "no object"
    calls = []

    def masks(idx):
        calls.append(idx)
        return torch.zeros(len(idx), 8, 8)

    out = panoptic_inference(logits, masks, (32, 32), (20, 30), ISTHING)
    assert out.id_map.shape == (20, 30) and out.id_map.dtype == torch.int32
    assert (out.id_map == 0).all() and out.segments_info == []
    assert calls == []  # the mask head is not even asked


def test_everything_small_is_all_void():
    logits = confident(1, 1)
    masks = torch.full((1, 8, 8), 10.0)
    out = panoptic_inference(logits, masks, (32, 32), (2, 2), ISTHING)  # 4 px <= 4
    assert (out.id_map == 0).all() and out.segments_info == []


def test_resize_to_original_size_matches_pil_nearest():
    rng = np.random.default_rng(0)
    for (h, w), (H, W) in [((32, 48), (17, 23)), ((30, 41), (97, 131)), ((33, 50), (33, 50)), ((40, 40), (480, 640))]:
        small = torch.from_numpy(rng.integers(0, 50, size=(h, w)).astype(np.int32))
        mine = resize_nearest(small, (H, W)).numpy()
        pil = np.asarray(Image.fromarray(small.numpy(), mode="I").resize((W, H), Image.NEAREST))
        np.testing.assert_array_equal(mine, pil)


def test_output_at_original_size():
    logits = confident(1, 2)
    masks = region_masks(8, 10, [(0, 8, 0, 5), (0, 8, 5, 10)])
    out = panoptic_inference(logits, masks, (32, 40), (300, 400), ISTHING)
    assert out.id_map.shape == (300, 400)
    assert (out.id_map[:, :200] == 1).all() and (out.id_map[:, 200:] == 2).all()
    assert [s["bbox"] for s in out.segments_info] == [[0, 0, 200, 300], [200, 0, 200, 300]]
    assert sum(s["area"] for s in out.segments_info) == 300 * 400


def test_crop_makes_the_map_independent_of_batch_padding():
    torch.manual_seed(0)
    q, h, w = 6, 37, 45  # not multiples of 4: the image owns 10 x 12 cells
    logits = torch.cat([confident(1, 3), confident(3, 2), confident(4, 1)])
    own = torch.randn(q, 10, 12) * 3
    padded = torch.randn(q, 20, 25) * 50  # garbage everywhere ...
    padded[:, :10, :12] = own  # ... except in the image's own cells
    a = panoptic_inference(logits, own, (h, w), (70, 90), ISTHING)
    b = panoptic_inference(logits, padded, (h, w), (70, 90), ISTHING)
    assert torch.equal(a.id_map, b.id_map)
    assert a.segments_info == b.segments_info
    # the official way (stretch the whole padded grid to h x w) would differ
    up = F.interpolate(padded[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    assert not torch.equal(up.argmax(0), upsample_masks(padded, (h, w)).argmax(0))


def test_upsample_keeps_the_stride_geometry():
    # a mask that is high in cell column 3 only: pixels 12..15 belong to that cell
    m = torch.full((1, 3, 5), -1.0)
    m[0, :, 3] = 1.0
    up = upsample_masks(m, (10, 18))  # 3 x 5 cells for 10 x 18 pixels
    assert up.shape == (1, 10, 18)
    cols = (up[0, 5] > 0).nonzero().flatten().tolist()
    assert cols == [12, 13, 14, 15]
    with pytest.raises(ValueError, match="smaller"):
        upsample_masks(m, (13, 18))


def test_kept_query_masks_equal_all_query_masks():
    """The fast path passes the kept queries' masks only; the map is the same."""
    torch.manual_seed(1)
    logits = torch.randn(10, C + 1) * 6
    masks = torch.randn(10, 9, 9) * 4
    keep, _, _ = select_queries(logits, 0.5)
    assert 0 < int(keep.sum()) < 10
    a = panoptic_inference(logits, masks, (33, 36), (33, 36), ISTHING, threshold=0.5)
    b = panoptic_inference(logits, masks[keep], (33, 36), (33, 36), ISTHING, threshold=0.5)
    assert torch.equal(a.id_map, b.id_map) and a.segments_info == b.segments_info
    with pytest.raises(ValueError, match="masks for 10 queries"):
        panoptic_inference(logits, masks[:0], (33, 36), (33, 36), ISTHING, threshold=0.5)


def test_isthing_as_a_list_and_classes_beyond_the_table_are_stuff():
    logits = torch.cat([confident(4, 2)])
    masks = region_masks(4, 4, [(0, 2, 0, 4), (2, 4, 0, 4)])
    out = panoptic_inference(logits, masks, (16, 16), (16, 16), [False, True, True])
    assert len(out.segments_info) == 1 and out.segments_info[0]["isthing"] is False


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_reference_on_random_outputs(seed):
    g = torch.Generator().manual_seed(seed)
    q = 12
    logits = torch.randn(q, C + 1, generator=g) * 5
    h, w = int(torch.randint(20, 60, (1,), generator=g)), int(torch.randint(20, 60, (1,), generator=g))
    H, W = int(torch.randint(8, 90, (1,), generator=g)), int(torch.randint(8, 90, (1,), generator=g))
    gh, gw = math.ceil(h / 4) + seed % 3, math.ceil(w / 4) + seed % 2  # some padding
    masks = torch.randn(q, gh, gw, generator=g) * 3
    for threshold in (0.5, 0.85):
        out = panoptic_inference(logits, masks, (h, w), (H, W), ISTHING, threshold=threshold, min_area=6)
        ref_map, ref_info = reference(logits, masks, (h, w), (H, W), ISTHING, threshold=threshold, min_area=6)
        assert_same(out, ref_map, ref_info)


def test_segment_boxes():
    m = torch.zeros(6, 7, dtype=torch.int32)
    m[1:3, 2:5] = 1
    m[5, 0] = 2
    m[0, 6] = 2
    boxes = segment_boxes(m, 3)
    assert boxes.tolist() == [[0, 0, 7, 6], [2, 1, 3, 2], [0, 0, 7, 6], [0, 0, 0, 0]]


def test_nearest_indices_identity_and_integer_scale():
    assert nearest_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert nearest_indices(4, 8).tolist() == [1, 3, 5, 7]
    assert nearest_indices(8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("band_rows", [4, 8, 13, 64])
def test_banded_argmax_equals_full_upsampling(band_rows):
    g = torch.Generator().manual_seed(band_rows)
    masks = torch.randn(7, 15, 13, generator=g) * 3
    masks[2, 3:6] = masks[4, 3:6]  # exact ties: the first query must win
    for h, w in [(57, 49), (60, 52), (33, 17)]:
        full = upsample_masks(masks, (h, w))
        np.testing.assert_array_equal(masks_argmax(masks, (h, w), band_rows=band_rows).numpy(), full.argmax(0).numpy())
        subset = torch.tensor([1, 4, 6])
        expected = subset[upsample_masks(masks[subset], (h, w)).argmax(0)]
        assert torch.equal(masks_argmax(masks, (h, w), queries=subset, band_rows=band_rows), expected)


# --------------------------------------------------------------------------- dedup
def test_dedup_drops_a_thing_query_inside_a_better_one():
    # q0 thing 1 on the left half; q1 thing 1 (lower score) covering the left quarter
    # only, with higher logits there: without dedup it wins that quarter (two segments
    # on one object); with dedup it is a duplicate and q0 keeps the whole half.
    logits = torch.cat([confident(1, 1, 10.0), confident(1, 1, 6.0), confident(2, 1, 9.0)])
    masks = region_masks(8, 8, [(0, 8, 0, 4), (0, 8, 0, 2), (0, 8, 4, 8)])
    masks[1, :, :2] = 20.0
    plain = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING, threshold=0.5)
    assert len(plain.segments_info) == 3
    out = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING, threshold=0.5, dedup=0.5)
    assert [s["category_id"] for s in out.segments_info] == [1, 2]
    assert (out.id_map[:, :16] == 1).all() and (out.id_map[:, 16:] == 2).all()
    # the same overlap with another class is no duplicate (a different object)
    logits2 = logits.clone()
    logits2[1] = confident(2, 1, 6.0)[0]
    out = panoptic_inference(logits2, masks, (32, 32), (32, 32), ISTHING, threshold=0.5, dedup=0.5)
    assert len(out.segments_info) == 3


def test_dedup_fraction_is_of_the_worse_querys_own_mask():
    # q1 (worse) covers 8 columns; 3 of them (3/8 = 0.375) lie inside q0's mask
    logits = torch.cat([confident(1, 1, 10.0), confident(1, 1, 6.0)])
    masks = region_masks(8, 16, [(0, 8, 0, 8), (0, 8, 5, 13)])
    scores = logits.softmax(-1).max(-1).values
    labels = torch.tensor([1, 1])
    things = torch.tensor([True, True])
    assert duplicate_queries(masks, scores, labels, things, (32, 64), 0.3).tolist() == [False, True]
    assert duplicate_queries(masks, scores, labels, things, (32, 64), 0.375).tolist() == [False, False]  # strictly above
    assert duplicate_queries(masks, scores, labels, things, (32, 64), 0.5).tolist() == [False, False]
    # stuff queries are never duplicates
    assert not duplicate_queries(masks, scores, labels, torch.tensor([False, False]), (32, 64), 0.1).any()


def test_dedup_only_survivors_suppress_and_padding_is_ignored():
    # q0 best, q1 inside q0 -> duplicate; q2 inside q1 but not inside q0 would be
    # suppressed only by q1, which is itself gone, so q2 stays.
    masks = region_masks(8, 16, [(0, 8, 0, 6), (0, 8, 4, 10), (0, 8, 7, 10)])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([1, 1, 1])
    things = torch.ones(3, dtype=torch.bool)
    assert duplicate_queries(masks, scores, labels, things, (32, 64), 0.3).tolist() == [False, True, False]
    # cells beyond the image (batch padding) do not count: a mask that overlaps q0 only
    # in the padding is no duplicate
    # (a 24-px-wide image owns grid columns 0-5; both masks also fill columns 8-15)
    pad = region_masks(8, 16, [(0, 8, 0, 5), (0, 8, 4, 6)])
    pad[:, :, 8:] = 10.0
    # in the image q1 has 2 columns, 1 of them inside q0: 0.5, not above 0.5
    assert duplicate_queries(pad, scores[:2], labels[:2], things[:2], (32, 24), 0.5).tolist() == [False, False]
    # counted over the whole padded grid it would be 9 of 10
    assert duplicate_queries(pad, scores[:2], labels[:2], things[:2], (32, 64), 0.5).tolist() == [False, True]


@pytest.mark.parametrize("seed", range(3))
def test_dedup_equals_the_reference_without_the_duplicates(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(12, C + 1, generator=g) * 3
    masks = torch.randn(12, 10, 12, generator=g) * 4
    isthing = ISTHING
    keep, scores, labels = select_queries(logits, 0.3)
    kept = keep.nonzero().flatten()
    q_thing = torch.tensor([bool(isthing[l]) if l < len(isthing) else False for l in labels[kept].tolist()])
    dup = duplicate_queries(masks[kept], scores[kept], labels[kept], q_thing, (40, 45), 0.4)
    # the same result as the plain algorithm on the outputs with the duplicates turned
    # into "no object"
    cleared = logits.clone()
    cleared[kept[dup]] = confident(C)[0]
    out = panoptic_inference(logits, masks, (40, 45), (50, 60), isthing, threshold=0.3, dedup=0.4)
    ref_map, ref_info = reference(cleared, masks, (40, 45), (50, 60), isthing, threshold=0.3)
    assert_same(out, ref_map, ref_info)


def test_the_outcome_of_every_kept_query_is_recorded():
    """`PanopticOutput.queries` says which kept query heads which segment, joins one, was
    a duplicate or lost its segment (what `explain` shows, never recomputed)."""
    logits = torch.cat([confident(1, 2), confident(3, 2), confident(2, 1), confident(C, 1)])
    masks = torch.full((6, 8, 8), -5.0)
    masks[0, :4, :4] = 5  # thing 1
    masks[1, :4, :4] = 4  # the same object again, worse: a duplicate
    masks[2, 4:, :] = 5  # stuff 3 ...
    masks[3, 4:, :4] = 6  # ... a second query of it joins its segment
    masks[4, 0, 7] = 1  # thing 2: a one-cell sliver (about 16 pixels), too small
    out = panoptic_inference(logits, masks, (32, 32), (32, 32), ISTHING, threshold=0.5, dedup=0.5, min_area=40)
    q = out.queries
    assert q.index.tolist() == [0, 1, 2, 3, 4]
    assert q.duplicate.tolist() == [False, True, False, False, False]
    seg = {s["category_id"]: s["id"] for s in out.segments_info}
    assert q.segment.tolist() == [seg[1], 0, seg[3], seg[3], 0]
    assert q.head.tolist() == [True, False, True, False, False]
    assert panoptic_inference(logits[5:], masks[5:], (32, 32), (32, 32), ISTHING, threshold=0.5).queries is None
