"""DETR's set loss: Hungarian matching, then per-matched-pair losses.

Losses (dispatched by name through `SetCriterion.LOSSES`):
- `labels`: cross-entropy over classes, "no object" weighted by `eos_coef`; logs
  `class_error` (100 - top-1 accuracy of matched predictions, in percent);
- `cardinality`: |#predictions that are not "no object" - #targets| (logged, no gradient);
- `boxes`: L1 (`loss_bbox`) and 1 - GIoU (`loss_giou`) on matched boxes;
- `masks`: sigmoid focal loss (`loss_mask`) and dice loss (`loss_dice`) on matched
  predicted masks, upsampled bilinearly to the (padded) target size.
With `partial_labels`, each image's thing classes that are not annotated in it (its
target's `unannotated` ids, `data.annotated`) are left out of the classification softmax
of its unmatched queries (those trained towards "no object", which may sit on an
unlabelled object): their logits get no gradient from those queries. Matched queries
train as before, over every class: a labelled object is known not to be of another class
(the DETR form of LVIS's federated loss, docs/DESIGN.md).
Box and mask losses are summed and divided by the number of target objects in the batch,
averaged across processes and at least 1. Auxiliary decoder outputs get the same losses
(except masks), each re-matched, with keys suffixed `_0`, `_1`, ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_detr.engine import distributed as D
from panoptic_detr.engine.determinism import deterministic_enabled
from panoptic_detr.engine.matcher import HungarianMatcher
from panoptic_detr.utils.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

# The loss terms (of the last decoder layer) and extras that training logs, with the total.
LOGGED = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "class_error", "cardinality_error")


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss (RetinaNet) on logits [N, P] vs {0, 1} targets [N, P]: mean over P, sum over N, / num_boxes."""
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes


def dice_loss(inputs: Tensor, targets: Tensor, num_boxes: float) -> Tensor:
    """1 - soft Dice coefficient (with +1 smoothing) per mask, summed, / num_boxes."""
    prob = inputs.sigmoid()
    numerator = 2 * (prob * targets).sum(1)
    denominator = prob.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


def _bilinear_matrix(out_size: int, in_size: int, like: Tensor) -> Tensor:
    """[out, in] weights of 1-D linear interpolation, as F.interpolate(align_corners=False)."""
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    frac = src - i0
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    m.index_put_((rows, i0), 1 - frac, accumulate=True)
    m.index_put_((rows, i1), frac, accumulate=True)
    return m.to(like)


