"""Forward semantics of the model parts, on the small `tiny` preset."""

import math

import pytest
import torch
from torch import nn

from panoptic_detr.model.attention import model_attention
from panoptic_detr.model.backbone import FrozenBatchNorm2d
from panoptic_detr.model.build import build_model
from panoptic_detr.model.nested_tensor import nested_tensor_from_tensor_list
from panoptic_detr.model.position_encoding import PositionEmbeddingSine


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("tiny")
    # Non-trivial frozen-BN statistics and biases, as trained weights have.
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
        for m in model.mask_head.modules():
            if isinstance(m, (nn.Conv2d, nn.GroupNorm)):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def two_images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 96, 128, generator=g), torch.randn(3, 160, 96, generator=g)]


def test_sine_position_encoding_follows_the_formula():
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[0, :, 4:] = True  # last column is padding
    mask[0, 2:, :] = True  # last row is padding
    npf = 8
    pos = PositionEmbeddingSine(npf)(mask)
    assert pos.shape == (1, 2 * npf, 3, 5)
    h, w = 2, 4  # valid size
    for y in range(h):
        for x in range(w):
            ye = (y + 1) / (h + 1e-6) * 2 * math.pi
            xe = (x + 1) / (w + 1e-6) * 2 * math.pi
            for i in range(npf):
                dim_t = 10000 ** (2 * (i // 2) / npf)
                f = math.sin if i % 2 == 0 else math.cos
                assert pos[0, i, y, x].item() == pytest.approx(f(ye / dim_t), abs=1e-5)  # y first
                assert pos[0, npf + i, y, x].item() == pytest.approx(f(xe / dim_t), abs=1e-5)


def test_frozen_batch_norm_matches_batch_norm_in_eval_and_ignores_counter():
    g = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(6, generator=g))
        bn.running_var.copy_(torch.rand(6, generator=g) + 0.1)
    frozen = FrozenBatchNorm2d(6)
    frozen.load_state_dict(bn.state_dict())  # includes num_batches_tracked
    assert "num_batches_tracked" in bn.state_dict()
    assert len(list(frozen.parameters())) == 0
    assert sorted(dict(frozen.named_buffers())) == ["bias", "running_mean", "running_var", "weight"]
    x = torch.randn(2, 6, 4, 5, generator=g)
    torch.testing.assert_close(frozen(x), bn(x), atol=1e-6, rtol=1e-6)
    scale = frozen.weight * torch.rsqrt(frozen.running_var + 1e-5)
    expected = x * scale[:, None, None] + (frozen.bias - frozen.running_mean * scale)[:, None, None]
    assert torch.equal(frozen(x), expected)


def test_nested_tensor_pads_bottom_right_with_zeros():
    a, b = torch.ones(3, 2, 4), torch.full((3, 5, 3), 2.0)
    nt = nested_tensor_from_tensor_list([a, b])
    assert nt.tensors.shape == (2, 3, 5, 4)
    assert torch.equal(nt.tensors[0, :, :2, :4], a) and nt.tensors[0, :, 2:].abs().sum() == 0
    assert torch.equal(nt.tensors[1, :, :5, :3], b) and nt.tensors[1, :, :, 3:].abs().sum() == 0
    assert nt.mask[0, :2, :4].logical_not().all() and nt.mask[0, 2:].all() and nt.mask[1, :, 3:].all()
    assert nt.image_sizes == [(2, 4), (5, 3)]


def test_backbone_freezing_strides_and_channels(tiny):
    backbone = tiny.detr.backbone[0]
    for name, p in backbone.body.named_parameters():
        assert p.requires_grad == name.startswith(("layer2", "layer3", "layer4")), name
    assert backbone.channels == [48, 96, 192, 384]  # the tiny preset narrows ResNet-18 to a 48-channel stem
    feats = backbone(nested_tensor_from_tensor_list([torch.randn(3, 64, 96)]))
    assert [tuple(f.tensors.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_outputs_shapes(tiny):
    with torch.no_grad():
        out = tiny(two_images())
    assert out["pred_logits"].shape == (2, 20, 251)
    assert out["pred_boxes"].shape == (2, 20, 4)
    assert out["pred_masks"].shape == (2, 20, 40, 32)  # padded 160x128 / 4
    assert len(out["aux_outputs"]) == 2
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()


def test_masks_for_queries_equal_the_full_forward(tiny):
    imgs = two_images(1)
    with torch.no_grad():
        full = tiny(imgs)
        light = tiny(imgs, with_masks=False)
        assert "pred_masks" not in light and "mask_context" in light
        torch.testing.assert_close(light["pred_logits"], full["pred_logits"], atol=0, rtol=0)
        bi = torch.tensor([1, 0, 1, 0, 1])
        qi = torch.tensor([19, 0, 3, 7, 3])
        some = tiny.masks_for_queries(light["mask_context"], bi, qi)
        assert some.shape == (5, 40, 32)
        torch.testing.assert_close(some, full["pred_masks"][bi, qi], atol=1e-5, rtol=0)
        tiny.mask_chunk_size = 3  # chunked decoding gives the same masks
        try:
            again = tiny(imgs)["pred_masks"]
        finally:
            tiny.mask_chunk_size = 50
        torch.testing.assert_close(again, full["pred_masks"], atol=1e-5, rtol=0)
        assert tiny.masks_for_queries(light["mask_context"], [], []).shape == (0, 40, 32)


def test_attention_recording_leaves_outputs_identical(tiny):
    imgs = two_images(2)
    with torch.no_grad():
        plain = tiny(imgs)
        with model_attention(tiny) as rec:
            recorded = tiny(imgs)
        after = tiny(imgs)
    for k in ("pred_logits", "pred_boxes", "pred_masks"):
        assert torch.equal(plain[k], recorded[k]) and torch.equal(plain[k], after[k])
    h, w = rec.feature_size
    assert (h, w) == (5, 4)
    assert rec.padding_mask.shape == (2, 5, 4)
    assert len(rec.encoder) == 1 and rec.encoder[-1].shape == (2, 20, 20)
    assert len(rec.decoder) == 3 and rec.decoder[-1].shape == (2, 20, 20)
    assert rec.mask_attention.shape == (2, 20, 8, 5, 4)
    pad = rec.padding_mask.flatten(1)  # image 0 (96x128): last two feature rows are padding
    assert pad[0].sum() == 8 and pad[1].sum() == 5  # image 1 (160x96): last column
    torch.testing.assert_close(rec.decoder[-1].sum(-1), torch.ones(2, 20))
    assert rec.encoder[-1][0][:, pad[0]].abs().max() == 0  # no attention to padding
    assert rec.decoder[-1][1][:, pad[1]].abs().max() == 0
    torch.testing.assert_close(rec.mask_attention.flatten(2).sum(-1), torch.ones(2, 20))  # joint softmax
    assert rec.mask_attention[0, :, :, 3:].abs().max() == 0
    # Outside the context nothing is recorded any more.
    assert all(getattr(m, "recorder", None) is None for m in tiny.modules())
    with model_attention(tiny, all_encoder_layers=True) as rec_all, torch.no_grad():
        tiny(imgs[:1])
    assert len(rec_all.encoder) == 3


def test_padding_never_leaks_past_the_backbone(tiny):
    """An image alone, and the same image padded inside a batch, give the same predictions,
    memory and attention on its valid region, whatever the padded features hold.

    The ResNet itself is not padding invariant in official DETR (nor in any CNN: its 3x3
    convs see the padded pixels next to the border; the DETR authors note that results vary
    with the batch padding), so the backbone output of the padded image is set to the one of
    the image alone on the valid region, and to large garbage on the padding; everything from
    there on must ignore the padding: mask-aware position encoding, masked encoder and
    decoder attention, masked mask-head attention.
    """
    a, b = two_images(3)
    backbone = tiny.detr.backbone[0]
    with torch.no_grad():
        alone_feats = [f.tensors for f in backbone(nested_tensor_from_tensor_list([a]))]

    def swap(_module, _inputs, outputs):
        g = torch.Generator().manual_seed(9)
        for f, ref in zip(outputs, alone_feats):
            h, w = ref.shape[-2:]
            garbage = torch.randn(f.tensors[0].shape, generator=g) * 100
            garbage[:, :h, :w] = ref[0]
            f.tensors[0] = garbage
        return outputs

    with torch.no_grad(), model_attention(tiny) as rec1:
        alone = tiny([a])
        enc1, dec1, maps1 = rec1.encoder[-1], rec1.decoder[-1], rec1.mask_attention
    handle = backbone.register_forward_hook(swap)
    try:
        with torch.no_grad(), model_attention(tiny) as rec2:
            batched = tiny([a, b])
    finally:
        handle.remove()
    for k in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(batched[k][0], alone[k][0], atol=1e-4, rtol=0)
    for aux_b, aux_a in zip(batched["aux_outputs"], alone["aux_outputs"]):
        torch.testing.assert_close(aux_b["pred_boxes"][0], aux_a["pred_boxes"][0], atol=1e-4, rtol=0)
    h, w = rec1.feature_size
    hb, wb = rec2.feature_size
    valid = torch.zeros(hb, wb, dtype=torch.bool)
    valid[:h, :w] = True
    valid = valid.flatten()
    torch.testing.assert_close(rec2.decoder[-1][0][:, valid], dec1[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(rec2.encoder[-1][0][valid][:, valid], enc1[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(rec2.mask_attention[0, :, :, :h, :w], maps1[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("sizes", [((64, 96), (96, 64)), ((69, 45), (100, 77)), ((65, 128), (33, 31))])
def test_padding_invariant_mode_gives_each_image_its_own_outputs(tiny, sizes):
    """Opt-in mode: an image alone and padded inside a batch give the same outputs on its valid
    region (all outputs, pred_masks included), and an unpadded image the official ones."""
    g = torch.Generator().manual_seed(sum(sizes[0]))
    a, b = (torch.randn(3, *s, generator=g) for s in sizes)
    with torch.no_grad():
        official = tiny([a])
        tiny.set_padding_invariant(True)
        try:
            alone, first, second = tiny([a]), tiny([a, b]), tiny([b, a])
        finally:
            tiny.set_padding_invariant(False)
    h, w = alone["pred_masks"].shape[-2:]
    for k in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(alone[k], official[k], atol=1e-4, rtol=0)
        for batched in (first[k][:1], second[k][1:]):
            torch.testing.assert_close(batched[..., :h, :w] if k == "pred_masks" else batched, alone[k],
                                       atol=1e-4, rtol=0)
    for aux_a, aux_b in zip(alone["aux_outputs"], second["aux_outputs"]):
        torch.testing.assert_close(aux_b["pred_logits"][1:], aux_a["pred_logits"], atol=1e-4, rtol=0)
    if any(sb > sa for sa, sb in zip(*sizes)):
        # In the official mode padding `a` changes its outputs (boundary effects).
        with torch.no_grad():
            leaky = tiny([a, b])
        assert (leaky["pred_logits"][:1] - official["pred_logits"]).abs().max() > 1e-3


def test_images_of_one_size_do_not_interact_in_a_batch(tiny):
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(3, 96, 128, generator=g), torch.randn(3, 96, 128, generator=g)
    with torch.no_grad():
        alone, batched = tiny([a]), tiny([a, b])
    for k in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(batched[k][:1], alone[k], atol=1e-4, rtol=0)


def test_channels_last_gives_the_same_outputs(tiny):
    imgs = two_images(5)
    with torch.no_grad():
        ref = tiny(imgs)
        tiny.detr.backbone[0].set_channels_last(True)
        try:
            fast = tiny(imgs)
        finally:
            tiny.detr.backbone[0].set_channels_last(False)
    for k in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(fast[k], ref[k], atol=1e-4, rtol=0)


def test_training_mode_backward_reaches_trainable_parts_only():
    torch.manual_seed(0)
    model = build_model("tiny", num_queries=5).train()
    out = model([torch.randn(3, 48, 48)])
    loss = out["pred_logits"].sum() + out["pred_boxes"].sum() + out["pred_masks"].mean() + sum(
        a["pred_boxes"].sum() for a in out["aux_outputs"])
    loss.backward()
    body = model.detr.backbone[0].body
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None
    assert body.layer4[0].conv1.weight.grad is not None
    assert model.mask_head.lay1.weight.grad is not None and model.bbox_attention.q_linear.weight.grad is not None
    assert model.detr.transformer.encoder.layers[0].self_attn.in_proj_weight.grad is not None


def test_density_mask_attention_is_the_softmax_times_heads_and_valid_positions():
    """`mask_attention: density` (the tiny preset) scales each image's maps so that a uniform
    map is 1: the maps of every query sum to nheads x the image's valid positions. The official
    presets keep the probabilities."""
    from panoptic_detr.model.segmentation import MHAttentionMap

    assert build_model("r50-panoptic").config.mask_attention == "softmax"
    assert build_model("tiny").config.mask_attention == "density"
    torch.manual_seed(0)
    official = MHAttentionMap(16, 16, 4)
    density = MHAttentionMap(16, 16, 4, density=True)
    density.load_state_dict(official.state_dict())
    q, k = torch.randn(2, 3, 16), torch.randn(2, 16, 5, 6)
    mask = torch.zeros(2, 5, 6, dtype=torch.bool)
    mask[1, 3:], mask[1, :, 4:] = True, True  # image 1: a 3x4 valid region
    p, d = official(q, k, mask), density(q, k, mask)
    torch.testing.assert_close(p.sum((2, 3, 4)), torch.ones(2, 3))
    torch.testing.assert_close(d, p * torch.tensor([4.0 * 30, 4.0 * 12]).view(2, 1, 1, 1, 1))
    assert d[1, :, :, 3:].abs().max() == 0 and d[1, :, :, :, 4:].abs().max() == 0


def test_density_attention_model_keeps_the_official_keys_and_batch_independence():
    from panoptic_detr.model.build import build_model as build

    torch.manual_seed(1)
    official = build("tiny", mask_attention="softmax").eval()
    density = build("tiny").eval()
    assert list(official.state_dict()) == list(density.state_dict())
    density.load_state_dict(official.state_dict())
    a, b = torch.randn(3, 96, 128), torch.randn(3, 96, 128)
    with torch.no_grad():
        out_p, out_d, batched = official([a]), density([a]), density([a, b])
    torch.testing.assert_close(out_d["pred_logits"], out_p["pred_logits"])  # masks only differ
    assert (out_d["pred_masks"] - out_p["pred_masks"]).abs().max() > 1e-3
    torch.testing.assert_close(batched["pred_masks"][:1], out_d["pred_masks"], atol=1e-4, rtol=0)
