"""DETR augmentations transforming an image, its boxes and its masks together.

Every transform is a callable `t(image, target, rng) -> (image, target)`:
- `image`: float tensor [3, H, W] (pixel values 0..255 before `Normalize`);
- `target`: dict with `boxes` (float [N, 4], xyxy in pixels until `Normalize`), `masks`
  (bool [N, H, W], optional), `labels` (int64 [N]) and any per-object tensors of length N
  listed in `PER_OBJECT_KEYS`, plus `size` (the current (h, w));
- `rng`: a `numpy.random.Generator`. Randomness comes only from `rng`, so seeding it per
  sample (e.g. from (seed, epoch, index)) makes augmentations reproducible, which exact
  training resumption relies on.

`Normalize` ends a pipeline: it drops objects whose mask became empty, recomputes boxes
from masks (so boxes and masks always agree), and turns boxes into (cx, cy, w, h)
normalised by the image size, as DETR's losses expect.

Sizes and normalisation follow `data.preprocess` (DETR's truncating size rule, one
normalisation formula). The evaluation pipeline (`eval_transforms`) resizes the image
exactly as `Predictor` does (`preprocess_image`), so validation losses and PQ see the
same network input.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from panoptic_detr.data.preprocess import normalize, preprocess_image, resize_shape
from panoptic_detr.utils.box_ops import box_xyxy_to_cxcywh, masks_to_boxes

PER_OBJECT_KEYS = ("boxes", "masks", "labels", "iscrowd", "area", "segment_ids")

Transform = Callable[[Tensor, dict, np.random.Generator], tuple[Tensor, dict]]


def _select(target: dict, keep: Tensor) -> dict:
    out = dict(target)
    for k in PER_OBJECT_KEYS:
        if k in out:
            out[k] = out[k][keep]
    return out


def hflip(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    image = image.flip(-1)
    target = dict(target)
    w = image.shape[-1]
    if "boxes" in target:
        b = target["boxes"]
        target["boxes"] = torch.stack((w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]), dim=1)
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image, target


def resize(image: Tensor, target: dict | None, size: int | tuple[int, int], max_size: int | None = None):
    """Resize so the shorter side is `size` (or to exactly (h, w) when a tuple)."""
    h, w = image.shape[-2:]
    new_h, new_w = size if isinstance(size, (tuple, list)) else resize_shape(h, w, size, max_size)
    if (new_h, new_w) != (h, w):
        image = F.interpolate(
            image[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
        )[0]
    return image, resize_target(target, (h, w), (new_h, new_w))


def resize_target(target: dict | None, old_size: tuple[int, int], new_size: tuple[int, int]) -> dict | None:
    """Boxes, areas and masks of `target` scaled from `old_size` to `new_size` (h, w)."""
    if target is None:
        return None
    (h, w), (new_h, new_w) = old_size, new_size
    target = dict(target)
    sx, sy = new_w / w, new_h / h
    if "boxes" in target:
        target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype)
    if "area" in target:
        target["area"] = target["area"] * (sx * sy)
    if "masks" in target and (new_h, new_w) != (h, w):
        m = target["masks"]
        if m.shape[0] == 0:
            target["masks"] = torch.zeros((0, new_h, new_w), dtype=torch.bool)
        else:
            target["masks"] = F.interpolate(m[:, None].float(), size=(new_h, new_w), mode="nearest")[:, 0] > 0.5
    target["size"] = torch.tensor([new_h, new_w])
    return target


def crop(image: Tensor, target: dict, top: int, left: int, height: int, width: int):
    """Crop a region; objects left with nothing inside it are dropped with their masks."""
    image = image[:, top : top + height, left : left + width]
    target = dict(target)
    target["size"] = torch.tensor([height, width])
    if "boxes" in target:
        b = target["boxes"] - torch.tensor([left, top, left, top], dtype=target["boxes"].dtype)
        b[:, 0::2] = b[:, 0::2].clamp(0, width)
        b[:, 1::2] = b[:, 1::2].clamp(0, height)
        target["boxes"] = b
        if "area" in target:
            target["area"] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if "masks" in target:
        target["masks"] = target["masks"][:, top : top + height, left : left + width]
        keep = target["masks"].flatten(1).any(1)
        if "area" in target:
            target["area"] = target["masks"].flatten(1).sum(1).float()
    elif "boxes" in target:
        b = target["boxes"]
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    else:
        return image, target
    return image, _select(target, keep)


class Compose:
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image, target=None, rng=None):
        if rng is None:
            rng = np.random.default_rng()
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target, rng):
        if rng.random() < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.p})"


class RandomResize:
    """Shorter side resized to one of `sizes` (chosen at random), longer side <= max_size."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None):
        self.sizes = list(sizes)
        self.max_size = max_size

    def __call__(self, image, target, rng):
        size = self.sizes[int(rng.integers(len(self.sizes)))]
        return resize(image, target, size, self.max_size)

    def __repr__(self) -> str:
        return f"RandomResize({self.sizes}, max_size={self.max_size})"


