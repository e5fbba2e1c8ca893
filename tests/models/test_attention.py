"""SDPA attention equals the explicit float32-softmax path (fp32, 1e-5), with and without padding."""

from __future__ import annotations

import pytest
import torch

from models import build_model, get_preset
from models.attention import MultiheadAttention, set_attention_impl
from models.encoder import key_padding_bias


def _both(module, *args, **kwargs):
    module.impl = "explicit"
    ref = module(*args, **kwargs)
    module.impl = "sdpa"
    return module(*args, **kwargs), ref


@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_equals_explicit_self_attention(padded):
    torch.manual_seed(0)
    attn = MultiheadAttention(64, 4).eval()
    x = torch.randn(3, 10, 64)
    mask = torch.randn(1, 4, 10, 10)
    if padded:
        pad = torch.zeros(3, 10, dtype=torch.bool)
        pad[1, 7:] = True
        pad[2, 4:] = True
        mask = mask + key_padding_bias(pad, mask.dtype)
    fast, ref = _both(attn, x, attn_mask=mask)
    assert (fast - ref).abs().max().item() < 1e-5


def test_sdpa_equals_explicit_cross_attention_with_gradients():
    torch.manual_seed(1)
    attn = MultiheadAttention(32, 4, kdim=48)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 9, 48)
    bias = torch.randn(2, 4, 5, 9, requires_grad=True)
    outs, grads = [], []
    for impl in ("explicit", "sdpa"):
        attn.impl = impl
        bias.grad = None
        out = attn(q, kv, attn_mask=bias)
        out.square().sum().backward()
        outs.append(out)
        grads.append(bias.grad.clone())
    assert (outs[0] - outs[1]).abs().max().item() < 1e-5
    assert (grads[0] - grads[1]).abs().max().item() < 1e-5


@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_equals_explicit_whole_model(padded):
    torch.manual_seed(2)
    model = build_model(get_preset("ofa_test")).eval()
    src = torch.tensor([[0, 10, 11, 12, 2], [0, 13, 2, 1, 1]] if padded else [[0, 10, 11, 12, 2], [0, 13, 14, 15, 2]])
    prev = torch.tensor([[0, 20, 21, 22], [0, 23, 1, 1]] if padded else [[0, 20, 21, 22], [0, 23, 24, 25]])
    images = torch.randn(2, 3, 32, 32)
    masks = torch.tensor([True, not padded])
    outs = []
    for impl in ("explicit", "sdpa"):
        set_attention_impl(model, impl)
        with torch.no_grad():
            outs.append(model(src, prev_output_tokens=prev, patch_images=images, patch_masks=masks)[0])
    assert (outs[0] - outs[1]).abs().max().item() < 1e-5


def test_unknown_attention_impl_is_refused():
    with pytest.raises(ValueError, match="sdpa"):
        set_attention_impl(torch.nn.Linear(2, 2), "flash9")
