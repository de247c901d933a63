"""Loading weights into models: one pipeline for every checkpoint kind.

`load_weights(model, checkpoint)` fits any DETR checkpoint to a given model: official DETR
files, Hugging Face DETR weights (`hf_import`), ours (`.pth` / `.safetensors`, training
checkpoints included), saved from a DistributedDataParallel wrapper or not, detection or
panoptic, for the same categories or others (the class head is adapted by category name).
`load_model(path)` builds the model a checkpoint describes and calls it; the trainer's
`--init` calls it on the model of the train config. Reading and writing the files
themselves is `checkpoint_io`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from panoptic_detr.errors import CheckpointError, ConfigError
from panoptic_detr.model.checkpoint_io import MAX_LISTED, load_checkpoint, save_model
from panoptic_detr.model.config import RESNETS, ModelConfig, from_values

# The prefixes a panoptic model adds around DETR: its DETR part, and its mask layers (left at
# their fresh initialisation when the weights come from a detection checkpoint).
DETR_PREFIX = "detr."
MASK_PREFIXES = ("bbox_attention.", "mask_head.")


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
    shown = ", ".join(items[:MAX_LISTED])
    more = f" ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
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


def head_rows(old_categories, new_categories, num_classes: int, old_rows: int,
              sources: dict[str, list[str]] | None = None) -> dict[int, list[int]]:
    """new class index -> the old class indices its row starts from: the classes `sources`
    names for it (e.g. a stuff group's COCO members, from the class map), else the class of
    the same name. Names the old categories lack are skipped; classes with none are absent."""
    rows: dict[int, list[int]] = {}
    if old_categories is None or new_categories is None:
        return rows
    for cat in new_categories:
        if cat.id >= num_classes:
            continue
        names = (sources or {}).get(cat.name) or [cat.name]
        ids = [old.id for n in names if (old := old_categories.by_name.get(n)) is not None and old.id < old_rows]
        if ids:
            rows[cat.id] = list(dict.fromkeys(ids))
    return rows


def group_row(weights: Tensor, biases: Tensor) -> tuple[Tensor, Tensor]:
    """One class-head row for a group of classes (rows `weights` [n, d], `biases` [n]).

    The weight is the smallest vector that gives each member's own direction the member's
    own score (w . w_k = |w_k|^2 for every member k): the member row itself for one member,
    their mean for identical rows, about their sum for unrelated ones. So an embedding that
    one member clearly wins scores about as high on the group (on random official-layout
    heads the group wins in ~96% of such cases; the mean of the rows, which dilutes a member
    of a large group, in 74-91%: tests/model/test_registry_head_init.py). The bias is the
    members' mean. A linear row cannot be the union of its members; training refines it.
    """
    g = weights.double()
    if g.shape[0] == 1:
        return weights[0].clone(), biases[0].clone()
    coef = torch.linalg.pinv(g @ g.T) @ (g * g).sum(1)
    return (g.T @ coef).to(weights.dtype), biases.double().mean().to(biases.dtype)


def adapt_state_dict(sd: dict, num_classes: int, old_categories=None, new_categories=None,
                     sources: dict[str, list[str]] | None = None) -> dict:
    """`sd` with `class_embed` re-initialised for `num_classes` classes (+1 "no object").

    The no-object row (the last) is kept as the new last row. When both category lists are
    known, each new class starts from its rows in the old head (`head_rows`): one class's row
    is copied; several (a group of COCO classes) give `group_row`. Other rows keep
    nn.Linear's initialisation. Everything else in `sd` is unchanged (a
    shallow copy is returned).
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
    for new_id, old_ids in head_rows(old_categories, new_categories, num_classes, old_w.shape[0] - 1,
                                     sources).items():
        w, b = group_row(old_w[torch.tensor(old_ids)], old_b[torch.tensor(old_ids)])
        new_w[new_id], new_b[new_id] = w.to(new_w.dtype), b.to(new_b.dtype)
    out = dict(sd)
    out[wkey], out[bkey] = new_w, new_b
    return out


