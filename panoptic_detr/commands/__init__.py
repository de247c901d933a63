"""The `panoptic-detr` subcommands: one module each, with `HELP`, `configure(parser)` and `run(args)`."""

DEDUP_HELP = (
    "drop a thing segment when more than this fraction of its mask lies inside a better-scoring "
    "segment of the same class (duplicate suppression, e.g. 0.5; 'off' to turn it off; default: the "
    "checkpoint's, off for official checkpoints)"
)
# The inference settings a checkpoint carries (`model.inference_defaults`); the flags override them.
INFERENCE_SETTINGS = ("threshold", "dedup", "short_side", "max_size", "geometry")


def _dedup_value(text: str):
    """`--dedup` values: a fraction, or 'off'."""
    import argparse

    if text.strip().lower() in ("off", "none"):
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a fraction (e.g. 0.5) nor 'off'") from None


def add_dedup_argument(parser, flag: str = "--dedup") -> None:
    """The duplicate-suppression option (default None: the checkpoint's)."""
    parser.add_argument(flag, type=_dedup_value, default=None, metavar="F", help=DEDUP_HELP)


def add_inference_arguments(parser, flag_prefix: str = "--") -> None:
    """The inference options shared by predict, evaluate, explain (and prepare's teacher, with
    `flag_prefix="--teacher-"`): threshold, dedup, short side, max size, geometry. Each defaults
    to None: the checkpoint's own setting (`model.inference_defaults`; official checkpoints:
    0.85, off, 800, 1333, official)."""
    from panoptic_detr.model.inference_defaults import GEOMETRIES

    ckpt = "default: the checkpoint's"
    parser.add_argument(f"{flag_prefix}threshold", type=float, default=None, metavar="T",
                        help=f"score a query needs to make a segment ({ckpt}; official checkpoints 0.85)")
    add_dedup_argument(parser, f"{flag_prefix}dedup")
    parser.add_argument(f"{flag_prefix}short-side", type=int, default=None, metavar="PX",
                        help=f"resize the short image side to this ({ckpt}; official checkpoints 800)")
    parser.add_argument(f"{flag_prefix}max-size", type=int, default=None, metavar="PX",
                        help=f"longest image side after resizing ({ckpt}; official checkpoints 1333)")
    parser.add_argument(f"{flag_prefix}geometry", choices=GEOMETRIES, default=None,
                        help="mask upsampling: 'aligned' (x4 on the stride-4 grid, no drift) or 'official' "
                             f"(exactly the official PostProcessPanoptic) ({ckpt}: official for official "
                             "checkpoints, aligned for models trained here)")


def inference_overrides(args, prefix: str = "", flag_prefix: str = "--") -> dict:
    """The inference settings given on the command line (`args.<prefix><setting>` not None), checked:
    a dict for `Predictor(..., **overrides)` (`--dedup off` -> dedup None). Errors name the flag."""
    from panoptic_detr.engine.inference import check_dedup
    from panoptic_detr.errors import PanopticDetrError

    out = {}
    for name in INFERENCE_SETTINGS:
        value = getattr(args, prefix + name, None)
        if value is None:
            continue
        flag = flag_prefix + name.replace("_", "-")
        if name == "threshold" and not 0.0 <= value < 1.0:
            raise PanopticDetrError(f"{flag} must be in [0, 1), got {value}")
        if name in ("short_side", "max_size") and value < 1:
            raise PanopticDetrError(f"{flag} must be positive, got {value}")
        if name == "dedup":
            value = None if value == "off" else check_dedup(value, flag)
        out[name] = value
    return out


BACKEND_HELP = (
    "torch (default): CHECKPOINT is a checkpoint file; onnxruntime / openvino: CHECKPOINT is a folder written "
    "by `panoptic-detr export` (needs the 'deploy' / 'openvino' extra)"
)


def add_backend_argument(parser) -> None:
    """The `--backend` option of predict and evaluate."""
    from panoptic_detr.deploy.runtimes import RUNTIMES

    parser.add_argument("--backend", choices=["torch", *RUNTIMES], default="torch", help=BACKEND_HELP)


def build_predictor(checkpoint, args, prefix: str = "", flag_prefix: str = "--"):
    """The `Predictor` a command's inference options describe, their values checked; prints
    the settings used (one line, on stderr).

    Reads `args.<prefix>threshold`, `<prefix>dedup`, `<prefix>short_side`,
    `<prefix>max_size`, `<prefix>geometry` (None: the checkpoint's, see
    `add_inference_arguments`) and, where the command has them, `device`, `batch_size`,
    `threads` and `backend` ("onnxruntime" / "openvino": `checkpoint` is an export folder
    and the predictor a `deploy.onnx_predictor.OnnxPredictor` on that runtime); errors name the flag (`flag_prefix`
    + the option, e.g. `--teacher-threshold`).
    """
    import inspect
    import sys

    from panoptic_detr.engine.predict import Predictor
    from panoptic_detr.errors import PanopticDetrError

    overrides = inference_overrides(args, prefix, flag_prefix)
    batch_size = getattr(args, "batch_size", 1)
    if batch_size < 1:
        raise PanopticDetrError(f"--batch-size must be at least 1, got {batch_size}")
    device = getattr(args, "device", "cpu")
    check_device(device)
    backend = getattr(args, "backend", "torch")
    if backend != "torch":
        from panoptic_detr.deploy.onnx_predictor import OnnxPredictor

        accepted = inspect.signature(OnnxPredictor).parameters
        for name in overrides:
            if name not in accepted:
                raise PanopticDetrError(f"{flag_prefix}{name.replace('_', '-')} is not available with --backend "
                                        f"{backend}")
        predictor = OnnxPredictor(checkpoint, device=device, batch_size=batch_size,
                                  threads=getattr(args, "threads", None), runtime=backend, **overrides)
    else:
        predictor = Predictor(checkpoint, device=device, batch_size=batch_size, **overrides)
    flags = {name: flag_prefix + name.replace("_", "-") for name in overrides}
    print(predictor.settings_line(flags), file=sys.stderr)
    return predictor


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
