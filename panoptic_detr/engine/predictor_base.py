"""What every predictor shares, whatever runs its network: the image interface, the
inference settings and the category table.

`Predictor` (torch, `engine/predict.py`) and `OnnxPredictor` (ONNX Runtime,
`deploy/onnx_predictor.py`) subclass `PredictorBase` and implement `predict_tensors`;
callers (the commands, `evaluation.evaluate_model`, prepare's teacher) use only this
interface: `preprocess`, `__call__`, `predict_batch`, `predict_tensors`, `panoptic`, `panoptic_batch`,
`categories`, `batch_size`, `inference`, `settings_line`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.data.image_io import load_image, to_rgb_array
from panoptic_detr.data.preprocess import preprocess_image
from panoptic_detr.engine.inference import PanopticOutput, check_dedup
from panoptic_detr.errors import PanopticDetrError
from panoptic_detr.model.inference_defaults import InferenceDefaults

__all__ = ["PredictorBase", "FROM_MODEL", "SETTINGS"]


class _FromModel:
    """The default of a predictor's inference settings: the model's own."""

    def __repr__(self) -> str:
        return "FROM_MODEL"


FROM_MODEL = _FromModel()
SETTINGS = ("threshold", "dedup", "short_side", "max_size", "geometry")


class PredictorBase:
    """The shared part of the predictors (see the module docstring).

    Subclasses call `_set_inference`, `_set_categories` and `_set_batch_size` in their
    constructor, set `self.device`, and implement `predict_tensors`.
    """

    device: torch.device
    categories: CategoryList

    def _set_inference(self, defaults: InferenceDefaults | None, given: dict, source: str = "checkpoint") -> None:
        """The settings used: the given ones over the model's defaults (else the built-in ones)."""
        self.settings_source = source if defaults is not None else "built-in"
        self.overridden = [k for k in SETTINGS if given[k] is not FROM_MODEL]
        base = defaults if defaults is not None else InferenceDefaults()
        if given["dedup"] is not FROM_MODEL:
            check_dedup(given["dedup"])
        try:
            self.inference = base.replace(**{k: given[k] for k in self.overridden}).checked()
        except ValueError as e:
            raise PanopticDetrError(f"{type(self).__name__}: {e}") from None
        for key in SETTINGS:
            setattr(self, key, getattr(self.inference, key))

    def _set_categories(self, categories: CategoryList, num_classes: int | None) -> None:
        """The categories and the is-thing table of every class index the model has."""
        self.categories = categories
        table = categories.isthing_table()
        table += [False] * ((num_classes or 0) - len(table))  # classes the categories do not name
        self._isthing = torch.tensor(table, dtype=torch.bool)

    def _set_batch_size(self, batch_size: int) -> None:
        if batch_size < 1:
            raise PanopticDetrError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def settings_line(self, overridden_flags: dict | None = None) -> str:
        """One line with the inference settings used and where they come from, e.g.
        `inference: threshold 0.4, dedup 0.5, short side 288, max size 1333, geometry aligned
        (from the checkpoint; threshold given)`. `overridden_flags` names the given settings
        (setting -> flag, e.g. {"threshold": "--threshold"})."""
        i = self.inference
        dedup = "off" if i.dedup is None else f"{i.dedup:g}"
        max_size = "none" if i.max_size is None else str(i.max_size)
        source = "from the checkpoint" if self.settings_source == "checkpoint" else "built-in defaults"
        if self.overridden:
            names = [(overridden_flags or {}).get(k, k) for k in self.overridden]
            source += "; " + ", ".join(names) + " given"
        return (f"inference: threshold {i.threshold:g}, dedup {dedup}, short side {i.short_side}, "
                f"max size {max_size}, geometry {i.geometry} ({source})")

    # ------------------------------------------------------------------ images in
    def preprocess(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        """(normalised CHW float tensor on the device, original (H, W)) of an image (path,
        HxWx3 array or PIL image): `data.preprocess.preprocess_image`."""
        array = load_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb_array(image)
        return preprocess_image(array, self.short_side, self.max_size, self.device)

    def __call__(self, image) -> PanopticOutput:
        """The panoptic prediction of one image (path, HxWx3 array or PIL image)."""
        return self.predict_batch([image])[0]

    def panoptic(self, image: np.ndarray) -> tuple[np.ndarray, list[dict], CategoryList]:
        """The teacher interface of `prepare`: (id map int32 HxW, segments_info, categories)."""
        out = self(image)
        return out.id_map_numpy(), out.segments_info, self.categories

    def panoptic_batch(self, images: Sequence) -> list[tuple[np.ndarray, list[dict], CategoryList]]:
        """`panoptic` of several images at once (`predict_batch`: same-size images batched
        on accelerators, each image alone on CPU, so the maps equal `panoptic`'s)."""
        return [(out.id_map_numpy(), out.segments_info, self.categories) for out in self.predict_batch(images)]

    def predict_batch(self, images: Sequence) -> list[PanopticOutput]:
        """Predictions for several images, in order; batch composition never changes a map."""
        prepared = [self.preprocess(im) for im in images]
        return self.predict_tensors([p[0] for p in prepared], [p[1] for p in prepared])

    def predict_tensors(self, tensors: Sequence[torch.Tensor],
                        original_sizes: Sequence[tuple[int, int]]) -> list[PanopticOutput]:
        """Predictions for already normalised CHW tensors (at their processed size)."""
        raise NotImplementedError
