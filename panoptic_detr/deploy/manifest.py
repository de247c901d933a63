"""`model.json`: what a program needs beside the graphs, and its checks when read back.

Written by `export.export_onnx`, read by `onnx_predictor.OnnxPredictor`:

    {"format": "panoptic-detr-onnx", "format_version": 1, "panoptic": true,
     "files": {"detr": {"file": "detr.onnx", "sha256": ..., "bytes": ...}, "mask_head": {...}},
     "inputs" / "outputs": the names of each graph's tensors,
     "num_classes": C (logits have C + 1 columns, the last is "no object"), "num_queries": Q,
     "categories": [{id, name, isthing, color, supercategory}, ...]  (id = class index),
     "preprocess": {"color": "RGB", "layout": "NCHW", "resize": {"short_side", "max_size",
                    "interpolation"}, "mean", "std" (of pixels / 255)},
     "inference": {"threshold", "dedup", "short_side", "max_size", "geometry" (the checkpoint's
                   `InferenceDefaults`), "min_area", "mask_stride"},
     "opset", "exported_with": {"panoptic_detr", "torch", "onnx"}, "model_config": {...}}

`read_manifest(folder)` turns every problem into one `CheckpointError` line naming the
file and the item: missing files, another format version, graphs that are not the ones
the manifest was written with (sha256), categories that do not fit the class count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from panoptic_detr.data.categories import CategoryList
from panoptic_detr.errors import CheckpointError, PanopticDetrError
from panoptic_detr.model.inference_defaults import InferenceDefaults
from panoptic_detr.utils.io import file_sha256

FORMAT = "panoptic-detr-onnx"
FORMAT_VERSION = 1
MANIFEST = "model.json"
GRAPH_FILES = {"detr": "detr.onnx", "mask_head": "mask_head.onnx"}


def file_entry(path: Path) -> dict:
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}


@dataclass
class Manifest:
    """A checked model.json."""

    folder: Path
    data: dict
    categories: CategoryList
    inference: InferenceDefaults  # the settings the model is meant to run with

    @property
    def panoptic(self) -> bool:
        return bool(self.data["panoptic"])

    @property
    def num_classes(self) -> int:
        return int(self.data["num_classes"])

    def graph_path(self, name: str) -> Path:
        return self.folder / self.data["files"][name]["file"]


def read_manifest(folder: str | Path, check_hashes: bool = True) -> Manifest:
    """The checked `model.json` of an export folder (see the module docstring)."""
    from panoptic_detr.utils.io import read_json

    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not an export folder (--backend onnxruntime / openvino takes the folder "
                              f"written by `panoptic-detr export`)")
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST} (not a folder written by `panoptic-detr export`)")
    try:
        data = read_json(path)
    except PanopticDetrError as e:
        raise CheckpointError(str(e)) from None
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: 'format' is not '{FORMAT}'")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {data.get('format_version')!r} was written by another "
                              f"panoptic-detr version (this one reads {FORMAT_VERSION}); export the model again")
    for key in ("panoptic", "files", "num_classes", "categories", "preprocess", "inference"):
        if key not in data:
            raise CheckpointError(f"{path}: no key '{key}'")
    needed = ["detr", "mask_head"] if data["panoptic"] else ["detr"]
    for name in needed:
        entry = data["files"].get(name)
        if not isinstance(entry, dict) or "file" not in entry:
            raise CheckpointError(f"{path}: files.{name} is missing")
        graph = folder / entry["file"]
        if not graph.is_file():
            raise CheckpointError(f"{graph}: graph file not found ({path} lists it)")
        if check_hashes and entry.get("sha256") and file_sha256(graph) != entry["sha256"]:
            raise CheckpointError(f"{graph}: not the graph {path} was written with (sha256 differs); "
                                  f"export the model again")
    categories = CategoryList.from_json(data["categories"], where=f"{path}: categories")
    num_classes = int(data["num_classes"])
    beyond = [c for c in categories if not 0 <= c.id < num_classes]
    if beyond:
        c = beyond[0]
        raise CheckpointError(f"{path}: category id {c.id} ('{c.name}') does not fit the graph's "
                              f"{num_classes} classes (ids 0..{num_classes - 1})")
    settings = {k: v for k, v in data["inference"].items() if k not in ("min_area", "mask_stride")}
    inference = InferenceDefaults.from_dict(settings, where=f"{path}: inference")
    return Manifest(folder, data, categories, inference)


README = """\
{title}

Exported by panoptic-detr {version} (torch {torch}, ONNX opset {opset}).
Files: detr.onnx{mask_file}, model.json (categories, input rules, inference defaults).

