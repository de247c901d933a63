"""`panoptic-detr synth`: synthetic construction-site scenes in the raw forms users have.

    panoptic-detr synth OUT --images N [--seed S] [--classes demo|base] [--size HxW] [--partial-labels] [--overwrite]

Writes per-class CVAT-style COCO exports of the things, the true stuff as COCO-panoptic
and the full truth (see `panoptic_detr.data.synth`), then prints the prepare command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from panoptic_detr.errors import PanopticDetrError

HELP = "draw synthetic construction scenes as CVAT-style exports + COCO-panoptic stuff (demo / tests)"


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (or one number for a square) -> (H, W)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        vals = [int(v) for v in parts]
    except ValueError:
        raise PanopticDetrError(f"--size must be HxW (e.g. 256x320), got '{text}'") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) <= 0:
        raise PanopticDetrError(f"--size must be HxW (e.g. 256x320), got '{text}'")
    return vals[0], vals[1]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, metavar="OUT", help="output folder")
    p.add_argument("--images", type=int, required=True, metavar="N", help="number of scenes")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--classes", choices=["demo", "base"], default="demo",
                   help="demo: construction materials; base: generic objects for the base model")
    p.add_argument("--size", default="256x320", metavar="HxW", help="image size (default 256x320)")
    p.add_argument("--partial-labels", action="store_true",
                   help="each class folder's export labels only its own class (as real per-class exports): other "
                        "things in its scenes stay unlabelled there; truth/ keeps every object")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from panoptic_detr.data.synth import synth

    s = synth(args.out, args.images, seed=args.seed, classes=args.classes, size=parse_size(args.size),
              overwrite=args.overwrite, progress=not args.quiet, partial_labels=args.partial_labels)
    inst = sum(s["instances_per_class"].values())
    print(f"synth: {s['images']} images, {inst} instances in {args.out} ({s['seconds']:.1f} s)")
    if args.partial_labels:
        left = ", ".join(f"{k} {v}/{s['instances_per_class'][k]}" for k, v in s["unlabelled_per_class"].items())
        print(f"synth: partial labels: unlabelled in the exports (of all drawn): {left}")
    print(f"next: {s['prepare']}")
    return 0
