"""Fixtures shared by the reliability tests: a caption checkpoint trained for one update (ofa_test, 32 px), and
root log handlers reset between tests."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import train
from tests.test_trainer import _argv


@pytest.fixture(scope="session")
def caption_ckpt(tmp_path_factory, caption_data, bpe_dir) -> Path:
    save = tmp_path_factory.mktemp("caption_ckpt")
    assert train.main(_argv(caption_data, save, "--max-update", "1", "--disable-validation")) == 0
    return save / "checkpoint_last.pt"


@pytest.fixture(autouse=True)
def _no_stale_log_handler():
    """train.py/evaluate.py point the root logger at the stderr of the test that ran them (``basicConfig``); a
    later test logging through that handler would write to a closed capture stream."""
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    yield
