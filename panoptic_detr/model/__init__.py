"""The DETR panoptic model, key-for-key compatible with the official checkpoints.

One concept per module: `backbone` (ResNet + frozen BN), `position_encoding`, `transformer`,
`detr` (detection heads), `segmentation` (mask head), `attention` (attention capture),
`build` (presets -> modules), `checkpoint_io` (reading / writing checkpoint files safely),
`checkpoint` (loading weights into a model: `load_weights`, `load_model`), `hf_import`.
Submodules are imported lazily so that `import panoptic_detr.model.config` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelConfig": "config",
    "build_model": "build",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "load_checkpoint": "checkpoint",
    "adapt_state_dict": "checkpoint",
    "model_attention": "attention",
    "NestedTensor": "nested_tensor",
    "nested_tensor_from_tensor_list": "nested_tensor",
    "DETR": "detr",
    "DETRsegm": "segmentation",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
