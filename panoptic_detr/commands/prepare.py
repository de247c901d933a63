"""`panoptic-detr prepare`: build a COCO-panoptic dataset from annotated things and stuff.

    panoptic-detr prepare --class-map YAML --out DIR [--things PATH ...] [--labelme DIR ...]
        [--coco-panoptic JSON PNG_DIR IMAGE_DIR] [--stuff-from CKPT] [--stuff-truth JSON PNG_DIR]
        [--teacher-mask-things] [--teacher-short-side PX] [--teacher-threshold T] [--teacher-dedup F] [--teacher-max-size PX] [--teacher-geometry G] [--val-ratio 0.2] [--workers N] [--crowd auto|keep|instances] [--seed 0] [--check] [--skip-bad] [--overwrite]

See `panoptic_detr.data.prepare` for what is built and how. Exit code 2 on bad input
(one line naming the file and the item), nothing written; `--check` lists every problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


HELP = "build a COCO-panoptic dataset from your annotated things (+ stuff from COCO, a teacher model or truth)"


def configure(p: argparse.ArgumentParser) -> None:
    from panoptic_detr.commands import add_inference_arguments

    p.add_argument("--class-map", required=True, metavar="YAML",
                   help="class map YAML, or a preset name: construction, demo, base")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output dataset folder")
    p.add_argument("--things", nargs="+", action="extend", default=[], metavar="PATH",
                   help="COCO instances JSON (CVAT 'COCO 1.0'), an export folder, or a folder of per-class exports")
    p.add_argument("--labelme", nargs="+", action="extend", default=[], metavar="DIR", help="folder(s) of labelme JSON files")
    p.add_argument("--labelme-per-class-folders", action="store_true",
                   help="labelme files in a folder named after a thing class annotate only that class (per-class "
                        "collections: other things may be there unlabelled); default: every class annotated")
    p.add_argument("--coco-panoptic", nargs=3, action="append", default=[], metavar=("JSON", "PNG_DIR", "IMAGE_DIR"),
                   help="a COCO-panoptic set whose images join the dataset with their stuff and things")
    p.add_argument("--stuff-from", metavar="CKPT", help="panoptic checkpoint that labels the stuff of custom images")
    p.add_argument("--stuff-truth", nargs=2, metavar=("JSON", "PNG_DIR"),
                   help="true stuff of custom images (COCO-panoptic, matched by file name); with --stuff-from it labels val")
    p.add_argument("--teacher-mask-things", action="store_true",
                   help="grey out the annotated things before the teacher sees the image")
    add_inference_arguments(p, "--teacher-")  # the teacher's settings: by default its checkpoint's
    p.add_argument("--val-ratio", type=float, default=0.2,
                   help="fraction of images in val (default 0.2); 1.0: every image in val, an evaluation-only set")
    p.add_argument("--crowd", choices=["auto", "keep", "instances"], default="auto",
                   help="iscrowd 1 annotations of --things: auto (default) reads the RLE masks of CVAT exports as "
                        "instances (CVAT marks every brush mask crowd) and keeps other crowds; keep; instances")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--check", action="store_true", help="validate the inputs, print every problem, write nothing")
    p.add_argument("--skip-bad", action="store_true", help="skip bad images and list them in prepare-report.txt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes reading, validating, rasterising and writing images (default 1); "
                        "the output is byte-identical whatever N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class _LazyTeacher:
    """`Predictor(checkpoint, **options).panoptic`, built on the first image that needs it
    (never in `--check`, nor when every image has its own or true stuff)."""

    def __init__(self, checkpoint, options: dict):
        self.checkpoint, self.options = checkpoint, options
        self._panoptic = None

    def __call__(self, image):
        if self._panoptic is None:
            from panoptic_detr.engine.predict import Predictor

            print(f"loading teacher {self.checkpoint}", file=sys.stderr)
            predictor = Predictor(self.checkpoint, **self.options)
            if hasattr(predictor, "settings_line"):
                flags = {name: "--teacher-" + name.replace("_", "-") for name in self.options}
                print("teacher " + predictor.settings_line(flags), file=sys.stderr)
            self._panoptic = predictor.panoptic
        return self._panoptic(image)


def _teacher(args) -> _LazyTeacher | None:
    from panoptic_detr.commands import inference_overrides

    teacher_options = inference_overrides(args, "teacher_", "--teacher-")  # checked before anything is read
    return _LazyTeacher(args.stuff_from, teacher_options) if args.stuff_from is not None else None


def run(args) -> int:
    from panoptic_detr.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(
        class_map=args.class_map,
        out=args.out,
        things=args.things,
        labelme=args.labelme,
        labelme_per_folder=args.labelme_per_class_folders,
        coco_panoptic=args.coco_panoptic or None,
        stuff_from=args.stuff_from,
        stuff_truth=args.stuff_truth,
        teacher_mask_things=args.teacher_mask_things,
        val_ratio=args.val_ratio,
        seed=args.seed,
        crowd=args.crowd,
        check=args.check,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
    )
    summary = prepare(options, teacher=_teacher(args))
    if args.check:
        if summary.problems:
            print(f"check failed: {len(summary.problems)} problem(s)", file=sys.stderr)
            return 2
        print("check passed: no problems")
        return 0
    n = summary.images
    print(
        f"prepared {args.out}: {n.get('train', 0)} train + {n.get('val', 0)} val images, "
        f"{sum(summary.segments.values())} segments, {summary.num_categories} categories ({summary.seconds:.1f} s)"
    )
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} bad image(s); see {summary.report}")
    elif summary.report:
        print(f"{len(summary.warnings)} warning(s); see {summary.report}")
    return 0
