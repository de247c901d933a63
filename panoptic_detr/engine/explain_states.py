"""What became of every query in the panoptic inference (for `explain` and its explorer).

`query_states` follows `engine.inference.panoptic_inference` step by step with its own
public steps (`select_queries`, `query_segments`, `duplicate_queries`,
`drop_small_segments`) and says, for each of the Q queries, why it is or is not in the
panoptic map, and which segment it heads or joins. The result is checked against the
map the inference made (same segments, same classes, in the same order), so the two can
never silently disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["STATES", "QueryStates", "query_states"]

# state name -> what it means (the explorer's legend and the figures use these words)
STATES = {
    "kept": "in the panoptic map",
    "threshold": "best class score at or below the threshold",
    "no-object": "its best class is 'no object'",
    "duplicate": "dropped by --dedup: most of its mask lies inside the mask of a better query of the same class",
    "small": "above the threshold, but its segment was too small (min area) or lost every pixel in the argmax",
}


@dataclass
class QueryStates:
    """Per query (length Q): `state` (a key of `STATES`), `segment` (the panoptic segment
    id it belongs to, 0 = none), `head` (True for the query that heads its segment: a
    stuff segment merges every query of its class)."""

    state: list[str]
    segment: list[int]
    head: list[bool]
    WORDS = STATES  # what each state means (viz reads it from here: it never imports engine)

    def queries(self, state: str) -> list[int]:
        return [q for q, s in enumerate(self.state) if s == state]

    def segment_query(self) -> dict[int, int]:
        """segment id -> the query heading it."""
        return {s: q for q, (s, h) in enumerate(zip(self.segment, self.head)) if h and s}


def query_states(
    logits: torch.Tensor,
    masks: torch.Tensor | None,
    processed_size: Sequence[int],
    original_size: Sequence[int],
    isthing: torch.Tensor,
    segments_info: Sequence[dict] | None,
    threshold: float,
    min_area: int = 4,
    dedup: float | None = None,
    geometry: str = "aligned",
    mask_stride: int = 4,
) -> QueryStates:
    """The state of each query of one image (see the module docstring).

    Arguments as `panoptic_inference`'s (`masks`: the kept queries' mask logits [k, gh, gw];
    None for a detection model: kept queries are then simply "kept"); `segments_info` the
    inference's own result, used to check the reconstruction (a mismatch raises
    RuntimeError: a bug, not a user error)."""
    from panoptic_detr.data.preprocess import nearest_indices
    from panoptic_detr.engine.inference import drop_small_segments, duplicate_queries, query_segments, select_queries

    Q = int(logits.shape[0])
    keep, scores, labels = select_queries(logits, threshold)
    no_object = labels.eq(logits.shape[-1] - 1)
    state = ["no-object" if bool(n) else ("kept" if bool(k) else "threshold") for n, k in zip(no_object, keep)]
    segment, head = [0] * Q, [False] * Q
    index = keep.nonzero().flatten()
    if masks is None or index.numel() == 0:
        return QueryStates(state, segment, head)
    device = masks.device
    (H, W), (h, w) = (int(v) for v in original_size), (int(v) for v in processed_size)
    q_scores, q_labels = scores[index].to(device), labels[index].to(device)
    q_thing, q_segment = query_segments(q_labels, isthing.to(device))
    alive = torch.ones(int(index.numel()), dtype=torch.bool, device=device)
    dup = torch.zeros_like(alive)
    if dedup is not None:
        dup = duplicate_queries(masks, q_scores, q_labels, q_thing, (h, w), float(dedup), mask_stride)
        alive &= ~dup
    rows = torch.from_numpy(nearest_indices(H, h)).to(device)
    cols = torch.from_numpy(nearest_indices(W, w)).to(device)
    pixel_weight = (torch.bincount(rows, minlength=h)[:, None] * torch.bincount(cols, minlength=w)[None, :]).flatten()
    winner = drop_small_segments(masks, (h, w), mask_stride, q_segment, alive, pixel_weight, min_area, geometry)
    k = int(index.numel())
    heads_mask = alive & q_segment.eq(torch.arange(k, device=device))
    seg_heads = heads_mask.nonzero().flatten().tolist() if winner is not None else []
    seg_of_head = {j: i for i, j in enumerate(seg_heads, start=1)}
    for j, q in enumerate(index.tolist()):
        if bool(dup[j]):
            state[q] = "duplicate"
        elif bool(alive[j]) and int(q_segment[j]) in seg_of_head:
            segment[q] = seg_of_head[int(q_segment[j])]
            head[q] = j in seg_of_head
        else:
            state[q] = "small"
    _check(segments_info, [int(q_labels[j]) for j in seg_heads])
    return QueryStates(state, segment, head)


def _check(segments_info: Sequence[dict] | None, head_labels: list[int]) -> None:
    if segments_info is None:
        return
    made = [int(s["category_id"]) for s in segments_info]
    if made != head_labels:
        raise RuntimeError(f"query_states: segments {made} but the reconstruction gives {head_labels}")
