"""The DETR encoder-decoder transformer (post-norm), with the official parameter names.

Semantics (those of the official DETR, which decide whether its weights give its numbers):
- encoder layer: q = k = src + pos, v = src, padding keys masked; no final encoder norm;
- decoder: tgt starts at zeros; self-attention q = k = tgt + query_pos, v = tgt;
  cross-attention q = tgt + query_pos, k = memory + pos, v = memory;
- one shared LayerNorm (`decoder.norm`) applied to every layer's output for the returned stack,
  while the un-normalised output feeds the next layer.
Attention layers are `nn.MultiheadAttention` (packed `in_proj_weight` / `in_proj_bias`,
`out_proj`). Tokens are batch-first here ([B, L, d]); the parameters do not depend on it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_detr.model.attention import multihead_attention
from panoptic_detr.model.dropout import Dropout


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


def _attend(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
            fast_dropout: bool = True) -> Tensor:
    # Training on CPU with attention dropout: the same attention with a cheaper dropout mask
    # (model/dropout.py); elsewhere torch's own (fused kernels on GPU, fast path in eval).
    # `fast_dropout` is the layer's own Dropout setting (False: torch's, as the official code).
    if attn.training and attn.dropout > 0 and q.device.type == "cpu" and fast_dropout:
        return multihead_attention(attn, q, k, v, key_padding_mask)
    return attn(q, k, v, key_padding_mask=key_padding_mask, need_weights=False)[0]


class TransformerEncoderLayer(nn.Module):
    recorder = None  # an AttentionRecord while inside model_attention()

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        q = k = _with_pos(src, pos)
        attn = _attend(self.self_attn, q, k, src, key_padding_mask, fast_dropout=self.dropout.fast)
        if self.recorder is not None:
            self.recorder.add("encoder", self.self_attn, q, k, key_padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerDecoderLayer(nn.Module):
    recorder = None

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None = None,
                pos: Tensor | None = None, query_pos: Tensor | None = None) -> Tensor:
        q = k = _with_pos(tgt, query_pos)
        attn = _attend(self.self_attn, q, k, tgt, fast_dropout=self.dropout.fast)
        tgt = self.norm1(tgt + self.dropout1(attn))

        q, k = _with_pos(tgt, query_pos), _with_pos(memory, pos)
        attn = _attend(self.multihead_attn, q, k, memory, memory_key_padding_mask, fast_dropout=self.dropout.fast)
        if self.recorder is not None:
            self.recorder.add("decoder", self.multihead_attn, q, k, memory_key_padding_mask)
        tgt = self.norm2(tgt + self.dropout2(attn))

        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


class TransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers

    def forward(self, src: Tensor, key_padding_mask: Tensor | None = None, pos: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            src = layer(src, pos=pos, key_padding_mask=key_padding_mask)
        return src


class TransformerDecoder(nn.Module):
    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: nn.LayerNorm,
                 return_intermediate: bool = True):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None = None,
                pos: Tensor | None = None, query_pos: Tensor | None = None) -> Tensor:
        """-> [num_layers, B, Q, d] (every layer, each through `norm`), or [1, B, Q, d]."""
        outputs = []
        out = tgt
        for layer in self.layers:
            out = layer(out, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos, query_pos=query_pos)
            if self.return_intermediate:
                outputs.append(self.norm(out))  # the norm is not fed back into the next layer
        if not self.return_intermediate:
            return self.norm(out)[None]
        return torch.stack(outputs)


class Transformer(nn.Module):
    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, return_intermediate_dec: bool = True):
        super().__init__()
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout), num_encoder_layers)
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout), num_decoder_layers,
            nn.LayerNorm(d_model), return_intermediate=return_intermediate_dec)
        self.d_model = d_model
        self.nhead = nhead
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # DETR initialises every weight matrix of the transformer with Xavier-uniform.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos_embed: Tensor) -> tuple[Tensor, Tensor]:
        """src [B, d, h, w], mask [B, h, w] (True = padding), query_embed [Q, d], pos_embed [B, d, h, w]
        -> (hs [num_dec_layers, B, Q, d], memory [B, d, h, w])."""
        b, c, h, w = src.shape
        src = src.flatten(2).transpose(1, 2)  # [B, HW, d]
        pos = pos_embed.flatten(2).transpose(1, 2)
        key_padding_mask = mask.flatten(1)
        query_pos = query_embed.unsqueeze(0).expand(b, -1, -1)
        tgt = torch.zeros_like(query_pos)
        memory = self.encoder(src, key_padding_mask=key_padding_mask, pos=pos)
        hs = self.decoder(tgt, memory, memory_key_padding_mask=key_padding_mask, pos=pos, query_pos=query_pos)
        return hs, memory.transpose(1, 2).reshape(b, c, h, w)
