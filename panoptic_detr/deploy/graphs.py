"""The two modules that are exported to ONNX, and the names of their inputs and outputs.

`DetrGraph(model)`: one normalised image [1, 3, H, W] -> `pred_logits` [1, Q, C+1],
`pred_boxes` [1, Q, 4] and, for a panoptic model, the per-image tensors of the mask
decoder (`MaskContext`): `image_term` [1, d, h, w] (lay1 applied to input_proj(layer4)),
`query_attention` [1, Q, nheads, h, w] (bbox_attention maps), `fpn_s16`, `fpn_s8`,
`fpn_s4` (the adapted layer3 / layer2 / layer1 features).
`MaskHeadGraph(model)`: those five + `query_index` [N] int64 -> `mask_logits`
[N, ceil(H/4), ceil(W/4)], equal to `model.masks_for_queries(ctx, 0, query_index)`.

A plain [1, 3, H, W] tensor becomes a NestedTensor whose padding mask is all False, so
the graphs hold no padding input (one image, never padded): exactly what the torch
`Predictor` runs. The model is exported with its frozen batch norms folded into the
convolutions (`fold_frozen_batchnorm`) and with the padding-invariant mode off (no-ops
without padding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from panoptic_detr.model.segmentation import MaskContext

IMAGE = "image"
PREDICTIONS = ["pred_logits", "pred_boxes"]
CONTEXT = ["image_term", "query_attention", "fpn_s16", "fpn_s8", "fpn_s4"]
QUERY_INDEX = "query_index"
MASK_LOGITS = "mask_logits"

# dynamic axes (torch.onnx.export's dynamic_axes) of each graph
DETR_AXES = {
    IMAGE: {2: "height", 3: "width"},
    "image_term": {2: "h32", 3: "w32"},
    "query_attention": {3: "h32", 4: "w32"},
    "fpn_s16": {2: "h16", 3: "w16"},
    "fpn_s8": {2: "h8", 3: "w8"},
    "fpn_s4": {2: "h4", 3: "w4"},
}
MASK_AXES = {
    **{k: v for k, v in DETR_AXES.items() if k in CONTEXT},
    QUERY_INDEX: {0: "num_selected"},
    MASK_LOGITS: {0: "num_selected", 1: "h4", 2: "w4"},
}


def is_panoptic(model: nn.Module) -> bool:
    return hasattr(model, "mask_head") and hasattr(model, "masks_for_queries")


class DetrGraph(nn.Module):
    """image [1, 3, H, W] -> (pred_logits, pred_boxes[, image_term, query_attention, fpn_s16, fpn_s8, fpn_s4])."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.panoptic = is_panoptic(model)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.model(image, with_masks=False)
        preds = (out["pred_logits"], out["pred_boxes"])
        if not self.panoptic:
            return preds
        ctx: MaskContext = out["mask_context"]
        return (*preds, ctx.image_term, ctx.bbox_mask, *ctx.fpns)


class MaskHeadGraph(nn.Module):
    """(image_term, query_attention, fpn_s16, fpn_s8, fpn_s4, query_index [N]) -> mask_logits [N, h4, w4]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.mask_head = model.mask_head

    def forward(self, image_term: Tensor, query_attention: Tensor, fpn_s16: Tensor, fpn_s8: Tensor, fpn_s4: Tensor,
                query_index: Tensor) -> Tensor:
        ctx = MaskContext(image_term, query_attention, [fpn_s16, fpn_s8, fpn_s4])
        return self.mask_head.decode(ctx, torch.zeros_like(query_index), query_index)
