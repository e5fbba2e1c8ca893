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


CAPTION_WORDS = [
    "a",
    "red",
    "square",
    "green",
    "circle",
    "on",
    "the",
    "table",
    "two",
    "striped",
    "cats",
    "dog",
    "runs",
    "in",
    "park",
    "big",
    "small",
    "blue",
    "sky",
]


def write_caption_tsv(path: Path, rows: int, seed: int = 0, refs: int = 1) -> Path:
    """A synthetic caption TSV in OFA's layout: uniq-id, image-id, caption, objects, image (base64 PNG)."""
    import numpy as np
    from PIL import Image

    from data.images import encode_image_base64

    rng = np.random.RandomState(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            image = Image.fromarray(rng.randint(0, 255, (40, 48, 3), dtype=np.uint8))
            caps = ["{}.".format(" ".join(rng.choice(CAPTION_WORDS, rng.randint(3, 9)))) for _ in range(refs)]
            f.write(f"{i}\t{i}\t{'&&'.join(caps)}\tnone\t{encode_image_base64(image)}\n")
    return path


@pytest.fixture(scope="session")
def caption_data(tmp_path_factory) -> str:
    """``train.tsv,valid.tsv`` (24 and 6 rows) for training tests."""
    root = tmp_path_factory.mktemp("caption")
    train = write_caption_tsv(root / "train.tsv", 24, seed=0)
    valid = write_caption_tsv(root / "valid.tsv", 6, seed=1, refs=2)
    return f"{train},{valid}"
