"""From the stride-4 mask grid to pixels: the two geometries of panoptic inference.

The mask head's output is the stride-4 grid of the *padded* batch: cell (i, j) holds the
features of input pixels [4i, 4i+4) x [4j, 4j+4) (every stride-2 stage of ResNet maps n
pixels to ceil(n/2) cells, anchored at the top-left corner). An image's own cells are
therefore the first ceil(h/4) x ceil(w/4) -- exactly the grid the model produces for the
image alone. Both geometries first crop to those cells, so padding never leaks in and a
map never depends on the image's batch-mates (the official code interpolates the whole
padded grid, so its maps do; at batch 1 there is no padding and the crop changes nothing).

- `aligned` (the default for models trained here): upsample the crop by exactly the
  stride (bilinear, half-pixel centres, edges clamped to the crop) to 4*ceil(h/4) x
  4*ceil(w/4) and keep the top-left h x w pixels. Every output pixel keeps its true
  position. Computed in bands of rows with the argmax streamed over the queries, never
  holding the k full-size masks.
- `official` (the default for official checkpoints): interpolate the crop straight to
  h x w, as the official `PostProcessPanoptic` does (`interpolate(masks[:, None], size)`),
  then argmax of the softmax over the queries, as it does. When h or w is not a multiple
  of 4 this stretches by h / ceil(h/4) != 4, shifting the masks by up to 2 pixels toward
  the far edge; it is kept to reproduce the official maps and numbers exactly (at batch
  1, on the same tensors: 0 pixels different). It holds the k full-size masks (and their
  softmax) at once, as the official code.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from panoptic_detr.model.inference_defaults import GEOMETRIES

__all__ = ["GEOMETRIES", "image_cells", "upsample_masks", "masks_argmax"]


def image_cells(masks: torch.Tensor, processed_size: Sequence[int], stride: int) -> tuple[int, int, int, int]:
    """(h, w, ch, cw): the image size and the ceil(h/stride) x ceil(w/stride) grid cells it owns."""
    h, w = int(processed_size[0]), int(processed_size[1])
    ch, cw = math.ceil(h / stride), math.ceil(w / stride)
    gh, gw = masks.shape[-2:]
    if gh < ch or gw < cw:
        raise ValueError(
            f"mask grid {gh}x{gw} is smaller than the {ch}x{cw} cells a {h}x{w} image needs at stride {stride}"
        )
    return h, w, ch, cw


def _check(geometry: str) -> None:
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")


def upsample_masks(masks: torch.Tensor, processed_size: Sequence[int], stride: int = 4,
                   geometry: str = "aligned") -> torch.Tensor:
    """Mask logits [k, gh, gw] on a (possibly padded) stride-`stride` grid -> [k, h, w].

    Crops to the image's own ceil(h/stride) x ceil(w/stride) cells; `aligned` then
    upsamples by exactly `stride` (bilinear, align_corners=False) and keeps the top-left
    h x w pixels, `official` interpolates the crop to h x w (see the module docstring).
    """
    _check(geometry)
    h, w, ch, cw = image_cells(masks, processed_size, stride)
    crop = masks[:, :ch, :cw].float()
    if crop.shape[0] == 0:
        return crop.new_zeros((0, h, w))
    if geometry == "official":
        return F.interpolate(crop[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    up = F.interpolate(crop[None], size=(ch * stride, cw * stride), mode="bilinear", align_corners=False)[0]
    return up[:, :h, :w]


def masks_argmax(
    masks: torch.Tensor,
    processed_size: Sequence[int],
    stride: int = 4,
    queries: torch.Tensor | None = None,
    band_rows: int = 64,
    geometry: str = "aligned",
) -> torch.Tensor:
    """Pixel-wise argmax [h, w] (int64 index into `masks`) of `upsample_masks(masks)`.

    Equal to `upsample_masks(masks[queries], ...).argmax(0)` mapped back to indices of
    `masks` (first maximum on ties). `aligned`: without ever holding the k full-size
    masks: the upsampling runs in bands of output rows (each with one grid row of context
    on either side, so every value is bit-identical to the full upsampling) and the
    maximum is streamed over the queries (torch's argmax over the first dimension is
    several times slower than this on CPU). `official`: the argmax of the softmax over
    the queries of the full-size masks, the official code's very operations.
    """
    _check(geometry)
    h, w, ch, cw = image_cells(masks, processed_size, stride)
    if queries is None:
        queries = torch.arange(masks.shape[0], device=masks.device)
    if geometry == "official":
        up = upsample_masks(masks.index_select(0, queries), (h, w), stride, geometry)
        return queries[up.flatten(1).transpose(0, 1).softmax(-1).argmax(-1).view(h, w)]
    grid = masks.index_select(0, queries)[:, :ch, :cw].float()
    out = torch.empty((h, w), dtype=torch.long, device=masks.device)
    band_rows = max(stride, band_rows - band_rows % stride)
    for y0 in range(0, h, band_rows):
        y1 = min(h, y0 + band_rows)
        g0 = max(0, y0 // stride - 1)
        g1 = min(ch, (y1 - 1) // stride + 2)
        up = F.interpolate(grid[None, :, g0:g1], size=((g1 - g0) * stride, cw * stride), mode="bilinear",
                           align_corners=False)[0]
        up = up[:, y0 - g0 * stride : y1 - g0 * stride, :w]
        best = up[0].clone()
        idx = torch.zeros(best.shape, dtype=torch.long, device=masks.device)
        for i in range(1, up.shape[0]):
            better = up[i] > best  # strict: the first maximum wins ties
            torch.maximum(best, up[i], out=best)
            idx.masked_fill_(better, i)
        out[y0:y1] = idx
    return queries[out]
