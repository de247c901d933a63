"""`ModelConfig`: the architecture of a DETR model, filled from `configs/model/*.yaml`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from panoptic_detr.errors import ConfigError

# name -> (block type, blocks per stage). Basic blocks have expansion 1, bottlenecks 4.
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}

MASK_ATTENTION = ("softmax", "density")


@dataclass
class ModelConfig:
    """Everything that decides the shapes and the computation of a DETR model.

    The defaults are the official DETR-R50 detection model.
    """

    backbone: str = "resnet50"
    dilation: bool = False  # DC5: layer4 dilated instead of strided (stride 16 features)
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_queries: int = 100
    num_classes: int = 91  # "no object" is index num_classes
    masks: bool = False  # panoptic mask head (DETRsegm)
    aux_loss: bool = True  # return aux_outputs for the earlier decoder layers
    frozen_bn: bool = True  # FrozenBatchNorm2d everywhere in the backbone, as the official models
    backbone_width: int = 64  # ResNet stem channels (64 = torchvision); narrower for small CPU models
    # The mask head's per-query attention maps: "softmax" = probabilities over heads x h x w
    # (official; a uniform map is 1/(nheads*h*w), ~1e-3, beside image features of ~1, so a
    # fresh mask head cannot tell queries apart and learns for tens of thousands of steps);
    # "density" = the same maps times nheads x the image's valid positions (uniform = 1),
    # which the mask head uses from the first steps. Same weights and keys either way.
    mask_attention: str = "softmax"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"model config: {msg}")

        if self.backbone not in RESNETS:
            raise bad(f"unknown backbone '{self.backbone}'; known: {', '.join(RESNETS)}")
        if self.dilation and RESNETS[self.backbone][0] == "basic":
            # torchvision's BasicBlock has no dilation either; no official model uses it.
            raise bad(f"dilation (DC5) needs a bottleneck backbone, not {self.backbone}")
        for name in ("backbone_width", "hidden_dim", "nheads", "enc_layers", "dec_layers", "dim_feedforward", "num_queries", "num_classes"):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mask_attention not in MASK_ATTENTION:
            raise bad(f"mask_attention must be one of {', '.join(MASK_ATTENTION)}, got {self.mask_attention!r}")
        if self.hidden_dim % self.nheads:
            raise bad(f"hidden_dim {self.hidden_dim} is not divisible by nheads {self.nheads}")
        if self.hidden_dim % 2:
            raise bad(f"hidden_dim {self.hidden_dim} must be even (half x, half y positional features)")
        if not 0.0 <= self.dropout < 1.0:
            raise bad(f"dropout must be in [0, 1), got {self.dropout}")
        if self.masks:
            # Every mask-head conv is followed by GroupNorm(8, channels).
            widths = [self.hidden_dim + self.nheads] + [self.hidden_dim // f for f in (2, 4, 8, 16)]
            if any(w % 8 for w in widths) or self.hidden_dim % 16:
                raise bad(
                    f"the mask head needs hidden_dim + nheads and hidden_dim/2..hidden_dim/16 divisible by 8 "
                    f"(GroupNorm with 8 groups); got hidden_dim {self.hidden_dim}, nheads {self.nheads}"
                )

    @property
    def block(self) -> str:
        return RESNETS[self.backbone][0]

    @property
    def depths(self) -> tuple[int, ...]:
        return RESNETS[self.backbone][1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "ModelConfig":
        return from_values({**self.to_dict(), **changes})

    @classmethod
    def from_preset(cls, name_or_path: str, **overrides) -> "ModelConfig":
        from panoptic_detr.config import resolve_preset

        values = resolve_preset("model", name_or_path)
        values.update(overrides)
        return from_values(values, where=f"model preset '{name_or_path}'")


def from_values(values: dict, where: str = "model config") -> ModelConfig:
    """A ModelConfig from a plain dict, with unknown or ill-typed keys reported as ConfigError."""
    from panoptic_detr.config import from_dict

    return from_dict(ModelConfig, dict(values), where=where)
