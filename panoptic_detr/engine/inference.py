"""Panoptic inference: from DETR outputs for one image to a panoptic id map.

`panoptic_inference` is a pure function implementing the official DETR post-processing
(`PostProcessPanoptic`), vectorised in torch and without PIL round trips:

1. softmax over the classes; a query is kept when its best class is not "no object"
   (the last index) and its score is strictly above `threshold`;
2. the mask logits of the kept queries are cropped to the image's own part of the
   stride-4 mask grid, upsampled bilinearly to the processed (network input) size;
3. pixel-wise argmax over the kept masks; all queries of the same *stuff* class form one
   segment;
4. segments of `min_area` pixels or fewer (counted at the original size, as the official
   code does) are dropped and the argmax is redone without their queries, until no
   segment is that small;
5. optionally (`dedup`, off by default: not part of the official algorithm), before
   step 3, a kept *thing* query is dropped when more than `dedup` of its mask (logit > 0
   on its image's grid cells) lies inside the mask of a better-scoring kept query of the
   same class -- see `duplicate_queries`;
6. the map is resized to the original image size with nearest-neighbour sampling (the
   same source pixels as PIL's NEAREST, which the official code used), ids are
   numbered 1..n in query order (0 = VOID), areas and boxes measured on the final map.

Cropping the batch padding (step 2) -- the official code interpolates the whole padded
grid to the image size, so the result of an image depends on its batch-mates. The mask
head's output is the stride-4 grid of the *padded* batch: cell (i, j) holds the
features of input pixels [4i, 4i+4) x [4j, 4j+4) (every stride-2 stage of ResNet maps
n pixels to ceil(n/2) cells, anchored at the top-left corner). The image's own cells are
therefore the first ceil(h/4) x ceil(w/4) -- exactly the grid the model produces for the
image alone. We crop to that grid, upsample it by exactly the stride (bilinear,
half-pixel centres, edges clamped to the crop) to 4*ceil(h/4) x 4*ceil(w/4) and take the
top-left h x w pixels. Nothing outside the crop is ever read, so padding cannot leak in,
and every output pixel keeps its true position (`interpolate(crop, size=(h, w))` would
instead stretch by h / ceil(h/4) != 4 when h is not a multiple of 4, shifting the masks
by up to 3 pixels at the far edge). The resulting map is then a function of the image's
mask logits alone.

Duplicate suppression: DETR's set loss teaches one query per object, but a model trained
for minutes rather than 500 epochs often fires two or three queries on one object. The
argmax then splits the object between them, and every fragment is a false positive (on
the tiny models' val splits most thing false positives were such fragments). Measuring
the overlap relative to the *worse* query's own mask (not IoU) also removes queries that
cover only a part of an object another query covers whole.

Stuff merging: the official code merges same-class stuff queries only in its first pass
and then drops the merged-away queries (area 0) as "small", so their pixels go to
whichever other mask is next best. Here the merge holds in every pass -- all pixels won
by any query of a stuff class belong to that class's one segment -- as the project
specification asks. A merged segment's score is the best score of its queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from panoptic_detr.data.preprocess import nearest_indices

__all__ = [
    "PanopticOutput",
    "panoptic_inference",
    "select_queries",
    "upsample_masks",
    "masks_argmax",
    "segment_boxes",
    "duplicate_queries",
    "check_dedup",
]


@dataclass
class PanopticOutput:
    """A panoptic prediction for one image.

    `id_map`: int32 tensor [H, W] at the original image size, 0 = VOID, segments 1..n.
    `segments_info`: one dict per segment: `id`, `category_id`, `isthing` (bool),
    `area` (pixels), `bbox` ([x, y, w, h] on `id_map`), `score` (float).
    """

    id_map: torch.Tensor
    segments_info: list[dict] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.id_map.shape[0]), int(self.id_map.shape[1])

    def id_map_numpy(self) -> np.ndarray:
        return self.id_map.detach().cpu().numpy().astype(np.int32, copy=False)


def select_queries(logits: torch.Tensor, threshold: float = 0.85) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(keep, scores, labels)` for logits [..., Q, C+1], as the official post-processing.

    `keep` is True for queries whose best class is not "no object" (the last index) and
    whose softmax score is strictly above `threshold`.
    """
    probs = logits.float().softmax(-1)
    scores, labels = probs.max(-1)
    keep = labels.ne(logits.shape[-1] - 1) & (scores > threshold)
    return keep, scores, labels


