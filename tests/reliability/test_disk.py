"""Disk problems: an unwritable or full --save-dir is reported before training starts (a probe write and a free
space check); a write that fails while saving (disk full, file size limit) names the checkpoint, and the previous
checkpoint stays loadable and unchanged."""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import train
import utils.checkpoint as checkpoint_io
import utils.checkpoint_manager as manager
from tests.conftest import REPO
from tests.reliability.helpers import cli_error
from tests.test_trainer import _argv
from utils.checkpoint import load_checkpoint_file

FAST = ("--batch-size", "2", "--disable-validation")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _first_checkpoint(caption_data: str, save_dir: Path) -> str:
    assert train.main(_argv(caption_data, save_dir, "--max-update", "1", *FAST)) == 0
    return _digest(save_dir / "checkpoint_last.pt")


def _assert_unchanged(save_dir: Path, digest: str) -> None:
    last = save_dir / "checkpoint_last.pt"
    assert _digest(last) == digest and load_checkpoint_file(last)["optimizer_history"][-1]["num_updates"] == 1
    assert sorted(p.name for p in save_dir.iterdir()) == ["checkpoint_last.pt", "train_log.jsonl"]  # no temp files


class _Usage:
    def __init__(self, free: int):
        self.total, self.used, self.free = free, 0, free


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
@pytest.mark.parametrize("problem", ["parent is a file", "read-only", "no free space"])
def test_unusable_save_dir_is_reported_before_training(problem, caption_data, tmp_path, capsys, monkeypatch):
    save_dir = tmp_path / "ckpt"
    if problem == "parent is a file":
        (tmp_path / "file").write_text("x")
        save_dir = tmp_path / "file" / "ckpt"
    elif problem == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        save_dir.mkdir()
        save_dir.chmod(0o555)
    else:
        monkeypatch.setattr(manager.shutil, "disk_usage", lambda _path: _Usage(free=1 << 20))
    line = cli_error(capsys, "train.py", train.main, _argv(caption_data, save_dir, "--max-update", "1", *FAST))
    expected = {
        "parent is a file": f"--save-dir {save_dir} is not writable: Not a directory",
        "read-only": f"--save-dir {save_dir} is not writable: Permission denied",
        "no free space": f"--save-dir {save_dir} has 1.0 MiB free, less than the ",
    }[problem]
    assert expected in line
    assert not (save_dir / "train_log.jsonl").exists()  # stopped before the first update


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_disk_full_while_saving_keeps_the_previous_checkpoint(caption_data, tmp_path, capsys, monkeypatch):
    digest = _first_checkpoint(caption_data, tmp_path)

    class DiskFull:  # ``os`` for utils.checkpoint, with the checkpoint's temp file writing into /dev/full
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fdopen(fd: int, mode: str):
            os.close(fd)
            return open("/dev/full", mode)  # noqa: SIM115  (the caller closes it)

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    monkeypatch.setattr(checkpoint_io, "os", DiskFull())
    line = cli_error(capsys, "train.py", train.main, _argv(caption_data, tmp_path, "--max-update", "2", *FAST))
    assert line == (
        f"train.py: error: [Errno 28] could not write checkpoint {tmp_path / 'checkpoint_last.pt'}: No space left "
        "on device; the previous checkpoint_last.pt (if any) is unchanged"
    )
    _assert_unchanged(tmp_path, digest)


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_file_size_limit_while_saving_in_a_real_process(caption_data, tmp_path):
    digest = _first_checkpoint(caption_data, tmp_path)
    limit = (tmp_path / "checkpoint_last.pt").stat().st_size // 2  # logs and indexes fit, a checkpoint does not

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    cmd = [sys.executable, "train.py", *_argv(caption_data, tmp_path, "--max-update", "2", *FAST)]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"train.py: error: [Errno {errno.EFBIG}] could not write checkpoint {tmp_path / 'checkpoint_last.pt'}: "
        "File too large; the previous checkpoint_last.pt (if any) is unchanged"
    )
    _assert_unchanged(tmp_path, digest)


def test_a_failed_copy_to_another_name_keeps_that_file(tmp_path, monkeypatch):
    src, dst = tmp_path / "checkpoint_1_2.pt", tmp_path / "checkpoint_best.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old")

    def copy_until_full(a, b):
        Path(b).write_bytes(Path(a).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manager.shutil, "copyfile", copy_until_full)
    with pytest.raises(OSError, match=f"could not write checkpoint {dst}: No space left on device"):
        manager._copy_atomic(src, dst)
    assert dst.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, src.name])