# --------------------------------------------------------------------------------------------
# Loading weights into a model


@dataclass
class LoadReport:
    """What `load_weights` did (for a log line)."""

    source_classes: int | None  # the checkpoint's class count (None: it has no class head)
    target_classes: int  # the model's
    source_categories: object | None  # the checkpoint's CategoryList, else COCO's for 250 / 91 classes
    adapted: bool  # the class head was re-initialised (rows carried over by name)
    kept_by_name: int  # classes whose rows were carried over by name
    fresh: tuple[str, ...]  # prefixes left at their initialisation (a detection checkpoint's mask head)
    # new class name -> the old class names its row started from (adapted heads)
    row_sources: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def checkpoint_state_dict(ckpt: dict) -> dict[str, Tensor]:
    """The state dict of a checkpoint (from `load_checkpoint`) in the official DETR layout:
    the `module.` of a DistributedDataParallel wrapper removed, Hugging Face names converted."""
    from panoptic_detr.model.hf_import import convert_hf_state_dict, is_hf_state_dict

    sd = ckpt["model"]
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if is_hf_state_dict(sd):
        sd = convert_hf_state_dict(sd)
    return sd


def checkpoint_categories(ckpt: dict, where: str):
    """The categories a checkpoint names (a CategoryList), else None."""
    from panoptic_detr.data.categories import CategoryList

    if not ckpt.get("categories"):
        return None
    return CategoryList.from_json(ckpt["categories"], where=f"{where}: categories")


def fit_head_layout(sd: dict, panoptic: bool) -> tuple[dict, tuple[str, ...]]:
    """`sd` keyed for a panoptic model (`panoptic`) or a detection model, and the prefixes
    the model keeps fresh: detection weights go under `detr.` (the mask layers stay fresh);
    panoptic weights give a detection model their `detr.` part."""
    sd_panoptic = is_panoptic_state_dict(sd)
    if panoptic and not sd_panoptic:
        return {f"{DETR_PREFIX}{k}": v for k, v in sd.items()}, MASK_PREFIXES
    if not panoptic and sd_panoptic:
        return {k[len(DETR_PREFIX):]: v for k, v in sd.items() if k.startswith(DETR_PREFIX)}, ()
    return sd, ()


def _same_categories(a, b) -> bool:
    return [(c.id, c.name) for c in a] == [(c.id, c.name) for c in b]


def load_weights(model: nn.Module, checkpoint: str | Path | dict, categories=None, strict: bool = True,
                 where: str | None = None, class_sources=None) -> LoadReport:
    """Load a checkpoint's weights into `model` (built already, for `categories` if given).

    checkpoint: a path (any file or folder `load_checkpoint` reads) or its dict.
    The class head is adapted (`adapt_state_dict`) when the class counts differ or both
    sides name different categories; the checkpoint's categories are its own, else COCO's
    for the official class counts (`data.categories.official_categories`). `class_sources`
    (new class name -> old class names, or a function of the checkpoint's categories giving
    that, e.g. `ClassMap.head_sources`) says which old rows
    start each new row; by default, the row of the same name. Strict: ONE CheckpointError
    lists every key that does not fit.
    """
    from panoptic_detr.data.categories import official_categories

    if isinstance(checkpoint, dict):
        ckpt, where = checkpoint, where or "checkpoint"
    else:
        ckpt, where = load_checkpoint(checkpoint), where or str(checkpoint)
    panoptic = hasattr(model, "mask_head")
    sd, fresh = fit_head_layout(checkpoint_state_dict(ckpt), panoptic)
    key = f"{DETR_PREFIX if panoptic else ''}class_embed.weight"
    target_classes = int(model.state_dict()[key].shape[0]) - 1
    if key not in sd and strict:
        raise CheckpointError(f"{where}: not a DETR checkpoint (no {key})")
    source_classes = int(sd[key].shape[0]) - 1 if key in sd else None
    source_cats = checkpoint_categories(ckpt, where)
    if source_cats is None and source_classes is not None:
        source_cats = official_categories(source_classes)
    recategorise = categories is not None and source_cats is not None and not _same_categories(categories, source_cats)
    adapted = source_classes is not None and (target_classes != source_classes or recategorise)
    kept, row_sources = 0, {}
    if callable(class_sources):  # e.g. ClassMap.head_sources: needs the checkpoint's categories
        class_sources = class_sources(source_cats) if source_cats is not None else None
    if adapted:
        sd = adapt_state_dict(sd, target_classes, source_cats, categories, class_sources)
        if source_cats is not None and categories is not None:
            rows = head_rows(source_cats, categories, target_classes, source_classes, class_sources)
            row_sources = {categories.by_id[i].name: [source_cats.by_id[j].name for j in js] for i, js in rows.items()}
            kept = sum(1 for n, js in row_sources.items() if js == [n])
    result = load_state_dict_checked(model, sd, strict=strict, where=where, fresh_prefixes=fresh)
    return LoadReport(source_classes, target_classes, source_cats, adapted, kept, fresh, row_sources, **result)


