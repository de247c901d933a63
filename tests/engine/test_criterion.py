import math

import torch
import torch.nn.functional as F

from panoptic_detr.engine.criterion import SetCriterion, build_weight_dict, dice_loss, sigmoid_focal_loss
from panoptic_detr.engine.matcher import HungarianMatcher


def _criterion(num_classes=3, losses=("labels", "boxes", "cardinality", "masks")):
    return SetCriterion(num_classes, HungarianMatcher(), build_weight_dict(masks=True), eos_coef=0.1, losses=losses)


def test_labels_ce_with_eos_weight_and_class_error():
    # 2 queries, classes 0..2, no-object = 3; one target of class 1 matched to query 0
    logits = torch.tensor([[[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    crit = _criterion(losses=("labels", "boxes", "cardinality"))
    out = crit({"pred_logits": logits, "pred_boxes": boxes}, targets)
    lp0 = torch.log_softmax(logits[0, 0], -1)[1]
    lp1 = torch.log_softmax(logits[0, 1], -1)[3]
    expected = -(1.0 * lp0 + 0.1 * lp1) / 1.1
    assert torch.allclose(out["loss_ce"], expected)
    assert out["class_error"].item() == 0.0
    assert out["loss_bbox"].item() == 0.0 and abs(out["loss_giou"].item()) < 1e-6
    # query 0 predicts an object, query 1 "no object": cardinality 1 == 1 target
    assert out["cardinality_error"].item() == 0.0


def test_box_losses_hand_values():
    logits = torch.zeros(1, 1, 4)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.5, 0.2, 0.2]])}]
    out = _criterion(losses=("boxes",))({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert math.isclose(out["loss_bbox"].item(), 0.1, rel_tol=1e-5)
    # boxes [0.4,0.6]x[0.4,0.6] and [0.5,0.7]x[0.4,0.6]: iou 0.02/0.06, hull 0.06 = union
    assert math.isclose(out["loss_giou"].item(), 1 - 1 / 3, rel_tol=1e-5)


def test_mask_losses_hand_values():
    x = torch.zeros(2, 4)
    t = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0]])
    # p = 0.5 everywhere: ce = ln2, (1 - p_t)^2 = 1/4, alpha 0.25 on positives, 0.75 on negatives
    per_px_pos, per_px_neg = 0.25 * 0.25 * math.log(2), 0.75 * 0.25 * math.log(2)
    expected = ((per_px_pos + 3 * per_px_neg) / 4 + (2 * per_px_pos + 2 * per_px_neg) / 4) / 2
    assert math.isclose(sigmoid_focal_loss(x, t, 2).item(), expected, rel_tol=1e-6)
    # dice: 1 - (2*0.5*|t| + 1) / (2 + |t| + 1)
    d = ((1 - (1 + 1) / (2 + 1 + 1)) + (1 - (2 + 1) / (2 + 2 + 1))) / 2
    assert math.isclose(dice_loss(x, t, 2).item(), d, rel_tol=1e-6)


def test_masks_upsampled_and_perfect_masks_give_small_loss():
    h, w = 16, 16
    tm = torch.zeros(1, h, w, dtype=torch.bool)
    tm[0, :8, :8] = True
    pred = torch.full((1, 2, h // 4, w // 4), -20.0)
    pred[0, 0, :2, :2] = 20.0
    outputs = {
        "pred_logits": torch.tensor([[[5.0, 0, 0, 0], [0, 0, 0, 5.0]]]),
        "pred_boxes": torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.7, 0.7, 0.1, 0.1]]]),
        "pred_masks": pred,
    }
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5]]), "masks": tm}]
    out = _criterion()(outputs, targets)
    assert out["loss_dice"].item() < 0.1 and out["loss_mask"].item() < 0.01
    up = F.interpolate(pred[:, :1], size=(h, w), mode="bilinear", align_corners=False)[0]
    assert math.isclose(out["loss_dice"].item(), dice_loss(up.flatten(1), tm.float().flatten(1), 1).item(), rel_tol=1e-6)


def test_aux_losses_rematched_and_total():
    g = torch.Generator().manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, 4, 4, generator=g), "pred_boxes": torch.rand(2, 4, 4, generator=g) * 0.4 + 0.2}
    outputs["aux_outputs"] = [
        {"pred_logits": torch.randn(2, 4, 4, generator=g), "pred_boxes": torch.rand(2, 4, 4, generator=g) * 0.4 + 0.2}
        for _ in range(2)
    ]
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.rand(2, 4, generator=g) * 0.4 + 0.2},
        {"labels": torch.tensor([1]), "boxes": torch.rand(1, 4, generator=g) * 0.4 + 0.2},
    ]
    crit = SetCriterion(3, HungarianMatcher(), build_weight_dict(num_aux=2), losses=("labels", "boxes", "cardinality"))
    out = crit(outputs, targets)
    for i in range(2):
        single = crit(outputs["aux_outputs"][i], targets)
        for k in ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error"):
            assert torch.allclose(out[f"{k}_{i}"], single[k])
        assert f"class_error_{i}" not in out
    total = crit.weighted_total(out)
    expected = sum(out[k] * w for k, w in crit.weight_dict.items())
    assert torch.allclose(total, expected)
    assert set(crit.weight_dict) == {"loss_ce", "loss_bbox", "loss_giou"} | {f"{k}_{i}" for k in ("loss_ce", "loss_bbox", "loss_giou") for i in range(2)}


def test_no_targets_gives_finite_losses():
    outputs = {"pred_logits": torch.randn(1, 3, 4, requires_grad=True), "pred_boxes": torch.rand(1, 3, 4)}
    out = _criterion(losses=("labels", "boxes", "cardinality"))(outputs, [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}])
    assert all(torch.isfinite(v) for v in out.values())
