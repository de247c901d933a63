"""`panoptic-detr predict`: panoptic PNGs, a results JSON and overlays for images."""

from pathlib import Path

HELP = "predict panoptic maps for images (files, folders, globs) with a checkpoint"


def configure(p):
    from panoptic_detr.commands import add_dedup_argument

    p.add_argument("checkpoint", type=Path, help="model checkpoint (.pth or .safetensors)")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", type=Path, required=True, help="output folder (panoptic/, overlays/, predictions.json)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--threshold", type=float, default=0.85, help="score a query needs to make a segment (default 0.85)")
    add_dedup_argument(p)
    p.add_argument("--short-side", type=int, default=800, help="resize the short image side to this (default 800)")
    p.add_argument("--max-size", type=int, default=1333, help="longest image side after resizing (default 1333)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay JPEGs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    import sys

    from panoptic_detr.engine.inference import check_dedup
    from panoptic_detr.engine.predict import Predictor, keep_freed_memory, predict_paths
    from panoptic_detr.errors import PanopticDetrError

    if args.batch_size < 1:
        raise PanopticDetrError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 <= args.threshold < 1.0:
        raise PanopticDetrError(f"--threshold must be in [0, 1), got {args.threshold}")
    check_dedup(args.dedup, "--dedup")
    if args.short_side < 1 or args.max_size < 1:
        raise PanopticDetrError("--short-side and --max-size must be positive")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    _check_device(args.device)
    keep_freed_memory()  # no page faults for every activation of every image (glibc)
    predictor = Predictor(
        args.checkpoint,
        device=args.device,
        threshold=args.threshold,
        short_side=args.short_side,
        max_size=args.max_size,
        batch_size=args.batch_size,
        dedup=args.dedup,
    )
    report = predict_paths(predictor, args.images, args.out, overlays=not args.no_overlay, progress=not args.quiet)
    if not report.written and not report.failed:
        raise PanopticDetrError("no images to predict")
    print(
        f"{len(report.written)} image(s) predicted into {args.out}"
        + (f"; {len(report.failed)} skipped" if report.failed else ""),
        file=sys.stderr,
    )
    return 1 if report.failed else 0


def _check_device(device: str) -> None:
    import torch

    from panoptic_detr.errors import PanopticDetrError

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PanopticDetrError(f"--device: unknown device '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PanopticDetrError(f"--device {device}: CUDA is not available")