1. Input (what detr.onnx expects)
   One RGB image as float32 [1, 3, H, W], NCHW, H and W free (any size; no batch, no padding):
   - resize, bilinear (panoptic_detr.data.preprocess.resize_shape): with s, l the short and long
     sides of the original, t = {short_side}{max_rule}.
     The short side becomes t, the long side int(t * l / s) (truncated); no resize when s == t;
   - normalise: x = (pixel / 255 - mean) / std per channel, mean {mean}, std {std}.

2. detr.onnx
   image -> pred_logits [1, Q, C+1] (Q = {num_queries} queries, C+1 = {num_logits} classes, the last
            is "no object"), pred_boxes [1, Q, 4] (cx, cy, w, h in 0..1 of the resized image){context_outputs}
{mask_section}
{post_section}
Categories: model.json "categories" (id = class index of pred_logits; isthing: 1 thing, 0 stuff).
"""

CONTEXT_OUTPUTS = """,
            and the mask head's inputs: image_term, query_attention, fpn_s16, fpn_s8, fpn_s4
            (pass them to mask_head.onnx unchanged)."""

MASK_SECTION = """
3. mask_head.onnx
   image_term, query_attention, fpn_s16, fpn_s8, fpn_s4 (from detr.onnx) + query_index int64 [N]
   -> mask_logits [N, ceil(H/4), ceil(W/4)] (stride-4 mask logits of the N queries, N >= 1).
   Run it for the kept queries only (step 4.1), in query order.
"""

POST_SECTION = """
4. Post-processing (panoptic_detr.engine.inference.panoptic_inference)
   4.1 p = softmax(pred_logits[0]) over classes; score, label = max, argmax of p. Keep query q when
       label != C (the last column) and score > threshold ({threshold}). None kept: all pixels VOID.
{dedup_step}{geometry_step}
   4.3 every query of the same *stuff* class forms one segment (things: one segment per query).
   4.4 drop segments of at most min_area ({min_area}) pixels counted at the original image size and
       redo 4.2 without their queries, until none is that small.
   4.5 resize the map to the original size with nearest neighbour (pixel centres, as PIL NEAREST);
       number segments 1..n in query order, 0 = VOID.
"""

GEOMETRY_STEPS = {
    "aligned": """   4.2 (geometry "aligned") mask_logits of the kept queries: upsample by exactly 4 (bilinear,
       half-pixel centres, align_corners=False) to 4*ceil(H/4) x 4*ceil(W/4), keep the top-left H x W
       (H, W: the resized image); per pixel the query with the largest logit wins (first on ties).""",
    "official": """   4.2 (geometry "official", DETR's PostProcessPanoptic) mask_logits of the kept queries:
       interpolate straight to H x W (bilinear, align_corners=False; H, W: the resized image); per
       pixel the query with the largest softmax over the kept queries wins (first on ties).""",
}

DEDUP_STEP = """   4.1b duplicate suppression (dedup {dedup}): in score order, drop a kept *thing* query when more
       than {dedup} of its mask (logit > 0) lies inside the mask of a better surviving query of the same
       class (panoptic_detr.engine.inference.duplicate_queries).
"""

DETECTION_POST = """
3. Post-processing (detection model: no mask head)
   p = softmax(pred_logits[0]); a query is a detection when its best class is not the last column;
   its box is pred_boxes scaled by the original image size.
"""


def readme_text(data: dict) -> str:
    """README.txt for users who call the graphs from another language."""
    pre, inf = data["preprocess"], data["inference"]
    panoptic = data["panoptic"]
    return README.format(
        title="DETR panoptic model as ONNX graphs" if panoptic else "DETR detection model as an ONNX graph",
        version=data["exported_with"]["panoptic_detr"], torch=data["exported_with"]["torch"], opset=data["opset"],
        mask_file=", mask_head.onnx" if panoptic else "", short_side=pre["resize"]["short_side"],
        max_size=pre["resize"]["max_size"], mean=pre["mean"], std=pre["std"], num_queries=data["num_queries"],
        num_logits=data["num_classes"] + 1, context_outputs=CONTEXT_OUTPUTS if panoptic else ".",
        mask_section=MASK_SECTION if panoptic else "",
        post_section=POST_SECTION.format(geometry_step=GEOMETRY_STEPS[inf.get("geometry", "aligned")],
                                         dedup_step=DEDUP_STEP.format(**inf) if inf.get("dedup") else "", **inf)
        if panoptic else DETECTION_POST,
        max_rule="" if pre["resize"]["max_size"] is None else
        f"; if l / s * t > {pre['resize']['max_size']}: t = round({pre['resize']['max_size']} * s / l)",
    )
