"""Everything the explain figures need, from one forward of the model with attention capture.

`explain_image(predictor, image)` runs the predictor's model once inside `model_attention`
(the model's outputs are unchanged; plain inference never pays for it), computes the masks
of the kept queries only and the panoptic map exactly as the `Predictor` does, and returns
an `Explanation` holding the attention maps, boxes, scores, masks and the panoptic output.
`query_boxes(model, images)` collects every query's box over many images (figure 3);
`crops_for_queries` makes such images out of one when few are at hand.

Drawing the figures and the page is `viz.explain_figures` / `viz.explain_page`; writing
the output folders of the `explain` / `explain-queries` commands is
`commands._explain_output`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.errors import PanopticDetrError

__all__ = [
    "Explanation",
    "QueryBoxes",
    "explain_image",
    "query_boxes",
    "crops_for_queries",
]

@dataclass
class Explanation:
    """One image through the model, with the attention maps recorded.

    Sizes: `original_size` (H, W) of `image`; `processed_size` (h, w) the resized input;
    `feature_size` the stride-`stride` grid of the last backbone stage (what the
    transformer sees, HW = h * w tokens) and `valid_size` its unpadded part.
    Tensors are on the CPU, float32.
    """

    image: np.ndarray  # HxWx3 uint8, the original image
    processed_size: tuple[int, int]
    feature_size: tuple[int, int]
    valid_size: tuple[int, int]
    stride: int
    logits: torch.Tensor  # [Q, C+1]
    boxes: torch.Tensor  # [Q, 4] cx, cy, w, h normalised by the image size
    scores: torch.Tensor  # [Q] best class probability
    labels: torch.Tensor  # [Q] best class (index C = no object)
    object_scores: torch.Tensor  # [Q] best probability among the real classes
    keep: torch.Tensor  # [K] kept query indices (ascending), as the panoptic inference keeps them
    encoder_attention: torch.Tensor  # [HW, HW] last encoder layer, mean over heads (rows sum to 1)
    decoder_attention: torch.Tensor  # [Q, HW] last decoder layer cross-attention, mean over heads
    mask_attention: torch.Tensor | None  # [Q, nheads, h, w] bbox_attention (panoptic models)
    mask_logits: torch.Tensor | None  # [K, gh, gw] stride-4 mask logits of the kept queries
    panoptic: object | None  # engine.inference.PanopticOutput (panoptic models)
    categories: CategoryList
    config: object  # ModelConfig
    threshold: float
    timings: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- geometry
    @property
    def original_size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def num_queries(self) -> int:
        return int(self.logits.shape[0])

    @property
    def cell_size(self) -> tuple[float, float]:
        """(height, width) of one feature cell in original pixels."""
        H, W = self.original_size
        h, w = self.processed_size
        return self.stride * H / h, self.stride * W / w

    def grid_extent(self) -> tuple[float, float, float, float]:
        """imshow extent (left, right, bottom, top) of the valid feature grid on the original image."""
        ch, cw = self.cell_size
        vh, vw = self.valid_size
        return (0.0, vw * cw, vh * ch, 0.0)

    def token_at(self, x: float, y: float) -> int:
        """The token index (row-major on the full grid) of the cell under original pixel (x, y)."""
        ch, cw = self.cell_size
        vh, vw = self.valid_size
        r = min(max(int(math.floor(y / ch)), 0), vh - 1)
        c = min(max(int(math.floor(x / cw)), 0), vw - 1)
        return r * self.feature_size[1] + c

    def _valid(self, flat: torch.Tensor) -> torch.Tensor:
        h, w = self.feature_size
        vh, vw = self.valid_size
        return flat.reshape(*flat.shape[:-1], h, w)[..., :vh, :vw]

    # ---------------------------------------------------------------- maps
    def encoder_map(self, x: float, y: float) -> torch.Tensor:
        """[vh, vw] self-attention of the token under (x, y) over the valid grid (sums to 1)."""
        return self._valid(self.encoder_attention[self.token_at(x, y)])

    def decoder_map(self, query: int) -> torch.Tensor:
        """[vh, vw] last-layer cross-attention of `query` over the valid grid (sums to 1)."""
        return self._valid(self.decoder_attention[int(query)])

    def mask_attention_maps(self, query: int) -> torch.Tensor:
        """[nheads, vh, vw] the mask head's attention maps of `query` (sum to 1 jointly)."""
        if self.mask_attention is None:
            raise ValueError("not a panoptic model: no mask-head attention")
        vh, vw = self.valid_size
        return self.mask_attention[int(query), :, :vh, :vw]

    # ---------------------------------------------------------------- objects
    def boxes_xyxy(self, queries=None) -> np.ndarray:
        """Boxes [N, 4] (x0, y0, x1, y1) in original pixels of `queries` (default: kept)."""
        q = self.keep if queries is None else torch.as_tensor(queries, dtype=torch.long).reshape(-1)
        H, W = self.original_size
        b = self.boxes[q].double()
        cx, cy, w, h = b.unbind(-1)
        out = torch.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], -1)
        return out.numpy()

    def kept(self) -> list[dict]:
        """One dict per kept query: query, category_id, score, box (x0, y0, x1, y1 original pixels)."""
        boxes = self.boxes_xyxy()
        return [
            {"query": int(q), "category_id": int(self.labels[q]), "score": float(self.scores[q]),
             "box": [float(v) for v in boxes[i]]}
            for i, q in enumerate(self.keep.tolist())
        ]

    def binary_masks(self) -> np.ndarray:
        """[K, H, W] bool: each kept query's mask, sigmoid > 0.5 after upsampling (the
        panoptic inference's bilinear upsampling to the processed size, then nearest to the
        original size)."""
        from panoptic_detr.data.preprocess import resize_nearest
        from panoptic_detr.engine.inference import upsample_masks

        H, W = self.original_size
        if self.mask_logits is None or self.mask_logits.shape[0] == 0:
            return np.zeros((0, H, W), dtype=bool)
        up = upsample_masks(self.mask_logits, self.processed_size) > 0  # sigmoid(x) > 0.5 <=> x > 0
        return resize_nearest(up, (H, W)).numpy().astype(bool)

    def auto_points(self, max_points: int = 4) -> list[tuple[float, float]]:
        """Reference points for figure 1: a pixel inside each detected segment near its
        centre (things first, best score first), then the centres of the kept boxes; at most
        `max_points`, none within 1.5 feature cells of another."""
        H, W = self.original_size
        ch, cw = self.cell_size
        pts: list[tuple[float, float]] = []

        def add(x: float, y: float) -> None:
            x, y = min(max(x, 0.0), W - 1.0), min(max(y, 0.0), H - 1.0)
            # points in the same or a neighbouring cell would show the same map
            if len(pts) < max_points and all(abs(x - px) >= 1.5 * cw or abs(y - py) >= 1.5 * ch for px, py in pts):
                pts.append((x, y))

        if self.panoptic is not None and self.panoptic.segments_info:
            ids = self.panoptic.id_map_numpy()
            segs = sorted(self.panoptic.segments_info, key=lambda s: (not s["isthing"], -s["score"]))
            for s in segs:
                ys, xs = np.nonzero(ids == s["id"])
                if len(xs) == 0:
                    continue
                cy, cx = ys.mean(), xs.mean()
                i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
                add(float(xs[i]) + 0.5, float(ys[i]) + 0.5)
        if len(self.keep):
            order = self.scores[self.keep].argsort(descending=True)
            for b in self.boxes_xyxy(self.keep[order]):
                add(float((b[0] + b[2]) / 2), float((b[1] + b[3]) / 2))
        return pts


