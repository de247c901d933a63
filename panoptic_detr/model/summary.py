"""A readable summary of a model: structure, parameter counts per part and the tensor shapes
that flow through it, measured by running a forward pass with hooks (`model-info`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _count(modules: list[nn.Module]) -> tuple[int, int]:
    seen: set[int] = set()
    trainable = frozen = 0
    for m in modules:
        for p in m.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
    return trainable, frozen


def structure(model: nn.Module) -> list[tuple[str, str, int]]:
    """[(state-dict prefix, description, number of keys), ...] of the model's main parts."""
    detr = getattr(model, "detr", model)
    p = "detr." if detr is not model else ""
    cfg = getattr(model, "config", None)
    body = detr.backbone[0].body
    depths = "/".join(str(len(getattr(body, f"layer{i}"))) for i in range(1, 5))
    block = type(body.layer1[0]).__name__
    enc, dec = detr.transformer.encoder, detr.transformer.decoder
    d = detr.transformer.d_model
    parts = [
        (f"{p}backbone.0.body", f"ResNet ({depths} {block} blocks{', layer4 dilated' if cfg and cfg.dilation else ''}, "
                                f"{type(body.bn1).__name__})"),
        (f"{p}transformer.encoder", f"{enc.num_layers} x post-norm encoder layer (d {d}, {detr.transformer.nhead} heads, "
                                    f"FFN {enc.layers[0].linear1.out_features if enc.num_layers else 0})"),
        (f"{p}transformer.decoder", f"{dec.num_layers} x post-norm decoder layer + shared final norm"),
        (f"{p}input_proj", f"1x1 conv {detr.input_proj.in_channels} -> {d}"),
        (f"{p}query_embed", f"{detr.num_queries} learned queries x {d}"),
        (f"{p}class_embed", f"Linear {d} -> {detr.class_embed.out_features} (last = no object)"),
        (f"{p}bbox_embed", "MLP 3 layers -> 4 (sigmoid cx, cy, w, h)"),
    ]
    if hasattr(model, "mask_head"):
        mh = model.mask_head
        parts += [
            ("bbox_attention", f"attention maps, {model.bbox_attention.num_heads} heads, softmax over heads x h x w"),
            ("mask_head", f"3x3 convs + GroupNorm(8): {mh.lay1.in_channels} -> {mh.lay1.out_channels} -> {mh.lay2.out_channels} -> "
                          f"{mh.lay3.out_channels} -> {mh.lay4.out_channels} -> {mh.lay5.out_channels} -> 1, "
                          f"adapters from {mh.adapter1.in_channels}/{mh.adapter2.in_channels}/{mh.adapter3.in_channels}"),
        ]
    keys = list(model.state_dict())
    return [(prefix, desc, sum(1 for k in keys if k.startswith(prefix + "."))) for prefix, desc in parts]


def parameter_groups(model: nn.Module) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """[(group, [(part, trainable, frozen), ...]), ...] for backbone / transformer / heads / mask head."""
    detr = getattr(model, "detr", model)
    groups = [
        ("backbone", [("resnet (conv1, bn1, layer1 frozen)", *_count([detr.backbone]))]),
        ("transformer", [("encoder", *_count([detr.transformer.encoder])),
                         ("decoder (+ shared final norm)", *_count([detr.transformer.decoder]))]),
        ("heads", [("input_proj", *_count([detr.input_proj])), ("query_embed", *_count([detr.query_embed])),
                   ("class_embed", *_count([detr.class_embed])), ("bbox_embed", *_count([detr.bbox_embed]))]),
    ]
    if hasattr(model, "mask_head"):
        groups.append(("mask head", [("bbox_attention", *_count([model.bbox_attention])),
                                     ("mask_head", *_count([model.mask_head]))]))
    return groups


