"""`panoptic-detr export`: a model as ONNX graphs for deployment (`deploy.export.export_onnx`).

    panoptic-detr export CKPT_OR_NAME --format onnx --out DIR [--overwrite] [--opset 17]
                         [--trace-size HxW] [--no-verify]

Writes DIR/detr.onnx, DIR/mask_head.onnx (panoptic models), DIR/model.json and
DIR/README.txt; `predict` / `evaluate --backend onnxruntime|openvino DIR` run them. CKPT_OR_NAME is a
checkpoint file or folder, a model name (`panoptic-detr models`, downloaded once), or a preset name
(`tiny`, `r50-panoptic`, ...) instead of a checkpoint exports random weights (for trying
the pipeline), with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "export a model (checkpoint or preset) as ONNX graphs + model.json for ONNX Runtime"


def _size(text: str) -> tuple[int, int]:
    from panoptic_detr.commands.model_info import _size as parse

    return parse(text)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT_OR_NAME",
                   help="checkpoint (.pth / .safetensors / Hugging Face folder), a model name "
                        "(`panoptic-detr models`), or a model preset name (random weights)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default onnx)")
    p.add_argument("--out", type=Path, required=True, help="output folder (detr.onnx, mask_head.onnx, model.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, at least 17 (default 17)")
    p.add_argument("--trace-size", type=_size, default=(320, 448), metavar="HxW",
                   help="image size traced (the graphs take any size; default 320x448)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the graphs against torch at a second image size")


def _load(name: str):
    from panoptic_detr.errors import PanopticDetrError

    from panoptic_detr.model.registry import lookup

    if Path(name).exists() or lookup(name) or name.startswith("hf:"):
        from panoptic_detr.model.checkpoint import load_model

        return load_model(name)  # a model name (`panoptic-detr models`) resolves to its cached file
    from panoptic_detr.config import preset_names

    if name in preset_names("model"):
        from panoptic_detr.model.build import build_model

        print(f"warning: '{name}' is a model preset, not a file: exporting random weights", file=sys.stderr)
        return build_model(name)
    raise PanopticDetrError(f"{name}: no such checkpoint file or folder, model name or model preset "
                            f"({', '.join(preset_names('model'))})")


def run(args: argparse.Namespace) -> int:
    from panoptic_detr.deploy.export import export_onnx, require_onnx
    from panoptic_detr.errors import PanopticDetrError

    require_onnx()  # before loading anything: a missing extra or an existing output is a quick error
    if args.out.exists() and not args.overwrite:
        raise PanopticDetrError(f"{args.out}: output exists; pass --overwrite to replace it")
    model = _load(args.checkpoint)
    report = export_onnx(model, args.out, opset=args.opset, sample_size=args.trace_size, overwrite=args.overwrite,
                         verify=not args.no_verify, source=str(args.checkpoint),
                         log=lambda msg: print(msg, file=sys.stderr))
    sizes = ", ".join(f"{name} {n / 2**20:.1f} MiB" for name, n in report.file_bytes.items())
    print(f"exported {'panoptic' if report.panoptic else 'detection'} model to {args.out} in "
          f"{report.seconds:.1f} s: {sizes}")
    if report.max_error:
        print("largest |onnxruntime - torch| / max(1, |torch|) at a second size: "
              + ", ".join(f"{k} {v:.1e}" for k, v in report.max_error.items()))
        bad = [k for k, v in report.max_error.items() if v > (1e-3 if k == "mask_logits" else 1e-4)]
        if bad:
            print(f"warning: {', '.join(bad)} differ from torch more than float rounding explains", file=sys.stderr)
    return 0
