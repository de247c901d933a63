"""The `panoptic-detr` subcommands: one module each, with `HELP`, `configure(parser)` and `run(args)`."""

DEDUP_HELP = (
    "drop a thing segment when more than this fraction of its mask lies inside a better-scoring "
    "segment of the same class (duplicate suppression, e.g. 0.5; default: off, as the official DETR)"
)


def add_dedup_argument(parser, flag: str = "--dedup") -> None:
    """The duplicate-suppression option shared by predict, evaluate, explain and prepare."""
    parser.add_argument(flag, type=float, default=None, metavar="F", help=DEDUP_HELP)


def build_predictor(checkpoint, args, prefix: str = "", flag_prefix: str = "--"):
    """The `Predictor` a command's inference options describe, their values checked.

    Reads `args.<prefix>threshold`, `<prefix>dedup`, `<prefix>short_side`,
    `<prefix>max_size` and, where the command has them, `device` and `batch_size`; errors
    name the flag (`flag_prefix` + the option, e.g. `--teacher-threshold`).
    """
    from panoptic_detr.engine.inference import check_dedup
    from panoptic_detr.engine.predict import Predictor
    from panoptic_detr.errors import PanopticDetrError

    def get(name):
        return getattr(args, prefix + name)

    def flag(name):
        return flag_prefix + name.replace("_", "-")

    if not 0.0 <= get("threshold") < 1.0:
        raise PanopticDetrError(f"{flag('threshold')} must be in [0, 1), got {get('threshold')}")
    for name in ("short_side", "max_size"):
        if get(name) is not None and get(name) < 1:
            raise PanopticDetrError(f"{flag(name)} must be positive, got {get(name)}")
    batch_size = getattr(args, "batch_size", 1)
    if batch_size < 1:
        raise PanopticDetrError(f"--batch-size must be at least 1, got {batch_size}")
    device = getattr(args, "device", "cpu")
    check_device(device)
    return Predictor(checkpoint, device=device, threshold=get("threshold"), short_side=get("short_side"),
                     max_size=get("max_size"), batch_size=batch_size, dedup=check_dedup(get("dedup"), flag("dedup")))


def check_device(device: str) -> None:
    """A one-line error for an unknown device or CUDA on a machine without it."""
    import torch

    from panoptic_detr.errors import PanopticDetrError

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PanopticDetrError(f"--device: unknown device '{device}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PanopticDetrError(f"--device {device}: CUDA is not available")
