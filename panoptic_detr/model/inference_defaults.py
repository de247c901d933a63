"""The inference settings a model carries: `InferenceDefaults`.

A checkpoint written by this project stores the settings its model is meant to be run
with (score threshold, duplicate suppression, resize, mask geometry): training writes its
eval config's values, the shipped base model its recipe's. `load_model` attaches them to
the model as `model.inference_defaults`; the `Predictor` (and so predict, evaluate,
explain and prepare's teacher) uses them for every option not given explicitly.

Which defaults a checkpoint gets (`from_checkpoint`):
- an `inference` entry (ours, or the model registry's for a named official file): those
  values, missing keys as below;
- no `config` entry either (an official DETR file, a Hugging Face conversion: made
  elsewhere, e.g. `detr-r50-panoptic` with 250 classes or a detection model with 91):
  `OFFICIAL`, the official DETR evaluation settings (0.85, no dedup, 800, 1333, official
  geometry), so that its official numbers are reproduced;
- a `config` but no `inference` entry (trained here before checkpoints carried their
  settings): the built-in defaults, aligned geometry.

Geometry (`engine.inference`): `aligned` upsamples the stride-4 mask grid by exactly 4
(every mask keeps its true position); `official` interpolates it straight to the image
size as the official `PostProcessPanoptic` does (exactly its maps, shifted by up to 2 px
at the far edge when a side is not a multiple of 4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from panoptic_detr.errors import CheckpointError

__all__ = ["InferenceDefaults", "GEOMETRIES", "OFFICIAL", "from_checkpoint", "check_geometry"]

GEOMETRIES = ("aligned", "official")


def check_geometry(value, name: str = "geometry") -> str:
    """`value` if it is one of GEOMETRIES; a one-line error otherwise."""
    from panoptic_detr.errors import PanopticDetrError

    if value not in GEOMETRIES:
        raise PanopticDetrError(f"{name} must be one of {', '.join(GEOMETRIES)}, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class InferenceDefaults:
    """threshold: a query makes a segment when its score is above it; dedup: duplicate
    suppression fraction (None: off); short_side / max_size: the resize (max_size None:
    no limit); geometry: `aligned` or `official` (see the module docstring)."""

    threshold: float = 0.85
    dedup: float | None = None
    short_side: int = 800
    max_size: int | None = 1333
    geometry: str = "aligned"

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "InferenceDefaults":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict, where: str = "inference", base: "InferenceDefaults | None" = None):
        """Values of `data` over `base` (default: the built-in defaults), each checked:
        a CheckpointError naming `where` and the key otherwise."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a mapping of inference settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{where}: unknown inference setting(s) {', '.join(unknown)}")
        values = (base or cls()).to_dict()
        values.update(data)
        try:
            return cls(**values).checked()
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: {e}") from None

    def checked(self) -> "InferenceDefaults":
        """Self, with each value's type and range checked (ValueError naming the key)."""
        def number(key, value, integer=False):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value!r}")
            if integer and value != int(value):
                raise ValueError(f"{key} must be an integer, got {value!r}")
            return value

        if not 0.0 <= number("threshold", self.threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.dedup is not None and not 0.0 <= number("dedup", self.dedup) < 1.0:
            raise ValueError(f"dedup must be in [0, 1) or null, got {self.dedup}")
        for key in ("short_side", "max_size"):
            value = getattr(self, key)
            if (value is not None or key == "short_side") and number(key, value, integer=True) < 1:
                raise ValueError(f"{key} must be positive, got {value}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {self.geometry!r}")
        return replace(
            self, threshold=float(self.threshold), dedup=None if self.dedup is None else float(self.dedup),
            short_side=int(self.short_side), max_size=None if self.max_size is None else int(self.max_size))


# The official DETR evaluation settings (its `PostProcessPanoptic` at 800 / 1333).
OFFICIAL = InferenceDefaults(threshold=0.85, dedup=None, short_side=800, max_size=1333, geometry="official")


def from_checkpoint(ckpt: dict, where: str = "checkpoint") -> InferenceDefaults:
    """The inference defaults of a loaded checkpoint dict (see the module docstring). An
    `inference` entry may be partial (the model registry's settings for an official file):
    the missing keys come from OFFICIAL for a file made elsewhere, else the built-in ones."""
    base = InferenceDefaults() if isinstance(ckpt.get("config"), dict) else OFFICIAL
    if ckpt.get("inference") is not None:
        return InferenceDefaults.from_dict(ckpt["inference"], where=f"{where}: inference", base=base)
    return base
