"""`panoptic-detr base-model`: rebuild the shipped base model (what `make base-model` runs)."""

from pathlib import Path

HELP = "rebuild the shipped base model from synthetic scenes (long: see MODEL_CARD.md)"


def configure(p):
    p.add_argument("--out", type=Path, default=Path("runs/base-model"), help="run folder")
    p.add_argument("--images", type=int, default=None, help="number of synthetic scenes")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--export", type=Path, default=None, help="where to write the fp16 safetensors")


def run(args):
    from panoptic_detr.apps.base_model import BaseModelConfig, build_base_model

    cfg = BaseModelConfig(out=args.out)
    for name in ("images", "epochs", "export"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    build_base_model(cfg)
    return 0
