"""Hostile checkpoints: a .pt whose pickle would run code, or that holds an unexpected class, is refused by every
loader (train.py --restore-file and its automatic resume, evaluate.py, predict.py, and the VQGAN, CLIP and
Inception weight readers) before anything runs; weights of the wrong shapes are named by their first keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import evaluate
import predict
import train
from models.clip import CLIPScorer
from models.vqgan import load_vqgan
from tests.conftest import BPE_DIR
from tests.models.test_vqgan import TINY_YAML
from tests.reliability.helpers import Payload, cli_error, hostile_checkpoint, mode_image
from tests.test_trainer import _argv
from utils.checkpoint import load_checkpoint_file, save_checkpoint_file
from utils.metrics.image_gen import load_inception

REFUSED = {"code": "posix.system", "class": "tests.reliability.helpers.InnocentLooking"}
LOADERS = ("train --restore-file", "train resume", "evaluate", "predict")


def _loader_argv(loader: str, ckpt: Path, data: str, tmp_path: Path) -> tuple[str, object, list[str]]:
    """(prog, main, argv) that make ``loader`` read ``ckpt``."""
    if loader == "train --restore-file":
        return "train.py", train.main, _argv(data, tmp_path / "run", "--max-update", "1", "--restore-file", str(ckpt))
    if loader == "train resume":  # checkpoint_last.pt in --save-dir is read without being named
        (tmp_path / "run").mkdir()
        ckpt.rename(tmp_path / "run" / "checkpoint_last.pt")
        return "train.py", train.main, _argv(data, tmp_path / "run", "--max-update", "1")
    if loader == "evaluate":
        valid = data.split(",")[1]
        argv = [valid, "--path", str(ckpt), "--bpe-dir", str(BPE_DIR), "--results-path", str(tmp_path / "res")]
        return "evaluate.py", evaluate.main, argv
    image = tmp_path / "photo.png"
    mode_image("RGB").save(image)
    return "predict.py", predict.main, ["--path", str(ckpt), "--task", "caption", str(image)]


@pytest.mark.parametrize("kind", ["code", "class"])
@pytest.mark.parametrize("loader", LOADERS)
def test_hostile_checkpoint_is_refused_and_nothing_runs(loader, kind, caption_ckpt, caption_data, tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = hostile_checkpoint(tmp_path / "evil.pt", kind, marker, base=load_checkpoint_file(caption_ckpt))
    prog, main, argv = _loader_argv(loader, ckpt, caption_data, tmp_path)
    line = cli_error(capsys, prog, main, argv)
    assert "refused to unpickle global(s)" in line and REFUSED[kind] in line
    assert not marker.exists()
    assert not (tmp_path / "run" / "train_log.jsonl").exists()  # training never started


def _tampered(caption_ckpt: Path, path: Path) -> Path:
    """The checkpoint with two layers' weights of another width: its stored configuration no longer fits."""
    ckpt = load_checkpoint_file(caption_ckpt)
    for key in ("encoder.layers.0.fc1.weight", "decoder.layers.1.fc2.weight"):
        rows, cols = ckpt["model"][key].shape
        ckpt["model"][key] = torch.zeros(rows + 8, cols)
    save_checkpoint_file(ckpt, path)
    return path


@pytest.mark.parametrize("loader", LOADERS)
def test_mismatched_shapes_name_the_first_keys(loader, caption_ckpt, caption_data, tmp_path, capsys):
    ckpt = _tampered(caption_ckpt, tmp_path / "tampered.pt")
    prog, main, argv = _loader_argv(loader, ckpt, caption_data, tmp_path)
    line = cli_error(capsys, prog, main, argv)
    rows, cols = load_checkpoint_file(caption_ckpt)["model"]["encoder.layers.0.fc1.weight"].shape
    assert "2 checkpoint entries do not fit this model's shapes" in line
    assert f"first: encoder.layers.0.fc1.weight ({rows + 8}, {cols}) vs ({rows}, {cols}); decoder.layers.1." in line


def _vqgan(path: Path) -> None:
    (path.parent / "model.yaml").write_text(TINY_YAML, encoding="utf-8")
    load_vqgan(path, path.parent / "model.yaml")


@pytest.mark.parametrize("load", [_vqgan, CLIPScorer.from_local, load_inception], ids=["vqgan", "clip", "inception"])
def test_weight_readers_refuse_code(load, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": Payload(f"touch {marker}")}, path)
    with pytest.raises(ValueError, match="system"):  # UnsafeCheckpointError is a ValueError too
        load(path)
    assert not marker.exists()
