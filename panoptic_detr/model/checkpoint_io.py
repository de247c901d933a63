"""Reading and writing checkpoint files, safely.

- `.pth` (and any other non-safetensors file) is read with `torch.load(weights_only=True)`:
  tensors, containers and plain values only. A file that needs arbitrary unpickling (one that
  could run code) is refused with a CheckpointError; nothing in it runs.
- `.safetensors` holds the state dict; the config and categories live in its metadata as JSON.
- Official DETR files are `{"model": state_dict}`; ours add `config` (ModelConfig as a dict)
  and `categories` (a list of category dicts).
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from panoptic_detr.errors import CheckpointError

# How many names an error message lists before "... (N more)".
MAX_LISTED = 6


# --------------------------------------------------------------------------------------------
# Reading files


def _find_in_folder(path: Path) -> Path:
    """A Hugging Face model folder: its weights file."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: a folder without model.safetensors or pytorch_model.bin")


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint as a dict with the state dict under `model` (plus `config`, `categories`
    and any other entries the file has). Never unpickles objects.

    `path` may also be a model name (`model.registry`): its cached file, downloaded first if
    needed (`model.download.resolve`); the registry's categories fill in for a file without,
    its `inference` settings override the file's, and `registry` records the entry's name,
    preset and the file."""
    from panoptic_detr.model.download import resolve

    resolved = resolve(path)
    path = resolved.path
    ckpt = _load_file(path)
    entry = resolved.entry
    if entry is not None:
        ckpt["registry"] = {"name": entry.name, "preset": entry.preset, "file": str(path)}
        if not ckpt.get("categories") and entry.category_list() is not None:
            ckpt["categories"] = entry.category_list().to_json()
        if entry.inference:  # the registry's settings over the file's (model.inference_defaults)
            from panoptic_detr.model.inference_defaults import from_checkpoint

            ckpt["inference"] = {**from_checkpoint(ckpt, str(path)).to_dict(), **entry.inference}
    return ckpt


def _load_file(path: Path) -> dict:
    if path.is_dir():
        path = _find_in_folder(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        ckpt = _load_safetensors(path)
    else:
        ckpt = _load_torch(path)
    return _normalise(ckpt, path)


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    ckpt: dict = {"model": tensors}
    for key in ("config", "categories", "inference", "extra"):
        if key in metadata:
            try:
                ckpt[key] = json.loads(metadata[key])
            except json.JSONDecodeError:
                raise CheckpointError(f"{path}: metadata '{key}' is not valid JSON") from None
    extra = ckpt.pop("extra", None)
    if isinstance(extra, dict):
        for k, v in extra.items():
            ckpt.setdefault(k, v)
    return ckpt


def _safe_globals() -> list:
    """Plain-data classes some training scripts store: the official DETR trainer saves its
    argparse Namespace, others numpy scalars. Rebuilding them only sets attributes or reads
    raw bytes (no code runs), so they are allowed."""
    allowed: list = [argparse.Namespace]
    try:
        import numpy as np

        scalar = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
        allowed += [scalar.scalar, np.dtype]
        allowed += [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", object())) if n.endswith("DType")]
    except Exception:  # numpy missing or laid out differently: just fewer allowed classes
        pass
    return allowed


def _looks_like_pickle(path: Path) -> bool:
    """A zip archive (torch.save's format) or a pickle stream (protocol 2-5, the legacy
    format): the only files whose refusal can be about what they would unpickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _load_torch(path: Path):
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg and not _looks_like_pickle(path):
            # random bytes reach torch's legacy pickle reader, which stops at the first
            # byte that is no pickle opcode ("Unsupported operand"): not a checkpoint at all
            raise CheckpointError(f"{path}: not a checkpoint (neither a PyTorch file nor safetensors: "
                                  f"unrecognised file format)") from None
        if "Weights only load failed" in msg:
            m = re.search(r"(?:Unsupported global|Unsupported operand)[^\n]*?GLOBAL ([\w.]+)", msg) or \
                re.search(r"GLOBAL ([\w.]+)", msg)
            what = f" (it refers to {m[1]})" if m else ""
            raise CheckpointError(
                f"{path}: this file needs arbitrary unpickling{what}, which could run code, and was refused; "
                f"only checkpoints of tensors and plain values are loaded (re-save the state dict, "
                f"or convert it to .safetensors, from a trusted environment)") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unrecognised file format)") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError, IndexError, TypeError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "central directory" in detail or isinstance(e, EOFError):
            detail = "the file is truncated or corrupt"
        elif isinstance(e, KeyError) or "load key" in detail:
            detail = "unrecognised file format"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {detail[:200]}") from None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _normalise(obj, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(obj).__name__}, expected a dict with a state dict)")
    if _is_state_dict(obj.get("model")):
        return dict(obj)
    for key in ("state_dict", "model_state_dict"):
        if _is_state_dict(obj.get(key)):
            ckpt = {k: v for k, v in obj.items() if k != key}
            ckpt["model"] = obj[key]
            return ckpt
    if _is_state_dict(obj):
        return {"model": obj}
    raise CheckpointError(f"{path}: no state dict found (expected tensors under 'model'); "
                          f"top-level keys: {', '.join(map(str, list(obj)[:MAX_LISTED]))}")


# --------------------------------------------------------------------------------------------
# Writing files


def save_model(path: str | Path, model: nn.Module, categories=None, extra: dict | None = None,
               half: bool = False, inference=None) -> Path:
    """Write `model` atomically as `.safetensors` (config, categories, inference and `extra` as JSON
    metadata; `half` stores floating tensors as float16) or as a torch file (`.pth`: a dict with
    `model`, `config`, `categories`, `inference` and the entries of `extra`, all loadable with
    weights_only=True). `inference`: the model's inference defaults (an `InferenceDefaults`;
    default: `model.inference_defaults` when the model has them, else none are written)."""
    from panoptic_detr.utils.io import atomic_path

    path = Path(path)
    categories = categories if categories is not None else getattr(model, "categories", None)
    cfg = getattr(model, "config", None)
    cfg_dict = cfg.to_dict() if cfg is not None else None
    cats_json = categories.to_json() if categories is not None else None
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    inference = inference if inference is not None else getattr(model, "inference_defaults", None)
    extra = dict(extra or {})
    if inference is not None:
        extra["inference"] = inference.to_dict() if hasattr(inference, "to_dict") else dict(inference)
    reserved = {"model", "config", "categories"} & set(extra)
    if reserved:
        raise ValueError(f"save_model: extra may not use the reserved key(s) {sorted(reserved)}")
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            if half:
                sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
            metadata = {"format": "pt"}
            if cfg_dict is not None:
                metadata["config"] = json.dumps(cfg_dict)
            if cats_json is not None:
                metadata["categories"] = json.dumps(cats_json)
            if "inference" in extra:
                metadata["inference"] = json.dumps(extra.pop("inference"))
            if extra:
                metadata["extra"] = json.dumps(extra)
            save_file(sd, str(tmp), metadata=metadata)
        else:
            if half:
                raise ValueError("save_model: half=True is for .safetensors files")
            obj = {"model": sd}
            if cfg_dict is not None:
                obj["config"] = cfg_dict
            if cats_json is not None:
                obj["categories"] = cats_json
            obj.update(extra)
            torch.save(obj, tmp)
    return path


__all__ = ["load_checkpoint", "save_model", "MAX_LISTED"]
