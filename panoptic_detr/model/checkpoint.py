"""Reading and writing model checkpoints, safely.

- `.pth` (and any other non-safetensors file) is read with `torch.load(weights_only=True)`:
  tensors, containers and plain values only. A file that needs arbitrary unpickling (one that
  could run code) is refused with a CheckpointError; nothing in it runs.
- `.safetensors` holds the state dict; the config and categories live in its metadata as JSON.
- Official DETR files are `{"model": state_dict}`; ours add `config` (ModelConfig as a dict)
  and `categories` (a list of category dicts). Hugging Face DETR state dicts are recognised
  and converted (`hf_import`).
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from panoptic_detr.errors import CheckpointError, ConfigError
from panoptic_detr.model.config import RESNETS, ModelConfig, from_values

# How many names an error message lists before "... (N more)".
_MAX_LISTED = 6


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
    and any other entries the file has). Never unpickles objects."""
    path = Path(path)
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
    for key in ("config", "categories", "extra"):
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


def _load_torch(path: Path):
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
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
                          f"top-level keys: {', '.join(map(str, list(obj)[:_MAX_LISTED]))}")


# --------------------------------------------------------------------------------------------
# Architecture from keys


def _count_indices(keys, prefix: str) -> int:
    idx = {int(m[1]) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def is_panoptic_state_dict(sd: dict) -> bool:
    return any(k.startswith(("detr.", "mask_head.", "bbox_attention.")) for k in sd)


def infer_config(sd: dict, preset: str | None = None, name_hint: str = "") -> ModelConfig:
    """The ModelConfig a state dict (official layout) was made with, from its keys and shapes.

    Shapes give the backbone depth and block type, hidden_dim, num_queries, num_classes, layer
    counts, the FFN width and the ResNet width; a panoptic model's mask head also gives nheads. Dilation (DC5)
    leaves no trace in the weights: it comes from `preset`, else from 'dc5' in `name_hint`.
    Other fields (dropout, aux_loss, frozen_bn) come from `preset` or the defaults.
    """
    base = ModelConfig.from_preset(preset) if preset else ModelConfig()
    masks = is_panoptic_state_dict(sd)
    p = "detr." if any(k.startswith("detr.") for k in sd) else ""
    where = name_hint or "checkpoint"

    def need(key: str) -> Tensor:
        if key not in sd:
            raise CheckpointError(f"{where}: not a DETR checkpoint: no key '{key}'")
        return sd[key]

    body = f"{p}backbone.0.body."
    query = need(f"{p}query_embed.weight")
    cls = need(f"{p}class_embed.weight")
    kind = "bottleneck" if f"{body}layer1.0.conv3.weight" in sd else "basic"
    depths = tuple(_count_indices(sd, f"{body}layer{i}.") for i in range(1, 5))
    backbone = next((n for n, (k, d) in RESNETS.items() if k == kind and d == depths), None)
    if backbone is None:
        raise CheckpointError(f"{where}: unsupported backbone ({kind} blocks {depths}); "
                              f"supported: {', '.join(RESNETS)}")
    hidden_dim, num_queries = int(query.shape[1]), int(query.shape[0])
    width = int(need(f"{body}conv1.weight").shape[0])
    enc = _count_indices(sd, f"{p}transformer.encoder.layers.")
    dec = _count_indices(sd, f"{p}transformer.decoder.layers.")
    ffn_key = f"{p}transformer.{'encoder' if enc else 'decoder'}.layers.0.linear1.weight"
    nheads = base.nheads
    if "mask_head.lay1.weight" in sd:
        nheads = int(sd["mask_head.lay1.weight"].shape[0]) - hidden_dim
    dilation = base.dilation if preset else ("dc5" in name_hint.lower())
    try:
        return base.replace(
            backbone=backbone, backbone_width=width, dilation=dilation, hidden_dim=hidden_dim, nheads=nheads, enc_layers=enc,
            dec_layers=dec, dim_feedforward=int(need(ffn_key).shape[0]), num_queries=num_queries,
            num_classes=int(cls.shape[0]) - 1, masks=masks)
    except ConfigError as e:
        raise CheckpointError(f"{where}: inconsistent architecture: {e}") from None


# --------------------------------------------------------------------------------------------
# Fitting a state dict to a model


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{len(items)} {label}: {shown}{more}"


def load_state_dict_checked(model: nn.Module, sd: dict, strict: bool = True, where: str = "checkpoint",
                            fresh_prefixes: tuple[str, ...] = ()) -> dict:
    """Load `sd` into `model`. Strict: ONE CheckpointError listing every missing / unexpected key
    and shape mismatch. Not strict: load what fits. Keys under `fresh_prefixes` may be missing
    (they keep their fresh initialisation). `num_batches_tracked` counters are ignored.

    Returns {"missing": [...], "unexpected": [...], "mismatched": [...]}.
    """
    target = model.state_dict()
    ignore = "num_batches_tracked"
    missing = [k for k in target if k not in sd and not k.endswith(ignore) and not k.startswith(fresh_prefixes)]
    unexpected = [k for k in sd if k not in target and not k.endswith(ignore)]
    mismatched = [f"{k} (checkpoint {list(sd[k].shape)}, model {list(target[k].shape)})"
                  for k in sd if k in target and sd[k].shape != target[k].shape]
    if strict and (missing or unexpected or mismatched):
        parts = [_listing(label, items) for label, items in
                 (("missing key(s)", missing), ("unexpected key(s)", unexpected), ("shape mismatch(es)", mismatched))
                 if items]
        hint = ""
        if mismatched and all("class_embed" in m for m in mismatched) and not missing and not unexpected:
            hint = "; pass num_classes (or categories) to re-initialise the class head"
        raise CheckpointError(f"{where}: does not fit the model: {'; '.join(parts)}{hint}")
    loadable = {k: v for k, v in sd.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(loadable, strict=False)
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def adapt_state_dict(sd: dict, num_classes: int, old_categories=None, new_categories=None) -> dict:
    """`sd` with `class_embed` re-initialised for `num_classes` classes (+1 "no object").

    The no-object row (the last) is kept as the new last row. When both category lists are
    known, rows of the classes present in both (matched by name) are carried to their new ids.
    Everything else in `sd` is unchanged (a shallow copy is returned).
    """
    p = "detr." if "detr.class_embed.weight" in sd else ""
    wkey, bkey = f"{p}class_embed.weight", f"{p}class_embed.bias"
    if wkey not in sd or bkey not in sd:
        raise CheckpointError("adapt_state_dict: the state dict has no class_embed")
    old_w, old_b = sd[wkey], sd[bkey]
    fresh = nn.Linear(old_w.shape[1], num_classes + 1)  # nn.Linear's own initialisation
    new_w = fresh.weight.detach().to(old_w.dtype)
    new_b = fresh.bias.detach().to(old_b.dtype)
    new_w[-1], new_b[-1] = old_w[-1], old_b[-1]
    if old_categories is not None and new_categories is not None:
        old_rows = old_w.shape[0] - 1
        for cat in new_categories:
            old = old_categories.by_name.get(cat.name)
            if old is not None and old.id < old_rows and cat.id < num_classes:
                new_w[cat.id], new_b[cat.id] = old_w[old.id], old_b[old.id]
    out = dict(sd)
    out[wkey], out[bkey] = new_w, new_b
    return out


# --------------------------------------------------------------------------------------------
# Models


def _default_categories(num_classes: int):
    """The categories of the official COCO checkpoints (250: COCO panoptic, 91: COCO things)."""
    from panoptic_detr.data.categories import CategoryList, coco_panoptic_categories

    if num_classes == 250:
        return coco_panoptic_categories()
    if num_classes == 91:
        return CategoryList(c for c in coco_panoptic_categories() if c.isthing)
    return None


def _same_categories(a, b) -> bool:
    return [(c.id, c.name) for c in a] == [(c.id, c.name) for c in b]


def load_model(path: str | Path, preset: str | None = None, num_classes: int | None = None, categories=None,
               strict: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """A model in eval mode from a checkpoint (.pth / .safetensors / HF file or folder).

    Architecture: the checkpoint's `config` if it has one, else `preset` if given, else inferred
    from the keys (see `infer_config`). `num_classes` (or `categories`, a CategoryList) other
    than the checkpoint's re-initialises the class head (`adapt_state_dict`). A detection
    checkpoint loaded with a panoptic preset initialises the DETR part; the mask head is new.
    `.categories` is `categories`, else the checkpoint's, else COCO's for the official class
    counts (250 panoptic, 91 detection).
    """
    from panoptic_detr.data.categories import CategoryList
    from panoptic_detr.model.build import build_from_config
    from panoptic_detr.model.hf_import import convert_hf_state_dict, is_hf_state_dict

    path = Path(path)
    where = str(path)
    ckpt = load_checkpoint(path)
    sd = ckpt["model"]
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if is_hf_state_dict(sd):
        sd = convert_hf_state_dict(sd)

    saved_cats = None
    if ckpt.get("categories"):
        saved_cats = CategoryList.from_json(ckpt["categories"], where=f"{where}: categories")
    if isinstance(ckpt.get("config"), dict):
        try:
            ckpt_cfg = from_values(ckpt["config"], where=f"{where}: config")
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    else:
        ckpt_cfg = infer_config(sd, preset=preset, name_hint=str(path))

    has_config = isinstance(ckpt.get("config"), dict)
    cfg = ckpt_cfg
    if preset and not has_config:
        cfg = ModelConfig.from_preset(preset)
    elif preset:
        # A saved config describes the weights; the preset still picks the head (panoptic or not).
        cfg = ckpt_cfg.replace(masks=ModelConfig.from_preset(preset).masks)
    target_classes = num_classes if num_classes is not None else (
        categories.num_classes if categories is not None else ckpt_cfg.num_classes)
    cfg = cfg.replace(num_classes=target_classes)

    # Detection weights into a panoptic model, or the DETR part of panoptic weights alone.
    fresh: tuple[str, ...] = ()
    panoptic_sd = is_panoptic_state_dict(sd)
    if cfg.masks and not panoptic_sd:
        sd = {f"detr.{k}": v for k, v in sd.items()}
        fresh = ("bbox_attention.", "mask_head.")
    elif not cfg.masks and panoptic_sd:
        sd = {k[len("detr."):]: v for k, v in sd.items() if k.startswith("detr.")}

    if saved_cats is None and categories is not None and ckpt_cfg.num_classes in (91, 250):
        saved_cats = _default_categories(ckpt_cfg.num_classes)
    recategorise = categories is not None and saved_cats is not None and not _same_categories(categories, saved_cats)
    if target_classes != ckpt_cfg.num_classes or recategorise:
        sd = adapt_state_dict(sd, target_classes, saved_cats, categories)

    model = build_from_config(cfg)
    load_state_dict_checked(model, sd, strict=strict, where=where, fresh_prefixes=fresh)
    model.config = cfg
    if categories is not None:
        model.categories = categories
    elif saved_cats is not None and target_classes == ckpt_cfg.num_classes:
        model.categories = saved_cats
    elif target_classes == ckpt_cfg.num_classes:
        model.categories = _default_categories(target_classes)
    else:
        model.categories = None
    return model.to(device).eval()


def save_model(path: str | Path, model: nn.Module, categories=None, extra: dict | None = None,
               half: bool = False) -> Path:
    """Write `model` atomically as `.safetensors` (config, categories and `extra` as JSON metadata;
    `half` stores floating tensors as float16) or as a torch file (`.pth`: a dict with `model`,
    `config`, `categories` and the entries of `extra`, all loadable with weights_only=True)."""
    from panoptic_detr.utils.io import atomic_path

    path = Path(path)
    categories = categories if categories is not None else getattr(model, "categories", None)
    cfg = getattr(model, "config", None)
    cfg_dict = cfg.to_dict() if cfg is not None else None
    cats_json = categories.to_json() if categories is not None else None
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    extra = dict(extra or {})
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


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


__all__ = [
    "load_checkpoint", "load_model", "save_model", "adapt_state_dict", "infer_config", "load_state_dict_checked",
    "is_panoptic_state_dict", "count_parameters",
]
