"""`panoptic-detr explain-queries`: where each query slot predicts boxes, over many images."""

from pathlib import Path

HELP = "plot where each query slot predicts boxes over a folder of images or a prepared dataset split"


def configure(p):
    p.add_argument("checkpoint", type=Path, help="model checkpoint (.pth or .safetensors)")
    p.add_argument("data", type=Path, help="a folder of images (searched recursively) or a prepared dataset folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (figure, query_boxes.npz, index.html)")
    p.add_argument("--split", default="val", help="split of a prepared dataset (default val)")
    p.add_argument("--queries", type=int, default=20, help="query slots to show, from slot 0 (default 20)")
    p.add_argument("--max-images", type=int, default=200, help="use at most this many images (default 200; 0 = all)")
    p.add_argument("--short-side", type=int, default=800, help="resize the short image side to this (default 800)")
    p.add_argument("--max-size", type=int, default=1333, help="longest image side after resizing (default 1333)")
    p.add_argument("--dpi", type=int, default=110, help="resolution of the PNG figures (default 110)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check_common(args) -> None:
    """Checks shared with `explain`; sets the thread count."""
    import torch

    from panoptic_detr.errors import PanopticDetrError

    if args.queries < 1:
        raise PanopticDetrError(f"--queries must be at least 1, got {args.queries}")
    if any(v is not None and v < 1 for v in (args.short_side, args.max_size)):  # explain: None = the checkpoint's
        raise PanopticDetrError("--short-side and --max-size must be positive")
    if not 20 <= args.dpi <= 600:
        raise PanopticDetrError(f"--dpi must be between 20 and 600, got {args.dpi}")
    if args.max_images < 0:
        raise PanopticDetrError(f"--max-images must be 0 or more, got {args.max_images}")
    if args.out.exists() and not args.overwrite:
        raise PanopticDetrError(f"{args.out}: output exists; pass --overwrite to replace it")
    try:
        dev = torch.device(args.device)
    except RuntimeError:
        raise PanopticDetrError(f"--device: unknown device '{args.device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PanopticDetrError(f"--device {args.device}: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)


def load(args, need_masks: bool = False):
    from panoptic_detr import load_model
    from panoptic_detr.errors import PanopticDetrError

    model = load_model(args.checkpoint, device=args.device)
    if need_masks and not getattr(getattr(model, "config", None), "masks", True):
        raise PanopticDetrError(f"{args.checkpoint}: a detection model (no mask head); explain needs a panoptic model")
    return model


def run(args):
    from panoptic_detr.commands._explain_output import explain_queries_to_folder

    check_common(args)
    model = load(args)
    index = explain_queries_to_folder(
        model, args.data, args.out, num_queries=args.queries, split=args.split, max_images=args.max_images or None,
        short_side=args.short_side, max_size=args.max_size, device=args.device, overwrite=args.overwrite,
        progress=not args.quiet, dpi=args.dpi,
    )
    print(index)
    return 0
