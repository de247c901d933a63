"""The explorer's data: an `Explanation` packed into compact arrays for one HTML file.

Attention maps are stored as uint8 with one scale per map (the map's maximum): a value v
becomes round(255 v / max) and reads back as q max / 255, so the error of every value is
at most max / 510 (half a step), about 0.2% of the map's peak. A "map" is what the
explorer draws: one query token's row of the encoder self-attention (the transposed
direction reads a column, each value with its own row's scale), one query's
cross-attention of one layer and head, one mask-head attention map. Mask logits are int16
in steps of 1/256 (clipped to +-127), so the sigmoid the explorer computes is within
1/2048 of Python's. Each array is zlib-compressed and base64-encoded; the page inflates it
with the browser's own `DecompressionStream` (no library).

What is stored (`ExplorerOptions`): the encoder self-attention of every layer averaged
over the heads, per head for the last layer (`encoder_heads="all"`: every layer); every
decoder layer per head for the kept queries (`queries="all"`: for all of them) and the
last layer's mean for every query; the mask-head maps and masks of the kept queries.
"""

from __future__ import annotations

import base64
import io
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["ExplorerOptions", "quantize_maps", "dequantize_maps", "encode_array", "decode_array",
           "pack_explorer", "MASK_LOGIT_STEP"]

MASK_LOGIT_STEP = 1.0 / 256.0


@dataclass
class ExplorerOptions:
    """encoder_heads: "last" (per head for the last encoder layer) or "all" (every layer;
    the Explanation must have been made with `encoder_heads="all"`); queries: "kept" (every
    decoder layer and head for the kept queries) or "all" (for every query)."""

    encoder_heads: str = "last"
    queries: str = "kept"
    jpeg_quality: int = 90


def quantize_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 maps [..., M] and float32 scales [...] (each map's maximum): see the module doc."""
    maps = np.asarray(maps, dtype=np.float32)
    scale = np.maximum(maps.max(axis=-1), 0.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)[..., None]
    q = np.clip(np.rint(maps / safe * 255.0), 0, 255).astype(np.uint8)
    return q, scale


def dequantize_maps(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * (np.asarray(scale, np.float32)[..., None] / 255.0)


def encode_array(a: np.ndarray) -> dict:
    """{dtype, shape, data: base64 of the zlib-compressed little-endian bytes}."""
    a = np.ascontiguousarray(a)
    raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"dtype": a.dtype.name, "shape": list(a.shape),
            "data": base64.b64encode(zlib.compress(raw, 6)).decode("ascii")}


def decode_array(blob: dict) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(blob["data"]))
    return np.frombuffer(raw, dtype=np.dtype(blob["dtype"]).newbyteorder("<")).reshape(blob["shape"])


def _valid_tokens(expl) -> np.ndarray:
    """Indices (row-major on the full grid) of the valid tokens, in valid-grid order."""
    fh, fw = expl.feature_size
    vh, vw = expl.valid_size
    return (np.arange(vh)[:, None] * fw + np.arange(vw)[None, :]).reshape(-1)


