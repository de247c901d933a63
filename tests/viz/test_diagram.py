"""Figure 7: the network diagram and its tensor shapes."""

import torch

from explain_support import shared_model, titles
from panoptic_detr.model.config import ModelConfig
from panoptic_detr.viz.diagram import network_diagram_figure, network_shapes


def test_shapes_match_the_model():
    model = shared_model()
    cfg = model.config
    size = (97, 131)  # odd sizes: every stride-2 step rounds up
    shapes = network_shapes(cfg, size)
    body = model.detr.backbone[0].body
    seen = {}
    hooks = [getattr(body, f"layer{i}").register_forward_hook(lambda m, i, o, k=f"layer{i}": seen.__setitem__(k, o))
             for i in range(1, 5)]
    hooks.append(body.maxpool.register_forward_hook(lambda m, i, o: seen.__setitem__("stem", o)))
    for name, sub in [("lay2", model.mask_head.gn2), ("fpn_3", model.mask_head.gn3), ("fpn_2", model.mask_head.gn4),
                      ("fpn_1", model.mask_head.gn5)]:
        hooks.append(sub.register_forward_hook(lambda m, i, o, k=name: seen.__setitem__(k, o)))
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, *size))
    for h in hooks:
        h.remove()
    for k in ("stem", "layer1", "layer2", "layer3", "layer4"):
        assert tuple(seen[k].shape[1:]) == shapes[k], k
    Q = cfg.num_queries
    assert tuple(seen["lay2"].shape) == shapes["fpn_lay2"]
    for k in ("fpn_3", "fpn_2", "fpn_1"):
        assert tuple(seen[k].shape) == shapes[k], k
    assert tuple(out["pred_logits"].shape[1:]) == shapes["logits"]
    assert tuple(out["pred_boxes"].shape[1:]) == shapes["boxes"]
    assert tuple(out["pred_masks"].shape[1:]) == shapes["masks"]
    h, w = shapes["layer4"][1:]
    assert shapes["tokens"] == (h * w, cfg.hidden_dim) and shapes["queries"] == (Q, cfg.hidden_dim)
    assert shapes["mask_attention"] == (Q, cfg.nheads, h, w)
    assert shapes["fpn_in"] == (Q, cfg.hidden_dim + cfg.nheads, h, w)


def test_official_r50_shapes():
    s = network_shapes(ModelConfig(masks=True, num_classes=250), (800, 1066))
    assert s["layer4"] == (2048, 25, 34)
    assert s["tokens"] == (850, 256)
    assert s["logits"] == (100, 251)
    assert s["masks"] == (100, 200, 267)
    dc5 = network_shapes(ModelConfig(masks=True, dilation=True), (800, 1066))
    assert dc5["layer4"] == (2048, 50, 67) and dc5["meta"]["stride"] == 16


def test_diagram_figure_names_every_stage():
    shapes = network_shapes(ModelConfig(masks=True, num_classes=250), (800, 1066))
    fig = network_diagram_figure(shapes)
    t = titles(fig)
    assert any("800 x 1066" in s for s in t)
    texts = " | ".join(x.get_text() for x in fig.get_axes()[0].texts)
    for needle in ("layer1", "layer4", "1x1 conv", "flatten", "positional encoding", "encoder x6", "decoder x6",
                   "object queries", "class FFN", "box FFN", "attention", "FPN", "argmax",
                   "2048 x 25 x 34", "850 x 256", "100 x 8 x 25 x 34", "100 x 200 x 267", "800 x 1066"):
        assert needle in texts, needle
    # a detection model has no mask head row
    det = network_diagram_figure(network_shapes(ModelConfig(), (480, 640)))
    texts = " | ".join(x.get_text() for x in det.get_axes()[0].texts)
    assert "FPN" not in texts and "decoder x6" in texts


def test_diagram_states_the_batch_norm_and_counts_named_classes():
    def texts(cfg, named=None):
        fig = network_diagram_figure(network_shapes(cfg, (256, 320), named_classes=named))
        return " | ".join(x.get_text() for x in fig.get_axes()[0].texts)

    official = texts(ModelConfig(masks=True, num_classes=250), named=133)
    assert "(frozen BatchNorm)" in official and "133 classes (250 slots) + no-object" in official
    ours = texts(ModelConfig(masks=True, num_classes=6, frozen_bn=False), named=5)  # ids 1..5, index 0 unused
    assert "(trainable BatchNorm)" in ours and "frozen" not in ours
    assert "5 classes (6 slots) + no-object" in ours and "6 classes" not in ours
    assert "6 class slots + no-object" in texts(ModelConfig(masks=True, num_classes=6))  # categories unknown
