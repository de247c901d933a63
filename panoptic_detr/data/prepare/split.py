"""The deterministic, stratified train/val split of `prepare`."""

from __future__ import annotations

import random
from collections import Counter
from typing import Iterable, Sequence

__all__ = ["stratified_split"]


def stratified_split(
    names: Sequence[str], classes: Sequence[Iterable[int]], val_ratio: float = 0.2, seed: int = 0
) -> list[str]:
    """'train' / 'val' per name: deterministic for (names, classes, ratio, seed), whatever
    the input order. Every class with >= 2 images gets one in val (rarest classes first);
    then val is filled to round(n * val_ratio) images, per-class quotas first, keeping at
    least one train image per class whenever possible. `val_ratio` is in [0, 1]
    (`PrepareOptions.validate` checks the user's value); 1.0 puts every image in val (an
    evaluation-only set)."""
    n = len(names)
    if val_ratio >= 1.0:
        return ["val"] * n
    splits = ["train"] * n
    if n < 2 or val_ratio <= 0:
        return splits
    labels = [frozenset(int(c) for c in cl) for cl in classes]
    order = sorted(range(n), key=lambda i: names[i])
    random.Random(seed).shuffle(order)
    count = Counter(c for lab in labels for c in lab)
    in_train = Counter(count)
    in_val: Counter = Counter()
    val: set[int] = set()
    n_val = min(n - 1, max(1, int(round(n * val_ratio))))

    def can_move(i: int) -> bool:
        return all(in_train[c] > 1 for c in labels[i])

    # images without things form one more group (-1) for the proportions
    ext = [lab or frozenset([-1]) for lab in labels]
    target: Counter = Counter()
    for lab in ext:
        for c in lab:
            target[c] += val_ratio
    ext_val: Counter = Counter()

    def move(i: int) -> None:
        val.add(i)
        for c in labels[i]:
            in_train[c] -= 1
            in_val[c] += 1
        for c in ext[i]:
            ext_val[c] += 1

    # 1. one val image for every class with >= 2 images, rarest first; among the
    #    candidates, the one whose other classes most need val images
    for c in sorted(count, key=lambda c: (count[c], c)):
        if count[c] < 2 or in_val[c] > 0:
            continue
        cands = [i for i in order if c in labels[i] and i not in val]
        movable = [i for i in cands if can_move(i)] or [i for i in cands if in_train[c] > 1]
        if movable:
            move(max(movable, key=lambda i: sum(target[d] - ext_val[d] for d in ext[i] if d != c)))
    # 2. fill towards n_val keeping each class's share
    for rule in (
        lambda i: all(ext_val[c] + 1 <= target[c] + 0.5 for c in ext[i]),
        lambda i: any(ext_val[c] < target[c] for c in ext[i]),
        lambda i: True,
    ):
        for i in order:
            if len(val) >= n_val:
                break
            if i not in val and can_move(i) and rule(i):
                move(i)
    for i in val:
        splits[i] = "val"
    return splits
