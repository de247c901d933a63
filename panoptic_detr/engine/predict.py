"""Panoptic predictions from images: the `Predictor` API and the `predict` command's work.

`Predictor(model_or_checkpoint)(image)` -> `PanopticOutput` (int32 id map at the image's
size + segments_info). Images are resized as DETR's evaluation transform does (short
side 800, long side at most 1333), normalised with the ImageNet statistics and run
through the model without its mask head; the mask head then runs only for the queries
that pass the threshold (`model.masks_for_queries`), which gives the same masks as the
full forward for those queries at a fraction of the cost; `panoptic_inference` makes
the map. The network runs as a private copy of the model with the backbone's frozen
batch norms folded into its convolutions (`fold_batchnorm`); the caller's model is never
modified.

Batching never changes a result. The DETR model itself depends on batch padding (the
mask head's GroupNorm statistics and the stride-32 padding mask, resized with nearest,
cover the padded area), so `predict_batch` never pads an image for another one: it
groups images by processed size and only batches images of the same size. On CPU each
image even runs through the network on its own by default (`batch_forward=False`): the
float rounding of batched matrix products differs in the last bits from a single image,
which can flip a pixel where two masks tie, and batching saves little on CPU (10-20%). On GPUs,
same-size images run `batch_size` at a time.

`predict_paths(...)` is the `panoptic-detr predict` command: a COCO-panoptic PNG per
image, one results JSON and an overlay JPEG per image, unreadable files reported and
skipped.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from panoptic_detr.data.categories import Category, CategoryList, coco_panoptic_categories, default_color
from panoptic_detr.data.image_io import load_image, to_rgb_array
from panoptic_detr.engine.inference import PanopticOutput, panoptic_inference, select_queries
from panoptic_detr.errors import PanopticDetrError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["Predictor", "fold_batchnorm", "keep_freed_memory", "resize_shape", "default_categories", "save_panoptic_png", "predict_paths", "PredictReport"]


def resize_shape(height: int, width: int, short_side: int = 800, max_size: int | None = 1333) -> tuple[int, int]:
    """(h, w) of DETR's evaluation resize: short side to `short_side`, long side <= `max_size`."""
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


def default_categories(num_classes: int) -> CategoryList:
    """Categories for a model whose checkpoint carries none.

    250 classes is an official COCO checkpoint: the COCO-panoptic categories. Otherwise
    `class_<i>` for i in 1..num_classes-1, all counted as things (no stuff merging).
    """
    if num_classes == 250:
        return coco_panoptic_categories()
    return CategoryList(Category(i, f"class_{i}", True, default_color(i)) for i in range(1, num_classes))


