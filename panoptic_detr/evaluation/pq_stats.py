"""PQ statistics: per-category counts accumulated over images, and the averages (PQ, SQ,
RQ per category and for All / Things / Stuff) computed from them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CategoryStat:
    """Raw counts of one category: true/false positives, false negatives, summed IoU."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


@dataclass
class PQStat:
    """Per-category statistics accumulated over images (category id -> CategoryStat)."""

    per_category: dict[int, CategoryStat] = field(default_factory=dict)
    area_mismatches: int = 0  # ground-truth segments whose JSON area is not their PNG count

    def __getitem__(self, category_id: int) -> CategoryStat:
        stat = self.per_category.get(category_id)
        if stat is None:
            stat = self.per_category[category_id] = CategoryStat()
        return stat

    def add(self, events: Iterable[tuple[int, int, int, int, float]]) -> None:
        """Adds the `(category_id, tp, fp, fn, iou)` events of one image, in order (and
        its `area_mismatches`, when the events carry them: `pq_image.ImageEvents`)."""
        self.area_mismatches += getattr(events, "area_mismatches", 0)
        for cid, tp, fp, fn, iou in events:
            s = self[cid]
            s.tp += tp
            s.fp += fp
            s.fn += fn
            s.iou += iou


def pq_from_stats(stat: PQStat, categories: Mapping[int, Mapping]) -> dict:
    """The result dict (All/Things/Stuff/per_class/per_category) from accumulated stats."""
    per_category = [_category_result(cid, info, stat.per_category.get(cid, CategoryStat()))
                    for cid, info in categories.items()]
    results: dict[str, Any] = {}
    for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        pq = sq = rq = 0.0
        n = 0
        for c in per_category:
            if isthing is not None and c["isthing"] != isthing:
                continue
            if c["tp"] + c["fp"] + c["fn"] == 0:
                continue
            n += 1
            pq += c["pq"]
            sq += c["sq"]
            rq += c["rq"]
        results[group] = {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n} if n else {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    per_class: dict[str, dict] = {}
    for c in per_category:
        name = c["name"] if c["name"] not in per_class else f"{c['name']} (id {c['id']})"
        per_class[name] = {k: c[k] for k in ("pq", "sq", "rq", "tp", "fp", "fn")}
    results["per_class"] = per_class
    results["per_category"] = per_category
    return results


def _category_result(cid: int, info: Mapping, s: CategoryStat) -> dict:
    """PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2);
    zeros for a category with no TP, FP or FN."""
    denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
    if s.tp + s.fp + s.fn == 0:
        pq = sq = rq = 0.0
    else:
        pq = s.iou / denom
        sq = s.iou / s.tp if s.tp != 0 else 0.0
        rq = s.tp / denom
    return {"id": cid, "name": info["name"], "isthing": bool(info["isthing"]), "pq": pq, "sq": sq, "rq": rq,
            "tp": s.tp, "fp": s.fp, "fn": s.fn, "iou": s.iou}
