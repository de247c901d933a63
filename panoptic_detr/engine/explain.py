"""Everything the explain figures need, from one forward of the model with attention capture.

`explain_image(model, image)` runs the model once inside `model_attention` (the model's
outputs are unchanged; plain inference never pays for it), computes the masks of the kept
queries only and the panoptic map exactly as `Predictor` does, and returns an
`Explanation` holding the attention maps, boxes, scores, masks and the panoptic output.
`query_boxes(model, images)` collects every query's box over many images (figure 3).
`write_explanation(...)` renders the seven figures and the `index.html` page;
`explain_to_folder` / `explain_queries_to_folder` are the `explain` / `explain-queries`
commands.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

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
    "render_figures",
    "write_explanation",
    "write_query_figure",
    "images_of",
    "sibling_images",
    "explain_to_folder",
    "explain_queries_to_folder",
    "FIGURES",
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
        from panoptic_detr.engine.inference import resize_nearest, upsample_masks

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
    table = [False] * max(num_classes, categories.num_classes)
    for c in categories:
        table[c.id] = c.isthing
    return torch.tensor(table, dtype=torch.bool)


def _preprocessor(model, device, threshold, short_side, max_size, dedup=None):
    """A `Predictor` for panoptic models (the same resize and normalisation as predict)."""
    from panoptic_detr.engine.predict import Predictor

    if isinstance(model, Predictor):
        return model
    return Predictor(model, device=device, threshold=threshold, short_side=short_side, max_size=max_size,
                     dedup=dedup)


def explain_image(
    model,
    image,
    threshold: float = 0.85,
    short_side: int = 800,
    max_size: int | None = 1333,
    device: str = "cpu",
) -> Explanation:
    """Run `model` (a panoptic model, or a `Predictor` wrapping one, whose threshold and
    resize then apply) on `image` (path, HxWx3 array or PIL image) with attention capture
    and collect everything the figures need.

    The kept queries, their masks and the panoptic map are exactly `Predictor`'s for the
    same threshold and resize.
    """
    from panoptic_detr.data.image_io import load_image, to_rgb_array
    from panoptic_detr.engine.inference import PanopticOutput, panoptic_inference, select_queries
    from panoptic_detr.model.attention import model_attention

    t0 = time.perf_counter()
    predictor = _preprocessor(model, device, threshold, short_side, max_size)
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
        if ctx is not None:
            masks = net.masks_for_queries(ctx, torch.zeros_like(keep), keep)
        t3 = time.perf_counter()
        config = getattr(net, "config", None)
        num_classes = int(logits.shape[-1] - 1)
        panoptic = None
        if masks is not None:
            isthing = _isthing_table(predictor.categories, num_classes).to(logits.device)
            panoptic = panoptic_inference(logits, lambda q: masks, (h, w), (H, W), isthing,
                                          threshold=threshold, min_area=predictor.min_area,
                                          dedup=predictor.dedup)
            panoptic = PanopticOutput(panoptic.id_map.cpu(), panoptic.segments_info)
        t4 = time.perf_counter()

    fh, fw = (int(v) for v in rec.feature_size)
    pad = rec.padding_mask[0].cpu()
    vh = int((~pad[:, 0]).sum()) if pad.numel() else fh
    vw = int((~pad[0, :]).sum()) if pad.numel() else fw
    stride = 16 if getattr(config, "dilation", False) else 32
    probs = logits.float().softmax(-1)
    return Explanation(
        image=arr,
        processed_size=(h, w),
        feature_size=(fh, fw),
        valid_size=(max(vh, 1), max(vw, 1)),
        stride=stride,
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


def query_boxes(
    model,
    images: Iterable,
    short_side: int = 800,
    max_size: int | None = 1333,
    device: str = "cpu",
    progress: bool = False,
    on_error: Callable[[str], None] | None = None,
) -> QueryBoxes:
    """Run `model` (no attention capture, no masks) on every image (paths, arrays or
    `(name, array)` pairs) and collect each query's box, score and label."""
    from panoptic_detr.data.image_io import load_image, to_rgb_array
    from panoptic_detr.engine.predict import IMAGENET_MEAN, IMAGENET_STD, resize_shape

    net = getattr(model, "model", model)  # a Predictor or a model
    net.eval()
    config = getattr(net, "config", None)
    net = getattr(net, "detr", net)  # boxes and classes only: skip the mask head's preparation
    dev = torch.device(device)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    scale, shift = (1.0 / (255.0 * std)).to(dev), (-mean / std).to(dev)
    images = list(images)
    boxes, scores, labels, names = [], [], [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(images), unit="img", file=sys.stderr, dynamic_ncols=True)
    from PIL import Image

    for item in images:
        name = None
        try:
            if isinstance(item, tuple):
                name, arr = item[0], to_rgb_array(item[1])
            elif isinstance(item, (str, os.PathLike)):
                name, arr = str(item), load_image(item)
            else:
                name, arr = f"image {len(names)}", to_rgb_array(item)
        except PanopticDetrError as e:
            if on_error is None:
                raise
            on_error(str(e))
            if bar is not None:
                bar.update(1)
            continue
        H, W = arr.shape[:2]
        h, w = resize_shape(H, W, short_side, max_size)
        if (h, w) != (H, W):
            arr = np.array(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(dev).permute(2, 0, 1).float() * scale + shift
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


def images_of(data: str | os.PathLike, split: str = "val") -> list[Path]:
    """The image files of DATA: a prepared dataset (its `images/<split>`), a folder of
    images (recursively) or an image file."""
    from panoptic_detr.data.image_io import find_images

    p = Path(data)
    if not p.exists():
        raise PanopticDetrError(f"{p}: not found")
    if p.is_dir() and (p / "images").is_dir() and ((p / "dataset.yaml").exists() or (p / "annotations").is_dir()):
        sub = p / "images" / split
        if not sub.is_dir():
            have = ", ".join(sorted(d.name for d in (p / "images").iterdir() if d.is_dir())) or "none"
            raise PanopticDetrError(f"{p}: prepared dataset has no split '{split}' (splits: {have})")
        p = sub
    paths, problems = find_images([p])
    if not paths:
        raise PanopticDetrError(problems[0] if problems else f"{p}: no images")
    return paths


# ---------------------------------------------------------------------- rendering
# file name, heading, caption of each figure
FIGURES = {
    "encoder": ("1_encoder_attention.png", "1. Encoder self-attention",
                "For each reference point (marked with a letter), the self-attention of the encoder token under it "
                "(last encoder layer, averaged over the heads) over all tokens of the stride-{stride} feature grid "
                "({vh} x {vw} tokens; padding removed), drawn over the image's extent. Each map sums to 1. "
                "In a trained model the encoder already separates instances: the pixels of the same object light "
                "up together."),
    "decoder": ("2_decoder_attention.png", "2. Decoder attention per detected object",
                "For every detected object (score above {threshold:g}), the cross-attention of its query over the "
                "image in the last decoder layer, averaged over the heads, with the predicted box and label. "
                "In a trained model the decoder attends mostly to the object's extremities (head, legs, edges), "
                "which fix its box and class."),
    "queries": ("3_query_boxes.png", "3. Where the queries look",
                "Each panel is one query slot; each dot is the centre of the box it predicted on one of {n_images} "
                "image(s){query_source}. Colour: green small boxes, red large horizontal, blue large vertical. "
                "Slots specialise in regions and box sizes."),
    "active": ("4_active_queries.png", "4. Active queries",
               "All {num_queries} query slots on a grid; the ones whose best class is an object with a score above "
               "{threshold:g} fired and are linked to the object they found. Grey level: the best object probability "
               "of the slots that did not fire."),
    "mask_attention": ("5_mask_attention.png", "5. Mask-head attention maps",
                       "For each kept object, the {nheads} attention maps of the multi-head attention module "
                       "(bbox_attention) between its decoder embedding and the encoder memory, at stride {stride}. "
                       "One softmax runs over heads and positions together, so each row sums to 1. These maps, "
                       "concatenated with the memory, are the input of the FPN mask head."),
    "masks": ("6_binary_masks.png", "6. Binary masks, argmax, panoptic result",
              "Top: the mask logits of each kept object, upsampled to the image and thresholded at "
              "sigmoid > 0.5 (they may overlap or leave holes). Bottom left: the pixel-wise argmax over the kept "
              "masks, which assigns every pixel to exactly one segment (stuff of one class merged, segments of "
              "{min_area} pixels or fewer dropped); it is the prediction's panoptic id map. Bottom right: the "
              "final panoptic segmentation over the image."),
    "diagram": ("7_network.png", "7. The network",
                "The architecture with the tensor shapes for this image's network input of {h} x {w} pixels "
                "(batch of one): backbone stages, 1x1 projection, flattening to {tokens} tokens with the sine "
                "positional encoding, encoder, decoder with the {num_queries} object queries, class and box "
                "heads, the mask head's attention maps and FPN, and the final pixel-wise argmax."),
}


def render_figures(
    expl: Explanation,
    points: Sequence[tuple[float, float]] | None = None,
    query_stats: QueryBoxes | None = None,
    num_queries: int = 20,
    max_objects: int = 12,
) -> dict:
    """The seven figures (dict key -> matplotlib Figure; keys of `FIGURES`). Figure 3
    uses `query_stats` (from `query_boxes`), or this image alone when None. Detection
    models (no mask head) get no figures 5 and 6."""
    from panoptic_detr.viz.attention import decoder_attention_figure, encoder_attention_figure
    from panoptic_detr.viz.diagram import network_diagram_figure, network_shapes
    from panoptic_detr.viz.masks import binary_masks_figure, mask_attention_figure
    from panoptic_detr.viz.queries import active_queries_figure, query_boxes_figure

    figs = {}
    extent = expl.grid_extent()
    cats = expl.categories
    if points is None:
        points = expl.auto_points()
        what = "points on the detected objects"
        if not points:  # nothing detected: the centres of the four quarters
            H, W = expl.original_size
            points = [(W * fx, H * fy) for fy in (0.25, 0.75) for fx in (0.25, 0.75)]
            what = "four fixed points (nothing detected)"
    else:
        what = "the chosen points"
    points = list(points)
    maps = [expl.encoder_map(x, y).numpy() for x, y in points]
    figs["encoder"] = encoder_attention_figure(
        expl.image, maps, points, extent=extent, stride=expl.stride,
        title=f"Encoder self-attention of {what} (last layer, mean over heads)")

    # best-scoring kept objects first
    order = expl.keep[expl.scores[expl.keep].argsort(descending=True)][:max_objects] if len(expl.keep) else expl.keep
    q_list = order.tolist()
    boxes = expl.boxes_xyxy(order) if len(q_list) else np.zeros((0, 4))
    cids = [int(expl.labels[q]) for q in q_list]
    scs = [float(expl.scores[q]) for q in q_list]
    figs["decoder"] = decoder_attention_figure(
        expl.image, [expl.decoder_map(q).numpy() for q in q_list], boxes, cids, scs, q_list, cats, extent=extent)

    if query_stats is None:
        query_stats = QueryBoxes(expl.boxes.numpy()[None], expl.object_scores.numpy()[None],
                                 expl.labels.numpy()[None], ["this image"])
    figs["queries"] = query_boxes_figure(query_stats.boxes, min(num_queries, expl.num_queries))

    figs["active"] = active_queries_figure(expl.image, expl.num_queries, expl.kept(), cats,
                                           query_scores=expl.object_scores.numpy(), threshold=expl.threshold)

    if expl.mask_attention is not None:
        att = np.stack([expl.mask_attention_maps(q).numpy() for q in q_list]) if q_list else np.zeros((0, 8, 1, 1))
        figs["mask_attention"] = mask_attention_figure(expl.image, att, boxes, cids, scs, q_list, cats,
                                                       extent=extent, stride=expl.stride)
    if expl.panoptic is not None:
        from panoptic_detr.viz.overlay import overlay

        all_q = expl.keep.tolist()
        masks = expl.binary_masks()
        ids = expl.panoptic.id_map_numpy()
        ov = overlay(expl.image, ids, expl.panoptic.segments_info, cats)
        figs["masks"] = binary_masks_figure(
            expl.image, masks, [int(expl.labels[q]) for q in all_q], [float(expl.scores[q]) for q in all_q], all_q,
            ids, expl.panoptic.segments_info, ov, cats)

    cfg = expl.config
    if cfg is None:
        raise PanopticDetrError("explain: the model has no .config; build it with build_model or load_model")
    figs["diagram"] = network_diagram_figure(network_shapes(cfg, expl.processed_size, expl.original_size))
    return figs


def captions(expl: Explanation, query_stats: QueryBoxes | None, query_source: str = "") -> dict:
    cfg = expl.config
    vals = dict(
        stride=expl.stride, vh=expl.valid_size[0], vw=expl.valid_size[1], threshold=expl.threshold,
        n_images=1 if query_stats is None else query_stats.num_images, query_source=query_source,
        num_queries=expl.num_queries, nheads=getattr(cfg, "nheads", 8), min_area=4,
        h=expl.processed_size[0], w=expl.processed_size[1], tokens=expl.feature_size[0] * expl.feature_size[1],
    )
    return {k: (f, head, text.format(**vals)) for k, (f, head, text) in FIGURES.items()}


def write_explanation(
    out_dir: str | os.PathLike,
    expl: Explanation,
    points: Sequence[tuple[float, float]] | None = None,
    query_stats: QueryBoxes | None = None,
    query_source: str = "",
    num_queries: int = 20,
    source: dict | None = None,
    dpi: int = 110,
) -> list[Path]:
    """Render every figure into `out_dir` (which must exist) plus `index.html`; returns
    the written paths."""
    from panoptic_detr.viz.figures import save_figure
    from panoptic_detr.viz.html import write_index

    out_dir = Path(out_dir)
    figs = render_figures(expl, points, query_stats, num_queries)
    caps = captions(expl, query_stats, query_source)
    written, entries = [], []
    for key, fig in figs.items():
        fname, head, text = caps[key]
        save_figure(fig, out_dir / fname, dpi=dpi)
        written.append(out_dir / fname)
        entries.append((fname, head, text))
    fig = None
    figs.clear()
    meta = dict(source or {})
    H, W = expl.original_size
    meta.setdefault("image size", f"{W} x {H} pixels (network input {expl.processed_size[1]} x {expl.processed_size[0]})")
    meta.setdefault("detected", f"{len(expl.keep)} of {expl.num_queries} queries above {expl.threshold:g}")
    objects = [
        {"query": d["query"], "label": expl.categories.name_of(d["category_id"]), "score": d["score"],
         "box": d["box"]}
        for d in expl.kept()
    ]
    written.append(write_index(out_dir / "index.html", "How DETR sees this image", entries, meta, objects))
    return written


def write_query_figure(out_dir: str | os.PathLike, stats: QueryBoxes, num_queries: int = 20,
                       title: str | None = None, caption_source: str = "", dpi: int = 110) -> list[Path]:
    """Figure 3 alone (for `explain-queries`): the PNG and a small `index.html`."""
    from panoptic_detr.viz.figures import save_figure
    from panoptic_detr.viz.html import write_index
    from panoptic_detr.viz.queries import query_boxes_figure

    out_dir = Path(out_dir)
    q = int(stats.boxes.shape[1])
    fig = query_boxes_figure(stats.boxes, min(num_queries, q), title=title)
    fname, head, text = FIGURES["queries"]
    save_figure(fig, out_dir / fname, dpi=dpi)
    text = text.format(n_images=stats.num_images, query_source=caption_source)
    index = write_index(out_dir / "index.html", "Where the queries look", [(fname, head, text)],
                        {"images": str(stats.num_images), "queries shown": f"{min(num_queries, q)} of {q}"})
    return [out_dir / fname, index]


# ---------------------------------------------------------------------- the commands
def sibling_images(image: str | os.PathLike, limit: int) -> list[Path]:
    """Up to `limit` images of the folder holding `image` (not recursive), `image` first."""
    from panoptic_detr.data.image_io import is_image_file

    image = Path(image)
    others = sorted(p for p in image.parent.iterdir() if p.is_file() and is_image_file(p) and p != image)
    return [image] + others[: max(0, limit - 1)]


def explain_to_folder(
    model,
    image: str | os.PathLike,
    out: str | os.PathLike,
    points: Sequence[tuple[float, float]] | None = None,
    num_queries: int = 20,
    threshold: float = 0.85,
    short_side: int = 800,
    max_size: int | None = 1333,
    query_images: str | os.PathLike | None = None,
    split: str = "val",
    max_images: int = 8,
    query_short_side: int | None = None,
    min_query_images: int = 8,
    device: str = "cpu",
    dedup: float | None = None,
    overwrite: bool = False,
    source: str | None = None,
    dpi: int = 110,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The `explain` command: every figure for `image` and `index.html`, in `out`
    (built atomically). Figure 3 runs the model over up to `max_images` images of
    `query_images` (a folder or prepared dataset; default: `image`'s folder) at
    `query_short_side` (default half of `short_side`); when fewer than
    min(`min_query_images`, `max_images`) are found, crops of `image` make up the difference."""
    from panoptic_detr.data.image_io import load_image
    from panoptic_detr.utils.io import atomic_dir

    say = log or (lambda msg: print(msg, file=sys.stderr))
    image = Path(image)
    arr = load_image(image)
    H, W = arr.shape[:2]
    for x, y in points or []:
        if not (0 <= x < W and 0 <= y < H):
            raise PanopticDetrError(f"--points {x:g},{y:g}: outside the {W} x {H} image {image}")
    t0 = time.perf_counter()
    predictor = _preprocessor(model, device, threshold, short_side, max_size, dedup)
    expl = explain_image(predictor, arr, device=device)
    t1 = time.perf_counter()
    say(f"explain: {len(expl.keep)} of {expl.num_queries} queries above {expl.threshold:g} "
        f"(forward with attention {expl.timings['forward']:.1f} s)")

    paths = images_of(query_images, split) if query_images is not None else sibling_images(image, max_images)
    paths = paths[:max_images]
    items: list = list(paths)
    note = f" from {query_images if query_images is not None else image.parent}"
    want = min(min_query_images, max_images)
    if len(items) < want:
        extra = crops_for_queries(arr, want - len(items) + 1, seed=0)[1:]
        items += extra
        note += f" plus {len(extra)} crop{'s' if len(extra) != 1 else ''} of this image"
    qs = query_short_side or max(32, short_side // 2)
    note += f", resized to short side {qs}"
    errors: list[str] = []
    stats = query_boxes(predictor, items, short_side=qs, max_size=max_size, device=device, on_error=errors.append)
    for msg in errors:
        say(f"skipped: {msg}")
    t2 = time.perf_counter()
    meta = {"checkpoint": source or "", "image": str(image)}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        written = write_explanation(tmp, expl, points, stats, query_source=" (" + note.strip() + ")",
                                    num_queries=num_queries, source=meta, dpi=dpi)
    t3 = time.perf_counter()
    say(f"explain: {len(written) - 1} figures and index.html in {out} "
        f"(model {t1 - t0:.1f} s, {stats.num_images} images for figure 3 {t2 - t1:.1f} s, drawing {t3 - t2:.1f} s)")
    return Path(out) / "index.html"


def explain_queries_to_folder(
    model,
    data: str | os.PathLike,
    out: str | os.PathLike,
    num_queries: int = 20,
    split: str = "val",
    max_images: int | None = 200,
    short_side: int = 800,
    max_size: int | None = 1333,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    dpi: int = 110,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The `explain-queries` command: figure 3 over the images of `data` (a folder or a
    prepared dataset's split), plus the raw boxes (`query_boxes.npz`) and `index.html`."""
    from panoptic_detr.utils.io import atomic_dir, atomic_path

    say = log or (lambda msg: print(msg, file=sys.stderr))
    paths = images_of(data, split)
    if max_images:
        paths = paths[:max_images]
    errors: list[str] = []
    stats = query_boxes(model, paths, short_side=short_side, max_size=max_size, device=device, progress=progress,
                        on_error=errors.append)
    for msg in errors:
        say(f"skipped: {msg}")
    if stats.num_images == 0:
        raise PanopticDetrError(f"{data}: no readable image")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_query_figure(tmp, stats, num_queries, caption_source=f" of {data}", dpi=dpi)
        with atomic_path(tmp / "query_boxes.npz") as f:
            with open(f, "wb") as fh:
                np.savez_compressed(fh, boxes=stats.boxes, scores=stats.scores, labels=stats.labels,
                                    images=np.array(stats.sources))
    say(f"explain-queries: {stats.num_images} images, figure in {Path(out) / FIGURES['queries'][0]}")
    return Path(out) / "index.html"
