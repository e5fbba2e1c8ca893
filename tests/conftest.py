"""Shared fixtures: paths to ../shared (golden fixtures, BPE files) and small synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN_DIR = SHARED / "golden"
BPE_DIR = SHARED / "ofa_bpe"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared fixtures folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _require(GOLDEN_DIR)


@pytest.fixture(scope="session")
def bpe_dir() -> Path:
    return _require(BPE_DIR)


@pytest.fixture(scope="session")
def golden(golden_dir: Path) -> dict:
    # a trusted fixture written by the original code; it pickles argparse.Namespace in its meta
    return torch.load(golden_dir / "golden_small.pt", weights_only=False)


@pytest.fixture(scope="session")
def golden_ckpt_path(golden_dir: Path) -> Path:
    return _require(golden_dir / "ckpt_small.pt")


@pytest.fixture(autouse=True)
def _two_threads():
    # the fixtures were produced with 2 threads; keep runs comparable and CI-sized
    torch.set_num_threads(2)
    yield
