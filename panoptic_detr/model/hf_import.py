"""Convert Hugging Face transformers DETR state dicts (`DetrForSegmentation` /
`DetrForObjectDetection`) to the official DETR layout used here.

Both generations of HF names are understood:
- transformers 4.x (and the files on the Hub): `model.backbone.conv_encoder.model.*` (a timm
  ResNet, already torchvision-named), `self_attn.{q,k,v,out}_proj`, `fc1`/`fc2`,
  `mask_head.lay1...`, `bbox_attention.q_linear`;
- transformers 5.x in memory: `model.backbone.model.*`, `o_proj`, `mlp.fc1`,
  `mask_head.conv1.conv`, `mask_head.fpn_stages.N.*`, `bbox_attention.q_proj`, and the
  transformers ResNet backbone (`embedder.embedder.convolution`, `encoder.stages.S.layers.B...`).
Separate q/k/v projections are packed into `in_proj_weight` / `in_proj_bias` (q, k, v order,
as nn.MultiheadAttention). Keys that match no rule are kept unchanged, so that strict loading
reports them.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from panoptic_detr.model.config import ModelConfig

_HF_MARKERS = ("class_labels_classifier", "query_position_embeddings", "input_projection", "bbox_predictor")


def is_hf_state_dict(state_dict: dict) -> bool:
    return any(m in k for k in state_dict for m in _HF_MARKERS)


def _resnet_name(name: str) -> str:
    """Backbone parameter name (after the backbone prefix) -> torchvision ResNet name."""
    m = re.fullmatch(r"embedder\.embedder\.(convolution|normalization)\.(.+)", name)
    if m:
        return ("conv1." if m[1] == "convolution" else "bn1.") + m[2]
    m = re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)", name)
    if not m:
        return name  # timm names are torchvision names already
    stage, block, rest = int(m[1]), m[2], m[3]
    prefix = f"layer{stage + 1}.{block}."
    m2 = re.fullmatch(r"shortcut\.(convolution|normalization)\.(.+)", rest)
    if m2:
        return prefix + ("downsample.0." if m2[1] == "convolution" else "downsample.1.") + m2[2]
    m2 = re.fullmatch(r"layer\.(\d+)\.(convolution|normalization)\.(.+)", rest)
    if m2:
        i = int(m2[1]) + 1
        return prefix + (f"conv{i}." if m2[2] == "convolution" else f"bn{i}.") + m2[3]
    return prefix + rest


_LAYER_RENAMES = {
    "encoder": [("self_attn_layer_norm", "norm1"), ("final_layer_norm", "norm2")],
    "decoder": [("self_attn_layer_norm", "norm1"), ("encoder_attn_layer_norm", "norm2"),
                ("final_layer_norm", "norm3"), ("encoder_attn", "multihead_attn")],
}

_MASK_HEAD_V5 = [
    ("conv1.conv", "lay1"), ("conv1.norm", "gn1"), ("conv2.conv", "lay2"), ("conv2.norm", "gn2"),
    ("fpn_stages.0.fpn_adapter", "adapter1"), ("fpn_stages.0.refine.conv", "lay3"), ("fpn_stages.0.refine.norm", "gn3"),
    ("fpn_stages.1.fpn_adapter", "adapter2"), ("fpn_stages.1.refine.conv", "lay4"), ("fpn_stages.1.refine.norm", "gn4"),
    ("fpn_stages.2.fpn_adapter", "adapter3"), ("fpn_stages.2.refine.conv", "lay5"), ("fpn_stages.2.refine.norm", "gn5"),
    ("output_conv", "out_lay"),
]


def _detr_name(name: str) -> str:
    """A DETR-part HF name (without the `detr.` prefix of the segmentation model) -> ours."""
    for bb in ("model.backbone.conv_encoder.model.", "model.backbone.model."):
        if name.startswith(bb):
            return "backbone.0.body." + _resnet_name(name[len(bb):])
    simple = {
        "model.input_projection.": "input_proj.",
        "model.query_position_embeddings.": "query_embed.",
        "model.decoder.layernorm.": "transformer.decoder.norm.",
        "class_labels_classifier.": "class_embed.",
        "bbox_predictor.": "bbox_embed.",
    }
    for old, new in simple.items():
        if name.startswith(old):
            return new + name[len(old):]
    m = re.fullmatch(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)", name)
    if m:
        part, idx, rest = m[1], m[2], m[3]
        rest = re.sub(r"^(mlp\.)?fc1\.", "linear1.", rest)
        rest = re.sub(r"^(mlp\.)?fc2\.", "linear2.", rest)
        rest = rest.replace(".o_proj.", ".out_proj.")
        for old, new in _LAYER_RENAMES[part]:
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
        return f"transformer.{part}.layers.{idx}.{rest}"
    return name


def _mask_name(name: str) -> str:
    if name.startswith("bbox_attention."):
        return name.replace(".q_proj.", ".q_linear.").replace(".k_proj.", ".k_linear.")
    if name.startswith("mask_head."):
        rest = name[len("mask_head."):]
        for old, new in _MASK_HEAD_V5:
            if rest.startswith(old + "."):
                return "mask_head." + new + rest[len(old):]
    return name


def convert_hf_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF DETR state dict -> official DETR layout (`detr.` prefix kept for segmentation models)."""
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # frozen batch norm has no counter
        if key.startswith("detr."):
            new = "detr." + _detr_name(key[len("detr."):])
        elif key.startswith(("mask_head.", "bbox_attention.")):
            new = _mask_name(key)
        else:
            new = _detr_name(key)
        renamed[new] = value

    # Pack q/k/v projections of every attention layer into in_proj_weight / in_proj_bias.
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for key, value in renamed.items():
        m = re.fullmatch(r"(.+\.(?:self_attn|multihead_attn))\.([qkv])_proj\.(weight|bias)", key)
        if m:
            pending.setdefault(f"{m[1]}.in_proj_{m[3]}", {})[m[2]] = value
        else:
            out[key] = value
    for key, parts in pending.items():
        if set(parts) != {"q", "k", "v"}:
            # Incomplete: keep the pieces under recognisable names for the error message.
            for p, v in parts.items():
                out[key.replace("in_proj_", f"{p}_proj.")] = v
            continue
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def config_from_hf(hf_config, masks: bool) -> ModelConfig:
    """A ModelConfig matching a transformers `DetrConfig` (ResNet backbones only)."""
    bc = getattr(hf_config, "backbone_config", None)
    backbone = None
    if bc is not None and getattr(bc, "model_type", "") == "resnet":
        depths = tuple(bc.depths)
        kind = "bottleneck" if bc.layer_type == "bottleneck" else "basic"
        from panoptic_detr.model.config import RESNETS

        backbone = next((n for n, (k, d) in RESNETS.items() if k == kind and d == depths), None)
    else:
        name = getattr(bc, "backbone", None) or getattr(hf_config, "backbone", None) or "resnet50"
        backbone = name if name in ("resnet18", "resnet34", "resnet50", "resnet101") else None
    if backbone is None:
        raise ValueError("config_from_hf: only ResNet-18/34/50/101 backbones are supported")
    return ModelConfig(
        backbone=backbone,
        dilation=bool(getattr(hf_config, "dilation", False)),
        hidden_dim=hf_config.d_model,
        nheads=hf_config.encoder_attention_heads,
        enc_layers=hf_config.encoder_layers,
        dec_layers=hf_config.decoder_layers,
        dim_feedforward=hf_config.encoder_ffn_dim,
        dropout=float(hf_config.dropout),
        num_queries=hf_config.num_queries,
        num_classes=hf_config.num_labels,
        masks=masks,
        aux_loss=bool(hf_config.auxiliary_loss),
    )


def model_from_hf(hf_model):
    """Our model (eval mode) with the weights of a transformers DetrForSegmentation / DetrForObjectDetection."""
    from panoptic_detr.model.build import build_model
    from panoptic_detr.model.checkpoint import load_state_dict_checked

    masks = hasattr(hf_model, "mask_head")
    model = build_model(config_from_hf(hf_model.config, masks))
    load_state_dict_checked(model, convert_hf_state_dict(hf_model.state_dict()), where=type(hf_model).__name__)
    return model