def _image_cells(masks: torch.Tensor, processed_size: Sequence[int], stride: int) -> tuple[int, int, int, int]:
    """(h, w, ch, cw): the image size and the ceil(h/stride) x ceil(w/stride) grid cells it owns."""
    h, w = int(processed_size[0]), int(processed_size[1])
    ch, cw = math.ceil(h / stride), math.ceil(w / stride)
    gh, gw = masks.shape[-2:]
    if gh < ch or gw < cw:
        raise ValueError(
            f"mask grid {gh}x{gw} is smaller than the {ch}x{cw} cells a {h}x{w} image needs at stride {stride}"
        )
    return h, w, ch, cw


def upsample_masks(masks: torch.Tensor, processed_size: Sequence[int], stride: int = 4) -> torch.Tensor:
    """Mask logits [k, gh, gw] on a (possibly padded) stride-`stride` grid -> [k, h, w].

    Crops to the image's own ceil(h/stride) x ceil(w/stride) cells, upsamples by exactly
    `stride` (bilinear, align_corners=False) and keeps the top-left h x w pixels; see the
    module docstring for why this makes the result independent of the batch padding.
    """
    h, w, ch, cw = _image_cells(masks, processed_size, stride)
    crop = masks[:, :ch, :cw].float()
    if crop.shape[0] == 0:
        return crop.new_zeros((0, h, w))
    up = F.interpolate(crop[None], size=(ch * stride, cw * stride), mode="bilinear", align_corners=False)[0]
    return up[:, :h, :w]


