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


def random_image_b64(rng, height: int = 40, width: int = 48) -> str:
    import numpy as np
    from PIL import Image

    from data.images import encode_image_base64

    return encode_image_base64(Image.fromarray(rng.randint(0, 255, (height, width, 3), dtype=np.uint8)))


def write_task_tsv(task: str, path: Path, rows: int, seed: int = 0) -> tuple[Path, str]:
    """A synthetic TSV in the original column layout of ``task``; returns (path, OFA's --selected-cols)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    words = CAPTION_WORDS
    lines = []
    for i in range(rows):
        image = random_image_b64(rng)
        text = " ".join(rng.choice(words, rng.randint(3, 7)))
        if task == "caption":
            lines.append(f"{i}\t{i}\t{text}&&{' '.join(rng.choice(words, 4))}\tnone\t{image}")
        elif task == "vqa_gen":
            answers = "&&".join(f"{rng.choice([0.3, 0.6, 1.0])}|!+{a}" for a in rng.choice(["yes", "no", "red dog"], 2))
            lines.append(f"{i}\t{i}\t{text}\t{answers}\tcat&&dog\t{image}")
        elif task == "refcoco":
            x0, y0 = rng.randint(0, 20), rng.randint(0, 15)
            lines.append(f"{i}\t{i}\t{text}\t{x0},{y0},{x0 + rng.randint(5, 25)},{y0 + rng.randint(5, 20)}\t{image}")
        elif task == "snli_ve":
            label = rng.choice(["entailment", "contradiction", "neutral"])
            lines.append(f"{i}\t{i}\t{image}\t{text}\t{' '.join(rng.choice(words, 5))}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cols = {"caption": "0,4,2", "vqa_gen": "0,5,2,3,4", "refcoco": "0,4,2,3", "snli_ve": "0,2,3,4,5"}
    return path, cols[task]
