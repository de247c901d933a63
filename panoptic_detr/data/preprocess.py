"""The network's input rules, written once: resize, normalisation and nearest resizing.

Every path into the model uses these: the `Predictor`, training's validation transform,
`explain`, and the training augmentation's resize rule. Keeping one copy is what makes a
validation image and the same image through `Predictor` get identical network inputs
(tests/data/test_preprocess.py checks it).

- `resize_shape`: DETR's evaluation size rule (short side to `short_side`, long side at
  most `max_size`), *truncating* as the official `get_size_with_aspect_ratio` does: a
  600x800 image becomes 800x1066, not 800x1067.
- `resize_image`: uint8 HxWx3 -> uint8 at (h, w) with PIL's bilinear filter (the official
  evaluation transform resizes PIL images too; PIL antialiases when it shrinks).
- `normalize`: pixel values 0..255 -> `(x / 255 - mean) / std`, computed as
  `x * (1 / (255 std)) + (-mean / std)` (one multiply-add per value; the rounding of this
  form is the one every caller gets).
- `nearest_indices` / `resize_nearest`: nearest-neighbour resizing of id maps with PIL
  NEAREST's geometry (pixel centres), which the official post-processing used.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "resize_shape",
    "resize_image",
    "normalize",
    "preprocess_image",
    "nearest_indices",
    "resize_nearest",
]


def resize_shape(height: int, width: int, short_side: int = 800, max_size: int | None = 1333) -> tuple[int, int]:
    """(h, w) of DETR's resize: short side to `short_side`, long side <= `max_size` (truncating)."""
    size = float(short_side)
    lo, hi = min(height, width), max(height, width)
    if max_size is not None and hi / lo * size > max_size:
        size = float(int(round(max_size * lo / hi)))
    size = max(1, int(size))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return max(1, int(size * height / width)), size
    return size, max(1, int(size * width / height))


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A uint8 HxWx3 image resized to `size` = (h, w) with PIL's bilinear filter."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


_AFFINE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _affine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _AFFINE:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        _AFFINE[device] = ((1.0 / (255.0 * std)).to(device), (-mean / std).to(device))
    return _AFFINE[device]


def normalize(image: torch.Tensor) -> torch.Tensor:
    """CHW pixel values in 0..255 (uint8 or float) -> the normalised float network input."""
    scale, shift = _affine(image.device)
    x = image.float()
    if x.data_ptr() != image.data_ptr() and x.is_contiguous():  # a fresh copy: work in place
        return x.mul_(scale).add_(shift)
    return x * scale + shift


def preprocess_image(image: np.ndarray, short_side: int = 800, max_size: int | None = 1333,
                     device: str | torch.device = "cpu") -> tuple[torch.Tensor, tuple[int, int]]:
    """(normalised CHW float tensor on `device`, original (H, W)) of a uint8 HxWx3 image."""
    H, W = image.shape[:2]
    arr = resize_image(image, resize_shape(H, W, short_side, max_size))
    x = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).to(device).permute(2, 0, 1)
    return normalize(x).contiguous(), (H, W)


def nearest_indices(out_size: int, in_size: int) -> np.ndarray:
    """Source index of every output index for a nearest resize in_size -> out_size.

    Pixel-centre convention, index = floor((i + 0.5) * in / out), computed exactly as
    PIL's NEAREST resize does (a float64 position accumulated step by step, truncated),
    so that maps equal those of the official code, which resized with PIL.
    """
    scale = in_size / out_size
    steps = np.full(out_size, scale, dtype=np.float64)
    steps[0] = scale * 0.5
    pos = np.add.accumulate(steps)  # sequential sums, as PIL's loop
    return np.clip(pos.astype(np.int64), 0, in_size - 1)


def resize_nearest(id_map, size: Sequence[int]):
    """Nearest resize of an integer map [h, w] (tensor or array) to `size` (H, W)."""
    H, W = int(size[0]), int(size[1])
    h, w = id_map.shape[-2:]
    if (h, w) == (H, W):
        return id_map
    rows, cols = nearest_indices(H, h), nearest_indices(W, w)
    if isinstance(id_map, torch.Tensor):
        rows = torch.from_numpy(rows).to(id_map.device)
        cols = torch.from_numpy(cols).to(id_map.device)
        return id_map.index_select(-2, rows).index_select(-1, cols)
    return np.take(np.take(id_map, rows, axis=-2), cols, axis=-1)
