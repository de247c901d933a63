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


@dataclass
class EvalConfig:
    every: int = 1  # epochs; 0: only at the end; -1: never
    pq: bool = True  # PQ through evaluation.evaluate_model (panoptic models)
    loss: bool = True  # losses on the val split
    threshold: float = 0.85
    dedup: float | None = None  # duplicate suppression (Predictor's `dedup`); None: off
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

    def validate(self) -> "TrainConfig":
        if self.stage not in STAGES:
            raise ConfigError(f"stage: expected one of {', '.join(STAGES)}, got '{self.stage}'")
        if self.optim.clip_mode not in ("global", "per_group"):
            raise ConfigError(f"optim.clip_mode: expected global or per_group, got '{self.optim.clip_mode}'")
        if self.optim.schedule not in ("step", "cosine"):
            raise ConfigError(f"optim.schedule: expected step or cosine, got '{self.optim.schedule}'")
        if self.amp not in ("auto", "bf16", "fp16", "none"):
            raise ConfigError(f"amp: expected auto, bf16, fp16 or none, got '{self.amp}'")
        for name in ("epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.data.batch_size < 1:
            raise ConfigError(f"data.batch_size: must be at least 1, got {self.data.batch_size}")
        if self.data.workers < 0:
            raise ConfigError(f"data.workers: must be >= 0, got {self.data.workers}")
        if not self.data.scales:
            raise ConfigError("data.scales: needs at least one size")
        if not 0.0 <= self.eval.threshold < 1.0:
            raise ConfigError(f"eval.threshold: must be in [0, 1), got {self.eval.threshold}")
        if self.eval.dedup is not None and not 0.0 <= self.eval.dedup < 1.0:
            raise ConfigError(f"eval.dedup: must be in [0, 1) or null, got {self.eval.dedup}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    cfg = from_dict(TrainConfig, values, where=f"train config '{preset_or_yaml}'")
    return cfg.validate()


def train_config_from_dict(values: dict) -> TrainConfig:
    return from_dict(TrainConfig, values, where="train config").validate()
