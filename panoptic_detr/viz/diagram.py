"""Figure 7: the DETR panoptic network as a drawn diagram with the tensor shapes for one
input size.

`network_shapes(config, (H, W))` computes every shape from the model configuration alone
(the same arithmetic as the convolutions: each stride-2 step gives ceil(size / 2));
`network_diagram_figure(shapes)` draws it with matplotlib patches and arrows.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from panoptic_detr.viz.figures import TITLE_SIZE, new_figure

# Output channels of layer1..layer4 for a 64-channel stem; scaled by backbone_width / 64.
BACKBONE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


def _cfg(config: Any, name: str, default=None):
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def _half(n: int) -> int:
    return (int(n) + 1) // 2


def network_shapes(config: Any, input_size: tuple[int, int], original_size: tuple[int, int] | None = None,
                   named_classes: int | None = None) -> dict:
    """Every tensor shape (batch dimension left out) through the network for one image of
    `input_size` (H, W) after resizing; the panoptic map is at `original_size` (default:
    the input size). `config` is a `ModelConfig` or a dict of its fields; `named_classes`
    the number of categories the model's classes name (the rest of its `num_classes`
    slots, such as index 0, are unused)."""
    H, W = (int(v) for v in input_size)
    backbone = str(_cfg(config, "backbone", "resnet50"))
    width = int(_cfg(config, "backbone_width", 64))
    chans = tuple(c * width // 64 for c in BACKBONE_CHANNELS.get(backbone, BACKBONE_CHANNELS["resnet50"]))
    dilation = bool(_cfg(config, "dilation", False))
    d = int(_cfg(config, "hidden_dim", 256))
    M = int(_cfg(config, "nheads", 8))
    Q = int(_cfg(config, "num_queries", 100))
    C = int(_cfg(config, "num_classes", 91))
    masks = bool(_cfg(config, "masks", False))

    sizes = []
    h, w = _half(_half(H)), _half(_half(W))  # conv1 (stride 2) + max-pool (stride 2)
    stem = (h, w)
    for i in range(4):
        if i > 0 and not (i == 3 and dilation):
            h, w = _half(h), _half(w)
        sizes.append((h, w))
    fh, fw = sizes[3]
    hw = fh * fw
    s = {
        "input": (3, H, W),
        "stem": (width, *stem),
        "layer1": (chans[0], *sizes[0]),
        "layer2": (chans[1], *sizes[1]),
        "layer3": (chans[2], *sizes[2]),
        "layer4": (chans[3], *sizes[3]),
        "proj": (d, fh, fw),
        "tokens": (hw, d),
        "pos": (hw, d),
        "memory": (hw, d),
        "queries": (Q, d),
        "decoder": (Q, d),
        "logits": (Q, C + 1),
        "boxes": (Q, 4),
        "panoptic": tuple(int(v) for v in original_size) if original_size is not None else (H, W),
        "meta": {
            "backbone": backbone,
            "dilation": dilation,
            "stride": 16 if dilation else 32,
            "hidden_dim": d,
            "nheads": M,
            "enc_layers": int(_cfg(config, "enc_layers", 6)),
            "dec_layers": int(_cfg(config, "dec_layers", 6)),
            "dim_feedforward": int(_cfg(config, "dim_feedforward", 2048)),
            "num_queries": Q,
            "num_classes": C,
            "named_classes": named_classes,
            "frozen_bn": bool(_cfg(config, "frozen_bn", True)),
            "masks": masks,
        },
    }
    if masks:
        dims = [d + M, d // 2, d // 4, d // 8, d // 16]
        s["mask_attention"] = (Q, M, fh, fw)
        s["fpn_in"] = (Q, dims[0], fh, fw)
        s["fpn_lay2"] = (Q, dims[1], fh, fw)
        s["fpn_3"] = (Q, dims[2], *sizes[2])
        s["fpn_2"] = (Q, dims[3], *sizes[1])
        s["fpn_1"] = (Q, dims[4], *sizes[0])
        s["masks"] = (Q, *sizes[0])
    return s


def fmt_shape(shape) -> str:
    return " x ".join(str(int(v)) for v in shape)


# colours by role
C_INPUT = "#e8e8e8"
C_BACKBONE = "#cfe2ff"
C_PROJ = "#d7f5d0"
C_TRANSFORMER = "#ffe2b8"
C_QUERY = "#f7d0ef"
C_HEAD = "#ffd0d0"
C_MASK = "#e4d7ff"
C_OUT = "#fff5b0"


class _Canvas:
    def __init__(self, ax):
        self.ax = ax

    def box(self, x, y, w, h, title, shape="", color=C_INPUT, title_size=10.5, shape_size=9.5, edge="0.25"):
        """A rounded box with (x, y) its lower-left corner; returns its anchor points."""
        ax = self.ax
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.25,rounding_size=0.8",
                                    facecolor=color, edgecolor=edge, linewidth=1.3))
        if shape:
            ax.text(x + w / 2, y + h * 0.64, title, ha="center", va="center", fontsize=title_size, fontweight="bold")
            ax.text(x + w / 2, y + h * 0.26, shape, ha="center", va="center", fontsize=shape_size,
                    family="monospace", color="#222222")
        else:
            ax.text(x + w / 2, y + h / 2, title, ha="center", va="center", fontsize=title_size, fontweight="bold")
        return {
            "l": (x - 0.25, y + h / 2), "r": (x + w + 0.25, y + h / 2),
            "t": (x + w / 2, y + h + 0.25), "b": (x + w / 2, y - 0.25),
            "x": x, "y": y, "w": w, "h": h,
        }

    def arrow(self, p0, p1, color="0.2", style="-|>", lw=1.5, rad=0.0, ls="-", text=None, text_size=8.5,
              text_offset=(0.0, 0.9)):
        self.ax.add_patch(FancyArrowPatch(p0, p1, arrowstyle=style, mutation_scale=14, color=color, linewidth=lw,
                                          connectionstyle=f"arc3,rad={rad}", linestyle=ls, shrinkA=0, shrinkB=0))
        if text:
            mx, my = (p0[0] + p1[0]) / 2 + text_offset[0], (p0[1] + p1[1]) / 2 + text_offset[1]
            self.ax.text(mx, my, text, ha="center", va="bottom", fontsize=text_size, color=color, style="italic")


# Rows of the diagram in data units (the axes span x 0..100): y of the lower edge, height.
ROW_ENCODER = (41.5, 9.0)
ROW_DECODER = (24.0, 9.0)
ROW_MASK_HEAD = (5.0, 9.5)
MEMORY_X = 95.6  # the "memory" label; the memory bus runs down at MEMORY_X + 2.6


def _backbone_name(meta: dict) -> str:
    return meta["backbone"].replace("resnet", "ResNet-") + ("-DC5" if meta["dilation"] else "")


def _diagram_axes(shapes: dict, masks: bool, title: str | None):
    """The figure, titled, and its one axes in diagram units (taller with the mask-head row)."""
    meta = shapes["meta"]
    fig = new_figure(20, 11.5 if masks else 8.5)
    ax = fig.add_axes((0.005, 0.0, 0.99, 0.93))
    ymax = 60 if masks else 42
    ax.set_xlim(0, 100)
    ax.set_ylim(0 if masks else 18, ymax)
    ax.axis("off")
    _, H, W = shapes["input"]
    fig.suptitle(title or f"DETR{' panoptic' if masks else ''} ({_backbone_name(meta)}) for an input of {H} x {W}: "
                 "tensor shapes (batch of one, channels x height x width)", fontsize=TITLE_SIZE + 1,
                 fontweight="bold")
    return fig, ax


def _draw_encoder_row(cv: _Canvas, shapes: dict) -> tuple[list, tuple[float, float]]:
    """Row 1: input, backbone, projection, tokens, encoder. Returns the four backbone stage
    boxes (the mask head's skip connections start there) and the point where the
    encoder's memory leaves the row."""
    ax, meta = cv.ax, shapes["meta"]
    y1, h1 = ROW_ENCODER
    inp = cv.box(0.8, y1, 7.4, h1, "input image", fmt_shape(shapes["input"]), C_INPUT)
    ax.add_patch(FancyBboxPatch((10.0, y1 - 1.6), 44.6, h1 + 4.6, boxstyle="round,pad=0.2,rounding_size=1.0",
                                facecolor="none", edgecolor="#5b8bd9", linewidth=1.2, linestyle="--"))
    bn = "frozen BatchNorm" if meta.get("frozen_bn", True) else "trainable BatchNorm"
    ax.text(10.6, y1 + h1 + 1.7, f"backbone {_backbone_name(meta)} ({bn})", fontsize=10.5,
            color="#2b5cab", fontweight="bold", va="center")
    stem = cv.box(10.9, y1, 6.6, h1, "conv1 +\nmax-pool", fmt_shape(shapes["stem"]), C_BACKBONE, title_size=9.5,
                  shape_size=8.2)
    stages = []
    x = stem["x"] + stem["w"] + 1.6
    for i in range(4):
        name = f"layer{i + 1}"
        st = 4 * 2 ** i if not (i == 3 and meta["dilation"]) else 16
        stages.append(cv.box(x, y1, 7.6, h1, f"{name}\nstride {st}", fmt_shape(shapes[name]), C_BACKBONE,
                             title_size=9.5, shape_size=8.2))
        x += 7.6 + 1.6
    cv.arrow(inp["r"], stem["l"])
    cv.arrow(stem["r"], stages[0]["l"])
    for a, b in zip(stages, stages[1:]):
        cv.arrow(a["r"], b["l"])
    proj = cv.box(56.6, y1, 8.6, h1, "1x1 conv\n(input_proj)", fmt_shape(shapes["proj"]), C_PROJ, title_size=9.5,
                  shape_size=8.5)
    cv.arrow(stages[3]["r"], proj["l"])
    tok = cv.box(67.4, y1, 8.6, h1, "flatten to\ntokens", fmt_shape(shapes["tokens"]), C_PROJ, title_size=9.5,
                 shape_size=8.5)
    cv.arrow(proj["r"], tok["l"])
    enc = cv.box(80.6, y1, 10.6, h1, f"encoder x{meta['enc_layers']}\nself-attention",
                 fmt_shape(shapes["memory"]), C_TRANSFORMER, title_size=9.5, shape_size=8.5)
    pos = cv.box(80.6, y1 + h1 + 2.2, 10.6, 4.6, "positional encoding (sine)", "", C_PROJ, title_size=8.5)
    ax.text(92.0, y1 + h1 + 4.5, fmt_shape(shapes["pos"]), fontsize=8.5, family="monospace", va="center")
    cv.arrow(tok["r"], enc["l"])
    cv.arrow(pos["b"], enc["t"], text=None)
    ax.text(enc["x"] + enc["w"] / 2 + 0.6, enc["y"] + enc["h"] + 1.2, "+ to q, k", fontsize=8, style="italic",
            va="center")
    ax.text(MEMORY_X + 0.2, y1 + h1 / 2 + 1.5, "memory", fontsize=9, ha="center", fontweight="bold")
    memory_out = (MEMORY_X + 2.6, y1 + h1 / 2)
    cv.arrow(enc["r"], memory_out)
    return stages, memory_out


def _classes_text(meta: dict) -> str:
    """'5 classes (12 slots) + no-object': named classes, and the class slots when some are unused."""
    C, named = meta["num_classes"], meta.get("named_classes")
    if named is None:
        return f"{C} class slots + no-object"
    return f"{named} classes" + (f" ({C} slots)" if named != C else "") + " + no-object"


def _shape_summary(shapes: dict) -> str:
    """The grid, token and attention-map sizes, written beside the decoder row."""
    meta = shapes["meta"]
    fh, fw = shapes["layer4"][1:]
    return (f"stride-{meta['stride']} grid: {fh} x {fw}\n"
            f"tokens: hw = {fh * fw}, d = {meta['hidden_dim']}\n"
            f"{meta['nheads']} heads, FFN {meta['dim_feedforward']}\n"
            f"{meta['num_queries']} queries (Q)\n"
            f"{_classes_text(meta)}\n"
            "attention maps:\n"
            f"  encoder  hw x hw = {fh * fw} x {fh * fw}\n"
            f"  decoder  Q x hw  = {meta['num_queries']} x {fh * fw}")


def _draw_decoder_row(cv: _Canvas, shapes: dict, memory_out: tuple[float, float]) -> tuple[dict, float]:
    """Row 2: shape summary, queries, decoder, prediction heads, and the memory bus from
    the encoder. Returns the decoder box and the height of the bus."""
    ax, meta = cv.ax, shapes["meta"]
    y2, h2 = ROW_DECODER
    ax.text(1.0, y2 + h2 / 2, _shape_summary(shapes), fontsize=9.5, va="center", ha="left", family="monospace",
            bbox=dict(boxstyle="round,pad=0.6", facecolor="#f6f6f6", edgecolor="0.6"))
    qry = cv.box(50.5, y2, 9.5, h2, "object queries\n(learned)", fmt_shape(shapes["queries"]), C_QUERY,
                 title_size=9.5, shape_size=8.5)
    dec = cv.box(63.5, y2, 11.0, h2, f"decoder x{meta['dec_layers']}\nself + cross-attn",
                 fmt_shape(shapes["decoder"]), C_TRANSFORMER, title_size=9.5, shape_size=8.5)
    cv.arrow(qry["r"], dec["l"])
    y_bus = y2 + h2 + 4.0  # the memory bus, above the class head
    mx = memory_out[0]
    dx = dec["x"] + dec["w"] * 0.5
    cv.arrow(memory_out, (mx, y_bus), style="-", lw=1.5)
    cv.arrow((mx, y_bus), (dx, y_bus), style="-", lw=1.5, text="memory (keys, values) + positional encoding",
             text_offset=(0.0, 0.3))
    cv.arrow((dx, y_bus), (dx, dec["y"] + dec["h"] + 0.25))
    cls = cv.box(80.0, y2 + 5.0, 9.0, 5.2, "class FFN", fmt_shape(shapes["logits"]), C_HEAD, title_size=9.5,
                 shape_size=8.5)
    box = cv.box(80.0, y2 - 1.2, 9.0, 5.2, "box FFN", fmt_shape(shapes["boxes"]), C_HEAD, title_size=9.5,
                 shape_size=8.5)
    cv.arrow(dec["r"], cls["l"], rad=-0.1)
    cv.arrow(dec["r"], box["l"], rad=0.1)
    ax.text(89.9, cls["y"] + 2.6, "softmax\nscores", fontsize=8, va="center", style="italic")
    ax.text(89.9, box["y"] + 2.6, "cx, cy, w, h\n(sigmoid)", fontsize=8, va="center", style="italic")
    return dec, y_bus


def _draw_mask_head_row(cv: _Canvas, shapes: dict, stages: list, dec: dict, bus: tuple[float, float]) -> None:
    """Row 3 (right to left): attention maps, FPN mask head with skip connections from the
    backbone `stages`, argmax into the panoptic map. `bus` is where the memory bus
    turns towards the decoder."""
    ax = cv.ax
    y3, h3 = ROW_MASK_HEAD
    mx, y_bus = bus
    att = cv.box(84.8, y3, 13.8, h3, "multi-head attention\nmaps (bbox_attention)",
                 fmt_shape(shapes["mask_attention"]), C_MASK, title_size=9.2, shape_size=8.5)
    cv.arrow(dec["b"], (att["x"] + 3.0, att["y"] + att["h"] + 0.25), text="queries", text_offset=(-3.5, 0))
    cv.arrow((mx, y_bus), (mx, att["y"] + att["h"] + 0.25), text="keys", text_offset=(1.2, -1.0))
    ax.add_patch(FancyBboxPatch((19.2, y3 - 2.4), 61.6, h3 + 4.4, boxstyle="round,pad=0.2,rounding_size=1.0",
                                facecolor="none", edgecolor="#8a63d2", linewidth=1.2, linestyle="--"))
    ax.text(20.0, y3 + h3 + 1.1, "FPN-style mask head (per query; skip connections from the backbone)",
            fontsize=10.5, color="#5b3aa0", fontweight="bold", va="center")
    f0 = cv.box(69.3, y3, 10.6, h3, "concat memory,\nlay1 + lay2 (3x3)",
                fmt_shape(shapes["fpn_lay2"]), C_MASK, title_size=9, shape_size=8)
    cv.arrow(att["l"], f0["r"])
    f3 = cv.box(57.3, y3, 10.6, h3, "up x2 + layer3\nadapter, lay3", fmt_shape(shapes["fpn_3"]), C_MASK,
                title_size=9, shape_size=8)
    f2 = cv.box(45.3, y3, 10.6, h3, "up x2 + layer2\nadapter, lay4", fmt_shape(shapes["fpn_2"]), C_MASK,
                title_size=9, shape_size=8)
    f1 = cv.box(33.3, y3, 10.6, h3, "up x2 + layer1\nadapter, lay5", fmt_shape(shapes["fpn_1"]), C_MASK,
                title_size=9, shape_size=8)
    out = cv.box(20.3, y3, 11.6, h3, "out conv:\nmask logits", fmt_shape(shapes["masks"]), C_MASK,
                 title_size=9, shape_size=8)
    cv.arrow(f0["l"], f3["r"])
    cv.arrow(f3["l"], f2["r"])
    cv.arrow(f2["l"], f1["r"])
    cv.arrow(f1["l"], out["r"])
    for stage, step in ((stages[2], f3), (stages[1], f2), (stages[0], f1)):
        cv.arrow(stage["b"], (step["x"] + step["w"] / 2, step["y"] + step["h"] + 0.25), color="#8a63d2",
                 lw=1.1, ls="--", rad=0.12)
    _, H, W = shapes["input"]
    resized = tuple(shapes["panoptic"]) != (H, W)
    pan = cv.box(0.8, y3, 16.2, h3, "keep queries > threshold,\nupsample, pixel-wise argmax",
                 "panoptic id map " + fmt_shape(shapes["panoptic"]) + ("\n(at the original image size)"
                                                                      if resized else ""),
                 C_OUT, title_size=9, shape_size=8)
    cv.arrow(out["l"], pan["r"])


def network_diagram_figure(shapes: dict, title: str | None = None) -> Figure:
    """Figure 7: the architecture with the tensor shapes of `network_shapes(...)`."""
    masks = shapes["meta"]["masks"] and "mask_attention" in shapes
    fig, ax = _diagram_axes(shapes, masks, title)
    cv = _Canvas(ax)
    stages, memory_out = _draw_encoder_row(cv, shapes)
    dec, y_bus = _draw_decoder_row(cv, shapes, memory_out)
    if masks:
        _draw_mask_head_row(cv, shapes, stages, dec, (memory_out[0], y_bus))
    return fig
