"""Crashes: SIGKILL of train.py at random moments never leaves an unloadable checkpoint_last.pt and every restart
resumes where the last checkpoint left off; under ``torchrun --max-restarts 1`` a worker killed mid-epoch is
restarted from the last checkpoint and the run ends with the parameters of an undisturbed one. Workers listen
on loopback only. The 20 kills take about three minutes: marked slow (CI's second step, ``pytest -m slow``);
the torchrun test takes about 40 s."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_trainer import _argv, _assert_same_checkpoint
from utils.checkpoint import load_checkpoint_file

# GLOO_SOCKET_IFNAME: gloo's sockets on loopback. TORCH_DISABLE_SHARE_RDZV_TCP_STORE: torch >= 2.5 shares the agent's
# store with the workers and reuses it after a restart without a per-attempt prefix, so a restarted worker can
# read its dead peer's address and fail to connect (pytorch/pytorch#135712); docs/TROUBLESHOOTING.md says so.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo",
       "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # fmt: skip
KILL_FLAGS = ("--save-interval-updates", "1", "--keep-interval-updates", "1", "--no-epoch-checkpoints",
              "--batch-size", "2", "--disable-validation")  # fmt: skip


def _updates(path: Path) -> int:
    return int(load_checkpoint_file(path)["optimizer_history"][-1]["num_updates"])


def _kill_at_a_random_moment(cmd: list[str], log: Path, rng: random.Random) -> None:
    """Start train.py, wait until its trainer is set up, SIGKILL it 0-2 s later (or let it finish)."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 300
    while proc.poll() is None and "starting from scratch" not in log.read_text() and "restored" not in log.read_text():
        assert time.monotonic() < deadline, "train.py did not start"
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 2.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_at_random_moments_never_breaks_checkpoint_last_and_restarts_resume(caption_data, tmp_path):
    save, rng, done = tmp_path / "killed", random.Random(0), -1
    cmd = [sys.executable, "train.py", *_argv(caption_data, save, *KILL_FLAGS, "--max-update", "1000")]
    for i in range(20):  # about one update per run: the kills land all over the training loop and its saves
        log = tmp_path / f"run{i}.log"
        _kill_at_a_random_moment(cmd, log, rng)
        if done >= 0:  # the restart resumed from the checkpoint the previous run left
            restored = f"restored {save / 'checkpoint_last.pt'} (epoch "
            assert re.search(re.escape(restored) + rf"\d+, {done} updates\)", log.read_text()), log.read_text()
        last = save / "checkpoint_last.pt"
        if last.exists():
            now = _updates(last)  # loadable after every kill
            assert now >= done
            done = now
    assert done > 2, "the runs hardly got to save"
    assert all(p.suffix in (".pt", ".jsonl", ".tmp") for p in save.iterdir())
    stop = ("--max-update", str(done + 2))  # the schedule does not depend on --max-update
    for save_dir in (save, tmp_path / "straight"):  # finish the killed run; run the same updates undisturbed
        run = subprocess.run([sys.executable, "train.py", *_argv(caption_data, save_dir, *KILL_FLAGS, *stop)],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
    _assert_same_checkpoint(tmp_path / "straight" / "checkpoint_last.pt", save / "checkpoint_last.pt")


# ---------------------------------------------------------------------------------------------- torchrun
RUN_FLAGS = ("--max-update", "8", "--save-interval-updates", "2", "--batch-size", "2", "--disable-validation")


def _torchrun(caption_data: str, save: Path, *launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *launcher,
            "train.py", *_argv(caption_data, save, *RUN_FLAGS)]  # fmt: skip


def _workers(agent: int) -> dict[int, tuple[int, str]]:
    """``{local rank: (pid, MASTER_PORT)}`` of the train.py processes started by the torchrun agent ``agent``."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == agent:
                env = dict(v.split("=", 1) for v in (entry / "environ").read_text().split("\0") if "=" in v)
                found[int(env["LOCAL_RANK"])] = (int(entry.name), env["MASTER_PORT"])
        except (OSError, KeyError, ValueError):
            continue
    return found


def _listening(pid: int) -> set[str]:
    """Local addresses of the TCP sockets process ``pid`` listens on (from /proc, as ``ip:port``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(_address(fields[1]))
    return found


def _address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]  # /proc prints 32-bit words host-endian
    packed = b"".join(words)
    if len(packed) == 16 and packed[:12] == b"\0" * 10 + b"\xff\xff":
        packed = packed[12:]  # IPv4-mapped IPv6
    text = ".".join(map(str, packed)) if len(packed) == 4 else packed.hex()
    return f"{text}:{int(port, 16)}"


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host == "0" * 31 + "1"


def _kill_one_worker_mid_epoch(proc: subprocess.Popen, save: Path) -> set[str]:
    """Wait for the first checkpoint (update 2), SIGKILL local rank 1; return the addresses the workers listen
    on, except torch's TCPStore (MASTER_PORT, hosted by rank 0), which listens on every interface."""
    deadline = time.monotonic() + 300
    while not (save / "checkpoint_last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    workers = _workers(proc.pid)
    addresses = set().union(*(_listening(pid) for pid, _ in workers.values()))
    os.kill(workers[1][0], signal.SIGKILL)
    return {a for a in addresses if a.rsplit(":", 1)[1] != workers[0][1]}


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_torchrun_restarts_a_killed_worker_from_the_last_checkpoint(caption_data, tmp_path):
    straight = subprocess.run(_torchrun(caption_data, tmp_path / "straight"), cwd=REPO, env=ENV,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    save, log = tmp_path / "killed", tmp_path / "killed.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(_torchrun(caption_data, save, "--max-restarts", "1"), cwd=REPO, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        addresses = _kill_one_worker_mid_epoch(proc, save)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        proc.kill()
    text = log.read_text()
    resumed = re.findall(r"restored \S+checkpoint_last\.pt \(epoch 1, (\d+) updates\)", text)
    assert resumed and int(resumed[0]) in (2, 4, 6), text[-3000:]  # mid-epoch: 6 updates make an epoch
    assert addresses and all(_is_loopback(a) for a in addresses), addresses
    a = load_checkpoint_file(tmp_path / "straight" / "checkpoint_last.pt")
    b = load_checkpoint_file(save / "checkpoint_last.pt")
    assert a["optimizer_history"] == b["optimizer_history"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "parameters differ"
    sa, sb = a["last_optimizer_state"]["state"], b["last_optimizer_state"]["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
