"""Bit-identical training: what holds without switches, and `deterministic_algorithms`.

On CPU a run is repeatable for a given thread count, whatever the machine load, with no
switch: the mask head gathers per-image tensors with `index_select` (advanced indexing
with repeated rows, `t[batch_index]`, adds in its backward with unordered atomic adds
across threads: `model/segmentation.py`; the criterion's (image, query) pairs are
distinct, so their adds never meet), and the other kernels split work by thread count only.
Different `--threads` values give different float sums (matmul and convolution blocking),
so weights differ in the last bits between thread counts.

On CUDA several kernels add with atomics (index_select's backward, cuBLAS's split
reductions, cuDNN's autotuned algorithms), so runs differ in the last bits unless
`deterministic: true` (`train --deterministic`): `torch.use_deterministic_algorithms(True)`
(an op without a deterministic kernel raises instead of running),
`CUBLAS_WORKSPACE_CONFIG=:4096:8`, cuDNN deterministic and not benchmarking. The training
path avoids the ops that have no deterministic CUDA kernel: positions are integer cumsums,
the class loss runs over [B*Q, C] (not nll_loss2d), and the criterion upsamples masks with
matrices (`criterion.upsample_bilinear`) instead of `F.interpolate`. Not run on a GPU here.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


def deterministic_enabled(t: torch.Tensor) -> bool:
    """Whether `t`'s ops must be deterministic ones (deterministic mode, on a GPU)."""
    return t.device.type != "cpu" and torch.are_deterministic_algorithms_enabled()


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms (see the module docstring) inside the block when `enabled`;
    the previous settings are restored after it."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                cudnn.deterministic, cudnn.benchmark)
    if device.type == "cuda":
        # read by cuBLAS when its workspace is set up: before the first matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        cudnn.deterministic, cudnn.benchmark = previous[2], previous[3]


__all__ = ["deterministic_algorithms", "deterministic_enabled"]
