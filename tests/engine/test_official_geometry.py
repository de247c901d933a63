"""`geometry="official"`: exactly the official DETR `PostProcessPanoptic` at batch 1.

`official_postprocess` below re-implements the official code line for line (from
facebookresearch/detr, models/segmentation.py, `PostProcessPanoptic.forward`, Apache
License 2.0; only the PNG encoding at the end is left out and the id map returned
instead), PIL round trip included. Our map numbers the segments 1..n where the
official numbers the same segments 0..n-1 in the same order.
"""

from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import panoptic_detr
from panoptic_detr.data.categories import Category, CategoryList
from panoptic_detr.data.formats.coco_panoptic import id2rgb, rgb2id
from panoptic_detr.engine.inference import masks_argmax, panoptic_inference, upsample_masks
from panoptic_detr.engine.predict import Predictor

C = 5  # classes 0..4, no-object = 5
IS_THING = {0: False, 1: True, 2: True, 3: False, 4: False}  # 1, 2 things; 3, 4 stuff


def official_postprocess(outputs, processed_size, target_size, is_thing_map, threshold=0.85):
    """The official `PostProcessPanoptic.forward` for one image: (id map [H, W] int, segments_info)."""
    out_logits, raw_masks = outputs["pred_logits"], outputs["pred_masks"]
    cur_logits, cur_masks, size = out_logits[0], raw_masks[0], processed_size
    # we filter empty queries and detection below threshold
    scores, labels = cur_logits.softmax(-1).max(-1)
    keep = labels.ne(outputs["pred_logits"].shape[-1] - 1) & (scores > threshold)
    cur_scores, cur_classes = cur_logits.softmax(-1).max(-1)
    cur_scores = cur_scores[keep]
    cur_classes = cur_classes[keep]
    cur_masks = cur_masks[keep]
    cur_masks = F.interpolate(cur_masks[:, None], tuple(size), mode="bilinear").squeeze(1)
    h, w = cur_masks.shape[-2:]
    cur_masks = cur_masks.flatten(1)
    stuff_equiv_classes = defaultdict(lambda: [])
    for k, label in enumerate(cur_classes):
        if not is_thing_map[label.item()]:
            stuff_equiv_classes[label.item()].append(k)

    def get_ids_area(masks, scores, dedup=False):
        m_id = masks.transpose(0, 1).softmax(-1)
        if m_id.shape[-1] == 0:
            m_id = torch.zeros((h, w), dtype=torch.long, device=m_id.device)
        else:
            m_id = m_id.argmax(-1).view(h, w)
        if dedup:
            # Merge the masks corresponding to the same stuff class
            for equiv in stuff_equiv_classes.values():
                if len(equiv) > 1:
                    for eq_id in equiv:
                        m_id.masked_fill_(m_id.eq(eq_id), equiv[0])
        final_h, final_w = target_size
        seg_img = Image.fromarray(id2rgb(m_id.view(h, w).cpu().numpy()))
        seg_img = seg_img.resize(size=(final_w, final_h), resample=Image.NEAREST)
        np_seg_img = np.asarray(seg_img).reshape(final_h, final_w, 3)
        m_id = torch.from_numpy(rgb2id(np_seg_img))
        area = []
        for i in range(len(scores)):
            area.append(m_id.eq(i).sum().item())
        return area, m_id

    area, m_id = get_ids_area(cur_masks, cur_scores, dedup=True)
    if cur_classes.numel() > 0:
        # We know filter empty masks as long as we find some
        while True:
            filtered_small = torch.as_tensor([area[i] <= 4 for i, c in enumerate(cur_classes)], dtype=torch.bool)
            if filtered_small.any().item():
                cur_scores = cur_scores[~filtered_small]
                cur_classes = cur_classes[~filtered_small]
                cur_masks = cur_masks[~filtered_small]
                area, m_id = get_ids_area(cur_masks, cur_scores)
            else:
                break
    else:
        cur_classes = torch.ones(1, dtype=torch.long)
    segments_info = []
    for i, a in enumerate(area):
        cat = cur_classes[i].item()
        segments_info.append({"id": i, "isthing": is_thing_map[cat], "category_id": cat, "area": a})
    return m_id.numpy(), segments_info


def ours(logits, masks, proc, orig, geometry="official", threshold=0.85):
    isthing = [IS_THING[c] for c in range(C)]
    return panoptic_inference(logits, masks, proc, orig, isthing, threshold=threshold, geometry=geometry)


def assert_same_as_official(out, official):
    """Ours (ids 1..n) equals the official map (ids 0..n-1, same order), pixel for pixel."""
    off_map, off_info = official
    mine = out.id_map.numpy()
    if not off_info:
        assert (mine == 0).all()
        return
    assert int((mine != off_map + 1).sum()) == 0, f"{int((mine != off_map + 1).sum())} pixels differ"
    assert [(s["id"] - 1, s["category_id"], s["isthing"], s["area"]) for s in out.segments_info] == [
        (s["id"], s["category_id"], s["isthing"], s["area"]) for s in off_info
    ]