class RandomSizeCrop:
    """A crop of random size (each side in [min_size, max_size], at most the image's)."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image, target, rng):
        h, w = image.shape[-2:]
        cw = int(rng.integers(min(self.min_size, w), min(w, self.max_size) + 1))
        ch = int(rng.integers(min(self.min_size, h), min(h, self.max_size) + 1))
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        return crop(image, target, top, left, ch, cw)

    def __repr__(self) -> str:
        return f"RandomSizeCrop({self.min_size}, {self.max_size})"


class RandomSelect:
    """`first` with probability p, else `second`."""

    def __init__(self, first: Transform, second: Transform, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, image, target, rng):
        if rng.random() < self.p:
            return self.first(image, target, rng)
        return self.second(image, target, rng)

    def __repr__(self) -> str:
        return f"RandomSelect({self.first!r}, {self.second!r}, p={self.p})"


def finalize_target(target: dict | None, size: tuple[int, int]) -> dict | None:
    """Drop objects whose mask is empty, boxes from masks, boxes as normalised cxcywh."""
    if target is None:
        return None
    target = dict(target)
    h, w = size
    target["size"] = torch.tensor([h, w])
    if "masks" in target:
        keep = target["masks"].flatten(1).any(1)
        if not bool(keep.all()):
            target = _select(target, keep)
        target["boxes"] = masks_to_boxes(target["masks"])
    if "boxes" in target:
        b = box_xyxy_to_cxcywh(target["boxes"].float())
        target["boxes"] = b / torch.tensor([w, h, w, h], dtype=torch.float32)
    return target


class Normalize:
    """ImageNet normalisation (`data.preprocess.normalize`); finalises the target."""

    def __call__(self, image, target, rng=None):
        image = normalize(image)
        return image, finalize_target(target, tuple(image.shape[-2:]))

    def __repr__(self) -> str:
        return "Normalize()"


class EvalPreprocess:
    """Evaluation: the `Predictor`'s own resize and normalisation (`preprocess_image`) of
    the image, the target resized to the same size; ends the pipeline as `Normalize`."""

    def __init__(self, size: int = 800, max_size: int | None = 1333):
        self.size, self.max_size = size, max_size

    def __call__(self, image, target=None, rng=None):
        h, w = image.shape[-2:]
        pixels = image.round().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        x, _ = preprocess_image(pixels, self.size, self.max_size)
        new_size = tuple(x.shape[-2:])
        return x, finalize_target(resize_target(target, (h, w), new_size), new_size)

    def __repr__(self) -> str:
        return f"EvalPreprocess({self.size}, max_size={self.max_size})"


DETR_SCALES = tuple(range(480, 801, 32))


def train_transforms(
    scales: Sequence[int] = DETR_SCALES,
    max_size: int = 1333,
    crop_resize: Sequence[int] = (400, 500, 600),
    crop_min: int = 384,
    crop_max: int = 600,
    hflip_p: float = 0.5,
) -> Compose:
    """DETR's training augmentation, sizes configurable."""
    return Compose(
        [
            RandomHorizontalFlip(hflip_p),
            RandomSelect(
                RandomResize(scales, max_size=max_size),
                Compose(
                    [
                        RandomResize(crop_resize),
                        RandomSizeCrop(crop_min, crop_max),
                        RandomResize(scales, max_size=max_size),
                    ]
                ),
            ),
            Normalize(),
        ]
    )


def eval_transforms(size: int = 800, max_size: int | None = 1333) -> Compose:
    """The evaluation transform: identical network inputs to `Predictor`'s."""
    return Compose([EvalPreprocess(size, max_size)])