@dataclass
class _Probe:
    shapes: dict[str, list[int]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def hook(self, name: str, batch_dim_sums: bool = False):
        def fn(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            shape = list(out.shape)
            if name in self.shapes and batch_dim_sums:
                # The mask decoder runs in chunks of queries: report the total.
                self.shapes[name][0] += shape[0]
            else:
                self.shapes[name] = shape
        return fn


def trace_shapes(model: nn.Module, size: tuple[int, int], batch: int = 1) -> tuple[list[tuple[str, str]], dict]:
    """Run one forward on a random [batch, 3, H, W] input; -> ([(stage, shape text)], outputs)."""
    detr = getattr(model, "detr", model)
    probe = _Probe()
    body = detr.backbone[0].body
    watched = [(body.layer1, "layer1"), (body.layer2, "layer2"), (body.layer3, "layer3"), (body.layer4, "layer4"),
               (detr.input_proj, "input_proj"), (detr.transformer.encoder, "encoder"),
               (detr.transformer.decoder, "decoder")]
    chunked = set()
    if hasattr(model, "mask_head"):
        mh = model.mask_head
        watched += [(model.bbox_attention, "bbox_attention"), (mh.adapter1, "adapter1"), (mh.adapter2, "adapter2"),
                    (mh.adapter3, "adapter3")]
        for i in range(1, 6):
            watched.append((getattr(mh, f"gn{i}"), f"lay{i}"))
            chunked.add(f"lay{i}")
        watched.append((mh.out_lay, "out_lay"))
        chunked.add("out_lay")
    handles = [m.register_forward_hook(probe.hook(n, n in chunked)) for m, n in watched]
    device = next(model.parameters()).device
    h, w = size
    # The official path calls every module hooked above (the padding-invariant one bypasses
    # some); shapes are the same in both.
    invariant = getattr(model, "padding_invariant", False)
    if invariant:
        model.set_padding_invariant(False)
    try:
        with torch.no_grad():
            out = model(torch.randn(batch, 3, h, w, device=device))
    finally:
        for hd in handles:
            hd.remove()
        if invariant:
            model.set_padding_invariant(True)

    s = probe.shapes
    strides = detr.backbone.strides
    rows = [("image", f"{[batch, 3, h, w]}")]
    for i in range(4):
        rows.append((f"backbone layer{i + 1} (stride {strides[i]})", str(s[f"layer{i + 1}"])))
    fh, fw = s["input_proj"][-2:]
    d = s["input_proj"][1]
    rows += [
        ("input_proj (1x1 conv)", str(s["input_proj"])),
        ("tokens", f"{fh}x{fw} = {fh * fw} tokens x {d}"),
        ("encoder output (memory)", str(s["encoder"])),
        ("decoder output (all layers)", f"{s['decoder'][0]} layers x {s['decoder'][1:]}"),
        ("pred_logits", str(list(out["pred_logits"].shape))),
        ("pred_boxes", str(list(out["pred_boxes"].shape))),
    ]
    if "aux_outputs" in out:
        rows.append(("aux_outputs", f"{len(out['aux_outputs'])} x (pred_logits, pred_boxes)"))
    if hasattr(model, "mask_head"):
        rows += [("bbox_attention maps", str(s["bbox_attention"])),
                 ("mask head lay1 + gn1 (per query)", str(s["lay1"])),
                 ("mask head lay2 + gn2", str(s["lay2"]))]
        for i, (adapter, lay) in enumerate((("adapter1", "lay3"), ("adapter2", "lay4"), ("adapter3", "lay5"))):
            rows.append((f"FPN {i + 1}: {adapter}(layer{3 - i}) per image", str(s[adapter])))
            rows.append((f"FPN {i + 1}: upsample + {lay}", str(s[lay])))
        rows += [("out_lay", str(s["out_lay"])), ("pred_masks", str(list(out["pred_masks"].shape)))]
    return rows, out


def summarize(model: nn.Module, size: tuple[int, int] = (800, 1066), name: str = "") -> str:
    """The text `model-info` prints."""
    cfg = getattr(model, "config", None)
    lines = []
    kind = type(model).__name__
    if cfg is not None:
        lines.append(
            f"model {name or ''} ({kind}{', panoptic' if cfg.masks else ', detection'}): {cfg.backbone}"
            f"{' DC5' if cfg.dilation else ''}, d_model {cfg.hidden_dim}, {cfg.nheads} heads, "
            f"{cfg.enc_layers} encoder + {cfg.dec_layers} decoder layers, FFN {cfg.dim_feedforward}, "
            f"{cfg.num_queries} queries, {cfg.num_classes} classes + no-object, dropout {cfg.dropout}, "
            f"{'frozen' if cfg.frozen_bn else 'trainable'} batch norm")
    else:
        lines.append(f"model ({kind})")
    cats = getattr(model, "categories", None)
    if cats is not None:
        lines.append(f"categories: {len(cats)} ({len(cats.thing_ids)} things, {len(cats.stuff_ids)} stuff)")

    lines.append("")
    parts = structure(model)
    width = max(len(prefix) for prefix, _, _ in parts) + 2
    lines.append(f"structure ({len(model.state_dict())} state-dict keys):")
    for prefix, desc, n in parts:
        lines.append(f"  {prefix + '.*':<{width + 2}}{desc}  [{n} keys]")

    lines.append("")
    lines.append(f"{'parameters':<40}{'total':>10}{'trainable':>12}{'frozen':>10}")
    total_t = total_f = 0
    for group, parts in parameter_groups(model):
        gt = sum(t for _, t, _ in parts)
        gf = sum(f for _, _, f in parts)
        total_t += gt
        total_f += gf
        lines.append(f"{group:<40}{_millions(gt + gf):>10}{_millions(gt):>12}{_millions(gf):>10}")
        for part, t, f in parts:
            lines.append(f"  {part:<38}{_millions(t + f):>10}{_millions(t):>12}{_millions(f):>10}")
    lines.append(f"{'total':<40}{_millions(total_t + total_f):>10}{_millions(total_t):>12}{_millions(total_f):>10}")
    buffers = sum(b.numel() for b in model.buffers())
    lines.append(f"(plus {_millions(buffers)} frozen batch-norm statistics stored as buffers)")

    rows, _ = trace_shapes(model, size)
    lines.append("")
    lines.append(f"shapes for one {size[0]}x{size[1]} image (measured with forward hooks):")
    width = max(len(r[0]) for r in rows) + 2
    for stage, shape in rows:
        lines.append(f"  {stage:<{width}}{shape}")
    return "\n".join(lines)
