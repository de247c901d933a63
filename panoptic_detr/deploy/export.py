"""`export_onnx(model, out_dir)`: the model as `detr.onnx` (+ `mask_head.onnx`), `model.json`, README.txt.

The graphs are traced by torch's TorchScript ONNX exporter (`torch.onnx.export(...,
dynamo=False)`) at opset 17 with dynamic image height / width and a dynamic number of
selected queries: it gives a correct graph for every preset tried (checked at a second
image size by `verify`; the tests compare two sizes and N = 1, 7). The torch.export-based
exporter (`dynamo=True`) needs `onnxscript`, one more dependency, and was not tried. The traced network
is a copy with the frozen batch norms folded into the convolutions (plain Conv nodes).
Every file is checked with `onnx.checker` and the folder is written atomically.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from panoptic_detr.deploy import graphs
from panoptic_detr.deploy.manifest import FORMAT, FORMAT_VERSION, GRAPH_FILES, MANIFEST, file_entry, readme_text
from panoptic_detr.errors import PanopticDetrError

DEFAULT_OPSET = 17
INPUT_DOC = ("input 'image': ONE image, float32 [1, 3, H, W] (H, W free), RGB, already resized and normalised "
             "((pixel / 255 - mean) / std, ImageNet mean and std; see model.json 'preprocess').")


@dataclass
class ExportReport:
    out_dir: Path
    panoptic: bool
    seconds: float
    file_bytes: dict[str, int] = field(default_factory=dict)
    # verify: max |onnxruntime - torch| / max(1, max |torch|) per output
    max_error: dict[str, float] = field(default_factory=dict)


def require_onnx():
    """(onnx, onnxruntime) or a one-line error naming the extra to install."""
    from panoptic_detr.deploy.runtimes import require_onnxruntime

    try:
        import onnx
    except ImportError:
        raise PanopticDetrError("ONNX export needs the 'deploy' extra (onnx is not installed): "
                                "pip install 'panoptic-detr[deploy]'") from None
    return onnx, require_onnxruntime()


def inference_network(model: nn.Module) -> nn.Module:
    """The copy that is traced: frozen batch norms folded, padding-invariant mode off, eval."""
    from panoptic_detr.model.backbone import fold_frozen_batchnorm

    net = fold_frozen_batchnorm(model).cpu().float().eval()
    if hasattr(net, "set_padding_invariant"):
        net.set_padding_invariant(False)  # no padding in the graphs: the mode would only add no-ops
    return net


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict,
            opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes: checked by verify
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_axes={k: v for k, v in axes.items() if k in inputs + outputs},
                          do_constant_folding=True)


def _document(onnx, path: Path, doc: str) -> None:
    proto = onnx.load(str(path))
    proto.doc_string = doc
    proto.producer_name = "panoptic-detr"
    entry = proto.metadata_props.add()
    entry.key, entry.value = "panoptic_detr_format", f"{FORMAT} {FORMAT_VERSION}"
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def export_onnx(model: nn.Module, out_dir: str | Path, opset: int = DEFAULT_OPSET, sample_size=(320, 448),
                overwrite: bool = False, verify: bool = True, source: str = "",
                log: Callable[[str], None] | None = None) -> ExportReport:
    """Write `detr.onnx`, `mask_head.onnx` (panoptic models), `model.json` and README.txt into `out_dir`.

    sample_size: the (H, W) traced (any size works afterwards); verify runs the graphs at
    another size through ONNX Runtime and records the largest difference to torch.
    """
    from panoptic_detr.utils.io import atomic_dir, write_json, write_text

    onnx, _ = require_onnx()
    if opset < 17:
        raise PanopticDetrError(f"--opset must be at least 17, got {opset}")
    say = log or (lambda msg: None)
    start = time.perf_counter()
    net = inference_network(model)
    panoptic = graphs.is_panoptic(net)
    h, w = (int(v) for v in sample_size)
    x = torch.randn((1, 3, h, w), generator=torch.Generator().manual_seed(0))
    detr_outputs = graphs.PREDICTIONS + (graphs.CONTEXT if panoptic else [])
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        say(f"tracing detr.onnx at {h}x{w}")
        detr_path = tmp / GRAPH_FILES["detr"]
        _export(graphs.DetrGraph(net), (x,), detr_path, [graphs.IMAGE], detr_outputs, graphs.DETR_AXES, opset)
        _document(onnx, detr_path, "DETR (panoptic-detr export): " + INPUT_DOC)
        files = {"detr": file_entry(detr_path)}
        if panoptic:
            say("tracing mask_head.onnx")
            with torch.no_grad():  # plain tensors (inference tensors cannot be traced)
                context = graphs.DetrGraph(net)(x)[2:]
            query_index = torch.arange(min(3, net.num_queries))
            mask_path = tmp / GRAPH_FILES["mask_head"]
            _export(graphs.MaskHeadGraph(net), (*context, query_index), mask_path, graphs.CONTEXT + [graphs.QUERY_INDEX],
                    [graphs.MASK_LOGITS], graphs.MASK_AXES, opset)
            _document(onnx, mask_path, "DETR mask head (panoptic-detr export): detr.onnx's image_term, "
                      "query_attention, fpn_s16, fpn_s8, fpn_s4 + query_index int64 [N] -> mask_logits [N, H/4, W/4]")
            files["mask_head"] = file_entry(mask_path)
        data = manifest_data(model, net, files, opset, panoptic, source)
        write_json(tmp / MANIFEST, data, indent=2)
        write_text(tmp / "README.txt", readme_text(data))
        report = ExportReport(out_dir, panoptic, 0.0, {e["file"]: e["bytes"] for e in files.values()})
        if verify:
            say("checking the graphs against torch at another size")
            report.max_error = verify_export(net, tmp, (h + 64, w - 96 if w > 160 else w + 32))
    report.seconds = time.perf_counter() - start
    return report


def manifest_data(model: nn.Module, net: nn.Module, files: dict, opset: int, panoptic: bool, source: str) -> dict:
    """The model.json dict (see deploy/manifest.py)."""
    import onnx

    import panoptic_detr
    from panoptic_detr.data.categories import default_categories
    from panoptic_detr.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from panoptic_detr.model.inference_defaults import InferenceDefaults

    defaults = getattr(model, "inference_defaults", None) or InferenceDefaults()
    num_classes = int(net.num_classes)
    categories = getattr(model, "categories", None) or default_categories(num_classes)
    config = getattr(model, "config", None)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "panoptic": panoptic,
        "source": source,
        "files": files,
        "inputs": {"detr": [graphs.IMAGE],
                   **({"mask_head": graphs.CONTEXT + [graphs.QUERY_INDEX]} if panoptic else {})},
        "outputs": {"detr": graphs.PREDICTIONS + (graphs.CONTEXT if panoptic else []),
                    **({"mask_head": [graphs.MASK_LOGITS]} if panoptic else {})},
        "num_classes": num_classes,
        "num_queries": int(net.num_queries),
        "categories": categories.to_json(),
        "preprocess": {"color": "RGB", "layout": "NCHW", "dtype": "float32", "batch": 1,
                       "resize": {"short_side": defaults.short_side, "max_size": defaults.max_size,
                                  "interpolation": "bilinear"},
                       "scale": 255.0, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        # the checkpoint's inference settings (`model.inference_defaults`), the defaults of OnnxPredictor
        "inference": {**defaults.to_dict(), "min_area": 4, "mask_stride": 4},
        "opset": opset,
        "exported_with": {"panoptic_detr": panoptic_detr.__version__, "torch": torch.__version__,
                          "onnx": onnx.__version__},
        "model_config": config.to_dict() if config is not None else None,
    }


def verify_export(net: nn.Module, folder: Path, size: tuple[int, int]) -> dict[str, float]:
    """Largest |onnxruntime - torch| of every output on a random image of `size` (all queries' masks),
    divided by the output's scale max(1, max |torch|)."""
    import numpy as np

    def error(got, ref) -> float:
        ref = ref.numpy()
        return float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max())))

    from panoptic_detr.deploy.runtimes import make_session

    x = torch.randn((1, 3, *size), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = graphs.DetrGraph(net)(x)
    detr = make_session(folder / GRAPH_FILES["detr"])
    got = detr.run(None, {graphs.IMAGE: x.numpy()})
    names = graphs.PREDICTIONS + graphs.CONTEXT
    errors = {name: error(g, r) for name, g, r in zip(names, got, ref)}
    if len(ref) > 2:
        q = torch.arange(net.num_queries)
        with torch.inference_mode():
            ref_masks = graphs.MaskHeadGraph(net)(*ref[2:], q)
        head = make_session(folder / GRAPH_FILES["mask_head"])
        masks = head.run(None, {**dict(zip(graphs.CONTEXT, got[2:])), graphs.QUERY_INDEX: q.numpy()})[0]
        errors[graphs.MASK_LOGITS] = error(masks, ref_masks)
    return errors
