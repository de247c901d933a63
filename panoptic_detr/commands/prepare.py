"""`panoptic-detr prepare`: build a COCO-panoptic dataset from annotated things and stuff.

    panoptic-detr prepare --class-map YAML --out DIR [--things PATH ...] [--labelme DIR ...]
        [--coco-panoptic JSON PNG_DIR IMAGE_DIR] [--stuff-from CKPT] [--stuff-truth JSON PNG_DIR]
        [--teacher-mask-things] [--teacher-short-side PX] [--teacher-threshold T] [--teacher-dedup F]
        [--teacher-max-size PX] [--teacher-geometry G] [--teacher-device D] [--teacher-batch-size N]
        [--val-ratio 0.2] [--workers N] [--crowd auto|keep|instances] [--seed 0] [--check] [--skip-bad]
        [--overwrite]

See `panoptic_detr.data.prepare` for what is built and how. Under `torchrun` with
`--stuff-from`, each process runs the teacher on its share of the images (gathered a window
at a time) and rank 0 writes the dataset: the same bytes as one process. Exit code 2 on
bad input (one line naming the file and the item), nothing written; `--check` lists every
problem.
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
    p.add_argument("--teacher-device", metavar="DEVICE",
                   help="where the teacher runs (default: cuda when there is a GPU, else cpu; under torchrun "
                        "each process takes cuda:<local rank>)")
    p.add_argument("--teacher-batch-size", type=int, metavar="N",
                   help="images per teacher forward on a GPU (default 8 on CUDA, 1 on the CPU, where each image "
                        "runs alone whatever N: the maps never depend on it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class _LazyTeacher:
    """`Predictor(checkpoint, **options).panoptic`, built on the first image that needs it
    (never in `--check`, nor when every image has its own or true stuff)."""

    def __init__(self, checkpoint, options: dict, device: str = "cpu", batch_size: int = 1, verbose: bool = True):
        self.checkpoint, self.options = checkpoint, options
        self.device, self.batch_size, self.verbose = device, batch_size, verbose
        self._predictor = None

    def predictor(self):
        if self._predictor is None:
            from panoptic_detr.engine.predict import Predictor

            if self.verbose:
                print(f"loading teacher {self.checkpoint}", file=sys.stderr)
            extra = {} if (self.device, self.batch_size) == ("cpu", 1) else {"device": self.device,
                                                                              "batch_size": self.batch_size}
            predictor = Predictor(self.checkpoint, **extra, **self.options)
            if self.verbose and hasattr(predictor, "settings_line"):
                flags = {name: "--teacher-" + name.replace("_", "-") for name in self.options}
                print("teacher " + predictor.settings_line(flags), file=sys.stderr)
            self._predictor = predictor
        return self._predictor

    def __call__(self, image):
        return self.predictor().panoptic(image)


class _WindowTeacher(_LazyTeacher):
    """The teacher asked a window of images at a time (`data.prepare.teach`): on a GPU
    `Predictor(batch_size=N)` batches same-size images; under torchrun each process labels
    every world-th image of the window and the answers are gathered (rank 0 builds)."""

    WINDOW_BATCHES = 4  # batches per process in one window: room to group same-size images

    def __init__(self, checkpoint, options: dict, device: str, batch_size: int, shard):
        super().__init__(checkpoint, options, device, batch_size, verbose=shard.main)
        self.shard = shard
        self.window = batch_size * shard.world * self.WINDOW_BATCHES
        self.labelled = [0] * shard.world  # images labelled by each process

    def batch(self, images) -> list:
        from panoptic_detr.data.prepare.teach import answer_each

        answers = answer_each(images, self.shard.indices(len(images)), lambda ims: self.predictor().panoptic_batch(ims))
        parts = self.shard.gather(answers) if self.shard.world > 1 else [answers]
        for rank, part in enumerate(parts):  # every process's share (id maps, segments, categories)
            self.labelled[rank] += len(part)
            answers.update(part)
        return [answers[i] for i in range(len(images))]


def _teacher_device(args) -> tuple[str, int]:
    """(device, batch size) of the teacher: CUDA when there is one (8 images per batch), else
    the CPU (1: each image alone, as the CPU predictor runs them anyway)."""
    import torch

    from panoptic_detr.commands import check_device
    from panoptic_detr.errors import PanopticDetrError

    device = args.teacher_device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        check_device(device)
    except PanopticDetrError as e:
        raise PanopticDetrError(str(e).replace("--device", "--teacher-device", 1)) from None
    batch_size = args.teacher_batch_size
    if batch_size is None:
        batch_size = 8 if torch.device(device).type == "cuda" else 1
    if batch_size < 1:
        raise PanopticDetrError(f"--teacher-batch-size must be at least 1, got {batch_size}")
    return device, batch_size


def _torchrun_helper() -> bool:
    """A process of a torchrun launch other than rank 0."""
    import os

    from panoptic_detr.engine import distributed as D

    return D.launched_by_torchrun() and int(os.environ["RANK"]) != 0


def _teacher(args, shard=None, device: str | None = None) -> _LazyTeacher | None:
    """The teacher `--stuff-from` describes (None without it), its flags checked: asked image
    by image on one CPU (in each worker), a window of images at a time on a GPU or under
    torchrun (`shard`, `device`: the process's)."""
    from panoptic_detr.commands import inference_overrides
    from panoptic_detr.engine.sharding import Shard

    options = inference_overrides(args, "teacher_", "--teacher-")
    if args.stuff_from is None:
        return None
    default_device, batch_size = _teacher_device(args)
    if args.check:  # never loaded
        return _LazyTeacher(args.stuff_from, options)
    device = device or default_device
    shard = shard or Shard.single()
    if shard.world == 1 and device == "cpu" and batch_size == 1:
        return _LazyTeacher(args.stuff_from, options)
    return _WindowTeacher(args.stuff_from, options, device, batch_size, shard)


def run(args) -> int:
    """Under torchrun with --stuff-from, every process labels its share of the teacher's
    images and rank 0 writes the dataset; without a teacher rank 0 does everything."""
    teacher = _teacher(args)  # the flags checked before anything is read
    if teacher is None or args.check:  # nothing to share out
        return 0 if _torchrun_helper() else _run(args, teacher)
    from panoptic_detr.engine.sharding import torchrun_shard

    with torchrun_shard(_teacher_device(args)[0]) as (shard, device):
        teacher = _teacher(args, shard, device)
        code = _run(args, teacher, shard.main)
        if shard.main and shard.world > 1:
            print(f"teacher: {sum(teacher.labelled)} image(s) labelled by {shard.world} processes "
                  f"({' + '.join(map(str, teacher.labelled))})", file=sys.stderr)
        return code


def _run(args, teacher, main: bool = True) -> int:
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
        progress=not args.quiet and main,
        workers=args.workers,
        teacher_only=not main,
    )
    summary = prepare(options, teacher=teacher, log=None if main else (lambda line: None))
    if not main:
        return 0
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