def upsample_bilinear(src: Tensor, size: tuple[int, int]) -> Tensor:
    """[N, h, w] -> [N, H, W], bilinear (align_corners=False). In deterministic mode on a GPU
    as two matrix products (F.interpolate's backward adds with atomics there and raises);
    equal to F.interpolate up to float rounding. Elsewhere F.interpolate itself."""
    if not deterministic_enabled(src):
        return F.interpolate(src[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    mh = _bilinear_matrix(size[0], src.shape[-2], src)
    mw = _bilinear_matrix(size[1], src.shape[-1], src)
    return mh @ src @ mw.T


def _src_index(indices):
    """(image, query) of every matched pair. Gathering `t[batch, src]` with them is repeatable:
    the pairs are distinct, so the backward's atomic adds never meet (unlike `t[batch]` with
    repeated images: model/segmentation.py uses index_select for those)."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src = torch.cat([src for src, _ in indices])
    return batch, src


class SetCriterion(nn.Module):
    LOSSES = {
        "labels": "loss_labels",
        "cardinality": "loss_cardinality",
        "boxes": "loss_boxes",
        "masks": "loss_masks",
    }

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float = 0.1,
        losses: tuple[str, ...] = ("labels", "boxes", "cardinality"),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        partial_labels: bool = False,
    ):
        super().__init__()
        self.partial_labels = partial_labels
        unknown = [l for l in losses if l not in self.LOSSES]
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}; known: {list(self.LOSSES)}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    # -- individual losses -------------------------------------------------------------
    def loss_labels(self, outputs, targets, indices, num_boxes, log=True):
        logits = outputs["pred_logits"].float()
        batch_idx, src_idx = _src_index(indices)
        target_classes_o = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, src_idx] = target_classes_o
        weight = self.empty_weight.to(logits.device)
        if self.partial_labels:
            logits = self._federated_logits(logits, targets, batch_idx, src_idx)
        if deterministic_enabled(logits):  # [B*Q, C]: nll_loss2d's mean adds with atomics on GPUs
            loss_ce = F.cross_entropy(logits.flatten(0, 1), target_classes.flatten(), weight)
        else:
            loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight)
        losses = {"loss_ce": loss_ce}
        if log:
            with torch.no_grad():
                if len(target_classes_o):
                    acc = (logits[batch_idx, src_idx].argmax(-1) == target_classes_o).float().mean() * 100
                else:
                    acc = torch.tensor(100.0, device=logits.device)
                losses["class_error"] = 100 - acc
        return losses

    @staticmethod
    def _federated_logits(logits: Tensor, targets, batch_idx: Tensor, src_idx: Tensor) -> Tensor:
        """`logits` [B, Q, C+1] with every image's unannotated thing classes set to -inf for
        its unmatched queries: out of their softmax, so no gradient reaches those logits
        from them. Matched queries keep every class. Unchanged (the same tensor) when no
        image has an unannotated class."""
        unannotated = [t.get("unannotated") for t in targets]
        if not any(u is not None and len(u) for u in unannotated):
            return logits
        drop = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        for b, u in enumerate(unannotated):
            if u is not None and len(u):
                drop[b, :, u.to(logits.device)] = True
        drop[batch_idx, src_idx] = False
        return logits.masked_fill(drop, float("-inf"))

    @torch.no_grad()
    def loss_cardinality(self, outputs, targets, indices, num_boxes):
        logits = outputs["pred_logits"]
        tgt_lengths = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device, dtype=torch.float32)
        card_pred = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        return {"cardinality_error": F.l1_loss(card_pred, tgt_lengths)}

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        batch_idx, src_idx = _src_index(indices)
        src_boxes = outputs["pred_boxes"][batch_idx, src_idx].float()
        if len(src_boxes) == 0:  # zero, but still connected to the box head (DDP needs its gradients)
            zero = outputs["pred_boxes"].float().sum() * 0.0
            return {"loss_bbox": zero, "loss_giou": zero}
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src_boxes)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes), elementwise=True)
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def loss_masks(self, outputs, targets, indices, num_boxes):
        """Masks of matched queries: `pred_masks` [B, Q, h, w], or `matched_masks` [N, h, w]
        already in the order of the matched pairs (images in order, then `indices`)."""
        batch_idx, src_idx = _src_index(indices)
        if "matched_masks" in outputs:
            src = outputs["matched_masks"].float()
        else:
            src = outputs["pred_masks"][batch_idx, src_idx].float()  # [N, h, w]
        h = max(t["masks"].shape[-2] for t in targets)
        w = max(t["masks"].shape[-1] for t in targets)
        if len(src) == 0:
            zero = src.sum() * 0.0  # src is an empty slice of the mask head's output: still connected
            if "matched_masks" not in outputs:
                zero = outputs["pred_masks"].float().sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        tgt = torch.zeros((len(src), h, w), dtype=torch.float32, device=src.device)
        k = 0
        for t, (_, j) in zip(targets, indices):
            m = t["masks"][j.to(t["masks"].device)]
            tgt[k : k + len(m), : m.shape[-2], : m.shape[-1]] = m.to(tgt)
            k += len(m)
        src = upsample_bilinear(src, (h, w))
        src, tgt = src.flatten(1), tgt.flatten(1)
        return {
            "loss_mask": sigmoid_focal_loss(src, tgt, num_boxes, self.focal_alpha, self.focal_gamma),
            "loss_dice": dice_loss(src, tgt, num_boxes),
        }

    def get_loss(self, name, outputs, targets, indices, num_boxes, **kwargs):
        return getattr(self, self.LOSSES[name])(outputs, targets, indices, num_boxes, **kwargs)

    # -- the whole set loss -------------------------------------------------------------
    def num_boxes(self, targets, device) -> float:
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        n = D.all_reduce_sum(n) / D.get_world_size()
        return max(float(n.item()), 1.0)

    def forward(self, outputs: dict, targets: list[dict], indices=None) -> dict[str, Tensor]:
        """Unweighted losses and logged extras; `weighted_total` sums them with `weight_dict`.

        `indices`: the main output's matching when already computed (see `TrainStep`).
        """
        device = outputs["pred_logits"].device
        num_boxes = self.num_boxes(targets, device)
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        if indices is None:
            indices = self.matcher(main, targets)
        losses: dict[str, Tensor] = {}
        for name in self.losses:
            if name == "masks" and "pred_masks" not in outputs and "matched_masks" not in outputs:
                continue
            losses.update(self.get_loss(name, main, targets, indices, num_boxes))
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            aux_indices = self.matcher(aux, targets)
            for name in self.losses:
                if name == "masks":
                    continue  # intermediate masks are not computed (too costly)
                kwargs = {"log": False} if name == "labels" else {}
                part = self.get_loss(name, aux, targets, aux_indices, num_boxes, **kwargs)
                losses.update({f"{k}_{i}": v for k, v in part.items()})
        return losses

    def weighted_total(self, losses: dict[str, Tensor]) -> Tensor:
        return sum(losses[k] * w for k, w in self.weight_dict.items() if k in losses and w != 0)


def build_weight_dict(
    ce: float = 1.0, bbox: float = 5.0, giou: float = 2.0, mask: float = 1.0, dice: float = 1.0,
    num_aux: int = 0, masks: bool = False,
) -> dict[str, float]:
    w = {"loss_ce": ce, "loss_bbox": bbox, "loss_giou": giou}
    if masks:
        w.update({"loss_mask": mask, "loss_dice": dice})
    base = {"loss_ce": ce, "loss_bbox": bbox, "loss_giou": giou}
    for i in range(num_aux):
        w.update({f"{k}_{i}": v for k, v in base.items()})
    return w
