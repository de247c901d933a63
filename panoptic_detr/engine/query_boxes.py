"""Every query's box over many images (figure 3 and the explorer's query view).

`query_boxes(model, images)` collects every query's box, score and label over a set of
images (no attention capture, no masks); `crops_for_queries` makes such images out of one
when few are at hand. Re-exported by `engine.explain`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from panoptic_detr.errors import PanopticDetrError

__all__ = ["QueryBoxes", "query_boxes", "crops_for_queries"]


@dataclass
class QueryBoxes:
    """Every query's prediction over a set of images: boxes [N, Q, 4] (cx, cy, w, h
    normalised), scores [N, Q] (best real-class probability), labels [N, Q]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    sources: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return int(self.boxes.shape[0])


def _named_image(item, index: int) -> tuple[str, np.ndarray]:
    """(name, HxWx3 uint8) of a path, an array or a `(name, array)` pair."""
    from panoptic_detr.data.image_io import load_image, to_rgb_array

    if isinstance(item, tuple):
        return item[0], to_rgb_array(item[1])
    if isinstance(item, (str, os.PathLike)):
        return str(item), load_image(item)
    return f"image {index}", to_rgb_array(item)


def query_boxes(
    model,
    images: Iterable,
    short_side: int = 800,
    max_size: int | None = 1333,
    device: str = "cpu",
    progress: bool = False,
    on_error: Callable[[str], None] | None = None,
) -> QueryBoxes:
    """Run `model` (a model or a `Predictor`; no attention capture, no masks) on every
    image (paths, arrays or `(name, array)` pairs) and collect each query's box, score and
    label. An unreadable image goes to `on_error` (raised when None)."""
    from panoptic_detr.data.preprocess import preprocess_image

    net = getattr(model, "model", model)  # a Predictor or a model
    net.eval()
    config = getattr(net, "config", None)
    net = getattr(net, "detr", net)  # boxes and classes only: skip the mask head's preparation
    images = list(images)
    boxes, scores, labels, names = [], [], [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), unit="img", file=sys.stderr, dynamic_ncols=True)
    for item in images:
        try:
            name, arr = _named_image(item, len(names))
        except PanopticDetrError as e:
            if on_error is None:
                raise
            on_error(str(e))
        else:
            x, _ = preprocess_image(arr, short_side, max_size, device)
            with torch.inference_mode():
                out = net(x[None], with_masks=False)
            probs = out["pred_logits"][0].float().softmax(-1)
            s, l = probs[:, :-1].max(-1)
            boxes.append(out["pred_boxes"][0].float().cpu().numpy())
            scores.append(s.cpu().numpy())
            labels.append(l.cpu().numpy())
            names.append(name)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    q = int(getattr(config, "num_queries", 0) or (boxes[0].shape[0] if boxes else 0))
    if not boxes:
        return QueryBoxes(np.zeros((0, q, 4), np.float32), np.zeros((0, q), np.float32),
                          np.zeros((0, q), np.int64), [])
    return QueryBoxes(np.stack(boxes), np.stack(scores), np.stack(labels), names)


def crops_for_queries(image: np.ndarray, count: int = 16, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Deterministic crops and flips of one image, so that figure 3 can be drawn when only
    a few images are at hand (each crop moves the objects to other places in the frame)."""
    rng = np.random.default_rng(seed)
    H, W = image.shape[:2]
    out = [("original", image)]
    while len(out) < count:
        s = float(rng.uniform(0.45, 0.9))
        ch, cw = max(8, int(H * s)), max(8, int(W * float(rng.uniform(0.45, 0.9))))
        y0 = int(rng.integers(0, H - ch + 1))
        x0 = int(rng.integers(0, W - cw + 1))
        crop = image[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append((f"crop {len(out)}", np.ascontiguousarray(crop)))
    return out[:count]
