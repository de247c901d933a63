"""The fixed sine positional encoding of DETR, normalised to each image's valid region."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of (y, x), `num_pos_feats` channels per axis, output cat(pos_y, pos_x).

    Positions are `cumsum(~mask)` along each axis, so padding never shifts the positions of
    real pixels; normalised by the last value (+1e-6) and scaled to (0, 2*pi], they depend
    only on the unpadded size. Has no parameters (no state-dict keys).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000, normalize: bool = True,
                 scale: float | None = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale needs normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, mask: Tensor) -> Tensor:
        """`mask` [B, H, W] bool (True = padding) -> [B, 2 * num_pos_feats, H, W] float32."""
        not_mask = ~mask
        # integer sums, then float (the same values): a float cumsum has no deterministic CUDA kernel
        y_embed = not_mask.cumsum(1, dtype=torch.int32).to(torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.int32).to(torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        # Channel pairs (2i, 2i+1) share the frequency temperature^(2i / num_pos_feats).
        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats)

        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # sin on even channels, cos on odd channels, interleaved.
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, normalize={self.normalize}"
