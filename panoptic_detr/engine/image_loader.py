"""Images decoded and preprocessed in worker processes while the model runs.

`load_images(items, predictor, workers)` yields a `LoadedImage` per `(index, path)` item,
in order: the image (when `keep_images`), the network's input tensor at its processed size
(`data.preprocess.preprocess_image` with the predictor's `short_side` / `max_size`, on the
CPU: the caller moves it to the device) and the original size, or the one-line error of a
file that cannot be read. With `workers` > 0 a `torch.utils.data.DataLoader` decodes in
that many processes (each with one thread), `2 * workers` images ahead; 0 decodes in this
process (and uses `predictor.preprocess` for a predictor without `short_side`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from panoptic_detr.errors import PanopticDetrError

__all__ = ["LoadedImage", "load_images"]


@dataclass
class LoadedImage:
    index: int
    path: Path
    image: np.ndarray | None = None  # HxWx3 uint8, when kept
    tensor: torch.Tensor | None = None  # normalised CHW at the processed size
    size: tuple[int, int] | None = None  # original (H, W)
    error: str | None = None  # the file could not be read


class _Images(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[tuple[int, Path]], short_side, max_size, keep_images: bool):
        self.items, self.short_side, self.max_size, self.keep = list(items), short_side, max_size, keep_images

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> LoadedImage:
        from panoptic_detr.data.image_io import load_image
        from panoptic_detr.data.preprocess import preprocess_image

        index, path = self.items[k]
        try:
            image = load_image(path)
            tensor, size = preprocess_image(image, self.short_side, self.max_size, "cpu")
        except PanopticDetrError as e:
            return LoadedImage(index, Path(path), error=str(e))
        return LoadedImage(index, Path(path), image if self.keep else None, tensor, size)


def _one(x):
    return x


def load_images(items: Sequence[tuple[int, Path]], predictor, workers: int = 2, keep_images: bool = False
                ) -> Iterator[LoadedImage]:
    """Every item as a `LoadedImage`, in order (see the module docstring)."""
    short_side = getattr(predictor, "short_side", None)
    if short_side is None:  # a predictor with its own preprocessing: in this process
        yield from _in_process(items, predictor, keep_images)
        return
    ds = _Images(items, short_side, getattr(predictor, "max_size", None), keep_images)
    if workers <= 0 or len(ds) <= 1:
        yield from (ds[k] for k in range(len(ds)))
        return
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=min(workers, len(ds)),
                                         collate_fn=_one, prefetch_factor=2)
    yield from loader


def _in_process(items, predictor, keep_images: bool) -> Iterator[LoadedImage]:
    from panoptic_detr.data.image_io import load_image

    for index, path in items:
        try:
            image = load_image(path)
            tensor, size = predictor.preprocess(image)
        except PanopticDetrError as e:
            yield LoadedImage(index, Path(path), error=str(e))
            continue
        yield LoadedImage(index, Path(path), image if keep_images else None, tensor, size)