def _jpeg(image: np.ndarray, quality: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _encoder_blobs(expl, options: ExplorerOptions, tokens: np.ndarray) -> tuple[dict, dict]:
    if expl.encoder_layers is None:
        raise ValueError("the explanation has no per-layer attention (made by an older explain_image?)")
    sel = np.ix_(tokens, tokens)
    mean = np.stack([a.numpy()[sel] for a in expl.encoder_layers])  # [L, T, T]
    layers = list(expl.encoder_head_layers)
    if options.encoder_heads == "last":
        layers = layers[-1:]
    elif len(layers) < mean.shape[0]:
        raise ValueError("encoder_heads='all' needs explain_image(..., encoder_heads='all')")
    first = len(expl.encoder_head_layers) - len(layers)
    heads = np.stack([expl.encoder_heads[first + i].numpy()[(slice(None), *sel)] for i in range(len(layers))])
    qm, sm = quantize_maps(mean)
    qh, sh = quantize_maps(heads)  # [Lh, H, T, T]
    blobs = {"enc_mean": qm, "enc_mean_scale": sm, "enc_heads": qh, "enc_heads_scale": sh}
    return blobs, {"encoder_layers": int(mean.shape[0]), "encoder_head_layers": layers}


def _decoder_blobs(expl, options: ExplorerOptions, tokens: np.ndarray) -> tuple[dict, dict]:
    Q = expl.num_queries
    keep = [int(q) for q in expl.keep.tolist()]
    stored = list(range(Q)) if options.queries == "all" else keep
    heads = expl.decoder_heads.numpy()[..., tokens]  # [L, H, Q, T]
    mean = expl.decoder_layers.numpy()[..., tokens]  # [L, Q, T]
    full = np.concatenate([heads, mean[:, None]], axis=1)[:, :, stored]  # [L, H+1, S, T]
    qf, sf = quantize_maps(np.ascontiguousarray(full.transpose(2, 0, 1, 3)))  # [S, L, H+1, T]
    ql, sl = quantize_maps(mean[-1])  # [Q, T]
    blobs = {"dec_full": qf, "dec_full_scale": sf, "dec_last": ql, "dec_last_scale": sl}
    meta = {"decoder_layers": int(mean.shape[0]), "stored_queries": stored}
    if expl.mask_attention is not None:
        vh, vw = expl.valid_size
        att = expl.mask_attention.numpy()[stored][:, :, :vh, :vw].reshape(len(stored), -1, vh * vw)
        qa, sa = quantize_maps(att)
        blobs.update(mask_att=qa, mask_att_scale=sa)
    if expl.mask_logits is not None and len(keep):
        prob, (right, bottom) = expl.mask_probabilities()  # the page recomputes the sigmoid from the logits
        ch, cw = prob.shape[-2:]
        logits = expl.mask_logits.numpy()[:, :ch, :cw]
        blobs["mask_logits"] = np.clip(np.rint(logits / MASK_LOGIT_STEP), -32767, 32767).astype(np.int16)
        meta["mask_cells"] = [int(ch), int(cw)]
        meta["mask_extent"] = [float(right), float(bottom)]
    return blobs, meta


def _query_rows(expl) -> list[dict]:
    """One row per query: class, scores, state, box, segment, colour."""
    from panoptic_detr.viz.colors import category_color
    from panoptic_detr.viz.queries import box_size_colors

    boxes = expl.boxes_xyxy(list(range(expl.num_queries)))
    b = expl.boxes.numpy()
    size_colors = box_size_colors(b[:, 2], b[:, 3])
    C = int(expl.logits.shape[-1]) - 1
    rows = []
    for q in range(expl.num_queries):
        label = int(expl.labels[q])
        state = expl.states.state[q] if expl.states is not None else ("kept" if q in set(expl.keep.tolist()) else
                                                                      "no-object" if label == C else "threshold")
        rows.append({
            "q": q, "label": label, "name": "no object" if label == C else expl.categories.name_of(label),
            "score": round(float(expl.scores[q]), 4), "object_score": round(float(expl.object_scores[q]), 4),
            "object_label": expl.categories.name_of(int(expl.logits[q, :-1].argmax())),
            "state": state, "box": [round(float(v), 2) for v in boxes[q]],
            "cxcywh": [round(float(v), 5) for v in b[q]],
            "segment": int(expl.states.segment[q]) if expl.states is not None else 0,
            "color": list(category_color(label, expl.categories)) if label != C else [128, 128, 128],
            "size_color": [int(round(255 * v)) for v in size_colors[q]],
        })
    return rows


def _panoptic(expl) -> tuple[dict, list[dict]]:
    from panoptic_detr.viz.colors import category_color

    if expl.panoptic is None:
        return {}, []
    ids = expl.panoptic.id_map_numpy()
    heads = expl.states.segment_query() if expl.states is not None else {}
    segs = [{"id": int(s["id"]), "category_id": int(s["category_id"]),
             "name": expl.categories.name_of(int(s["category_id"])), "isthing": bool(s["isthing"]),
             "score": round(float(s["score"]), 4), "area": int(s["area"]), "query": heads.get(int(s["id"]), -1),
             "color": list(category_color(int(s["category_id"]), expl.categories))}
            for s in expl.panoptic.segments_info]
    dtype = np.uint8 if ids.max(initial=0) < 256 else np.uint16
    return {"id_map": ids.astype(dtype)}, segs


def pack_explorer(expl, options: ExplorerOptions | None = None, query_stats=None,
                  query_source: str = "") -> tuple[dict, dict]:
    """(meta: JSON-able dict, blobs: name -> encoded array) of `expl` (an
    `engine.explain.Explanation` made with per-layer attention). `query_stats` (an
    `engine.explain.QueryBoxes`) adds every slot's boxes over its images."""
    from matplotlib import colormaps

    from panoptic_detr.data.preprocess import nearest_indices

    options = options or ExplorerOptions()
    tokens = _valid_tokens(expl)
    blobs, meta = _encoder_blobs(expl, options, tokens)
    dec_blobs, dec_meta = _decoder_blobs(expl, options, tokens)
    pan_blobs, segments = _panoptic(expl)
    blobs.update(dec_blobs)
    blobs.update(pan_blobs)
    H, W = expl.original_size
    h, w = expl.processed_size
    ch, cw = expl.cell_size
    cfg = expl.config
    meta.update(dec_meta)
    meta.update(
        image_size=[H, W], processed_size=[h, w], feature_size=list(expl.feature_size),
        valid_size=list(expl.valid_size), cell_size=[ch, cw], stride=expl.stride,
        nheads=int(expl.decoder_heads.shape[1]), num_queries=expl.num_queries,
        threshold=expl.threshold, keep=[int(q) for q in expl.keep.tolist()],
        queries=_query_rows(expl), segments=segments, geometry=expl.geometry,
        rows=nearest_indices(H, h).tolist(), cols=nearest_indices(W, w).tolist(),
        colormap=(np.asarray(colormaps["inferno"](np.linspace(0, 1, 256)))[:, :3] * 255).round().astype(int).tolist(),
        mask_logit_step=MASK_LOGIT_STEP, model=getattr(cfg, "backbone", ""),
    )
    if query_stats is not None and query_stats.num_images:
        blobs["dataset_boxes"] = np.asarray(query_stats.boxes, dtype=np.float32)
        meta["dataset"] = {"images": int(query_stats.num_images), "source": query_source}
    encoded = {name: encode_array(a) for name, a in blobs.items()}
    meta["image"] = _jpeg(expl.image, options.jpeg_quality)
    return meta, encoded
