"""Tests for data/collate.py: collate_tokens with the semantics of OFA's fork of fairseq."""

import pytest
import torch

from data.collate import collate_tokens

PAD, EOS = 1, 2


def _t(*tokens: int) -> torch.Tensor:
    return torch.tensor(tokens, dtype=torch.long)


def test_right_padding_is_the_default():
    out = collate_tokens([_t(5, 6, 2), _t(7, 2), _t(2)], PAD)
    assert out.dtype == torch.long
    assert out.tolist() == [[5, 6, 2], [7, 2, 1], [2, 1, 1]]


def test_left_padding():
    out = collate_tokens([_t(5, 6, 2), _t(7, 2)], PAD, left_pad=True)
    assert out.tolist() == [[5, 6, 2], [1, 7, 2]]


def test_move_eos_to_beginning_uses_the_last_token_without_eos_idx():
    # the last token goes first and the rest shift right: [a, b, eos] -> [eos, a, b]
    out = collate_tokens([_t(5, 6, 2), _t(7, 9)], PAD, move_eos_to_beginning=True)
    assert out.tolist() == [[2, 5, 6], [9, 7, 1]]


def test_move_eos_to_beginning_with_eos_idx_replaces_the_last_token():
    # fairseq writes eos_idx at position 0 whatever the last token was, and drops that last token
    out = collate_tokens([_t(5, 6, 7), _t(8, 2)], PAD, move_eos_to_beginning=True, eos_idx=EOS)
    assert out.tolist() == [[2, 5, 6], [2, 8, 1]]
    left = collate_tokens([_t(5, 6, 2), _t(8, 2)], PAD, move_eos_to_beginning=True, eos_idx=EOS, left_pad=True)
    assert left.tolist() == [[2, 5, 6], [1, 2, 8]]


def test_pad_to_length_and_multiple():
    values = [_t(5, 6, 2), _t(2)]
    assert collate_tokens(values, PAD, pad_to_length=5).tolist() == [[5, 6, 2, 1, 1], [2, 1, 1, 1, 1]]
    assert collate_tokens(values, PAD, pad_to_length=2).shape == (2, 3)  # never shorter than the longest
    assert collate_tokens(values, PAD, pad_to_multiple=4).shape == (2, 4)
    assert collate_tokens(values, PAD, pad_to_multiple=3).shape == (2, 3)
    assert collate_tokens(values, PAD, pad_to_length=5, pad_to_multiple=4).shape == (2, 8)


def test_boolean_masks_are_padded_with_pad_idx_cast_to_true():
    # per-position vocabulary masks (L, V), as constrained training builds them
    a = torch.tensor([[True, False, False, True], [False, True, False, False]])
    b = torch.tensor([[False, False, True, False]])
    out = collate_tokens([a, b], PAD)
    assert out.dtype == torch.bool and out.shape == (2, 2, 4)
    assert torch.equal(out[0], a)
    assert torch.equal(out[1, 0], b[0])
    assert out[1, 1].all()  # OFA pads masks with fill_(1): the padded row allows everything
    assert not collate_tokens([a, b], 0)[1, 1].any()


def test_two_dimensional_float_values_left_padded():
    a = torch.arange(6, dtype=torch.float32).view(3, 2)
    b = torch.tensor([[9.0, 8.0]])
    out = collate_tokens([a, b], PAD, left_pad=True)
    assert out.dtype == torch.float32
    assert out[1].tolist() == [[1.0, 1.0], [1.0, 1.0], [9.0, 8.0]]
    assert torch.equal(out[0], a)


def test_rejects_what_ofa_does_not_support():
    with pytest.raises(ValueError):
        collate_tokens([], PAD)
    with pytest.raises(ValueError, match="move_eos_to_beginning"):
        collate_tokens([torch.zeros(2, 3, dtype=torch.bool)], PAD, move_eos_to_beginning=True)
    with pytest.raises(ValueError, match="second dimension"):
        collate_tokens([torch.zeros(2, 3), torch.zeros(2, 4)], PAD)
    with pytest.raises(ValueError):
        collate_tokens([_t(1, 2), torch.zeros(2, 3, dtype=torch.long)], PAD)
    with pytest.raises(ValueError):
        collate_tokens([torch.zeros(1, 1, 1)], PAD)


def test_empty_sample_becomes_a_pad_row():
    out = collate_tokens([_t(5, 2), torch.empty(0, dtype=torch.long)], PAD, move_eos_to_beginning=True)
    assert out.tolist() == [[2, 5], [1, 1]]
