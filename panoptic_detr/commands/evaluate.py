"""`panoptic-detr evaluate`: PQ (COCO panopticapi rules) and box / mask AP.

    panoptic-detr evaluate CKPT DATASET [--split val] [--out DIR] [--threshold T] [--dedup F]
                           [--batch-size N] [--device DEV] [--short-side S] [--max-size M]
    panoptic-detr evaluate --predictions PRED_JSON PRED_DIR --ground-truth GT_JSON GT_DIR
                           [--instances INSTANCES_JSON] [--out DIR]

The first form runs the model over a prepared split (predictions go to --out DIR when
given); the second scores existing COCO-panoptic prediction files from any producer.
Prints a table and writes `metrics.json` into --out DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from panoptic_detr.errors import PanopticDetrError

HELP = "score a model on a prepared split, or prediction files, with PQ/SQ/RQ and COCO AP"


def configure(parser: argparse.ArgumentParser) -> None:
    from panoptic_detr.commands import add_dedup_argument

    parser.add_argument("checkpoint", nargs="?", metavar="CKPT", help="model checkpoint (.pth / .safetensors)")
    parser.add_argument("dataset", nargs="?", metavar="DATASET", help="prepared dataset folder")
    parser.add_argument("--split", default="val", help="split of the prepared dataset (default: val)")
    parser.add_argument(
        "--predictions", nargs=2, metavar=("PRED_JSON", "PRED_DIR"), help="score these COCO-panoptic prediction files"
    )
    parser.add_argument(
        "--ground-truth", nargs=2, metavar=("GT_JSON", "GT_DIR"), help="COCO-panoptic ground truth for --predictions"
    )
    parser.add_argument(
        "--instances", metavar="JSON", help="COCO instances ground truth for box/mask AP with --predictions"
    )
    parser.add_argument("--out", metavar="DIR", help="write metrics.json (and, with a model, the predictions) here")
    parser.add_argument("--threshold", type=float, default=0.85, help="query score threshold (default: 0.85)")
    add_dedup_argument(parser)
    parser.add_argument("--batch-size", type=int, default=2, help="images per forward (default: 2)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--short-side", type=int, default=800, help="resize the short image side to this (default: 800)")
    parser.add_argument("--max-size", type=int, default=1333, help="longest image side after resizing (default: 1333)")
    parser.add_argument("--workers", type=int, default=None, help="threads for scoring prediction files")
    parser.add_argument("--no-per-class", action="store_true", help="print only the summary rows")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from panoptic_detr.evaluation.evaluate import format_metrics
    from panoptic_detr.utils.io import write_json

    files_mode = args.predictions is not None or args.ground_truth is not None
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
        for path, what in ((args.checkpoint, "checkpoint"), (args.dataset, "dataset folder")):
            if not Path(path).exists():
                raise PanopticDetrError(f"{path}: {what} not found")
        from panoptic_detr.commands import build_predictor
        from panoptic_detr.evaluation.evaluate import evaluate_model

        metrics = evaluate_model(
            build_predictor(args.checkpoint, args),
            args.dataset,
            split=args.split,
            out_dir=args.out,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    print(format_metrics(metrics, per_class=not args.no_per_class))
    if args.out:
        path = Path(args.out) / "metrics.json"
        write_json(path, metrics, indent=2)
        print(f"metrics written to {path}")
    return 0


def _score_files(args: argparse.Namespace) -> dict:
    from panoptic_detr.evaluation.panoptic_quality import pq_compute

    pred_json, pred_dir = args.predictions
    gt_json, gt_dir = args.ground_truth
    for path in (pred_json, gt_json):
        if not Path(path).is_file():
            raise PanopticDetrError(f"{path}: file not found")
    metrics = {
        "panoptic": pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=args.workers, progress=not args.no_progress)
    }
    if args.instances:
        from panoptic_detr.evaluation.coco_ap import coco_ap_from_panoptic
        from panoptic_detr.utils.io import read_json

        gt = read_json(gt_json)
        metrics.update(coco_ap_from_panoptic(args.instances, pred_json, pred_dir, gt.get("categories")))
    return metrics
