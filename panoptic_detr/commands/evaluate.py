"""`panoptic-detr evaluate`: PQ (COCO panopticapi rules) and box / mask AP.

    panoptic-detr evaluate CKPT DATASET [--split val] [--out DIR] [--threshold T] [--dedup F]
                           [--batch-size N] [--device DEV] [--short-side S] [--max-size M]
                           [--geometry aligned|official] [--federated] [--ground-truth GT_JSON GT_DIR]
    panoptic-detr evaluate --predictions PRED_JSON PRED_DIR --ground-truth GT_JSON GT_DIR
                           [--instances INSTANCES_JSON] [--category-map YAML] [--out DIR] [--federated]

The first form runs the model over a prepared split (predictions go to --out DIR when
given); the second scores existing COCO-panoptic prediction files from any producer:
images matched by id, or by file name when the ids differ; categories by name, renamed
first by --category-map (both say on stderr how they were matched).
Prints a table and writes `metrics.json` into --out DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from panoptic_detr.errors import PanopticDetrError

HELP = "score a model on a prepared split, or prediction files, with PQ/SQ/RQ and COCO AP"


def configure(parser: argparse.ArgumentParser) -> None:
    from panoptic_detr.commands import add_backend_argument, add_inference_arguments

    parser.add_argument("checkpoint", nargs="?", metavar="CKPT",
                        help="model checkpoint (.pth / .safetensors); with --backend onnxruntime or openvino an "
                             "export folder")
    parser.add_argument("dataset", nargs="?", metavar="DATASET", help="prepared dataset folder")
    parser.add_argument("--split", default="val", help="split of the prepared dataset (default: val)")
    parser.add_argument(
        "--predictions", nargs=2, metavar=("PRED_JSON", "PRED_DIR"), help="score these COCO-panoptic prediction files"
    )
    parser.add_argument(
        "--ground-truth", nargs=2, metavar=("GT_JSON", "GT_DIR"),
        help="COCO-panoptic ground truth for --predictions; with CKPT DATASET: score the split's images against "
             "these annotations instead of the split's own (matched by file name, e.g. synth's full truth/)"
    )
    parser.add_argument(
        "--federated", action="store_true",
        help="also a federated PQ (LVIS's rule: a predicted segment of a thing class that its image did not annotate "
             "is not a false positive), beside the standard PQ, as 'panoptic_federated' in metrics.json"
    )
    parser.add_argument(
        "--instances", metavar="JSON", help="COCO instances ground truth for box/mask AP with --predictions"
    )
    parser.add_argument(
        "--category-map", metavar="YAML",
        help="rename predicted categories before matching them to the ground truth's by name: a YAML mapping "
             "'predicted name: ground-truth name' (categories are matched by name, never by id alone)",
    )
    parser.add_argument("--out", metavar="DIR", help="write metrics.json (and, with a model, the predictions) here")
    add_inference_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=2, help="images per forward (default: 2)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--workers", type=int, default=None, help="threads for scoring prediction files")
    add_backend_argument(parser)
    parser.add_argument("--no-per-class", action="store_true", help="print only the summary rows")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from panoptic_detr.evaluation.evaluate import format_metrics
    from panoptic_detr.utils.io import write_json

    files_mode = args.predictions is not None or (args.ground_truth is not None and not args.checkpoint)
    if files_mode:
        if args.checkpoint or args.dataset:
            raise PanopticDetrError("evaluate: give either CKPT DATASET or --predictions/--ground-truth, not both")
        if args.predictions is None or args.ground_truth is None:
            raise PanopticDetrError("evaluate: --predictions and --ground-truth go together")
        metrics = _score_files(args)
    else:
        if not args.checkpoint or not args.dataset:
            raise PanopticDetrError(
                "evaluate: give CKPT DATASET, or --predictions PRED_JSON PRED_DIR --ground-truth GT_JSON GT_DIR"
            )
        if args.instances:
            raise PanopticDetrError("evaluate: --instances goes with --predictions (a dataset brings its own)")
        from panoptic_detr.model.registry import lookup

        # a model name (`panoptic-detr models`) is no file: model.download fetches it
        for path, what in ((args.checkpoint, "checkpoint"), (args.dataset, "dataset folder")):
            if not Path(path).exists() and not (what == "checkpoint" and (lookup(path) or path.startswith("hf:"))):
                raise PanopticDetrError(f"{path}: {what} not found")
        metrics = _evaluate_model(args)
        if metrics is None:  # a process of a torchrun group other than rank 0: rank 0 reports
            return 0
    print(format_metrics(metrics, per_class=not args.no_per_class))
    if args.out:
        path = Path(args.out) / "metrics.json"
        write_json(path, metrics, indent=2)
        print(f"metrics written to {path}")
    return 0


def _evaluate_model(args: argparse.Namespace) -> dict | None:
    """The metrics of CKPT on DATASET's split; under torchrun each process predicts a shard
    of the split and rank 0 scores them all (None on the other ranks)."""
    from panoptic_detr.commands import build_predictor
    from panoptic_detr.engine.sharding import torchrun_shard
    from panoptic_detr.evaluation.evaluate import evaluate_model

    with torchrun_shard(args.device) as (shard, device):
        args.device = device
        return evaluate_model(
            build_predictor(args.checkpoint, args),
            args.dataset,
            split=args.split,
            out_dir=args.out,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            category_map=load_category_map(args.category_map),
            log=_note if shard.main else None,
            shard=shard,
            federated=args.federated,
            ground_truth=args.ground_truth,
        )


def _note(line: str) -> None:
    print(f"evaluate: {line}", file=sys.stderr)


def load_category_map(path: str | None) -> dict[str, str] | None:
    """The --category-map YAML: {predicted name: ground-truth name}."""
    if not path:
        return None
    from panoptic_detr.config import read_yaml

    data = read_yaml(path)
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise PanopticDetrError(f"{path}: category map entry '{bad[0]}': expected 'predicted name: ground-truth name'")
    return data


def _score_files(args: argparse.Namespace) -> dict:
    from panoptic_detr.evaluation.alignment import align_predictions
    from panoptic_detr.evaluation.panoptic_quality import load_panoptic_json, normalise_categories, pq_compute
    from panoptic_detr.evaluation.pq_inputs import all_segments

    pred_json, pred_dir = args.predictions
    gt_json, gt_dir = args.ground_truth
    for path in (pred_json, gt_json):
        if not Path(path).is_file():
            raise PanopticDetrError(f"{path}: file not found")
    gt, gt_name = load_panoptic_json(gt_json, "ground-truth")
    pred, pred_name = load_panoptic_json(pred_json, "prediction")
    if not gt["annotations"]:
        raise PanopticDetrError(f"{gt_name}: no images (an empty split?); nothing to evaluate")
    # images and categories matched once (by id or file name; by category name), said once
    pred, notes = align_predictions(gt, gt_name, pred, pred_name, load_category_map(args.category_map))
    for line in notes:
        _note(line)
    cats = normalise_categories(gt.get("categories"), gt_name, all_segments(gt["annotations"], pred["annotations"]))
    pq = pq_compute(gt, gt_dir, pred, pred_dir, categories=cats, workers=args.workers,
                    progress=not args.no_progress, names=(gt_name, pred_name), federated=args.federated)
    metrics = {"panoptic": pq}
    if "federated" in pq:
        metrics["panoptic_federated"] = pq.pop("federated")
    if args.instances:
        from panoptic_detr.evaluation.coco_ap import coco_ap_from_panoptic

        images = {img.get("id"): img for img in gt.get("images", []) if isinstance(img, dict)}
        evaluated = [(a["image_id"], a.get("file_name") or images.get(a["image_id"], {}).get("file_name"))
                     for a in gt["annotations"]]
        metrics.update(coco_ap_from_panoptic(args.instances, pred, pred_dir, cats, evaluated_images=evaluated))
    return metrics
