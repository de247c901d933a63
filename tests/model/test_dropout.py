"""The cheap CPU dropout mask and the training attention path that uses it."""

import pytest
import torch
from torch import nn

from panoptic_detr.model.attention import multihead_attention
from panoptic_detr.model.dropout import Dropout, dropout


def test_drop_rate_scale_and_gradient():
    torch.manual_seed(0)
    x = torch.rand(4, 64, 1000) + 0.5  # all positive: dropped elements are exactly the zeros
    x.requires_grad_(True)
    y = dropout(x, 0.1, True)
    dropped = y.eq(0)
    rate = dropped.float().mean().item()
    # 256,000 elements: the standard deviation of the rate is 6e-4
    assert abs(rate - 0.1) < 0.003
    p_exact = round(0.1 * 65536) / 65536
    kept = ~dropped
    torch.testing.assert_close(y[kept], x.detach()[kept] / (1 - p_exact))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p_exact))
    # no lane of the 64-bit draws is biased: the rate holds at every position mod 4
    per_lane = dropped.flatten().view(-1, 4).float().mean(0)
    assert (per_lane - 0.1).abs().max() < 0.006


def test_repeatable_with_the_seed_and_identity_in_eval():
    x = torch.randn(3, 5, 7)
    torch.manual_seed(1)
    a = dropout(x, 0.3, True)
    torch.manual_seed(1)
    b = dropout(x, 0.3, True)
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout(x, 0.3, True))  # the generator moved on
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
    m = Dropout(0.3).eval()
    assert torch.equal(m(x), x)
    m.train()
    assert m(x).eq(0).any()
    assert dropout(x, 1.0, True).eq(0).all()  # p = 1 falls back to F.dropout: all dropped


@pytest.mark.parametrize("self_attention", [True, False])
def test_training_attention_equals_torch_multihead_attention(self_attention):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(32, 4, dropout=0.0, batch_first=True).train()
    nn.init.normal_(attn.in_proj_bias)
    q = torch.randn(2, 6, 32, requires_grad=True)
    k = q if self_attention else torch.randn(2, 9, 32, requires_grad=True)
    v = torch.randn(2, k.shape[1], 32, requires_grad=True)
    pad = torch.zeros(2, k.shape[1], dtype=torch.bool)
    pad[1, -2:] = True
    ours = multihead_attention(attn, q, k, v, pad)
    ref = attn(q, k, v, key_padding_mask=pad, need_weights=False)[0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ref)
    grads_ours = torch.autograd.grad(ours, [q, v, attn.in_proj_weight], g)
    grads_ref = torch.autograd.grad(ref, [q, v, attn.in_proj_weight], g)
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_transformer_uses_torch_dropout_when_told():
    from panoptic_detr.model.build import set_speed_options
    from panoptic_detr.model.transformer import Transformer

    torch.manual_seed(0)
    t = Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64,
                    dropout=0.1).train()
    src = torch.randn(1, 32, 3, 4)
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    query, pos = torch.randn(5, 32), torch.randn(1, 32, 3, 4)

    def run(fast):
        set_speed_options(t, fast_dropout=fast)
        torch.manual_seed(3)
        return t(src, mask, query, pos)[0]

    fast_a, fast_b, torch_out = run(True), run(True), run(False)
    assert torch.equal(fast_a, fast_b)
    assert not torch.allclose(fast_a, torch_out)  # different masks, same model
    t.eval()
    assert torch.equal(t(src, mask, query, pos)[0], t(src, mask, query, pos)[0])