def save_panoptic_png(path: str | os.PathLike, id_map) -> None:
    """Write an id map as a COCO-panoptic PNG, atomically."""
    from PIL import Image

    from panoptic_detr.data.formats.coco_panoptic import id2rgb
    from panoptic_detr.utils.io import atomic_path

    if isinstance(id_map, torch.Tensor):
        id_map = id_map.detach().cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(id2rgb(id_map)).save(tmp, format="PNG")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory in the process instead of returning it.

    By default every allocation above a threshold (at most 32 MB) is a fresh `mmap`, and
    every freed one goes back to the kernel, so each large activation of every forward
    pass is page-faulted in again: on CPU that costs 15-25% extra (system) time per
    image. With `mmap` off and trimming (nearly) off, the heap is reused. The process keeps its
    peak memory afterwards. This is process-wide, so the `predict` command and the
    benchmarks call it; the Predictor API does not. Returns False where it does not apply
    (not glibc, or another allocator preloaded).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose backbone batch norms are folded into the convolutions before them.

    In the ResNet blocks every `convN` is followed directly by `bnN` (and `downsample` is
    `Sequential(conv, bn)`); a frozen (or eval-mode) batch norm is an affine map per
    channel, so `bn(conv(x)) == conv'(x)` with `conv'.weight = conv.weight * scale` and
    `conv'.bias = shift`. That removes two full passes over every backbone activation
    (about a quarter of the backbone's CPU time). Values change only by float rounding.
    The model passed in is not modified.
    """
    import copy

    from torch import nn

    from panoptic_detr.model.backbone import BasicBlock, Bottleneck, FrozenBatchNorm2d, ResNet

    def affine(bn):
        if isinstance(bn, FrozenBatchNorm2d):
            eps = bn.eps
        elif isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_var is not None:
            eps = bn.eps
        else:
            return None
        weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        bias = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        scale = weight * (bn.running_var + eps).rsqrt()
        return scale, bias - bn.running_mean * scale

    def fold(parent, conv_name, bn_name):
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        params = affine(bn)
        if not isinstance(conv, nn.Conv2d) or params is None or conv.groups != 1:
            return
        scale, shift = params
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, bias=True, padding_mode=conv.padding_mode).to(conv.weight.device,
                                                                                       conv.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            fused.bias.copy_(shift if conv.bias is None else conv.bias * scale + shift)
        fused.weight.requires_grad_(False)
        fused.bias.requires_grad_(False)
        setattr(parent, conv_name, fused)
        setattr(parent, bn_name, nn.Identity())

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
            for i in (1, 2, 3):
                if hasattr(module, f"conv{i}") and hasattr(module, f"bn{i}"):
                    fold(module, f"conv{i}", f"bn{i}")
            down = getattr(module, "downsample", None)
            if isinstance(down, nn.Sequential) and len(down) == 2:
                fold(down, "0", "1")
    return model


class Predictor:
    """Panoptic segmentation of images with a DETR panoptic model.

    model_or_checkpoint: a model (`panoptic_detr.build_model` / `load_model`) or the path
        of a checkpoint (its categories label the predictions).
    threshold: queries whose best non-"no object" score is above it make segments.
    short_side, max_size: the resize (DETR's: 800, 1333).
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
        its convolutions (`fold_batchnorm`; a quarter less backbone time, values equal up
        to float rounding). The model passed in is never modified; a Predictor made
        before the model's weights change keeps the old weights.
    """

    def __init__(
        self,
        model_or_checkpoint,
        device: str | torch.device = "cpu",
        threshold: float = 0.85,
        short_side: int = 800,
        max_size: int | None = 1333,
        batch_size: int = 1,
        fast_masks: bool = True,
        channels_last: bool = False,
        min_area: int = 4,
        batch_forward: bool | None = None,
        fold_bn: bool = True,
        dedup: float | None = None,
    ):
        import copy

        self.device = torch.device(device)
        if isinstance(model_or_checkpoint, (str, os.PathLike)):
            from panoptic_detr import load_model

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
                model = fold_batchnorm(model)
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
        self.threshold = float(threshold)
        self.short_side = int(short_side)
        self.max_size = None if max_size is None else int(max_size)
        if batch_size < 1:
            raise PanopticDetrError(f"batch size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)
        if batch_forward is None:
            batch_forward = self.device.type != "cpu"
        self.forward_batch_size = self.batch_size if batch_forward else 1
        self.fast_masks = bool(fast_masks)
        self.min_area = int(min_area)
        self.dedup = check_dedup(dedup)
        num_classes = int(config.num_classes) if config is not None else None
        cats = categories
        if cats is None:
            if num_classes is None:
                raise PanopticDetrError(f"{source}: model has neither categories nor a config")
            cats = default_categories(num_classes)
        self.categories: CategoryList = cats
        table_len = max(num_classes or 0, cats.num_classes)
        table = [False] * table_len
        for c in cats:
            table[c.id] = c.isthing
        self._isthing = torch.tensor(table, dtype=torch.bool)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale + shift
        self._scale = (1.0 / (255.0 * std)).to(self.device)
        self._shift = (-mean / std).to(self.device)

    # ------------------------------------------------------------------ inputs
    def _as_array(self, image) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return load_image(image)
        return to_rgb_array(image)

    def preprocess(self, image) -> tuple[torch.Tensor, tuple[int, int]]:
        """(normalised CHW float tensor on the device, original (H, W)) of an image."""
        from PIL import Image

        arr = self._as_array(image)
        H, W = arr.shape[:2]
        h, w = resize_shape(H, W, self.short_side, self.max_size)
        if (h, w) != (H, W):
            arr = np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).to(self.device).permute(2, 0, 1).float()
        x = x.mul_(self._scale).add_(self._shift) if x.is_contiguous() else x * self._scale + self._shift
        return x.contiguous(), (H, W)

    # ------------------------------------------------------------------ running
    def __call__(self, image) -> PanopticOutput:
        """The panoptic prediction of one image (path, HxWx3 array or PIL image)."""
        return self.predict_batch([image])[0]

    def panoptic(self, image: np.ndarray) -> tuple[np.ndarray, list[dict], CategoryList]:
        """The teacher interface of `prepare`: (id map int32 HxW, segments_info, categories)."""
        out = self(image)
        return out.id_map_numpy(), out.segments_info, self.categories

    def predict_batch(self, images: Sequence) -> list[PanopticOutput]:
        """Predictions for several images, in order; batch composition never changes a map."""
        prepared = [self.preprocess(im) for im in images]
        return self.predict_tensors([p[0] for p in prepared], [p[1] for p in prepared])

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
                    part = slice(start, start + k.numel())
                    start += k.numel()

                    def source(query_index, part=part, k=k):
                        if not torch.equal(query_index, k):  # cannot happen: same logits, same rule
                            raise RuntimeError("kept queries differ between selection and inference")
                        return masks[part]

                    results.append(self._postprocess(out["pred_logits"][i], source, sizes[i], original_sizes[i], isthing))
            else:
                out = self.model(batch)
                for i in range(len(tensors)):
                    results.append(
                        self._postprocess(out["pred_logits"][i], out["pred_masks"][i], sizes[i], original_sizes[i], isthing)
                    )
        return results

    def _postprocess(self, logits, masks, size, original_size, isthing) -> PanopticOutput:
        out = panoptic_inference(
            logits, masks, size, original_size, isthing, threshold=self.threshold, min_area=self.min_area,
            dedup=self.dedup,
        )
        return PanopticOutput(out.id_map.cpu(), out.segments_info)


# ---------------------------------------------------------------------- the command
@dataclass
class PredictReport:
    written: list[str] = field(default_factory=list)  # image paths predicted
    failed: list[str] = field(default_factory=list)  # one message per failure


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = path.stem or "image"
    name, n = stem, 1
    while name in used:
        name = f"{stem}_{n}"
        n += 1
    used.add(name)
    return name


def _segments_json(segments_info: list[dict]) -> list[dict]:
    return [
        {
            "id": int(s["id"]),
            "category_id": int(s["category_id"]),
            "iscrowd": 0,
            "isthing": int(bool(s["isthing"])),
            "area": int(s["area"]),
            "bbox": [int(v) for v in s["bbox"]],
            "score": round(float(s["score"]), 6),
        }
        for s in segments_info
    ]


def predict_paths(
    predictor: Predictor,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    overlays: bool = True,
    progress: bool = True,
    log=None,
) -> PredictReport:
    """Predict every image named by `inputs` (files, folders, globs) into `out_dir`.

    Writes `panoptic/<stem>.png` (COCO-panoptic ids), `predictions.json` (COCO-panoptic
    results: `annotations` with `image_id`, `file_name`, `segments_info`; plus `images`
    and `categories`) and, with `overlays`, `overlays/<stem>.jpg`. Unreadable files are
    reported through `log` (one line each) and skipped.
    """
    from tqdm import tqdm

    from panoptic_detr.data.image_io import find_images
    from panoptic_detr.utils.io import write_json
    from panoptic_detr.viz.overlay import overlay, save_jpeg

    out_dir = Path(out_dir)
    paths, problems = find_images(inputs)
    report = PredictReport()
    bar = tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def say(msg: str) -> None:
        if log is not None:
            log(msg)
        else:
            tqdm.write(msg, file=sys.stderr)

    for msg in problems:
        report.failed.append(msg)
        say(f"skipped: {msg}")
    if not paths:
        bar.close()
        return report

    (out_dir / "panoptic").mkdir(parents=True, exist_ok=True)
    if overlays:
        (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    images_json, annotations = [], []

    def flush(pending):
        if not pending:
            return
        outs = predictor.predict_tensors([p[2] for p in pending], [p[3] for p in pending])
        for (path, arr, _, (H, W)), out in zip(pending, outs):
            stem = _unique_stem(path, used)
            png_name = f"{stem}.png"
            save_panoptic_png(out_dir / "panoptic" / png_name, out.id_map_numpy())
            if overlays:
                vis = overlay(arr, out.id_map, out.segments_info, predictor.categories)
                save_jpeg(out_dir / "overlays" / f"{stem}.jpg", vis)
            images_json.append({"id": stem, "file_name": path.name, "path": str(path), "height": H, "width": W})
            annotations.append({"image_id": stem, "file_name": png_name, "segments_info": _segments_json(out.segments_info)})
            report.written.append(str(path))
            bar.update(1)

    pending = []
    for path in paths:
        try:
            arr = load_image(path)
            tensor, size = predictor.preprocess(arr)
        except PanopticDetrError as e:
            report.failed.append(str(e))
            say(f"skipped: {e}")
            bar.update(1)
            continue
        pending.append((path, arr if overlays else None, tensor, size))
        if len(pending) >= predictor.batch_size:
            flush(pending)
            pending = []
    flush(pending)
    bar.close()
    write_json(
        out_dir / "predictions.json",
        {"images": images_json, "annotations": annotations, "categories": predictor.categories.to_json()},
    )
    return report
