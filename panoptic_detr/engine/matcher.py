"""Hungarian matching of predictions to ground-truth objects (DETR's bipartite matching).

Cost = cost_class x (-softmax probability of the target class)
     + cost_bbox  x L1 distance between (cx, cy, w, h) boxes
     + cost_giou  x (-generalised IoU).
Masks take no part. The cost matrices of the whole batch are computed at once, then
`scipy.optimize.linear_sum_assignment` solves each image's block.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from panoptic_detr.utils.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


class NonFiniteError(FloatingPointError):
    """Predictions (hence costs or losses) contain NaN or inf."""


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    def cost_matrix(self, outputs: dict, targets: list[dict]) -> Tensor:
        """[B, Q, sum(N_i)] costs of every prediction against every target of the batch."""
        logits = outputs["pred_logits"]
        bs, nq = logits.shape[:2]
        prob = logits.flatten(0, 1).float().softmax(-1)  # [B*Q, C+1]
        out_bbox = outputs["pred_boxes"].flatten(0, 1).float()  # [B*Q, 4]
        tgt_ids = torch.cat([t["labels"] for t in targets]).to(logits.device)
        tgt_bbox = torch.cat([t["boxes"] for t in targets]).to(out_bbox)
        if not (torch.isfinite(prob).all() and torch.isfinite(out_bbox).all()):
            raise NonFiniteError("predictions contain NaN or inf")
        cost = self.cost_class * -prob[:, tgt_ids]
        if self.cost_bbox:
            cost = cost + self.cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1)
        if self.cost_giou:
            cost = cost - self.cost_giou * generalized_box_iou(
                box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox)
            )
        return cost.view(bs, nq, -1)

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """Per image, (prediction indices, target indices), sorted by prediction index."""
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        cost = self.cost_matrix(outputs, targets).cpu()
        result = []
        for i, block in enumerate(cost.split(sizes, -1)):
            if sizes[i] == 0:
                result.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(block[i].numpy())
            result.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return result


__all__ = ["HungarianMatcher", "NonFiniteError"]
