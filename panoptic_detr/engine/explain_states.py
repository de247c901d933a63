"""What became of every query in the panoptic inference (for `explain` and its explorer).

`query_states` says, for each of the Q queries, why it is or is not in the panoptic map,
and which segment it heads or joins. It reads what `engine.inference.panoptic_inference`
itself recorded (`PanopticOutput.queries`, a `QueryOutcome`), so the explanation is the
inference's own account, never a reconstruction of it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def query_states(logits: torch.Tensor, threshold: float, panoptic=None) -> QueryStates:
    """The state of each query of one image (see the module docstring).

    logits: [Q, C+1]; threshold: the inference's; panoptic: its `PanopticOutput` (None
    for a detection model: kept queries are then simply "kept")."""
    from panoptic_detr.engine.inference import select_queries

    Q = int(logits.shape[0])
    keep, _, labels = select_queries(logits, threshold)
    no_object = labels.eq(logits.shape[-1] - 1)
    state = ["no-object" if bool(n) else ("kept" if bool(k) else "threshold") for n, k in zip(no_object, keep)]
    segment, head = [0] * Q, [False] * Q
    outcome = getattr(panoptic, "queries", None)
    if outcome is None:
        return QueryStates(state, segment, head)
    for q, dup, seg, is_head in zip(outcome.index.tolist(), outcome.duplicate.tolist(), outcome.segment.tolist(),
                                    outcome.head.tolist()):
        if dup:
            state[q] = "duplicate"
        elif seg:
            segment[q], head[q] = int(seg), bool(is_head)
        else:
            state[q] = "small"
    return QueryStates(state, segment, head)
