"""A batch of images of different sizes: zero-padded tensors plus a padding mask."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class NestedTensor:
    """`tensors` [B, C, H, W] padded bottom/right with zeros; `mask` [B, H, W] bool, True = padding."""

    def __init__(self, tensors: Tensor, mask: Tensor):
        self.tensors = tensors
        self.mask = mask

    def to(self, device, non_blocking: bool = False) -> "NestedTensor":
        return NestedTensor(
            self.tensors.to(device, non_blocking=non_blocking), self.mask.to(device, non_blocking=non_blocking)
        )

    def decompose(self) -> tuple[Tensor, Tensor]:
        return self.tensors, self.mask

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """(h, w) of each image's valid (unpadded) region."""
        valid = ~self.mask
        heights = valid[:, :, 0].sum(1) if valid.shape[2] else torch.zeros(len(valid))
        widths = valid[:, 0, :].sum(1) if valid.shape[1] else torch.zeros(len(valid))
        return [(int(h), int(w)) for h, w in zip(heights, widths)]

    def __len__(self) -> int:
        return self.tensors.shape[0]

    def __repr__(self) -> str:
        return f"NestedTensor(tensors={tuple(self.tensors.shape)}, mask={tuple(self.mask.shape)})"


def nested_tensor_from_tensor_list(tensors: Sequence[Tensor], size_divisibility: int = 0) -> NestedTensor:
    """Batch CHW images by zero-padding each at the bottom and right to the largest H and W.

    `size_divisibility` > 0 rounds the padded size up to a multiple of it (not used by DETR,
    whose official batches are padded to the batch maximum only).
    """
    if len(tensors) == 0:
        raise ValueError("nested_tensor_from_tensor_list: empty list of images")
    if any(t.dim() != 3 for t in tensors):
        shapes = [tuple(t.shape) for t in tensors]
        raise ValueError(f"expected CHW images, got shapes {shapes}")
    channels = tensors[0].shape[0]
    if any(t.shape[0] != channels for t in tensors):
        raise ValueError("all images of a batch need the same number of channels")
    max_h = max(t.shape[1] for t in tensors)
    max_w = max(t.shape[2] for t in tensors)
    if size_divisibility > 0:
        max_h = -(-max_h // size_divisibility) * size_divisibility
        max_w = -(-max_w // size_divisibility) * size_divisibility
    first = tensors[0]
    batch = first.new_zeros((len(tensors), channels, max_h, max_w))
    mask = torch.ones((len(tensors), max_h, max_w), dtype=torch.bool, device=first.device)
    for img, pad_img, m in zip(tensors, batch, mask):
        h, w = img.shape[1:]
        pad_img[:, :h, :w].copy_(img)
        m[:h, :w] = False
    return NestedTensor(batch, mask)


def as_nested_tensor(samples) -> NestedTensor:
    """Accept a NestedTensor, a list of CHW tensors, or a [B, C, H, W] tensor (no padding)."""
    if isinstance(samples, NestedTensor):
        return samples
    if isinstance(samples, Tensor):
        if samples.dim() == 3:
            samples = samples[None]
        if samples.dim() != 4:
            raise ValueError(f"expected a [B, C, H, W] tensor, got shape {tuple(samples.shape)}")
        b, _, h, w = samples.shape
        return NestedTensor(samples, torch.zeros((b, h, w), dtype=torch.bool, device=samples.device))
    if isinstance(samples, (list, tuple)):
        return nested_tensor_from_tensor_list(list(samples))
    raise TypeError(f"expected a list of CHW tensors or a NestedTensor, got {type(samples).__name__}")
