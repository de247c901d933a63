"""`panoptic-detr dataset-stats DIR [--out PNG]`: per-class images/segments/pixels per split,
printed as a table and drawn as a bar chart (default `DIR/dataset-stats.png`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "print per-class images / segments / pixels of a prepared dataset and draw a bar chart"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, metavar="DIR", help="prepared dataset folder")
    p.add_argument("--out", type=Path, default=None, metavar="PNG", help="bar chart path (default DIR/dataset-stats.png)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")


def run(args) -> int:
    from panoptic_detr.data.stats import dataset_stats, format_stats, plot_stats

    stats = dataset_stats(args.dataset)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    path = plot_stats(stats, args.out or args.dataset / "dataset-stats.png")
    print(f"chart: {path}")
    return 0
