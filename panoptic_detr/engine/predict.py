"""The `Predictor`: panoptic predictions from images with a DETR panoptic model.

`Predictor(model_or_checkpoint)(image)` -> `PanopticOutput` (int32 id map at the image's
size + segments_info). The inference settings (threshold, dedup, short side, max size,
geometry) not given to the Predictor come from the model's `inference_defaults` (what its
checkpoint carries: `model.inference_defaults`), else the built-in defaults (0.85, off,
800, 1333, aligned). Images go through `data.preprocess.preprocess_image` (DETR's
evaluation resize and the ImageNet normalisation: the same network input as training's
validation transform) and run
through the model without its mask head; the mask head then runs only for the queries
that pass the threshold (`model.masks_for_queries`), which gives the same masks as the
full forward for those queries at a fraction of the cost; `panoptic_inference` makes
the map. The network runs as a private copy of the model with the backbone's frozen
batch norms folded into its convolutions (`model.backbone.fold_frozen_batchnorm`); the
caller's model is never modified.

Batching never changes a result. The DETR model itself depends on batch padding (the
mask head's GroupNorm statistics and the stride-32 padding mask, resized with nearest,
cover the padded area), so `predict_batch` never pads an image for another one: it
groups images by processed size and only batches images of the same size. On CPU each
image even runs through the network on its own by default (`batch_forward=False`): the
float rounding of batched matrix products differs in the last bits from a single image,
which can flip a pixel where two masks tie, and batching saves little on CPU (10-20%). On GPUs,
same-size images run `batch_size` at a time.

Speed: creating a Predictor applies `utils.malloc.tune_malloc()` as the CLI does
(process-wide: freed memory stays in the process instead of being returned to the kernel
and page-faulted in again on every image, 15-35% of the time of an r50 image on CPU;
`PANOPTIC_DETR_NO_MALLOC_TUNING=1` turns it off), so `Predictor(load_model(path))(image)`
runs as fast as `panoptic-detr predict`.

The `predict` command (files and folders in, PNGs + JSON + overlays out) is
`commands/predict.py`.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from panoptic_detr.data.categories import default_categories
from panoptic_detr.engine.inference import PanopticOutput, panoptic_inference, select_queries
from panoptic_detr.engine.predictor_base import FROM_MODEL, PredictorBase
from panoptic_detr.errors import PanopticDetrError
from panoptic_detr.model.backbone import fold_frozen_batchnorm
from panoptic_detr.utils.malloc import tune_malloc

__all__ = ["Predictor", "FROM_MODEL"]


class Predictor(PredictorBase):
    """Panoptic segmentation of images with a DETR panoptic model.

    model_or_checkpoint: a model (`panoptic_detr.build_model` / `load_model`) or the path
        of a checkpoint (its categories label the predictions).
    threshold, dedup, short_side, max_size, geometry: the inference settings; each one
        not given (`FROM_MODEL`) is the model's (`model.inference_defaults`, from its
        checkpoint), else the built-in default (`InferenceDefaults()`: 0.85, off, 800,
        1333, aligned). `self.inference` holds the values used, `settings_line()` says them.
    threshold: queries whose best non-"no object" score is above it make segments.
    short_side, max_size: the resize (DETR's: 800, 1333; max_size None: no limit).
    geometry: `aligned` or `official` mask upsampling (`engine.inference`).
    batch_size: images per forward (only images of the same processed size are batched).
    fast_masks: run the mask head only for the kept queries (identical maps; False runs
        the full forward, masks for every query, as the official code).
    channels_last: run the backbone convolutions in channels-last memory format through
        the model's `set_channels_last` (off by default: no faster on CPU here, and each
        new image size then costs a noticeable one-off kernel preparation).
    min_area: segments with at most this many pixels are dropped.
    batch_forward: run same-size images through the network together (default: on
        accelerators only; on CPU each image alone, so that maps are bit-identical
        whatever the batch size).
    dedup: drop thing queries that duplicate a better one of the same class (more than
        this fraction of their mask inside its mask; `duplicate_queries`). None: off,
        as the official post-processing.
    fold_bn: run a copy of the model with the backbone's frozen batch norms folded into
        its convolutions (`fold_frozen_batchnorm`; a quarter less backbone time, values equal up
        to float rounding). The model passed in is never modified; a Predictor made
        before the model's weights change keeps the old weights.
    """

    def __init__(
        self,
        model_or_checkpoint,
        device: str | torch.device = "cpu",
        threshold: float = FROM_MODEL,
        short_side: int = FROM_MODEL,
        max_size: int | None = FROM_MODEL,
        batch_size: int = 1,
        fast_masks: bool = True,
        channels_last: bool = False,
        min_area: int = 4,
        batch_forward: bool | None = None,
        fold_bn: bool = True,
        dedup: float | None = FROM_MODEL,
        geometry: str = FROM_MODEL,
    ):
        import copy

        tune_malloc()
        self.device = torch.device(device)
        if isinstance(model_or_checkpoint, (str, os.PathLike)):
            from panoptic_detr.model.checkpoint import load_model

            model = load_model(model_or_checkpoint, device=str(self.device))
            source = str(model_or_checkpoint)
            owned = True
        else:
            model = model_or_checkpoint
            source = type(model).__name__
            owned = False
        config = getattr(model, "config", None)
        categories = getattr(model, "categories", None)
        if (config is not None and not getattr(config, "masks", True)) or not hasattr(model, "mask_head"):
            raise PanopticDetrError(f"{source}: a detection model (no mask head); predict needs a panoptic model")
        if not hasattr(model, "masks_for_queries"):
            fast_masks = False
        # never modify the caller's model (mode, device, layers, memory format): work on a copy
        # whenever something has to change
        param = next(model.parameters(), None)
        on_device = param is None or param.device == self.device or (
            self.device.type == param.device.type and self.device.index is None
        )
        try:
            if fold_bn:
                model = fold_frozen_batchnorm(model)
            elif not owned and (channels_last or model.training or not on_device):
                model = copy.deepcopy(model)
        except (TypeError, RuntimeError, copy.Error):  # a model that cannot be copied: use it as it is
            pass
        model = model.to(self.device).eval()
        if channels_last:
            # the model's own switch (Backbone.set_channels_last): layout only, same values
            for module in model.modules():
                if hasattr(module, "set_channels_last"):
                    module.set_channels_last(True)
        self.model = model
        self.channels_last = bool(channels_last)
        given = dict(threshold=threshold, dedup=dedup, short_side=short_side, max_size=max_size, geometry=geometry)
        self._set_inference(getattr(model, "inference_defaults", None), given)
        self._set_batch_size(batch_size)
        if batch_forward is None:
            batch_forward = self.device.type != "cpu"
        self.forward_batch_size = self.batch_size if batch_forward else 1
        self.fast_masks = bool(fast_masks)
        self.min_area = int(min_area)
        num_classes = int(config.num_classes) if config is not None else None
        cats = categories
        if cats is None:
            if num_classes is None:
                raise PanopticDetrError(f"{source}: model has neither categories nor a config")
            cats = default_categories(num_classes)
        self._set_categories(cats, num_classes)

    def predict_tensors(self, tensors: Sequence[torch.Tensor], original_sizes: Sequence[tuple[int, int]]) -> list[PanopticOutput]:
        """Predictions for already normalised CHW tensors (at their processed size)."""
        results: list[PanopticOutput | None] = [None] * len(tensors)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape[-2:]), []).append(i)
        for idx in groups.values():
            step = self.forward_batch_size
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                outs = self._run([tensors[i] for i in chunk], [original_sizes[i] for i in chunk])
                for i, o in zip(chunk, outs):
                    results[i] = o
        return results  # type: ignore[return-value]

    def _run(self, tensors: list[torch.Tensor], original_sizes: list[tuple[int, int]]) -> list[PanopticOutput]:
        """One forward over images of the same size, then panoptic inference per image."""
        batch = torch.stack([t.to(self.device) for t in tensors])
        sizes = [tuple(int(v) for v in t.shape[-2:]) for t in tensors]
        isthing = self._isthing.to(self.device)
        results = []
        with torch.inference_mode():
            if self.fast_masks:
                out = self.model(batch, with_masks=False)
                # the kept queries of each image, selected exactly as panoptic_inference will
                kept = [select_queries(out["pred_logits"][i], self.threshold)[0].nonzero().flatten()
                        for i in range(len(tensors))]
                q_idx = torch.cat(kept)
                b_idx = torch.cat([torch.full_like(k, i) for i, k in enumerate(kept)])
                masks = self.model.masks_for_queries(out["mask_context"], b_idx, q_idx) if q_idx.numel() else None
                start = 0
                for i, k in enumerate(kept):
                    kept_masks = masks[start : start + k.numel()] if masks is not None else None
                    start += k.numel()
                    results.append(self._postprocess(out["pred_logits"][i], kept_masks, sizes[i], original_sizes[i], isthing))
            else:
                out = self.model(batch)
                for i in range(len(tensors)):
                    results.append(
                        self._postprocess(out["pred_logits"][i], out["pred_masks"][i], sizes[i], original_sizes[i], isthing)
                    )
        return results

    def _postprocess(self, logits, masks, size, original_size, isthing) -> PanopticOutput:
        if masks is None:  # nothing kept in this batch
            masks = logits.new_zeros((0, 1, 1))
        out = panoptic_inference(
            logits, masks, size, original_size, isthing, threshold=self.threshold, min_area=self.min_area,
            dedup=self.dedup, geometry=self.geometry,
        )
        return PanopticOutput(out.id_map.cpu(), out.segments_info)