def crafted(h, w, seed):
    """Logits and mask logits [Q, ceil(h/4), ceil(w/4)] of a batch-1 image: smooth random masks,
    two stuff queries of one class (merged in the first pass only), a query too small to keep,
    and one below the threshold."""
    g = torch.Generator().manual_seed(seed)
    gh, gw = -(-h // 4), -(-w // 4)
    labels = [1, 3, 2, 3, 4, 1, 2, 1]  # 3 twice: stuff merge
    q = len(labels) + 1
    logits = torch.full((q, C + 1), -5.0)
    for i, lab in enumerate(labels):
        logits[i, lab] = 6.0 + float(torch.rand((), generator=g))
    logits[-1, 2] = 0.5  # not kept
    coarse = torch.randn(q, 1, max(2, gh // 3), max(2, gw // 3), generator=g) * 6
    masks = F.interpolate(coarse, size=(gh, gw), mode="bilinear", align_corners=False)[:, 0]
    masks += torch.randn(q, gh, gw, generator=g)  # ties impossible, edges irregular
    masks[5] = -30.0
    masks[5, gh // 2, gw // 2] = 30.0  # one cell: a segment of at most a few pixels, dropped
    return logits, masks


SIZES = [(37, 53), (40, 64), (41, 61), (64, 97), (30, 45)]  # multiples of 4 and not, odd widths


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_official_geometry_equals_the_official_code(h, w, seed):
    logits, masks = crafted(h, w, seed)
    for target in ((h, w), (2 * h + 1, 2 * w - 3), (h - 7, w + 5)):
        official = official_postprocess({"pred_logits": logits[None], "pred_masks": masks[None]}, (h, w), target,
                                        IS_THING)
        assert len(official[1]) >= 3  # the case is not trivial
        assert_same_as_official(ours(logits, masks, (h, w), target), official)


def test_the_crafted_cases_exercise_what_differs():
    """The geometry and the first-pass-only stuff merge both change maps: aligned != official."""
    logits, masks = crafted(37, 53, 0)
    aligned = ours(logits, masks, (37, 53), (37, 53), geometry="aligned").id_map
    official = ours(logits, masks, (37, 53), (37, 53), geometry="official").id_map
    assert int((aligned != official).sum()) > 0
    stretched = upsample_masks(masks, (37, 53), geometry="official")
    exact = upsample_masks(masks, (37, 53), geometry="aligned")
    assert stretched.shape == exact.shape == (masks.shape[0], 37, 53)
    assert not torch.equal(stretched, exact)


def test_official_argmax_is_that_of_the_softmax_as_the_official():
    """Logits 0 and 1e-8 have the same softmax in float32: the official code gives the pixel
    to the first query (argmax of equal probabilities), the plain argmax to the second."""
    masks = torch.zeros(2, 10, 16)
    masks[1] = 1e-8
    official = masks_argmax(masks, (37, 61), geometry="official")
    aligned = masks_argmax(masks, (37, 61), geometry="aligned")
    assert (official == 0).all() and (aligned == 1).all()
    up = F.interpolate(masks[:, None], size=(37, 61), mode="bilinear")[:, 0]
    assert torch.equal(official, up.flatten(1).T.softmax(-1).argmax(-1).view(37, 61))


def test_nothing_kept_is_void_as_the_official():
    logits, masks = crafted(37, 53, 0)
    logits[:, -1] = 20.0
    official = official_postprocess({"pred_logits": logits[None], "pred_masks": masks[None]}, (37, 53), (37, 53),
                                    IS_THING)
    assert official[1] == []
    assert_same_as_official(ours(logits, masks, (37, 53), (37, 53)), official)


def test_bad_geometry_is_refused():
    logits, masks = crafted(37, 53, 0)
    with pytest.raises(ValueError, match="geometry"):
        ours(logits, masks, (37, 53), (37, 53), geometry="stretched")


CATS = CategoryList([Category(1, "crate", True, (1, 2, 3)), Category(2, "cone", True, (4, 5, 6)),
                     Category(3, "sky", False, (7, 8, 9)), Category(4, "ground", False, (10, 11, 12))])


def tiny_model_and_image(hw):
    """A tiny random model whose class head keeps several queries of varied classes, stuff
    classes several times (centred on the decoder's output for this image, as in test_predict)."""
    torch.manual_seed(0)
    model = panoptic_detr.build_model("tiny", categories=CATS)
    rng = np.random.default_rng(0)
    image = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)).resize((hw[1], hw[0])))
    captured = []
    handle = model.detr.class_embed.register_forward_hook(lambda mod, i, o: captured.append(i[0]))
    x, _ = Predictor(model, short_side=min(hw), max_size=2000).preprocess(image)
    with torch.inference_mode():
        model(x[None], with_masks=False)
    handle.remove()
    hs = captured[-1][-1, 0]
    mu = hs.mean(0)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(model.detr.class_embed.weight.shape, generator=g) * (4 / (hs - mu).std() / hs.shape[1] ** 0.5)
    w[-1] *= 0.5
    with torch.no_grad():
        model.detr.class_embed.weight.copy_(w)
        model.detr.class_embed.bias.copy_(-w @ mu)
        model.detr.class_embed.bias[0] = -50.0  # index 0 is no category
    return model, image


@pytest.mark.parametrize("hw", [(61, 93), (64, 96)])
def test_predictor_official_equals_the_official_code_on_a_model(hw):
    """A real (tiny, random) model at batch 1: the Predictor's fast path with geometry official
    gives the official post-processing of the full forward's outputs; aligned does not."""
    model, image = tiny_model_and_image(hw)
    maps = {}
    for geometry in ("official", "aligned"):
        predictor = Predictor(model, threshold=0.5, short_side=min(hw), max_size=2000, geometry=geometry,
                              fold_bn=False)
        x, original = predictor.preprocess(image)
        assert tuple(x.shape[-2:]) == hw and original == hw
        maps[geometry] = predictor(image)
    with torch.inference_mode():
        outputs = model(x[None])
    table = predictor._isthing.tolist()
    official = official_postprocess(outputs, hw, hw, {c: c < len(table) and table[c] for c in range(C + 1)},
                                    threshold=0.5)
    cats = [s["category_id"] for s in official[1]]
    assert len(cats) >= 5 and {1, 2} & set(cats) and {3, 4} & set(cats)  # things and stuff
    assert_same_as_official(maps["official"], official)
    assert int((maps["aligned"].id_map.numpy() != official[0] + 1).sum()) > 0
