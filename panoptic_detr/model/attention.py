"""Recording attention maps (for `explain`) without slowing down the normal forward.

Outside `model_attention(...)` the transformer calls its attention layers with
`need_weights=False` and nothing is recorded. Inside, the chosen layers also compute their
softmax weights *on the side* from the same inputs and parameters, so the model's outputs are
bit-for-bit the ones of the fast path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class AttentionRecord:
    """What one forward recorded (the last forward run inside the context).

    encoder: [B, HW, HW] self-attention of the last encoder layer (of every layer with
        `all_encoder_layers=True`), averaged over heads; rows are queries, columns keys.
    decoder: [B, Q, HW] cross-attention of each decoder layer, averaged over heads.
    encoder_heads, decoder_heads: with `heads=True`, the same layers per head:
        [B, nheads, HW, HW] and [B, nheads, Q, HW] (`encoder[i]` is `encoder_heads[i].mean(1)`).
    mask_attention: [B, Q, nheads, h, w] the mask head's `bbox_attention` maps (panoptic models).
    feature_size: (h, w) of the stride-32 (stride-16 for DC5) feature grid; HW = h * w.
    padding_mask: [B, h, w] bool, True = padding.
    """

    encoder: list[Tensor] = field(default_factory=list)
    decoder: list[Tensor] = field(default_factory=list)
    encoder_heads: list[Tensor] = field(default_factory=list)
    decoder_heads: list[Tensor] = field(default_factory=list)
    mask_attention: Tensor | None = None
    feature_size: tuple[int, int] | None = None
    padding_mask: Tensor | None = None
    heads: bool | str = False  # also keep the per-head maps ("last": of the last encoder layer only)

    def reset(self) -> None:
        self.encoder.clear()
        self.decoder.clear()
        self.encoder_heads.clear()
        self.decoder_heads.clear()
        self.mask_attention = None
        self.feature_size = None
        self.padding_mask = None

    def add(self, kind: str, attn: nn.MultiheadAttention, query: Tensor, key: Tensor,
            key_padding_mask: Tensor | None = None) -> None:
        """Record one layer's attention (`kind` "encoder" or "decoder"), called by the layer
        inside `model_attention` with the inputs of its own attention call."""
        weights = attention_weights(attn, query, key, key_padding_mask, heads=True)  # [B, h, Lq, Lk]
        getattr(self, kind).append(weights.mean(1))
        if self.heads:
            kept = getattr(self, kind + "_heads")
            if self.heads == "last" and kind == "encoder":
                kept.clear()  # only the newest (in the end the last) encoder layer per head
            kept.append(weights)


def attention_weights(attn: nn.MultiheadAttention, query: Tensor, key: Tensor,
                      key_padding_mask: Tensor | None = None, heads: bool = False) -> Tensor:
    """Softmax weights of a batch-first `nn.MultiheadAttention`, averaged over heads: [B, Lq, Lk]
    (per head with `heads=True`: [B, nheads, Lq, Lk]).

    Recomputed from the packed in_proj parameters, exactly as the attention computes them
    (scaled dot product of the projected q and k, padding keys excluded).
    """
    d, h = attn.embed_dim, attn.num_heads
    hd = d // h
    w_q, w_k, _ = attn.in_proj_weight.split(d)
    b_q, b_k, _ = attn.in_proj_bias.split(d) if attn.in_proj_bias is not None else (None, None, None)
    with torch.no_grad():
        q = F.linear(query, w_q, b_q)
        k = F.linear(key, w_k, b_k)
        b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
        q = q.view(b, lq, h, hd).transpose(1, 2)
        k = k.view(b, lk, h, hd).transpose(1, 2)
        scores = (q * hd**-0.5) @ k.transpose(-2, -1)  # [B, h, Lq, Lk]
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = scores.softmax(-1)
        return weights if heads else weights.mean(1)


def multihead_attention(attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
                        key_padding_mask: Tensor | None = None) -> Tensor:
    """`attn(query, key, value, key_padding_mask=..., need_weights=False)[0]` for a
    batch-first `nn.MultiheadAttention` in training, with the attention dropout drawn by
    `model.dropout.dropout` (the cheap CPU mask; `Transformer` calls this on CPU only).

    Same parameters and the same computation: packed in-projection, scaled dot product,
    padding keys at -inf, softmax, dropout, weighted sum of the values, out-projection.
    """
    from panoptic_detr.model.dropout import dropout

    d, h = attn.embed_dim, attn.num_heads
    hd = d // h
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    b_q = b_k = b_v = None
    if bias is not None:
        b_q, b_k, b_v = bias.split(d)
    if query is key:  # self-attention: one projection for q and k
        q, k = F.linear(query, w[: 2 * d], None if bias is None else bias[: 2 * d]).chunk(2, dim=-1)
    else:
        q = F.linear(query, w[:d], b_q)
        k = F.linear(key, w[d : 2 * d], b_k)
    v = F.linear(value, w[2 * d :], b_v)
    b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    q = q.reshape(b, lq, h, hd).transpose(1, 2)
    k = k.reshape(b, lk, h, hd).transpose(1, 2)
    v = v.reshape(b, lk, h, hd).transpose(1, 2)
    scores = (q * hd**-0.5) @ k.transpose(-2, -1)  # [B, h, Lq, Lk]
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = dropout(scores.softmax(-1), attn.dropout, attn.training)
    out = (weights @ v).transpose(1, 2).reshape(b, lq, d)
    return attn.out_proj(out)


def _parts(model: nn.Module):
    """(detr, transformer, bbox_attention or None) of a DETR or DETRsegm model."""
    detr = getattr(model, "detr", model)
    transformer = getattr(detr, "transformer", None)
    if transformer is None:
        raise TypeError(f"model_attention: {type(model).__name__} is not a DETR model")
    return detr, transformer, getattr(model, "bbox_attention", None)


@contextlib.contextmanager
def model_attention(model: nn.Module, all_encoder_layers: bool = False,
                    heads: bool | str = False) -> Iterator[AttentionRecord]:
    """`with model_attention(model) as rec: model(images)` then read `rec.encoder[-1]`, ...

    Records the last encoder layer's self-attention (every layer's with
    `all_encoder_layers`), every decoder layer's cross-attention and, for panoptic models, the
    mask head's attention maps; with `heads`, each recorded layer per head as well
    (`rec.encoder_heads`, `rec.decoder_heads`; `heads="last"`: of the encoder, only the last
    layer per head, which bounds the memory). The model's outputs are unchanged.
    """
    detr, transformer, bbox_attention = _parts(model)
    rec = AttentionRecord(heads=heads)
    enc_layers = list(transformer.encoder.layers)
    watched = [detr, *(enc_layers if all_encoder_layers else enc_layers[-1:]), *transformer.decoder.layers]
    if bbox_attention is not None:
        watched.append(bbox_attention)
    previous = [getattr(m, "recorder", None) for m in watched]
    for m in watched:
        m.recorder = rec
    try:
        yield rec
    finally:
        for m, p in zip(watched, previous):
            m.recorder = p
