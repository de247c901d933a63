"""Dropout whose random mask is cheap to draw on CPU.

`F.dropout` draws its mask with `bernoulli_`, one generator call and one float compare
per element: on the r50 training step on CPU that was 5-10% of the whole step (measured
with torch.profiler; `bench/train_step.py --torch-dropout` times the official dropout against
this one). Here one 64-bit draw gives four 16-bit lanes, and an element is kept when its
lane is at or above a threshold: a quarter of the generator calls and an integer compare.

The drop probability is then p rounded to a multiple of 1/65536 (0.1 -> 0.100006) and
the kept values are scaled by 1 / (1 - that probability), so the expectation is exact.
The mask comes from torch's default generator, so seeding and saved RNG states make runs
repeatable exactly as with `F.dropout`. On other devices, and in eval mode, this is
`F.dropout` itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LANES = 4  # 16-bit lanes in one int64 draw
_LEVELS = 1 << 16


def _keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[Tensor, float]:
    """(bool mask of `shape`, the exact drop probability it was drawn with)."""
    n = 1
    for s in shape:
        n *= int(s)
    draws = -(-n // _LANES)
    # every bit of a draw over the full int64 range is uniform, so each int16 lane is
    # uniform over [-32768, 32767]
    words = torch.randint(-(1 << 63), (1 << 63) - 1, (draws,), dtype=torch.int64, device=device)
    lanes = words.view(torch.int16)[:n].view(shape)
    dropped_levels = int(round(p * _LEVELS))
    return lanes >= (dropped_levels - (_LEVELS >> 1)), dropped_levels / _LEVELS


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """`F.dropout(x, p, training)`, with the mask drawn as the module docstring says on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0 or not x.is_floating_point():
        return F.dropout(x, p, training)
    keep, p_exact = _keep_mask(x.shape, p, x.device)
    if p_exact >= 1.0:
        return x * 0.0
    return (x * keep).mul_(1.0 / (1.0 - p_exact))


class Dropout(nn.Dropout):
    """`nn.Dropout` (same arguments, no parameters) using `dropout` above.

    fast: False uses torch's `F.dropout` (and the transformer layer holding it uses
    torch's attention), the official code's choice that `bench/train_step.py
    --torch-dropout` times against ours (`model.build.set_speed_options`).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, fast: bool = True):
        super().__init__(p, inplace)
        self.fast = fast

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace or not self.fast:
            return F.dropout(x, self.p, self.training, self.inplace)
        return dropout(x, self.p, self.training)
