"""`build_model`: a DETR / DETRsegm from a preset name, a YAML path, a dict or a ModelConfig."""

from __future__ import annotations

from torch import nn

from panoptic_detr.errors import ConfigError
from panoptic_detr.model.backbone import build_backbone
from panoptic_detr.model.config import ModelConfig, from_values
from panoptic_detr.model.detr import DETR
from panoptic_detr.model.segmentation import DETRsegm
from panoptic_detr.model.transformer import Transformer


def resolve_config(preset_or_config: str | dict | ModelConfig = "r50-panoptic", **overrides) -> ModelConfig:
    if isinstance(preset_or_config, ModelConfig):
        return preset_or_config.replace(**overrides) if overrides else preset_or_config
    if isinstance(preset_or_config, dict):
        return from_values({**preset_or_config, **overrides})
    if isinstance(preset_or_config, str):
        return ModelConfig.from_preset(preset_or_config, **overrides)
    raise ConfigError(f"build_model: expected a preset name, a dict or a ModelConfig, got "
                      f"{type(preset_or_config).__name__}")


def build_from_config(cfg: ModelConfig, train_backbone: bool = True) -> nn.Module:
    """The freshly initialised module (train mode, no `.config` attached)."""
    backbone = build_backbone(cfg.backbone, cfg.dilation, cfg.frozen_bn, cfg.hidden_dim, train_backbone,
                              cfg.backbone_width)
    transformer = Transformer(cfg.hidden_dim, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward,
                              cfg.dropout, return_intermediate_dec=True)
    detr = DETR(backbone, transformer, cfg.num_classes, cfg.num_queries, aux_loss=cfg.aux_loss)
    return DETRsegm(detr, mask_attention=cfg.mask_attention) if cfg.masks else detr


def build_model(preset_or_config: str | dict | ModelConfig = "r50-panoptic", categories=None,
                **overrides) -> nn.Module:
    """A model in eval mode with `.config` (ModelConfig) and `.categories` (CategoryList or None).

    `overrides` are ModelConfig fields (`num_classes=...`, `num_queries=...`). With
    `categories` (a CategoryList) and no explicit num_classes, num_classes = categories.num_classes.
    """
    if categories is not None and "num_classes" not in overrides:
        overrides["num_classes"] = categories.num_classes
    cfg = resolve_config(preset_or_config, **overrides)
    if categories is not None and categories.num_classes > cfg.num_classes:
        raise ConfigError(f"build_model: categories need num_classes >= {categories.num_classes}, "
                          f"got {cfg.num_classes}")
    model = build_from_config(cfg)
    model.config = cfg
    model.categories = categories
    return model.eval()


def set_speed_options(model: nn.Module, fold_frozen_bn: bool | None = None, fast_dropout: bool | None = None) -> None:
    """Switch the model's CPU speed choices (None leaves one as it is).

    fold_frozen_bn: fold each FrozenBatchNorm2d into the conv before it on every forward
        (`backbone.conv_bn`); False: a separate pass, as the official DETR.
    fast_dropout: the cheap dropout mask (`model/dropout.py`) and the training attention
        that uses it; False: torch's `F.dropout` and attention, as the official DETR.
    Both change float rounding / random masks only, never the weights; on by default.
    The benches pass False to time the official choices.
    """
    from panoptic_detr.model.backbone import FrozenBatchNorm2d
    from panoptic_detr.model.dropout import Dropout

    for module in model.modules():
        if fold_frozen_bn is not None and isinstance(module, FrozenBatchNorm2d):
            module.fold = fold_frozen_bn
        if fast_dropout is not None and isinstance(module, Dropout):
            module.fast = fast_dropout
