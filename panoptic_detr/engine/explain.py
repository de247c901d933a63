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
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from panoptic_detr.data.categories import CategoryList

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
    # every layer (the explorer): means [L, HW, HW] / [L, Q, HW]; per head [L_h, nheads, HW, HW]
    # for the encoder layers `encoder_head_layers` (0-based), [L, nheads, Q, HW] for the decoder
    encoder_layers: torch.Tensor | None = None
    encoder_heads: torch.Tensor | None = None
    encoder_head_layers: list = field(default_factory=list)
    decoder_layers: torch.Tensor | None = None
    decoder_heads: torch.Tensor | None = None
    states: object | None = None  # engine.explain_states.QueryStates: what became of each query
    geometry: str = "aligned"  # the mask geometry of the panoptic inference (engine.mask_geometry)

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
    def boxes_xyxy(self, queries=None, clip: bool = False) -> np.ndarray:
        """Boxes [N, 4] (x0, y0, x1, y1) in original pixels of `queries` (default: kept);
        `clip`: clipped to the image (a predicted box may reach past its edges)."""
        q = self.keep if queries is None else torch.as_tensor(queries, dtype=torch.long).reshape(-1)
        H, W = self.original_size
        b = self.boxes[q].double()
        cx, cy, w, h = b.unbind(-1)
        out = torch.stack([(cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H], -1).numpy()
        if clip:
            out = np.clip(out, 0.0, np.array([W, H, W, H], dtype=np.float64))
        return out

    def kept(self) -> list[dict]:
        """One dict per kept query: query, category_id, score, box (x0, y0, x1, y1 original
        pixels, clipped to the image), state (`engine.explain_states.STATES`: kept,
        duplicate or small)."""
        boxes = self.boxes_xyxy(clip=True)
        return [
            {"query": int(q), "category_id": int(self.labels[q]), "score": float(self.scores[q]),
             "box": [float(v) for v in boxes[i]],
             "state": self.states.state[q] if self.states is not None else "kept"}
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

    def mask_probabilities(self) -> tuple[np.ndarray, tuple[float, float]]:
        """(sigmoid of the kept queries' mask logits on the image's own stride-4 cells
        [K, ch, cw] float32, (right, bottom) edge of those cells in original pixels): drawn
        bilinearly over (0, 0)-(right, bottom), they give the masks at full resolution, as
        the panoptic inference upsamples them (`geometry`)."""
        from panoptic_detr.engine.mask_geometry import image_cells

        H, W = self.original_size
        h, w = self.processed_size
        if self.mask_logits is None:
            return np.zeros((0, 1, 1), np.float32), (float(W), float(H))
        _, _, ch, cw = image_cells(self.mask_logits, (h, w), 4)
        prob = torch.sigmoid(self.mask_logits[:, :ch, :cw].float()).numpy()
        if self.geometry == "official":  # the crop is stretched to the image
            return prob, (float(W), float(H))
        return prob, (4.0 * cw * W / w, 4.0 * ch * H / h)

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


def explain_image(predictor, image, encoder_heads: str = "last") -> Explanation:
    """Run `predictor`'s model (a `Predictor` of a panoptic model: its threshold, resize,
    min_area and dedup apply) on `image` (path, HxWx3 array or PIL image) with attention
    capture and collect everything the figures and the explorer need: every layer's
    attention averaged over the heads, every decoder layer per head, and per head the
    encoder's last layer (`encoder_heads="last"`) or every layer (`"all"`).

    The kept queries, their masks and the panoptic map are exactly the predictor's.
    """
    from panoptic_detr.data.image_io import load_image, to_rgb_array
    from panoptic_detr.engine.explain_states import query_states
    from panoptic_detr.engine.inference import PanopticOutput, panoptic_inference, select_queries
    from panoptic_detr.model.attention import model_attention

    t0 = time.perf_counter()
    net = predictor.model
    threshold = predictor.threshold
    arr = load_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb_array(image)
    x, (H, W) = predictor.preprocess(arr)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    t1 = time.perf_counter()
    if encoder_heads not in ("last", "all"):
        raise ValueError(f"encoder_heads must be 'last' or 'all', got {encoder_heads!r}")
    with torch.inference_mode(), model_attention(net, all_encoder_layers=True,
                                                 heads=True if encoder_heads == "all" else "last") as rec:
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
                                          min_area=predictor.min_area, dedup=predictor.dedup,
                                          geometry=getattr(predictor, "geometry", "aligned"))
            panoptic = PanopticOutput(panoptic.id_map.cpu(), panoptic.segments_info, panoptic.queries)
        t4 = time.perf_counter()

    config = getattr(net, "config", None)
    feature_size, valid_size = _valid_grid(rec)
    probs = logits.float().softmax(-1)
    enc_layers = torch.stack([a[0] for a in rec.encoder]).float().cpu()
    dec_layers = torch.stack([a[0] for a in rec.decoder]).float().cpu()
    n_enc = len(rec.encoder)
    states = query_states(logits, threshold, panoptic) if masks is not None else None
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
        encoder_attention=enc_layers[-1],
        decoder_attention=dec_layers[-1],
        mask_attention=None if rec.mask_attention is None else rec.mask_attention[0].float().cpu(),
        mask_logits=None if masks is None else masks.float().cpu(),
        panoptic=panoptic,
        categories=predictor.categories,
        config=config,
        threshold=float(threshold),
        timings={"preprocess": t1 - t0, "forward": t2 - t1, "masks": t3 - t2, "panoptic": t4 - t3},
        encoder_layers=enc_layers,
        encoder_heads=torch.stack([a[0] for a in rec.encoder_heads]).float().cpu(),
        encoder_head_layers=list(range(n_enc)) if encoder_heads == "all" else [n_enc - 1],
        decoder_layers=dec_layers,
        decoder_heads=torch.stack([a[0] for a in rec.decoder_heads]).float().cpu(),
        states=states,
        geometry=getattr(predictor, "geometry", "aligned"),
    )


# many images (figure 3): in engine/query_boxes.py, re-exported here
from panoptic_detr.engine.query_boxes import QueryBoxes, crops_for_queries, query_boxes  # noqa: E402
