"""The `panoptic-detr` command: one subcommand per module in `panoptic_detr/commands/`.

Each command module defines `HELP` (one line), `configure(parser)` and `run(args) -> int`.
Modules are imported only when their command runs, so a heavy import never slows `--help`.
User errors (`PanopticDetrError`) print one line and exit with code 2, without traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from panoptic_detr.errors import PanopticDetrError

# command name -> module under panoptic_detr.commands
COMMANDS = {
    "model-info": "model_info",
    "synth": "synth",
    "prepare": "prepare",
    "dataset-stats": "dataset_stats",
    "train": "train",
    "plot": "plot",
    "evaluate": "evaluate",
    "predict": "predict",
    "explain": "explain",
    "explain-queries": "explain_queries",
    "demo": "demo",
    "base-model": "base_model",
}


def _load(module: str):
    return importlib.import_module(f"panoptic_detr.commands.{module}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="panoptic-detr",
        description="Panoptic segmentation with DETR on your own data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, add_help=False)
            continue
        mod = _load(module)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the command that runs; `--help` alone lists them all.
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    from panoptic_detr.utils.malloc import tune_malloc

    tune_malloc()
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        code = args._run(args)
    except PanopticDetrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
