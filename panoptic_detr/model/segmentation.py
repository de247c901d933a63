"""The panoptic head of DETR: per-query attention maps and a small FPN-style mask decoder.

`DETRsegm(detr)` adds `bbox_attention` (MHAttentionMap) and `mask_head` (MaskHeadSmallConv)
to a DETR. For each query, the mask head sees cat(input_proj(layer4), the query's attention
maps) at stride 32, refines it with two 3x3 convs and upsamples it through layer3, layer2 and
layer1 (stride 4), each step adding a 1x1 `adapter` of the backbone feature. Every conv but the
last is followed by GroupNorm(8) + ReLU.

Speed without changing the result: GroupNorm normalises each sample (each query) on its own,
so queries are independent and `masks_for_queries` can run the decoder on the queries that
matter only. Per-image parts are computed once, not once per query: the adapters, and the
share of `lay1` that sees the image features (a conv of a concatenation is the sum of the
convs of its parts; only the nheads attention channels differ between queries).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_detr.model.detr import DETR


class MHAttentionMap(nn.Module):
    """Multi-head attention weights only (no values): [B, Q, nheads, h, w], softmax taken jointly
    over heads x h x w. k is a 1x1 conv of the feature map with `k_linear`'s weight.

    `density=True` multiplies each image's maps by nheads x its valid (unpadded) positions,
    so that a uniform map is 1 whatever the image size (see ModelConfig.mask_attention)."""

    recorder = None  # an AttentionRecord while inside model_attention()

    def __init__(self, query_dim: int, hidden_dim: int, num_heads: int, bias: bool = True, density: bool = False):
        super().__init__()
        self.density = density
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.q_linear = nn.Linear(query_dim, hidden_dim, bias=bias)
        self.k_linear = nn.Linear(query_dim, hidden_dim, bias=bias)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5
        nn.init.zeros_(self.k_linear.bias)
        nn.init.zeros_(self.q_linear.bias)
        nn.init.xavier_uniform_(self.k_linear.weight)
        nn.init.xavier_uniform_(self.q_linear.weight)

    def forward(self, q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
        """q [B, Q, d] (last decoder output), k [B, d, h, w] (encoder memory), mask [B, h, w]."""
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        b, nq = q.shape[:2]
        h, w = k.shape[-2:]
        head_dim = self.hidden_dim // self.num_heads
        qh = q.view(b, nq, self.num_heads, head_dim)
        kh = k.view(b, self.num_heads, head_dim, h, w)
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        if mask is not None:
            weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        weights = weights.flatten(2).softmax(-1).view(weights.shape)
        if self.recorder is not None:
            self.recorder.mask_attention = weights.detach()
        if self.density:
            valid = torch.full((b,), float(h * w), device=weights.device) if mask is None else (~mask).flatten(1).sum(1)
            weights = weights * (self.num_heads * valid.to(weights.dtype)).view(b, 1, 1, 1, 1)
        return weights


def masked_group_norm(x: Tensor, gn: nn.GroupNorm, pad: Tensor) -> Tensor:
    """GroupNorm with statistics over the valid positions only (`pad` [N, 1, H, W], True = padding)."""
    n, c, h, w = x.shape
    g = gn.num_groups
    xf = x.float().view(n, g, c // g, h, w)
    valid = (~pad).to(xf.dtype).view(n, 1, 1, h, w)
    count = valid.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1) * (c // g)
    mean = (xf * valid).sum(dim=(2, 3, 4), keepdim=True) / count
    var = (((xf - mean) ** 2) * valid).sum(dim=(2, 3, 4), keepdim=True) / count
    y = ((xf - mean) * torch.rsqrt(var + gn.eps)).view(n, c, h, w)
    if gn.affine:
        y = y * gn.weight.float()[None, :, None, None] + gn.bias.float()[None, :, None, None]
    return y.to(x.dtype)


@dataclass
class MaskContext:
    """Per-image inputs of the mask decoder (opaque to callers of `masks_for_queries`)."""

    image_term: Tensor  # [B, dim, h, w] lay1 applied to input_proj(layer4), with lay1's bias
    bbox_mask: Tensor  # [B, Q, nheads, h, w]
    fpns: list[Tensor]  # adapter1(layer3), adapter2(layer2), adapter3(layer1), each [B, c, H_i, W_i]
    # Padding-invariant mode only: [B, 1, h, w] bool padding masks at the stride of x, fpns[0..2].
    pads: list[Tensor] | None = None

    @property
    def mask_size(self) -> tuple[int, int]:
        return tuple(self.fpns[-1].shape[-2:])


class MaskHeadSmallConv(nn.Module):
    """Mask decoder: stride-32 input -> stride-4 mask logits, one channel per query."""

    def __init__(self, dim: int, fpn_dims: list[int], context_dim: int):
        super().__init__()
        inter_dims = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16, context_dim // 64]
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(8, dim)
        self.lay2 = nn.Conv2d(dim, inter_dims[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(8, inter_dims[1])
        self.lay3 = nn.Conv2d(inter_dims[1], inter_dims[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(8, inter_dims[2])
        self.lay4 = nn.Conv2d(inter_dims[2], inter_dims[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(8, inter_dims[3])
        self.lay5 = nn.Conv2d(inter_dims[3], inter_dims[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(8, inter_dims[4])
        self.out_lay = nn.Conv2d(inter_dims[4], 1, 3, padding=1)
        self.dim = dim
        self.adapter1 = nn.Conv2d(fpn_dims[0], inter_dims[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], inter_dims[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], inter_dims[3], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    def prepare(self, x: Tensor, bbox_mask: Tensor, fpns: list[Tensor], pads: list[Tensor] | None = None
                ) -> MaskContext:
        """x [B, d, h, w] = input_proj(layer4); bbox_mask [B, Q, nheads, h, w]; fpns = [layer3, layer2, layer1].
        `pads` (padding-invariant mode): bool padding masks [B, 1, ., .] at the strides of x and fpns."""
        d = x.shape[1]
        if pads is not None:
            x = x.masked_fill(pads[0], 0)
        image_term = F.conv2d(x, self.lay1.weight[:, :d], self.lay1.bias, padding=1)
        adapted = [self.adapter1(fpns[0]), self.adapter2(fpns[1]), self.adapter3(fpns[2])]
        return MaskContext(image_term, bbox_mask, adapted, pads)

    def decode(self, ctx: MaskContext, batch_index: Tensor, query_index: Tensor) -> Tensor:
        """Mask logits [N, H/4, W/4] of the N (image, query) pairs."""
        # Gathers with index_select, never advanced indexing (`t[batch_index]`): the backward of
        # advanced indexing adds into repeated rows with unordered atomic adds when several CPU
        # threads run (a different float sum from run to run: training was not repeatable);
        # index_select's backward (index_add_) adds the rows in index order. Same forward values.
        d = self.dim - ctx.bbox_mask.shape[2]
        nq = ctx.bbox_mask.shape[1]
        att = ctx.bbox_mask.flatten(0, 1).index_select(0, batch_index * nq + query_index)  # [N, nheads, h, w]
        pads = None if ctx.pads is None else [p.index_select(0, batch_index) for p in ctx.pads]

        def norm_relu(y: Tensor, gn: nn.GroupNorm, level: int) -> Tensor:
            if pads is None:
                return F.relu(gn(y))
            # Statistics over the valid region, padding back to zero for the next 3x3 conv.
            return F.relu(masked_group_norm(y, gn, pads[level])).masked_fill(pads[level], 0)

        x = ctx.image_term.index_select(0, batch_index) + F.conv2d(att, self.lay1.weight[:, d:], None, padding=1)
        x = norm_relu(x, self.gn1, 0)
        x = norm_relu(self.lay2(x), self.gn2, 0)
        stages = zip(ctx.fpns, (self.lay3, self.lay4, self.lay5), (self.gn3, self.gn4, self.gn5))
        for level, (fpn, lay, gn) in enumerate(stages, start=1):
            cur = fpn.index_select(0, batch_index)
            x = cur + F.interpolate(x, size=cur.shape[-2:], mode="nearest")
            if pads is not None:
                x = x.masked_fill(pads[level], 0)
            x = norm_relu(lay(x), gn, level)
        return self.out_lay(x)[:, 0]

    def forward(self, x: Tensor, bbox_mask: Tensor, fpns: list[Tensor]) -> Tensor:
        """All queries: [B * Q, 1, H/4, W/4] (the official call form)."""
        ctx = self.prepare(x, bbox_mask, fpns)
        b, q = bbox_mask.shape[:2]
        bi = torch.arange(b, device=x.device).repeat_interleave(q)
        qi = torch.arange(q, device=x.device).repeat(b)
        return self.decode(ctx, bi, qi)[:, None]


class DETRsegm(nn.Module):
    """The panoptic model: `detr` + `bbox_attention` + `mask_head`.

    forward(samples) adds pred_masks [B, Q, H/4, W/4] (mask logits on the padded grid) to DETR's
    outputs; forward(samples, with_masks=False) returns `mask_context` instead, from which
    `masks_for_queries` computes the masks of chosen queries only.
    """

    def __init__(self, detr: DETR, mask_attention: str = "softmax"):
        super().__init__()
        self.detr = detr
        hidden_dim, nheads = detr.transformer.d_model, detr.transformer.nhead
        self.bbox_attention = MHAttentionMap(hidden_dim, hidden_dim, nheads, density=mask_attention == "density")
        c1, c2, c3, _ = detr.backbone.channels
        self.mask_head = MaskHeadSmallConv(hidden_dim + nheads, [c3, c2, c1], hidden_dim)
        # Queries decoded at once in the full forward: bounds peak memory, same result.
        self.mask_chunk_size = 50

    @property
    def num_classes(self) -> int:
        return self.detr.num_classes

    @property
    def num_queries(self) -> int:
        return self.detr.num_queries

    @property
    def padding_invariant(self) -> bool:
        return self.detr.padding_invariant

    def set_padding_invariant(self, enabled: bool = True):
        """See `DETR.set_padding_invariant`; the mask head then also re-zeroes the padding and
        takes its GroupNorm statistics over each image's valid region only."""
        self.detr.set_padding_invariant(enabled)
        return self

    def forward(self, samples, with_masks: bool = True) -> dict:
        f = self.detr.encode_decode(samples)
        out = self.detr.predict_heads(f.hs)
        bbox_mask = self.bbox_attention(f.hs[-1], f.memory, mask=f.mask)
        fpn_levels = [f.features[2], f.features[1], f.features[0]]
        pads = None
        if self.detr.padding_invariant:
            pads = [m[:, None] for m in [f.mask] + [level.mask for level in fpn_levels]]
        ctx = self.mask_head.prepare(f.src_proj, bbox_mask, [level.tensors for level in fpn_levels], pads)
        if not with_masks:
            out["mask_context"] = ctx
            return out
        b, q = bbox_mask.shape[:2]
        bi = torch.arange(b, device=bbox_mask.device).repeat_interleave(q)
        qi = torch.arange(q, device=bbox_mask.device).repeat(b)
        out["pred_masks"] = self.masks_for_queries(ctx, bi, qi).view(b, q, *ctx.mask_size)
        return out

    def masks_for_queries(self, ctx: MaskContext, batch_index: Tensor, query_index: Tensor) -> Tensor:
        """Mask logits [N, H/4, W/4] of queries `query_index[i]` of images `batch_index[i]`; equal to
        the full forward's pred_masks[batch_index, query_index]."""
        batch_index = torch.as_tensor(batch_index, dtype=torch.long, device=ctx.bbox_mask.device).reshape(-1)
        query_index = torch.as_tensor(query_index, dtype=torch.long, device=ctx.bbox_mask.device).reshape(-1)
        if batch_index.shape != query_index.shape:
            raise ValueError("batch_index and query_index need the same length")
        n = batch_index.numel()
        if n == 0:
            return ctx.bbox_mask.new_zeros((0, *ctx.mask_size))
        step = max(1, self.mask_chunk_size)
        parts = [self.mask_head.decode(ctx, batch_index[i:i + step], query_index[i:i + step])
                 for i in range(0, n, step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
