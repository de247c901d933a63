"""The runtimes that run an export's graphs: ONNX Runtime and OpenVINO.

`open_graph(path, runtime, threads, device)` gives a session with the part of
`onnxruntime.InferenceSession`'s interface that `OnnxPredictor` and the export check use:
`get_inputs()` / `get_outputs()` (each item with `.name` and `.shape`, a dynamic
dimension as a string) and `run(output_names, feeds) -> list of arrays`.

- "onnxruntime" (`make_session`): the CPU provider, or CUDA with onnxruntime-gpu; the
  'deploy' extra.
- "openvino" (`OpenVinoSession`): OpenVINO's CPU plugin reading the same .onnx files, in
  float32 (its default on CPUs with bf16 units would be bfloat16, which changes the maps),
  latency mode; the 'openvino' extra. Measured on bench/onnx.py's model: faster than ONNX
  Runtime on the backbone (oneDNN kernels), the same mask head.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

from panoptic_detr.errors import CheckpointError, PanopticDetrError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RUNTIMES", "make_session", "OpenVinoSession", "open_graph", "require_onnxruntime", "require_openvino"]

RUNTIMES = ("onnxruntime", "openvino")  # also the CLI's --backend choices: this module imports torch lazily


def require_onnxruntime():
    """The onnxruntime module, or a one-line error naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise PanopticDetrError("--backend onnxruntime needs the 'deploy' extra (onnxruntime is not installed): "
                                "pip install 'panoptic-detr[deploy]'") from None
    return onnxruntime


def require_openvino():
    """The openvino module, or a one-line error naming the extra to install."""
    try:
        import openvino
    except ImportError:
        raise PanopticDetrError("--backend openvino needs the 'openvino' extra (openvino is not installed): "
                                "pip install 'panoptic-detr[openvino]'") from None
    return openvino


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def make_session(path: str | Path, threads: int | None = None, device: str = "cpu", optimization: str = "all"):
    """An ONNX Runtime session for a graph file (CPU, or CUDA when `device` asks and it is there).

    threads: intra-op threads (None: ONNX Runtime's default, one per core);
    optimization: the graph optimisation level, "disable", "basic", "extended" or "all".
    """
    import torch

    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.log_severity_level = 3  # errors only
    # No busy-waiting of the worker threads between and after runs: they would take the cores from
    # the caller's own work (query selection, panoptic inference, the next image's decoding).
    # Measured with bench/onnx.py's model, 2 threads: 810 -> 733 ms per image (median of 14).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise PanopticDetrError(f"--device {device}: onnxruntime has no CUDA provider here "
                                    f"(install onnxruntime-gpu)")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
        raise CheckpointError(f"{path}: ONNX Runtime cannot load this graph: {_first_line(e)}") from None


@functools.lru_cache(maxsize=None)
def _openvino_core():
    """One OpenVINO Core (and so one CPU plugin) for the process. Each Core loads its own CPU
    plugin, which installs a signal stack on the calling thread and puts the previous one
    back when it is destroyed; two of them destroyed in creation order (the two graphs of a
    predictor, then garbage-collected) leave the thread on a freed signal stack, and the next
    Python signal (Ctrl-C, SIGCHLD) kills the process (seen with OpenVINO 2026.4)."""
    return require_openvino().Core()


class Port(NamedTuple):
    name: str
    shape: list  # ints, or a string for a dynamic dimension (as onnxruntime reports them)


class OpenVinoSession:
    """A graph file compiled by OpenVINO for the CPU, with ONNX Runtime's session interface."""

    def __init__(self, path: str | Path, threads: int | None = None):
        require_openvino()  # the one-line error, also once the shared Core exists
        # string keys: the same in every OpenVINO release since 2023
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            core = _openvino_core()
            self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError with a multi-line report
            raise CheckpointError(f"{path}: OpenVINO cannot load this graph: {_first_line(e)}") from None
        self._request = self._compiled.create_infer_request()

    @staticmethod
    def _port(port) -> Port:
        dims = [d.get_length() if d.is_static else f"d{i}" for i, d in enumerate(port.get_partial_shape())]
        return Port(port.get_any_name(), dims)

    def get_inputs(self) -> list[Port]:
        return [self._port(p) for p in self._compiled.inputs]

    def get_outputs(self) -> list[Port]:
        return [self._port(p) for p in self._compiled.outputs]

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer(feeds)  # share_outputs=False (the default): arrays of their own
        names = output_names or [p.get_any_name() for p in self._compiled.outputs]
        return [result[self._compiled.output(name)] for name in names]


def open_graph(path: str | Path, runtime: str = "onnxruntime", threads: int | None = None, device: str = "cpu",
               optimization: str = "all"):
    """A session for one graph file on `runtime` ("onnxruntime" or "openvino"; `optimization`:
    ONNX Runtime's graph optimisation level)."""
    import torch

    if runtime == "onnxruntime":
        return make_session(path, threads, device, optimization)
    if runtime == "openvino":
        if torch.device(device).type != "cpu":
            raise PanopticDetrError(f"--device {device}: --backend openvino runs on the CPU here "
                                    f"(for CUDA: --backend onnxruntime with onnxruntime-gpu)")
        return OpenVinoSession(path, threads)
    raise PanopticDetrError(f"unknown runtime '{runtime}' (one of {', '.join(RUNTIMES)})")