def _isthing_table(categories: CategoryList, num_classes: int) -> torch.Tensor:
    """The categories' is-thing table, padded to the model's classes (as the Predictor's)."""
    table = categories.isthing_table()
    return torch.tensor(table + [False] * (num_classes - len(table)), dtype=torch.bool)


def _valid_grid(rec) -> tuple[tuple[int, int], tuple[int, int]]:
    """(feature grid size, its unpadded part) of the recorded forward."""
    fh, fw = (int(v) for v in rec.feature_size)
    pad = rec.padding_mask[0].cpu()
    vh = int((~pad[:, 0]).sum()) if pad.numel() else fh
    vw = int((~pad[0, :]).sum()) if pad.numel() else fw
    return (fh, fw), (max(vh, 1), max(vw, 1))


def explain_image(predictor, image) -> Explanation:
    """Run `predictor`'s model (a `Predictor` of a panoptic model: its threshold, resize,
    min_area and dedup apply) on `image` (path, HxWx3 array or PIL image) with attention
    capture and collect everything the figures need.

    The kept queries, their masks and the panoptic map are exactly the predictor's.
    """
    from panoptic_detr.data.image_io import load_image, to_rgb_array
    from panoptic_detr.engine.inference import PanopticOutput, panoptic_inference, select_queries
    from panoptic_detr.model.attention import model_attention

    t0 = time.perf_counter()
    net = predictor.model
    threshold = predictor.threshold
    arr = load_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb_array(image)
    x, (H, W) = predictor.preprocess(arr)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    t1 = time.perf_counter()
    with torch.inference_mode(), model_attention(net) as rec:
        out = net(x[None], with_masks=False)
        t2 = time.perf_counter()
        logits = out["pred_logits"][0]
        keep_mask, scores, labels = select_queries(logits, threshold)
        keep = keep_mask.nonzero().flatten()
        masks = None
        ctx = out.get("mask_context")
        if ctx is not None:  # the mask head for the kept queries only, as the Predictor's fast path
            masks = net.masks_for_queries(ctx, torch.zeros_like(keep), keep)
        t3 = time.perf_counter()
        panoptic = None
        if masks is not None:
            isthing = _isthing_table(predictor.categories, int(logits.shape[-1] - 1)).to(logits.device)
            panoptic = panoptic_inference(logits, masks, (h, w), (H, W), isthing, threshold=threshold,
                                          min_area=predictor.min_area, dedup=predictor.dedup)
            panoptic = PanopticOutput(panoptic.id_map.cpu(), panoptic.segments_info)
        t4 = time.perf_counter()

    config = getattr(net, "config", None)
    feature_size, valid_size = _valid_grid(rec)
    probs = logits.float().softmax(-1)
    return Explanation(
        image=arr,
        processed_size=(h, w),
        feature_size=feature_size,
        valid_size=valid_size,
        stride=16 if getattr(config, "dilation", False) else 32,
        logits=logits.float().cpu(),
        boxes=out["pred_boxes"][0].float().cpu(),
        scores=scores.float().cpu(),
        labels=labels.cpu(),
        object_scores=probs[:, :-1].max(-1).values.cpu(),
        keep=keep.cpu(),
        encoder_attention=rec.encoder[-1][0].float().cpu(),
        decoder_attention=rec.decoder[-1][0].float().cpu(),
        mask_attention=None if rec.mask_attention is None else rec.mask_attention[0].float().cpu(),
        mask_logits=None if masks is None else masks.float().cpu(),
        panoptic=panoptic,
        categories=predictor.categories,
        config=config,
        threshold=float(threshold),
        timings={"preprocess": t1 - t0, "forward": t2 - t1, "masks": t3 - t2, "panoptic": t4 - t3},
    )


# ---------------------------------------------------------------------- many images (figure 3)
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
