"""Properties of the forward pass: incremental decoding equals full decoding, padding is neutral,
mixed image-code / text batches equal their rows run alone, beam reordering follows the cache."""

from __future__ import annotations

import pytest
import torch

from models import build_model, get_preset
from models.decoder import DecoderState


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_preset("ofa_test")).eval()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 1000, (3, 6), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    prev = torch.randint(4, 1000, (3, 7), generator=g)
    prev[:, 0] = 0
    return src, prev, torch.randn(3, 3, 32, 32, generator=g)


@torch.no_grad()
def test_incremental_decoding_equals_full_decoding(model):
    src, prev, images = _inputs()
    full, _ = model(src, prev_output_tokens=prev, patch_images=images)
    enc = model.encode(src_tokens=src, patch_images=images)
    state = DecoderState()
    steps = [model.decode_step(prev[:, : t + 1], enc, state) for t in range(prev.size(1))]
    assert (torch.stack(steps, dim=1) - full).abs().max().item() < 1e-5


@torch.no_grad()
def test_incremental_decoding_with_beam_reorder(model):
    src, prev, images = _inputs(1)
    enc = model.encode(src_tokens=src, patch_images=images)
    state = DecoderState()
    for t in range(3):
        model.decode_step(prev[:, : t + 1], enc, state)
    order = torch.tensor([2, 0, 0])
    state.reorder(order, sample_order=order)
    enc2, prev2 = enc.index_select(order), prev[order]
    step = model.decode_step(prev2[:, :4], enc2, state)
    full, _ = model(src[order], prev_output_tokens=prev2[:, :4], patch_images=images[order])
    assert (step - full[:, -1]).abs().max().item() < 1e-5


@torch.no_grad()
def test_padded_batch_equals_unpadded_items(model):
    src, prev, images = _inputs(2)
    src[1, 4:] = 1
    src[1, 3] = 2
    prev[1, 5:] = 1
    logits, _ = model(src, prev_output_tokens=prev, patch_images=images)
    alone, _ = model(src[1:2, :4], prev_output_tokens=prev[1:2, :5], patch_images=images[1:2])
    assert (logits[1, :5] - alone[0]).abs().max().item() < 1e-5


@torch.no_grad()
def test_text_only_sample_masks_its_image(model):
    src, prev, images = _inputs(3)
    masks = torch.tensor([True, False, True])
    a, _ = model(src, prev_output_tokens=prev, patch_images=images, patch_masks=masks)
    images2 = images.clone()
    images2[1] = torch.randn(3, 32, 32)  # the masked image must not matter
    b, _ = model(src, prev_output_tokens=prev, patch_images=images2, patch_masks=masks)
    assert (a[1] - b[1]).abs().max().item() < 1e-5
    assert (a[0] - b[0]).abs().max().item() < 1e-5


@torch.no_grad()
def test_mixed_code_and_text_rows_equal_rows_alone(model):
    src, prev, images = _inputs(4)
    codes = torch.tensor([True, False, True])
    mixed, _ = model(src, prev_output_tokens=prev, patch_images=images, code_masks=codes)
    for row in range(3):
        alone, _ = model(
            src[row : row + 1], prev_output_tokens=prev[row : row + 1], patch_images=images[row : row + 1],
            code_masks=codes[row : row + 1],
        )  # fmt: skip
        assert (mixed[row] - alone[0]).abs().max().item() < 1e-5
    plain, _ = model(src, prev_output_tokens=prev, patch_images=images)
    assert (mixed[1] - plain[1]).abs().max().item() < 1e-5
    assert (mixed[0] - plain[0]).abs().max().item() > 1e-3  # the code path really differs


@torch.no_grad()
def test_incremental_code_decoding_equals_full(model):
    src, prev, images = _inputs(5)
    codes = torch.tensor([True, True, False])
    full, _ = model(src, prev_output_tokens=prev, patch_images=images, code_masks=codes)
    enc = model.encode(src_tokens=src, patch_images=images)
    state = DecoderState()
    steps = [model.decode_step(prev[:, : t + 1], enc, state, code_masks=codes) for t in range(prev.size(1))]
    assert (torch.stack(steps, dim=1) - full).abs().max().item() < 1e-5


def test_sample_patch_num_keeps_that_many_patches(model):
    src, prev, images = _inputs(6)
    enc = model.encode(src_tokens=src, patch_images=images, sample_patch_num=3)
    assert enc.hidden.shape == (3, 3 + src.size(1), 64)


@torch.no_grad()
def test_rows_sharing_an_encoder_sample_equal_expanded_rows(model):
    """Beams/candidates of one sample share its encoder output (and cross-attention cache)."""
    src, prev, images = _inputs(7)
    enc = model.encode(src_tokens=src[:2], patch_images=images[:2])
    rows = torch.tensor([0, 0, 0, 1, 1, 1])
    tokens = prev[[0, 1, 2, 0, 1, 2]]
    shared, _ = model.decoder(tokens, enc)
    expanded, _ = model.decoder(tokens, enc.index_select(rows))
    assert (shared - expanded).abs().max().item() < 1e-5
    state = DecoderState()
    for t in range(tokens.size(1)):
        step = model.decode_step(tokens[:, : t + 1], enc, state)
        assert (step - expanded[:, t]).abs().max().item() < 1e-5
    assert state.layers[0]["cross"]["k"].size(0) == 2  # one cross cache per sample, not per row
    codes = torch.tensor([True, False, True, True, False, False])
    mixed, _ = model.decoder(tokens, enc, code_masks=codes)
    mixed_expanded, _ = model.decoder(tokens, enc.index_select(rows), code_masks=codes)
    assert (mixed - mixed_expanded).abs().max().item() < 1e-5
