"""Panoptic inference: from DETR outputs for one image to a panoptic id map.

`panoptic_inference` is a pure function implementing the official DETR post-processing
(`PostProcessPanoptic`), vectorised in torch and without PIL round trips:

1. softmax over the classes; a query is kept when its best class is not "no object"
   (the last index) and its score is strictly above `threshold`;
2. the mask logits of the kept queries are cropped to the image's own part of the
   stride-4 mask grid and upsampled bilinearly to the processed (network input) size, in
   one of two geometries (`engine.mask_geometry`, below);
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

Geometry (`geometry=`; `--geometry` on predict / evaluate / explain; carried by
checkpoints with their other inference defaults, `model.inference_defaults`):
- `aligned`, the default of this function, of the `Predictor` for a model without
  defaults, and of every model trained here: the crop is upsampled by exactly the
  stride (4) and its top-left h x w pixels kept, so every mask pixel stays where the
  network put it; the stuff merge of step 3 holds in every pass of step 4 (all pixels
  won by any query of a stuff class belong to that class's one segment, as the project
  specification asks; a merged segment's score is the best of its queries).
- `official`, the default for official checkpoints (files made elsewhere: no inference
  settings in them): exactly the official `PostProcessPanoptic` at batch 1 -- the crop
  interpolated straight to h x w (a stretch by h / ceil(h/4), drifting up to 2 px toward
  the right and bottom edges when a side is not a multiple of 4), argmax of the softmax
  over the queries, and stuff merged in the first pass only (the merged-away queries,
  left with area 0, are then dropped as small and their pixels go to the next best
  mask), so that a user evaluating `detr-r50-panoptic` reproduces the official numbers.
  Tested against a re-implementation of the official code, 0 pixels different. The map
  is numbered 1..n where the official PNG numbers the same segments 0..n-1.
Aligned is the default for our models because it is the better-aligned choice (no
drift) and what they were evaluated with during training; on sides that are multiples
of 4 the two agree but for float rounding and the stuff-merge rule.

Duplicate suppression: DETR's set loss teaches one query per object, but a model trained
for minutes rather than 500 epochs often fires two or three queries on one object. The
argmax then splits the object between them, and every fragment is a false positive (on
the tiny models' val splits most thing false positives were such fragments). Measuring
the overlap relative to the *worse* query's own mask (not IoU) also removes queries that
cover only a part of an object another query covers whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from panoptic_detr.data.preprocess import nearest_indices
from panoptic_detr.engine.mask_geometry import GEOMETRIES, image_cells, masks_argmax, upsample_masks

__all__ = [
    "PanopticOutput",
    "QueryOutcome",
    "panoptic_inference",
    "select_queries",
    "upsample_masks",
    "masks_argmax",
    "segment_boxes",
    "duplicate_queries",
    "check_dedup",
    "GEOMETRIES",
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
    # what became of the kept queries (None when no query was kept): `explain` reads it
    queries: "QueryOutcome | None" = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.id_map.shape[0]), int(self.id_map.shape[1])

    def id_map_numpy(self) -> np.ndarray:
        return self.id_map.detach().cpu().numpy().astype(np.int32, copy=False)


@dataclass
class QueryOutcome:
    """What `panoptic_inference` did with the queries it kept (all tensors of length k).

    `index`: the kept queries' indices among the Q; `duplicate`: dropped by `dedup`;
    `segment`: the id (1..n) of the segment a query's pixels went to, 0 when it has none
    (too small, or it lost every pixel in the argmax); `head`: the query that heads its
    segment (a stuff segment merges every query of its class).
    """

    index: torch.Tensor
    duplicate: torch.Tensor
    segment: torch.Tensor
    head: torch.Tensor


def select_queries(logits: torch.Tensor, threshold: float = 0.85) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(keep, scores, labels)` for logits [..., Q, C+1], as the official post-processing.

    `keep` is True for queries whose best class is not "no object" (the last index) and
    whose softmax score is strictly above `threshold`.
    """
    probs = logits.float().softmax(-1)
    scores, labels = probs.max(-1)
    keep = labels.ne(logits.shape[-1] - 1) & (scores > threshold)
    return keep, scores, labels


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
    _, _, ch, cw = image_cells(masks, processed_size, stride)
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
    geometry: str = "aligned",
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
    geometry: `aligned` (default) or `official` (exactly `PostProcessPanoptic`); see the
        module docstring.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")
    H, W = int(original_size[0]), int(original_size[1])
    h, w = int(processed_size[0]), int(processed_size[1])
    device = logits.device
    keep, scores, labels = select_queries(logits, threshold)
    query_index = keep.nonzero().flatten()
    k = int(query_index.numel())
    void = PanopticOutput(torch.zeros((H, W), dtype=torch.int32, device=device), [])
    if k == 0:
        return void

    raw = _kept_masks(masks, int(logits.shape[0]), query_index)
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
    duplicate = torch.zeros(k, dtype=torch.bool, device=device)
    if dedup is not None:
        duplicate = duplicate_queries(raw, q_scores, q_labels, q_thing, (h, w), float(dedup), mask_stride)
        alive &= ~duplicate
    winner = drop_small_segments(raw, (h, w), mask_stride, q_segment, alive, pixel_weight, min_area, geometry)
    if winner is None:
        none = torch.zeros(k, dtype=torch.int32, device=device)
        return PanopticOutput(void.id_map, [], QueryOutcome(query_index, duplicate, none, none.bool()))

    # number the segments 1..n in query order
    heads = alive & q_segment.eq(torch.arange(k, device=device))
    seg_heads = heads.nonzero().flatten()
    n = int(seg_heads.numel())
    head_to_id = torch.zeros(k, dtype=torch.int32, device=device)
    head_to_id[seg_heads] = torch.arange(1, n + 1, dtype=torch.int32, device=device)
    small_map = head_to_id[q_segment[winner]].view(h, w)
    id_map = small_map.index_select(0, rows).index_select(1, cols).contiguous()
    seg_score = torch.full((k,), -1.0, device=device).scatter_reduce(
        0, q_segment[alive], q_scores[alive], reduce="amax"
    )
    outcome = QueryOutcome(query_index, duplicate, torch.where(alive, head_to_id[q_segment], 0), heads)
    return PanopticOutput(id_map, segments_info(id_map, seg_heads, q_labels, q_thing, seg_score), outcome)


