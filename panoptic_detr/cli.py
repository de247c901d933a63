"""The `panoptic-detr` command: one subcommand per module in `panoptic_detr/commands/`.

Each command module defines `HELP` (one line), `configure(parser)` and `run(args) -> int`.
Modules are imported only when their command runs, so a heavy import never slows `--help`.
User errors (`PanopticDetrError`) print one line and exit with code 2, without traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

from panoptic_detr.errors import PanopticDetrError

# command name -> module under panoptic_detr.commands
COMMANDS = {
    "model-info": "model_info",
    "models": "models",
    "publish": "publish",
    "synth": "synth",
    "prepare": "prepare",
    "dataset-stats": "dataset_stats",
    "train": "train",
    "plot": "plot",
    "evaluate": "evaluate",
    "predict": "predict",
    "explain": "explain",
    "export": "export",
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


@contextlib.contextmanager
def warnings_as_lines(stream=None):
    """Python warnings (ours and the libraries') as `warning: <message>` lines, never as
    `file:line: UserWarning` text: each distinct message once, when it first occurs, and
    at the end how often the repeated ones occurred in all."""
    counts: dict[str, int] = {}

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        counts[text] = counts.get(text, 0) + 1
        if counts[text] == 1:
            _say(f"warning: {text}", stream)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # count repeats; show() prints each once
        warnings.showwarning = show
        try:
            yield
        finally:
            for text, n in counts.items():
                if n > 1:
                    _say(f"warning: ({n} times in all) {text}", stream)


def _say(line: str, stream=None) -> None:
    """A line on stderr that leaves a running tqdm bar intact."""
    stream = stream or sys.stderr
    try:
        from tqdm import tqdm

        tqdm.write(line, file=stream)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(line, file=stream)


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
        with warnings_as_lines():
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