# --------------------------------------------------------------------------------------------
# Models


def load_model(path: str | Path, preset: str | None = None, num_classes: int | None = None, categories=None,
               strict: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """A model in eval mode from a checkpoint (.pth / .safetensors / HF file or folder).

    Architecture: the checkpoint's `config` if it has one, else `preset` if given, else inferred
    from the keys (see `infer_config`). `num_classes` (or `categories`, a CategoryList) other
    than the checkpoint's re-initialises the class head (`adapt_state_dict`). A detection
    checkpoint loaded with a panoptic preset initialises the DETR part; the mask head is new.
    `.categories` is `categories`, else the checkpoint's, else COCO's for the official class
    counts (250 panoptic, 91 detection). `.inference_defaults` (`model.inference_defaults`) are the
    checkpoint's inference settings, else the official ones for a file made elsewhere.
    """
    from panoptic_detr.data.categories import official_categories
    from panoptic_detr.model import inference_defaults
    from panoptic_detr.model.build import build_from_config

    where = str(path)
    ckpt = load_checkpoint(path)  # a model name resolves to its cached file (model.download)
    if ckpt.get("registry"):
        preset = preset or ckpt["registry"]["preset"]
        where = ckpt["registry"]["file"]
    has_config = isinstance(ckpt.get("config"), dict)
    if has_config:
        try:
            ckpt_cfg = from_values(ckpt["config"], where=f"{where}: config")
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    else:
        ckpt_cfg = infer_config(checkpoint_state_dict(ckpt), preset=preset, name_hint=where)

    cfg = ckpt_cfg
    if preset and not has_config:
        cfg = ModelConfig.from_preset(preset)
    elif preset:
        # A saved config describes the weights; the preset still picks the head (panoptic or not).
        cfg = ckpt_cfg.replace(masks=ModelConfig.from_preset(preset).masks)
    target_classes = num_classes if num_classes is not None else (
        categories.num_classes if categories is not None else ckpt_cfg.num_classes)
    cfg = cfg.replace(num_classes=target_classes)

    model = build_from_config(cfg)
    report = load_weights(model, ckpt, categories=categories, strict=strict, where=where)
    model.config = cfg
    if categories is not None:
        model.categories = categories
    elif target_classes == ckpt_cfg.num_classes:
        model.categories = report.source_categories if report.source_categories is not None else (
            official_categories(target_classes))
    else:
        model.categories = None
    model.inference_defaults = inference_defaults.from_checkpoint(ckpt, where)
    return model.to(device).eval()


__all__ = [
    "load_checkpoint", "load_model", "load_weights", "LoadReport", "save_model", "adapt_state_dict", "infer_config",
    "load_state_dict_checked", "is_panoptic_state_dict", "checkpoint_state_dict", "fit_head_layout", "head_rows", "group_row",
]