def _kept_masks(masks: torch.Tensor, num_queries: int, query_index: torch.Tensor) -> torch.Tensor:
    """The kept queries' masks, from every query's [Q, ...] or the kept ones' [k, ...]."""
    k = int(query_index.numel())
    if masks.shape[0] == num_queries:
        return masks[query_index]
    if masks.shape[0] == k:
        return masks
    raise ValueError(f"{masks.shape[0]} masks for {num_queries} queries of which {k} are kept")


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
                        alive: torch.Tensor, pixel_weight: torch.Tensor, min_area: int,
                        geometry: str = "aligned") -> torch.Tensor | None:
    """The argmax winner [h*w] after dropping segments of at most `min_area` original pixels.

    Redoes the argmax without the dropped segments' queries until no segment is that
    small (as the official code). `alive` (bool [k]) is updated in place; None when no
    query is left. `official`: as the official code, the stuff queries merged into their
    class's first query in the first pass (area 0 there) are dropped too, so later passes
    merge nothing.
    """
    k = q_segment.numel()
    heads = q_segment.eq(torch.arange(k, device=q_segment.device))
    while True:
        winner = masks_argmax(masks, processed_size, stride, queries=alive.nonzero().flatten(),
                              geometry=geometry).flatten()
        area = torch.zeros(k, dtype=torch.long, device=masks.device).index_add_(0, q_segment[winner], pixel_weight)
        small = alive & heads & (area <= min_area)  # a segment is an alive query heading it
        drop = small[q_segment]
        if geometry == "official":
            drop = (drop | ~heads) & alive
        if not bool(drop.any()):
            return winner
        alive &= ~drop
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
