"""`panoptic-detr demo`: the whole workflow on built-in synthetic construction scenes."""

from pathlib import Path

HELP = "run the whole workflow (synth, prepare, train, evaluate, predict, explain, report) on demo data"


def configure(p):
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--images", type=int, default=None, help="number of synthetic scenes")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--from-scratch", action="store_true", help="train without the shipped base model")
    p.add_argument("--fresh", action="store_true", help="start over instead of reusing what is there")
    p.add_argument("--base-model", type=Path, default=None, help="base model to start from")
    p.add_argument("--full-labels", action="store_true",
                   help="exports that label every object (default: per-class exports that label only their own "
                        "class, synth --partial-labels, trained with loss.partial_labels, scored on the full truth)")


def run(args):
    from panoptic_detr.apps.demo import Demo, DemoConfig

    cfg = DemoConfig(out=args.out, from_scratch=args.from_scratch, fresh=args.fresh,
                     partial_labels=not args.full_labels)
    if args.images is not None:
        cfg.images = args.images
    if args.epochs is not None:
        cfg.epochs = args.epochs
    if args.base_model is not None:
        cfg.base_model = args.base_model
    Demo(cfg).run()
    return 0
