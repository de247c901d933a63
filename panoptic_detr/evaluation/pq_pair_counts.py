"""Counting the (ground-truth id, predicted id) pairs of all pixels of an image without
sorting pixels (the panopticapi runs `np.unique` over a 64-bit key per pixel): runs of
equal pixels along the rows are found with two compares, and their lengths are added up
per pair with one `np.bincount` over small indices taken from the JSONs' segment ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from panoptic_detr.evaluation.pq_inputs import ID_MASK, VOID

# Above this many (gt id, pred id) cells per image the counting table would be large
# (e.g. thousands of segments on both sides): sort the runs instead.
MAX_TABLE_CELLS = 1 << 22


def known_ids(segms: Mapping[int, Any]) -> np.ndarray:
    """VOID and the segment ids of an annotation, sorted, as uint32 (ids beyond 24 bits
    cannot be in a PNG: they are left out)."""
    ids = sorted(sid for sid in segms if 0 < sid <= ID_MASK)
    return np.array([VOID, *ids], dtype=np.uint32)


def pair_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    gt_known: np.ndarray | None = None,
    pred_known: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (gt id, pred id) pairs of two equally long uint32 arrays (ids in the low 24
    bits, anything in the high 8) and their pixel counts, sorted by (gt id, pred id): the
    same as ``np.unique(gt * OFFSET + pred, return_counts=True)`` without sorting pixels.

    Panoptic maps are piecewise constant: find the runs along the rows (two compares),
    give each id a small index (its position among the image's ids: `gt_known` /
    `pred_known`, sorted, e.g. VOID plus the JSON's segment ids; ids not in them are added)
    and add up the run lengths per (gt index, pred index) cell with one `np.bincount`. No
    sort at all when the id lists are given, else only the runs' ids are sorted.
    """
    if gt.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    run_gt, run_pred, length = _runs(gt, pred)
    gi, gt_known = _positions(run_gt, gt_known)
    pi, pred_known = _positions(run_pred, pred_known)
    n_pred = pred_known.size
    cell = gi * n_pred + pi
    if gt_known.size * n_pred <= MAX_TABLE_CELLS:
        table = np.bincount(cell, weights=length, minlength=gt_known.size * n_pred)
        cell = np.flatnonzero(table)  # ascending cell = ascending (gt id, pred id)
        counts = table[cell]
    else:
        cell, inverse = np.unique(cell, return_inverse=True)
        counts = np.bincount(inverse, weights=length)
    # float64 weights count exactly up to 2**53 pixels
    pair_gt = gt_known[cell // n_pred].astype(np.int64)
    pair_pred = pred_known[cell % n_pred].astype(np.int64)
    return pair_gt, pair_pred, counts.astype(np.int64)


def _runs(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gt id, pred id, length) of every run of pixels with the same (gt, pred) words along
    the flat arrays; ids masked to 24 bits (so runs that differ only in the top byte stay
    separate here and are merged by the counting)."""
    n = gt.size
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(gt[1:], gt[:-1], out=change[1:])
    pred_change = np.not_equal(pred[1:], pred[:-1])
    np.logical_or(change[1:], pred_change, out=change[1:])
    starts = np.flatnonzero(change)
    length = np.diff(starts, append=n)
    mask = np.uint32(ID_MASK)
    return gt[starts] & mask, pred[starts] & mask, length


def _positions(values: np.ndarray, known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in the sorted id array `known` (default: the distinct values),
    and `known` itself, extended by any values it lacks (ids in a PNG that its JSON does
    not list: the caller reports or ignores them, but they must be counted exactly)."""
    if known is None or known.size == 0:
        known = np.unique(values)
    idx = np.searchsorted(known, values)
    found = known[np.minimum(idx, known.size - 1)] == values
    if not found.all():
        known = np.union1d(known, values[~found])
        idx = np.searchsorted(known, values)
    return idx, known
