"""DETR: backbone + transformer + class and box heads (the detection model)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_detr.model.backbone import Joiner
from panoptic_detr.model.nested_tensor import NestedTensor, as_nested_tensor
from panoptic_detr.model.transformer import Transformer


class MLP(nn.Module):
    """Linear layers with ReLU between them (keys `layers.{0..n-1}`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == last else F.relu(layer(x))
        return x


@dataclass
class DetrFeatures:
    """What the panoptic head needs from a DETR forward besides the predictions."""

    features: list[NestedTensor]  # backbone layer1..layer4
    mask: Tensor  # [B, h, w] padding mask of the last level
    src_proj: Tensor  # [B, d, h, w] input_proj(layer4)
    hs: Tensor  # [num_dec_layers, B, Q, d] decoder outputs (through the final norm)
    memory: Tensor  # [B, d, h, w] encoder output


class DETR(nn.Module):
    """The detection model. `forward(samples)` -> pred_logits [B, Q, C+1], pred_boxes [B, Q, 4]
    (sigmoid cx, cy, w, h relative to each image's unpadded size), aux_outputs (earlier decoder
    layers, when `aux_loss`)."""

    recorder = None  # an AttentionRecord while inside model_attention()

    def __init__(self, backbone: Joiner, transformer: Transformer, num_classes: int, num_queries: int,
                 aux_loss: bool = True):
        super().__init__()
        hidden_dim = transformer.d_model
        self.num_queries = num_queries
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)  # last index = "no object"
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.backbone = backbone
        self.aux_loss = aux_loss

    @property
    def num_classes(self) -> int:
        return self.class_embed.out_features - 1

    @property
    def padding_invariant(self) -> bool:
        return self.backbone[0].padding_invariant

    def set_padding_invariant(self, enabled: bool = True):
        """Opt-in mode where an image gives the same outputs alone or padded in any batch.

        Official DETR is not padding invariant: the ResNet's convolutions next to an image's
        border see the batch padding (after the first layer it is no longer zero), which the
        DETR authors note makes results vary with the batch composition. In this mode the
        padding is re-zeroed before every spatial operation and the masks are the exact valid
        regions, so each image is computed as if it ran alone (with the same weights, an
        unpadded image gives the official outputs either way). Costs a few elementwise ops.
        """
        self.backbone[0].padding_invariant = enabled
        return self

    def _device(self) -> torch.device:
        return self.query_embed.weight.device

    def encode_decode(self, samples) -> DetrFeatures:
        samples = as_nested_tensor(samples)
        if samples.tensors.device != self._device():
            samples = samples.to(self._device())
        features, pos = self.backbone(samples)
        src, mask = features[-1].decompose()
        src_proj = self.input_proj(src)
        if self.recorder is not None:
            self.recorder.reset()
            self.recorder.feature_size = tuple(src.shape[-2:])
            self.recorder.padding_mask = mask
        hs, memory = self.transformer(src_proj, mask, self.query_embed.weight, pos)
        return DetrFeatures(features, mask, src_proj, hs, memory)

    def predict_heads(self, hs: Tensor) -> dict:
        logits = self.class_embed(hs)
        boxes = self.bbox_embed(hs).sigmoid()
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return out

    def forward(self, samples, with_masks: bool = True) -> dict:
        """`samples`: list of normalised CHW tensors, a NestedTensor, or a [B, 3, H, W] tensor.
        (`with_masks` is accepted for a common call form with the panoptic model and ignored.)"""
        return self.predict_heads(self.encode_decode(samples).hs)
