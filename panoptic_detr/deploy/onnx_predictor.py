"""`OnnxPredictor(export_dir)`: the `engine.predict.Predictor` interface on an export's graphs.

The graphs run on ONNX Runtime (default) or OpenVINO (`runtime="openvino"`), through
`deploy.runtimes.open_graph`.

The same pre-processing (`data.preprocess.preprocess_image`) and post-processing
(`engine.inference.select_queries` + `panoptic_inference`) as the torch path; only the
network runs elsewhere: `detr.onnx` once per image, then `mask_head.onnx` for the kept
queries only (as `Predictor`'s `masks_for_queries`). Images run one at a time (the
graphs take one unpadded image), so a map never depends on the batch.

Used by `predict` / `evaluate --backend onnxruntime|openvino EXPORT_DIR` through
`commands.build_predictor`, and by `evaluation.evaluate_model` like any predictor
(`predict_batch`, `categories`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from panoptic_detr.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from panoptic_detr.deploy import graphs
from panoptic_detr.deploy.manifest import MANIFEST, read_manifest
from panoptic_detr.deploy.runtimes import open_graph
from panoptic_detr.engine.inference import PanopticOutput, panoptic_inference, select_queries
from panoptic_detr.engine.predictor_base import FROM_MODEL, PredictorBase
from panoptic_detr.errors import CheckpointError, PanopticDetrError

__all__ = ["OnnxPredictor"]


class OnnxPredictor(PredictorBase):
    """Panoptic segmentation with the graphs of `panoptic-detr export` on ONNX Runtime.

    export_dir: the folder `export_onnx` wrote (model.json, detr.onnx, mask_head.onnx).
    threshold, dedup, short_side, max_size, geometry: as `engine.predict.Predictor`; each one
        not given is the export's (model.json "inference": the checkpoint's settings).
    min_area: as `engine.predict.Predictor`.
    batch_size: images handed over at once by the callers (each still runs alone).
    threads: the runtime's threads (None: its default).
    device: "cpu", or "cuda" for ONNX Runtime's CUDA provider (onnxruntime-gpu).
    runtime: "onnxruntime" or "openvino" (`deploy.runtimes`).
    optimization: ONNX Runtime's graph optimisation level (`runtimes.make_session`).
    """

    def __init__(self, export_dir: str | os.PathLike, device: str = "cpu", threshold: float = FROM_MODEL,
                 short_side: int = FROM_MODEL, max_size: int | None = FROM_MODEL, batch_size: int = 1,
                 min_area: int = 4, dedup: float | None = FROM_MODEL, geometry: str = FROM_MODEL,
                 threads: int | None = None, optimization: str = "all", runtime: str = "onnxruntime"):
        self.manifest = read_manifest(export_dir)
        folder = self.manifest.folder
        if not self.manifest.panoptic:
            raise PanopticDetrError(f"{folder}: a detection model (no mask head); predict needs a panoptic model")
        pre = self.manifest.data["preprocess"]
        if [list(pre.get("mean", [])), list(pre.get("std", []))] != [list(IMAGENET_MEAN), list(IMAGENET_STD)]:
            raise CheckpointError(f"{folder / MANIFEST}: preprocess mean/std differ from this version's "
                                  f"{list(IMAGENET_MEAN)} / {list(IMAGENET_STD)}")
        self.device = torch.device("cpu")  # where the outputs and the post-processing live
        self.runtime = runtime
        self.detr = open_graph(self.manifest.graph_path("detr"), runtime, threads, device, optimization)
        self.mask_head = open_graph(self.manifest.graph_path("mask_head"), runtime, threads, device, optimization)
        self._check_graphs()
        self._set_batch_size(batch_size)
        given = dict(threshold=threshold, dedup=dedup, short_side=short_side, max_size=max_size, geometry=geometry)
        # model.json holds the exported checkpoint's settings
        self._set_inference(self.manifest.inference, given)
        self.min_area = int(min_area)
        self._set_categories(self.manifest.categories, self.manifest.num_classes)

    def _check_graphs(self) -> None:
        """The graphs' names and class count are the ones model.json describes."""
        where = self.manifest.folder
        for session, inputs, outputs in ((self.detr, [graphs.IMAGE], graphs.PREDICTIONS + graphs.CONTEXT),
                                         (self.mask_head, graphs.CONTEXT + [graphs.QUERY_INDEX], [graphs.MASK_LOGITS])):
            have_in = [i.name for i in session.get_inputs()]
            have_out = [o.name for o in session.get_outputs()]
            if have_in != inputs or have_out != outputs:
                raise CheckpointError(f"{where}: a graph has inputs {have_in} and outputs {have_out}, expected "
                                      f"{inputs} -> {outputs} (not a panoptic-detr export of this version)")
        logits = self.detr.get_outputs()[0].shape[-1]
        if isinstance(logits, int) and logits != self.manifest.num_classes + 1:
            raise CheckpointError(f"{where / MANIFEST}: num_classes {self.manifest.num_classes} does not match "
                                  f"detr.onnx's {logits - 1} classes (categories from another model?)")

    def predict_tensors(self, tensors: Sequence[torch.Tensor], original_sizes: Sequence[tuple[int, int]]
                        ) -> list[PanopticOutput]:
        """Predictions for already normalised CHW tensors (at their processed size), one at a time."""
        return [self._run(t, size) for t, size in zip(tensors, original_sizes)]

    def run_graphs(self, tensor: torch.Tensor, query_index: np.ndarray | None = None):
        """(detr.onnx outputs as a name -> array dict, mask logits [N, h4, w4] of `query_index`
        or, when None, of the queries `select_queries` keeps; None when there are none)."""
        x = np.ascontiguousarray(tensor.detach().cpu().float().numpy()[None])
        names = graphs.PREDICTIONS + graphs.CONTEXT
        outs = dict(zip(names, self.detr.run(names, {graphs.IMAGE: x})))
        if query_index is None:
            logits = torch.from_numpy(outs["pred_logits"][0])
            query_index = select_queries(logits, self.threshold)[0].nonzero().flatten().numpy()
        if len(query_index) == 0:
            return outs, None
        feeds = {name: outs[name] for name in graphs.CONTEXT}
        feeds[graphs.QUERY_INDEX] = np.asarray(query_index, dtype=np.int64)
        return outs, self.mask_head.run([graphs.MASK_LOGITS], feeds)[0]

    def _run(self, tensor: torch.Tensor, original_size: tuple[int, int]) -> PanopticOutput:
        outs, masks = self.run_graphs(tensor)
        logits = torch.from_numpy(outs["pred_logits"][0])
        kept = torch.zeros((0, 1, 1)) if masks is None else torch.from_numpy(masks)
        size = tuple(int(v) for v in tensor.shape[-2:])
        out = panoptic_inference(logits, kept, size, original_size, self._isthing, threshold=self.threshold,
                                 min_area=self.min_area, dedup=self.dedup, geometry=self.geometry)
        return PanopticOutput(out.id_map.cpu(), out.segments_info)