def masks_argmax(
    masks: torch.Tensor,
    processed_size: Sequence[int],
    stride: int = 4,
    queries: torch.Tensor | None = None,
    band_rows: int = 64,
) -> torch.Tensor:
    """Pixel-wise argmax [h, w] (int64 index into `masks`) of `upsample_masks(masks)`.

    Equal to `upsample_masks(masks[queries], ...).argmax(0)` mapped back to indices of
    `masks` (first maximum on ties), without ever holding the k full-size masks: the
    upsampling runs in bands of output rows (each with one grid row of context on either
    side, so every value is bit-identical to the full upsampling) and the maximum is
    streamed over the queries (torch's argmax over the first dimension is several times
    slower than this on CPU).
    """
    h, w, ch, cw = _image_cells(masks, processed_size, stride)
    if queries is None:
        queries = torch.arange(masks.shape[0], device=masks.device)
    grid = masks.index_select(0, queries)[:, :ch, :cw].float()
    out = torch.empty((h, w), dtype=torch.long, device=masks.device)
    band_rows = max(stride, band_rows - band_rows % stride)
    for y0 in range(0, h, band_rows):
        y1 = min(h, y0 + band_rows)
        g0 = max(0, y0 // stride - 1)
        g1 = min(ch, (y1 - 1) // stride + 2)
        up = F.interpolate(grid[None, :, g0:g1], size=((g1 - g0) * stride, cw * stride), mode="bilinear",
                           align_corners=False)[0]
        up = up[:, y0 - g0 * stride : y1 - g0 * stride, :w]
        best = up[0].clone()
        idx = torch.zeros(best.shape, dtype=torch.long, device=masks.device)
        for i in range(1, up.shape[0]):
            better = up[i] > best  # strict: the first maximum wins ties
            torch.maximum(best, up[i], out=best)
            idx.masked_fill_(better, i)
        out[y0:y1] = idx
    return queries[out]


def segment_boxes(id_map: torch.Tensor, num_ids: int) -> torch.Tensor:
    """COCO boxes [x, y, w, h] (int64 [num_ids + 1, 4], row = id) of every id in a map.

    Ids absent from the map get [0, 0, 0, 0]. Linear in the number of pixels.
    """
    H, W = id_map.shape
    ids = id_map.long()
    n = num_ids + 1
    dev = id_map.device
    row_key = ids * H + torch.arange(H, device=dev)[:, None]
    col_key = ids * W + torch.arange(W, device=dev)[None, :]
    rows = torch.bincount(row_key.flatten(), minlength=n * H).view(n, H) > 0
    cols = torch.bincount(col_key.flatten(), minlength=n * W).view(n, W) > 0
    present = rows.any(1)
    # first / last True along each row of the presence tables
    ar_h = torch.arange(H, device=dev)
    ar_w = torch.arange(W, device=dev)
    y0 = torch.where(rows, ar_h, H).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values
    x0 = torch.where(cols, ar_w, W).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values
    boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1)
    return torch.where(present[:, None], boxes, torch.zeros_like(boxes))


def duplicate_queries(
    masks: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    is_thing: torch.Tensor,
    processed_size: Sequence[int],
    overlap: float,
    stride: int = 4,
) -> torch.Tensor:
    """Bool [k]: the queries that duplicate a better one (see the module docstring).

    masks: mask logits [k, gh, gw] of k kept queries; scores, labels, is_thing: [k].
    Query q is a duplicate when, for some query p of the same thing class that scores
    higher (or equal with a lower index) and is not itself a duplicate,
    |mask_q & mask_p| > overlap * |mask_q|, masks taken as logit > 0 on the image's own
    grid cells. Stuff queries are never duplicates (a class's stuff queries merge anyway).
    """
    k = int(masks.shape[0])
    dup = torch.zeros(k, dtype=torch.bool, device=masks.device)
    things = is_thing.nonzero().flatten()
    if things.numel() < 2:
        return dup
    _, _, ch, cw = _image_cells(masks, processed_size, stride)
    binary = (masks.index_select(0, things)[:, :ch, :cw] > 0).flatten(1).float()
    inter = binary @ binary.T
    own = inter.diagonal().clone()
    same = labels[things][:, None].eq(labels[things][None, :])
    covered = same & (inter > overlap * own[:, None]) & (own[:, None] > 0)
    # greedy in score order: only queries that survive can suppress others
    order = torch.argsort(-scores[things].float(), stable=True).tolist()
    covered_l = covered.tolist()
    kept: list[int] = []
    for i in order:
        if any(covered_l[i][j] for j in kept):
            dup[things[i]] = True
        else:
            kept.append(i)
    return dup


def check_dedup(dedup: float | None, name: str = "dedup") -> float | None:
    """`dedup` as a float in [0, 1), or None (off); a one-line error otherwise."""
    from panoptic_detr.errors import PanopticDetrError

    if dedup is None:
        return None
    value = float(dedup)
    if not 0.0 <= value < 1.0:
        raise PanopticDetrError(f"{name} must be in [0, 1) (a fraction of a mask), got {dedup}")
    return value


def _isthing_tensor(isthing, device) -> torch.Tensor:
    if isinstance(isthing, torch.Tensor):
        return isthing.to(device=device, dtype=torch.bool)
    return torch.as_tensor(list(isthing), dtype=torch.bool, device=device)


def panoptic_inference(
    logits: torch.Tensor,
    masks: torch.Tensor,
    processed_size: Sequence[int],
    original_size: Sequence[int],
    isthing,
    threshold: float = 0.85,
    min_area: int = 4,
    mask_stride: int = 4,
    dedup: float | None = None,
) -> PanopticOutput:
    """The panoptic map of one image from its DETR outputs (see the module docstring).

    logits: [Q, C+1] class logits (last = "no object").
    masks: mask logits on the (padded) stride-`mask_stride` grid, either of every query
        [Q, gh, gw] or of the kept queries only [k, gh, gw], in query order (k = the
        number of queries `select_queries` keeps at `threshold`; the fast path computes
        only those with `model.masks_for_queries`).
    processed_size: (h, w) of the image as the network saw it, without batch padding.
    original_size: (H, W) of the output map.
    isthing: bool per class index (tensor or sequence); indices beyond it count as stuff.
    threshold: a query is kept when its score is strictly above it.
    min_area: segments with at most this many pixels (at the original size) are dropped.
    dedup: drop thing queries with more than this fraction of their mask inside a
        better query's mask of the same class (`duplicate_queries`); None = off, as the
        official code.
    """
    H, W = int(original_size[0]), int(original_size[1])
    h, w = int(processed_size[0]), int(processed_size[1])
    device = logits.device
    keep, scores, labels = select_queries(logits, threshold)
    query_index = keep.nonzero().flatten()
    k = int(query_index.numel())
    void = PanopticOutput(torch.zeros((H, W), dtype=torch.int32, device=device), [])
    if k == 0:
        return void

    if masks.shape[0] == logits.shape[0]:
        raw = masks[query_index]
    elif masks.shape[0] == k:
        raw = masks
    else:
        raise ValueError(f"{masks.shape[0]} masks for {logits.shape[0]} queries of which {k} are kept")
    device = raw.device
    q_scores = scores[query_index].to(device)
    q_labels = labels[query_index].to(device)
    q_thing, q_segment = query_segments(q_labels, _isthing_tensor(isthing, device))

    # every processed pixel stands for rcount[i] * ccount[j] original pixels
    rows = torch.from_numpy(nearest_indices(H, h)).to(device)
    cols = torch.from_numpy(nearest_indices(W, w)).to(device)
    pixel_weight = (
        torch.bincount(rows, minlength=h)[:, None] * torch.bincount(cols, minlength=w)[None, :]
    ).flatten()

    alive = torch.ones(k, dtype=torch.bool, device=device)
    if dedup is not None:
        alive &= ~duplicate_queries(raw, q_scores, q_labels, q_thing, (h, w), float(dedup), mask_stride)
    winner = drop_small_segments(raw, (h, w), mask_stride, q_segment, alive, pixel_weight, min_area)
    if winner is None:
        return void

    # number the segments 1..n in query order
    seg_heads = (alive & q_segment.eq(torch.arange(k, device=device))).nonzero().flatten()
    n = int(seg_heads.numel())
    head_to_id = torch.zeros(k, dtype=torch.int32, device=device)
    head_to_id[seg_heads] = torch.arange(1, n + 1, dtype=torch.int32, device=device)
    small_map = head_to_id[q_segment[winner]].view(h, w)
    id_map = small_map.index_select(0, rows).index_select(1, cols).contiguous()
    seg_score = torch.full((k,), -1.0, device=device).scatter_reduce(
        0, q_segment[alive], q_scores[alive], reduce="amax"
    )
    return PanopticOutput(id_map, segments_info(id_map, seg_heads, q_labels, q_thing, seg_score))


def query_segments(q_labels: torch.Tensor, isthing_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(is-thing bool [k], segment [k]) of kept queries with labels `q_labels`.

    A thing query is its own segment; every query of a stuff class belongs to the segment
    of the first query of that class. Labels beyond the table count as stuff.
    """
    k = q_labels.numel()
    device = q_labels.device
    in_table = q_labels < isthing_table.numel()
    q_thing = torch.zeros(k, dtype=torch.bool, device=device)
    q_thing[in_table] = isthing_table[q_labels[in_table]]
    same_class = q_labels[:, None].eq(q_labels[None, :])
    first_of_class = same_class.int().argmax(1)  # first j with the same label
    return q_thing, torch.where(q_thing, torch.arange(k, device=device), first_of_class)


def drop_small_segments(masks: torch.Tensor, processed_size: Sequence[int], stride: int, q_segment: torch.Tensor,
                        alive: torch.Tensor, pixel_weight: torch.Tensor, min_area: int) -> torch.Tensor | None:
    """The argmax winner [h*w] after dropping segments of at most `min_area` original pixels.

    Redoes the argmax without the dropped segments' queries until no segment is that
    small (as the official code). `alive` (bool [k]) is updated in place; None when no
    query is left.
    """
    k = q_segment.numel()
    heads = q_segment.eq(torch.arange(k, device=q_segment.device))
    while True:
        winner = masks_argmax(masks, processed_size, stride, queries=alive.nonzero().flatten()).flatten()
        area = torch.zeros(k, dtype=torch.long, device=masks.device).index_add_(0, q_segment[winner], pixel_weight)
        small = alive & heads & (area <= min_area)  # a segment is an alive query heading it
        if not bool(small.any()):
            return winner
        alive &= ~small[q_segment]
        if not bool(alive.any()):
            return None


def segments_info(id_map: torch.Tensor, seg_heads: torch.Tensor, q_labels: torch.Tensor, q_thing: torch.Tensor,
                  seg_score: torch.Tensor) -> list[dict]:
    """The `segments_info` of a final map whose segment i (1..n) is headed by query seg_heads[i-1]."""
    n = int(seg_heads.numel())
    areas = torch.bincount(id_map.flatten().long(), minlength=n + 1).tolist()
    boxes = segment_boxes(id_map, n).tolist()
    labels_l, thing_l, score_l = q_labels.tolist(), q_thing.tolist(), seg_score.tolist()
    return [
        {
            "id": sid,
            "category_id": int(labels_l[q]),
            "isthing": bool(thing_l[q]),
            "area": int(areas[sid]),
            "bbox": [int(v) for v in boxes[sid]],
            "score": float(score_l[q]),
        }
        for sid, q in enumerate(seg_heads.tolist(), start=1)
    ]
