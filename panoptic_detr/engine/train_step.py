"""One training forward: the model plus matching (what DistributedDataParallel wraps)."""

from __future__ import annotations

import torch
from torch import nn

from panoptic_detr.engine.matcher import HungarianMatcher


class TrainStep(nn.Module):
    """The model plus matching, in one forward (what DDP wraps).

    Panoptic models decode masks for the matched queries only (the loss ignores the others,
    so gradients are those of the full forward, at a fraction of the cost).
    """

    def __init__(self, model: nn.Module, matcher: HungarianMatcher):
        super().__init__()
        self.model = model
        self.matcher = matcher

    def forward(self, samples, targets):
        has_masks = hasattr(self.model, "masks_for_queries")
        out = self.model(samples, with_masks=False) if has_masks else self.model(samples)
        ctx = out.pop("mask_context", None)
        main = {k: v for k, v in out.items() if k != "aux_outputs"}
        indices = self.matcher(main, targets)
        if has_masks:
            device = out["pred_logits"].device
            bi = torch.cat([torch.full_like(s, i) for i, (s, _) in enumerate(indices)]).to(device)
            qi = torch.cat([s for s, _ in indices]).to(device)
            if len(qi):
                out["matched_masks"] = self.model.masks_for_queries(ctx, bi, qi)
            else:  # no objects: an empty slice that still reaches the mask head (for DDP)
                zero = torch.zeros(1, dtype=torch.long, device=device)
                out["matched_masks"] = self.model.masks_for_queries(ctx, zero, zero)[:0]
        return out, indices


def targets_to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


__all__ = ["TrainStep", "targets_to"]
