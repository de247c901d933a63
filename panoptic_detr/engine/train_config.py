"""`TrainConfig`: everything `panoptic-detr train` does, filled from `configs/train/*.yaml`.

Presets: `r50-panoptic` (the official DETR recipe), `r50` (its detection variant), `tiny`
(a small CPU recipe). `load_train_config(preset_or_yaml, overrides)` merges a preset, its
`base` chain and `key=value` overrides (dotted keys for nested sections, YAML values).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from panoptic_detr.config import _deep_update, from_dict, resolve_preset
from panoptic_detr.errors import ConfigError
from panoptic_detr.model.inference_defaults import GEOMETRIES, InferenceDefaults

STAGES = ("boxes", "masks", "joint")


@dataclass
class DataConfig:
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 2  # per process
    workers: int = 2
    drop_last: bool = True  # ignored when the split has fewer images than a batch
    # DETR augmentation: shorter side to one of `scales` (longer <= max_size), or resize to
    # one of `crop_resize`, crop a random [crop_min, crop_max] region, then `scales`.
    scales: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    max_size: int = 1333
    crop_resize: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_min: int = 384
    crop_max: int = 600
    hflip: float = 0.5
    eval_size: int = 800
    eval_max_size: int = 1333


@dataclass
class OptimConfig:
    lr: float = 1e-4
    lr_backbone: float = 1e-5  # 0 freezes the backbone
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # gradient-norm clipping at clip_max_norm (0: off); "global" clips all gradients
    # together (official DETR), "per_group" clips each module group separately
    # (backbone, transformer, class_embed, bbox_embed, query_embed, input_proj,
    # bbox_attention, mask_head).
    clip_max_norm: float = 0.1
    clip_mode: str = "global"
    freeze_backbone_stem: bool = True  # conv1/bn1/layer1 frozen, as DETR with a pretrained backbone
    # lr multipliers per module group (names as for clip_mode), e.g. {bbox_attention: 10}:
    # the mask attention's softmax runs over heads x h x w, so its gradients are tiny and
    # from scratch it needs far more steps than the rest at the same lr.
    lr_mult: dict[str, float] = field(default_factory=dict)
    schedule: str = "step"  # step: x lr_drop_factor at epoch lr_drop; cosine: to 0 at the end
    lr_drop: int = 200
    lr_drop_factor: float = 0.1
    warmup_steps: int = 0
    warmup_factor: float = 0.001  # lr multiplier at step 0 of the warm-up


@dataclass
class LossConfig:
    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    ce: float = 1.0
    bbox: float = 5.0
    giou: float = 2.0
    mask: float = 1.0
    dice: float = 1.0
    eos_coef: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    aux_loss: bool = True
    # per image, thing classes not annotated in it (per-class exports) leave the class
    # softmax of its unmatched queries: no gradient to their logits from queries that may
    # sit on an unlabelled object (LVIS's federated loss for DETR, docs/DESIGN.md)
    partial_labels: bool = False


@dataclass
class EvalConfig:
    every: int = 1  # epochs; 0: only at the end; -1: never
    pq: bool = True  # PQ through evaluation.evaluate_model (panoptic models)
    loss: bool = True  # losses on the val split
    threshold: float = 0.85
    dedup: float | None = None  # duplicate suppression (Predictor's `dedup`); None: off
    geometry: str = "aligned"  # mask upsampling (engine.inference): aligned | official
    batch_size: int = 2
    max_images: int = 0  # 0: the whole split


@dataclass
class TrainConfig:
    data_dir: str = ""
    out_dir: str = ""
    model: str = "r50-panoptic"  # a model preset name or YAML file
    model_overrides: dict[str, Any] = field(default_factory=dict)
    stage: str = "joint"  # boxes | masks | joint
    init: str | None = None  # checkpoint to start from (class head adapted)
    epochs: int = 300
    max_steps: int = 0  # stop after this many optimizer steps in total (0: no limit)
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 if supported else fp16, CUDA only) | bf16 | fp16 | none
    cudnn_benchmark: bool = True
    # torch.use_deterministic_algorithms (and cuDNN / cuBLAS settings): bit-identical CUDA runs, slower
    deterministic: bool = False
    channels_last: bool = False  # backbone convolutions in channels_last memory format
    find_unused_parameters: bool = False
    log_every: int = 20  # steps between metrics.jsonl records
    checkpoint_every: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    checkpoint_epochs: int = 1  # checkpoint at the end of every N-th epoch (and the last)
    keep_epoch_checkpoints: bool = False  # also keep checkpoint_epochNNNN.pth
    progress: bool = True
    # per-stage changes applied before command-line overrides, e.g. {masks: {epochs: 25}}
    stage_overrides: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self, where: str = "train config", overridden: frozenset[str] = frozenset()) -> "TrainConfig":
        """Self, or a ConfigError naming `where` (the file or preset) and the key of the first
        value out of range. Every numeric field is checked (NaN and infinities included), so
        a bad value stops `train` before anything is written. Keys in `overridden` were set
        on the command line and are reported as such."""

        def fail(key: str, problem: str, value) -> None:
            src = f"{where} (set on the command line)" if _overridden(key, overridden) else where
            raise ConfigError(f"{src}: {key}: {problem}, got {value!r}")

        choices = {"stage": STAGES, "amp": ("auto", "bf16", "fp16", "none"),
                   "optim.clip_mode": ("global", "per_group"), "optim.schedule": ("step", "cosine"),
                   "eval.geometry": GEOMETRIES}
        for key, allowed in choices.items():
            if _get(self, key) not in allowed:
                fail(key, f"expected one of {', '.join(allowed)}", _get(self, key))
        for key, lo, hi, kinds in NUMERIC_RANGES:
            values = _get(self, key)
            items = values.items() if isinstance(values, dict) else [(None, values)]
            if isinstance(values, (list, tuple)):
                if not values:
                    fail(key, "needs at least one value", values)
                items = list(enumerate(values))
            for sub, v in items:
                name = key if sub is None else f"{key}.{sub}" if isinstance(values, dict) else f"{key}[{sub}]"
                problem = _range_problem(v, lo, hi, kinds)
                if problem:
                    fail(name, problem, v)
        if self.data.crop_max < self.data.crop_min:
            if _overridden("data.crop_min", overridden):
                fail("data.crop_min", f"must be at most data.crop_max ({self.data.crop_max})", self.data.crop_min)
            fail("data.crop_max", f"must be at least data.crop_min ({self.data.crop_min})", self.data.crop_max)
        if self.eval.dedup is not None:
            problem = _range_problem(self.eval.dedup, 0.0, (1.0, "open"), float)
            if problem:
                fail("eval.dedup", problem + " (or null: off)", self.eval.dedup)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def inference_defaults(self) -> InferenceDefaults:
        """The settings the run evaluates with, which its model files carry (`model.inference_defaults`)."""
        return InferenceDefaults(threshold=self.eval.threshold, dedup=self.eval.dedup, short_side=self.data.eval_size,
                                 max_size=self.data.eval_max_size, geometry=self.eval.geometry)


#: (key, lowest, highest, type): every numeric field's valid range. A bound given as
#: (value, "open") excludes the value; None: unbounded. Lists are checked item by item,
#: mappings value by value.
NUMERIC_RANGES: tuple = (
    ("epochs", 1, None, int), ("max_steps", 0, None, int), ("seed", 0, None, int),
    ("log_every", 1, None, int), ("checkpoint_every", 0, None, int), ("checkpoint_epochs", 1, None, int),
    ("data.batch_size", 1, None, int), ("data.workers", 0, None, int), ("data.scales", 1, None, int),
    ("data.max_size", 1, None, int), ("data.crop_resize", 1, None, int), ("data.crop_min", 1, None, int),
    ("data.crop_max", 1, None, int), ("data.hflip", 0.0, 1.0, float), ("data.eval_size", 1, None, int),
    ("data.eval_max_size", 1, None, int),
    ("optim.lr", 0.0, None, float), ("optim.lr_backbone", 0.0, None, float),
    ("optim.weight_decay", 0.0, None, float), ("optim.betas", 0.0, (1.0, "open"), float),
    ("optim.clip_max_norm", 0.0, None, float), ("optim.lr_mult", 0.0, None, float),
    ("optim.lr_drop", 0, None, int), ("optim.lr_drop_factor", 0.0, None, float),
    ("optim.warmup_steps", 0, None, int), ("optim.warmup_factor", (0.0, "open"), 1.0, float),
    ("loss.cost_class", 0.0, None, float), ("loss.cost_bbox", 0.0, None, float),
    ("loss.cost_giou", 0.0, None, float), ("loss.ce", 0.0, None, float), ("loss.bbox", 0.0, None, float),
    ("loss.giou", 0.0, None, float), ("loss.mask", 0.0, None, float), ("loss.dice", 0.0, None, float),
    ("loss.eos_coef", 0.0, 1.0, float), ("loss.focal_alpha", 0.0, 1.0, float), ("loss.focal_gamma", 0.0, None, float),
    ("eval.every", -1, None, int), ("eval.threshold", 0.0, (1.0, "open"), float), ("eval.batch_size", 1, None, int),
    ("eval.max_images", 0, None, int),
)


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _overridden(key: str, overridden: frozenset[str]) -> bool:
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "[") for k in overridden)


def _range_problem(v, lo, hi, kind) -> str | None:
    """What is wrong with `v` for the range [lo, hi] of `kind` (int or float), or None."""
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
        return f"expected {'an integer' if kind is int else 'a number'}"
    if not math.isfinite(v):
        return "expected a finite number"
    lo_v, lo_open = (lo[0], True) if isinstance(lo, tuple) else (lo, False)
    hi_v, hi_open = (hi[0], True) if isinstance(hi, tuple) else (hi, False)
    if (lo_v is not None and (v < lo_v or (lo_open and v == lo_v))) or \
            (hi_v is not None and (v > hi_v or (hi_open and v == hi_v))):
        if hi_v is None:
            return f"must be {'>' if lo_open else '>='} {lo_v}"
        return f"must be in {'(' if lo_open else '['}{lo_v}, {hi_v}{')' if hi_open else ']'}"
    return None


def _flat_keys(d: dict, prefix: str = "") -> frozenset[str]:
    out: set[str] = set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= _flat_keys(v, key + ".")
        else:
            out.add(key)
    return frozenset(out)


def parse_overrides(items: list[str] | None) -> dict:
    """`["optim.lr=1e-4", "data.scales=[256,288]"]` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{p}' is not a section")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            _deep_update(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def load_train_config(preset_or_yaml: str = "r50-panoptic", overrides: dict | None = None) -> TrainConfig:
    values = resolve_preset("train", preset_or_yaml)
    stage = (overrides or {}).get("stage", values.get("stage", "joint"))
    per_stage = (values.get("stage_overrides") or {}).get(stage)
    if per_stage:
        if not isinstance(per_stage, dict):
            raise ConfigError(f"train config '{preset_or_yaml}': stage_overrides.{stage}: expected a mapping")
        _deep_update(values, per_stage)
    if overrides:
        _deep_update(values, overrides)
    where = f"train config '{preset_or_yaml}'"
    cfg = from_dict(TrainConfig, values, where=where)
    return cfg.validate(where, _flat_keys(overrides or {}))


def train_config_from_dict(values: dict) -> TrainConfig:
    return from_dict(TrainConfig, values, where="train config").validate()
