"""Box utilities: format conversions, (generalised) IoU and boxes from masks.

Formats: `cxcywh` = (centre x, centre y, width, height); `xyxy` = (x0, y0, x1, y1) with
x1 >= x0, y1 >= y0. All functions work on any float dtype and on empty inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    half_w, half_h = 0.5 * w, 0.5 * h
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes (negative extents count as 0)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _inter_union(a: Tensor, b: Tensor, pairwise: bool) -> tuple[Tensor, Tensor]:
    area_a, area_b = box_area(a), box_area(b)
    if pairwise:
        a, area_a = a[:, None, :], area_a[:, None]
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area_a + area_b - inter


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU matrix [N, M] of xyxy boxes, and the union matrix."""
    inter, union = _inter_union(boxes1, boxes2, pairwise=True)
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, elementwise: bool = False) -> Tensor:
    """Generalised IoU (Rezatofighi et al. 2019) of xyxy boxes.

    Returns the [N, M] matrix, or with `elementwise=True` the [N] values of pairs
    `(boxes1[i], boxes2[i])`. Degenerate boxes (x1 < x0) make the result meaningless, so
    they are rejected (their presence usually means a diverged model).
    """
    if not (boxes1[..., 2:] >= boxes1[..., :2]).all() or not (boxes2[..., 2:] >= boxes2[..., :2]).all():
        raise ValueError("generalized_box_iou: degenerate boxes (x1 < x0 or y1 < y0, or NaN)")
    inter, union = _inter_union(boxes1, boxes2, pairwise=not elementwise)
    iou = inter / union
    a = boxes1[:, None, :] if not elementwise else boxes1
    lt = torch.minimum(a[..., :2], boxes2[..., :2])
    rb = torch.maximum(a[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull


def masks_to_boxes(masks: Tensor) -> Tensor:
    """xyxy boxes [N, 4] (float) enclosing the pixels of boolean masks [N, H, W].

    Pixel-edge convention: a mask covering columns 3..5 gives x0 = 3, x1 = 6, so the box
    width is the number of columns covered. Empty masks give a zero box.
    """
    if masks.numel() == 0:
        return torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    m = masks.bool()
    n, h, w = m.shape
    cols = m.any(dim=1)  # [N, W]
    rows = m.any(dim=2)  # [N, H]
    xs = torch.arange(w, device=m.device)
    ys = torch.arange(h, device=m.device)
    big = max(h, w) + 1
    x0 = torch.where(cols, xs, big).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1) + 1
    y0 = torch.where(rows, ys, big).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1) + 1
    boxes = torch.stack((x0, y0, x1, y1), dim=1).float()
    empty = ~cols.any(dim=1)
    boxes[empty] = 0
    return boxes
