import itertools
import math

import numpy as np
import pytest
import torch

from panoptic_detr.engine.matcher import HungarianMatcher, NonFiniteError


def _giou(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _cost(logits, boxes, labels, tboxes, q, t):
    p = np.exp(logits[q]) / np.exp(logits[q]).sum()
    l1 = np.abs(boxes[q] - tboxes[t]).sum()
    return -p[labels[t]] * 1 + 5 * l1 - 2 * _giou(boxes[q], tboxes[t])


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    bs, nq, nc = 3, 5, 4
    logits = torch.randn(bs, nq, nc + 1, generator=g)
    boxes = torch.rand(bs, nq, 4, generator=g) * 0.5 + 0.1
    sizes = [3, 0, 5] if seed % 2 else [1, 2, 4]
    targets = [
        {"labels": torch.randint(0, nc, (n,), generator=g), "boxes": torch.rand(n, 4, generator=g) * 0.5 + 0.1}
        for n in sizes
    ]
    out = HungarianMatcher(1, 5, 2)({"pred_logits": logits, "pred_boxes": boxes}, targets)
    for b, (rows, cols) in enumerate(out):
        n = sizes[b]
        assert len(rows) == len(cols) == n
        assert sorted(cols.tolist()) == list(range(n))
        L, B = logits[b].double().numpy(), boxes[b].double().numpy()
        lab, tb = targets[b]["labels"].numpy(), targets[b]["boxes"].double().numpy()
        got = sum(_cost(L, B, lab, tb, q, t) for q, t in zip(rows.tolist(), cols.tolist()))
        best = min(
            (sum(_cost(L, B, lab, tb, q, t) for t, q in enumerate(perm)) for perm in itertools.permutations(range(nq), n)),
            default=0.0,
        )
        assert math.isclose(got, best, rel_tol=1e-5, abs_tol=1e-5)


def test_all_empty_and_nan():
    m = HungarianMatcher()
    outputs = {"pred_logits": torch.randn(2, 3, 3), "pred_boxes": torch.rand(2, 3, 4)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    assert all(len(r) == 0 for r, _ in m(outputs, targets))
    outputs["pred_boxes"][0, 0, 0] = float("nan")
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * 2
    with pytest.raises(NonFiniteError):
        m(outputs, targets)
