"""`panoptic-detr model-info`: structure, parameter counts and tensor shapes of a model."""

from __future__ import annotations

import argparse
import re

from panoptic_detr.errors import PanopticDetrError

HELP = "show a model's structure, parameter counts and the tensor shapes flowing through it"


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 32 or int(m[2]) < 32:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH of at least 32x32, e.g. 800x1066; got '{text}'")
    return int(m[1]), int(m[2])


def configure(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None,
                     help="model preset (r50, r101, r50-dc5, r50-panoptic, r101-panoptic, r50-dc5-panoptic, tiny) "
                          "or a model YAML file; default r50-panoptic")
    src.add_argument("--checkpoint", default=None, metavar="PATH",
                     help="a checkpoint (.pth / .safetensors / Hugging Face folder) instead of a preset")
    parser.add_argument("--size", type=_size, default=(800, 1066), metavar="HxW",
                        help="input image size for the shape trace (default 800x1066)")
    parser.add_argument("--num-classes", type=int, default=None, help="override the number of classes")
    parser.add_argument("--device", default="cpu", help="device for the trace forward (default cpu)")


def run(args: argparse.Namespace) -> int:
    import torch

    from panoptic_detr.model.build import build_model
    from panoptic_detr.model.checkpoint import load_model
    from panoptic_detr.model.summary import summarize

    if args.device != "cpu" and not torch.cuda.is_available() and args.device.startswith("cuda"):
        raise PanopticDetrError(f"--device {args.device}: CUDA is not available")
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    if args.checkpoint:
        model = load_model(args.checkpoint, device=args.device, **overrides)
        name = args.checkpoint
    else:
        name = args.preset or "r50-panoptic"
        model = build_model(name, **overrides).to(args.device)
    print(summarize(model, args.size, name=name))
    return 0
