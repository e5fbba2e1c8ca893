"""Bucket tables and position ids (spec §1.4): the original's documented test vectors."""

from __future__ import annotations

import pytest
import torch

from models.embeddings import (
    code_position_ids,
    image_num_rel_distance,
    image_position_ids,
    make_image_bucket_position,
    make_token_bucket_position,
)


@pytest.fixture(scope="module")
def token_table():
    return make_token_bucket_position(256)


@pytest.mark.parametrize(
    ("rel", "bucket"),
    [
        (0, 255),
        (1, 256),
        (-1, 254),
        (127, 382),
        (128, 383),
        (129, 384),
        (200, 411),
        (500, 467),
        (1023, 510),
        (-1023, 0),
    ],
)
def test_token_bucket_vectors(token_table, rel, bucket):
    i, j = (rel, 0) if rel >= 0 else (0, -rel)
    assert token_table[i, j].item() == bucket


def test_token_bucket_range(token_table):
    assert token_table.shape == (1024, 1024) and token_table.dtype == torch.long
    assert token_table.min().item() == 0 and token_table.max().item() == 510


def test_image_bucket_vectors():
    table = make_image_bucket_position(42, image_num_rel_distance(42))
    assert table.shape == (1765, 1765)
    assert image_num_rel_distance(42) == 6892
    assert (table[1, 1].item(), table[1, 2].item(), table[2, 1].item()) == (3444, 3443, 3445)
    assert table[0, 5].item() == 6889 and table[5, 0].item() == 6890 and table[0, 0].item() == 6891


def test_image_position_ids_use_bucket_stride():
    ids = image_position_ids(2, 3, 42)
    assert ids.tolist() == [1, 2, 3, 43, 44, 45]


def test_code_position_ids_layout():
    ids = code_position_ids(128, 42)
    assert ids.shape == (1026,)
    assert ids[0].item() == 0 and ids[1].item() == 1 and ids[17].item() == 43 and ids[256].item() == 15 * 42 + 15 + 1
    assert (ids[257:] == 1024).all()


def test_golden_buffers_equal_the_checkpoint(golden_ckpt_path):
    state = torch.load(golden_ckpt_path, weights_only=False)["model"]
    assert torch.equal(state["encoder.token_rp_bucket"], make_token_bucket_position(256))
    assert torch.equal(state["decoder.image_rp_bucket"], make_image_bucket_position(42, 6892))
    assert torch.equal(state["decoder.image_position_idx"], code_position_ids(128, 42))
