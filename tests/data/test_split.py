import random
from collections import Counter

from panoptic_detr.data.prepare import stratified_split


def _data(seed=1, n=60):
    rng = random.Random(seed)
    names = [f"img_{i:03d}.png" for i in range(n)]
    # unbalanced classes as in the real exports: 2 to 40 images per class
    sizes = {1: 40, 2: 9, 3: 2, 4: 2, 5: 3, 6: 1}
    classes = [set() for _ in range(n)]
    for c, k in sizes.items():
        for i in rng.sample(range(n), k):
            classes[i].add(c)
    return names, classes


def test_split_is_deterministic_and_order_independent():
    names, classes = _data()
    a = stratified_split(names, classes, 0.2, seed=0)
    assert a == stratified_split(names, classes, 0.2, seed=0)
    perm = list(range(len(names)))
    random.Random(5).shuffle(perm)
    b = stratified_split([names[i] for i in perm], [classes[i] for i in perm], 0.2, seed=0)
    assert {names[i]: s for i, s in zip(perm, b)} == dict(zip(names, a))
    assert stratified_split(names, classes, 0.2, seed=1) != a


def test_split_is_stratified():
    for seed in range(5):
        names, classes = _data(seed)
        splits = stratified_split(names, classes, 0.2, seed=seed)
        n_val = splits.count("val")
        assert abs(n_val - 12) <= 3
        count = Counter(c for cl in classes for c in cl)
        val = Counter(c for cl, s in zip(classes, splits) if s == "val" for c in cl)
        train = Counter(c for cl, s in zip(classes, splits) if s == "train" for c in cl)
        for c, k in count.items():
            if k >= 2:
                assert val[c] >= 1, f"class {c} ({k} images) missing from val"
                assert train[c] >= 1, f"class {c} has no train image"
        assert 5 <= val[1] <= 11  # the big class keeps roughly its share


def test_split_edge_cases():
    assert stratified_split(["a"], [{1}], 0.2, 0) == ["train"]
    assert stratified_split(["a", "b", "c"], [set()] * 3, 0.0, 0) == ["train"] * 3
    s = stratified_split(["a", "b"], [{1}, {1}], 0.2, 0)
    assert sorted(s) == ["train", "val"]
