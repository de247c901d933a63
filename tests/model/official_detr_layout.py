"""The key -> shape tables of the official DETR checkpoints, written out from known facts.

Deliberately independent of `panoptic_detr.model`: it lists what the files released with
the DETR paper contain (torchvision ResNet names under `backbone.0.body.`, the transformer of
`models/transformer.py`, the heads of `models/detr.py` and `models/segmentation.py`).
"""

from __future__ import annotations

RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def _bn(prefix: str, c: int) -> dict:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")}


def resnet_bottleneck_keys(depths: tuple[int, ...]) -> dict:
    keys = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        out = planes * 4
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            cin = inplanes if b == 0 else out
            keys[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
            keys.update(_bn(f"{p}.bn1", planes))
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update(_bn(f"{p}.bn2", planes))
            keys[f"{p}.conv3.weight"] = (out, planes, 1, 1)
            keys.update(_bn(f"{p}.bn3", out))
            if b == 0:  # every first block of a ResNet-50/101 stage has a projection shortcut
                keys[f"{p}.downsample.0.weight"] = (out, cin, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", out))
        inplanes = out
    return keys


def _mha(prefix: str, d: int) -> dict:
    return {f"{prefix}.in_proj_weight": (3 * d, d), f"{prefix}.in_proj_bias": (3 * d,),
            f"{prefix}.out_proj.weight": (d, d), f"{prefix}.out_proj.bias": (d,)}


def _linear(prefix: str, cout: int, cin: int) -> dict:
    return {f"{prefix}.weight": (cout, cin), f"{prefix}.bias": (cout,)}


def _ln(prefix: str, d: int) -> dict:
    return {f"{prefix}.weight": (d,), f"{prefix}.bias": (d,)}


def detr_keys(backbone: str = "resnet50", num_classes: int = 91, d: int = 256, ffn: int = 2048, enc: int = 6,
              dec: int = 6, queries: int = 100) -> dict:
    keys = {f"backbone.0.body.{k}": v for k, v in resnet_bottleneck_keys(RESNET_BLOCKS[backbone]).items()}
    for i in range(enc):
        p = f"transformer.encoder.layers.{i}"
        keys.update(_mha(f"{p}.self_attn", d))
        keys.update(_linear(f"{p}.linear1", ffn, d))
        keys.update(_linear(f"{p}.linear2", d, ffn))
        keys.update(_ln(f"{p}.norm1", d))
        keys.update(_ln(f"{p}.norm2", d))
    for i in range(dec):
        p = f"transformer.decoder.layers.{i}"
        keys.update(_mha(f"{p}.self_attn", d))
        keys.update(_mha(f"{p}.multihead_attn", d))
        keys.update(_linear(f"{p}.linear1", ffn, d))
        keys.update(_linear(f"{p}.linear2", d, ffn))
        for n in (1, 2, 3):
            keys.update(_ln(f"{p}.norm{n}", d))
    keys.update(_ln("transformer.decoder.norm", d))
    keys.update(_linear("class_embed", num_classes + 1, d))
    keys.update(_linear("bbox_embed.layers.0", d, d))
    keys.update(_linear("bbox_embed.layers.1", d, d))
    keys.update(_linear("bbox_embed.layers.2", 4, d))
    keys["query_embed.weight"] = (queries, d)
    keys["input_proj.weight"] = (d, 2048, 1, 1)
    keys["input_proj.bias"] = (d,)
    return keys


def detr_panoptic_keys(backbone: str = "resnet50", num_classes: int = 250) -> dict:
    keys = {f"detr.{k}": v for k, v in detr_keys(backbone, num_classes).items()}
    keys.update(_linear("bbox_attention.q_linear", 256, 256))
    keys.update(_linear("bbox_attention.k_linear", 256, 256))
    conv = {  # mask_head: (out, in, k)
        "lay1": (264, 264, 3), "lay2": (128, 264, 3), "lay3": (64, 128, 3), "lay4": (32, 64, 3),
        "lay5": (16, 32, 3), "out_lay": (1, 16, 3),
        "adapter1": (128, 1024, 1), "adapter2": (64, 512, 1), "adapter3": (32, 256, 1),
    }
    for name, (cout, cin, k) in conv.items():
        keys[f"mask_head.{name}.weight"] = (cout, cin, k, k)
        keys[f"mask_head.{name}.bias"] = (cout,)
    for i, c in enumerate((264, 128, 64, 32, 16), start=1):
        keys.update(_ln(f"mask_head.gn{i}", c))
    return keys


# Known totals: 265 backbone keys for ResNet-50 (520 for ResNet-101), 72 encoder, 110 decoder
# (incl. the final norm), 11 head keys; the panoptic head adds 32.
EXPECTED_COUNTS = {"detr-r50": 458, "detr-r101": 713, "detr-r50-panoptic": 490, "detr-r101-panoptic": 745}
