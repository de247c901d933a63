"""Evaluation: PQ as the COCO panopticapi computes it, COCO box / mask AP, and the
evaluation of a model over a prepared split.

- `panoptic_quality.pq_compute(gt_json, gt_dir, pred_json, pred_dir, categories=None)`
  (built on `pq_inputs`, `pq_pair_counts`, `pq_image`, `pq_stats`)
- `coco_ap.coco_ap_from_panoptic(instances_json, pred_json, pred_dir, categories=None)`
- `evaluate.evaluate_model(predictor, dataset_dir, split="val", ...)`, `evaluate.format_metrics`
"""

_EXPORTS = {
    "pq_compute": "panoptic_quality",
    "coco_ap_from_panoptic": "coco_ap",
    "evaluate_model": "evaluate",
    "format_metrics": "evaluate",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
