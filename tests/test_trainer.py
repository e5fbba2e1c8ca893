"""The training engine end to end: CLI, checkpoints and logs, bitwise resume, DDP equivalence, crash safety."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from tests.ckpt_writer import write_forever
from tests.conftest import BPE_DIR, REPO
from utils.checkpoint import load_checkpoint_file, save_checkpoint_file


def _argv(data: str, save_dir: Path, *extra: str) -> list[str]:
    return [
        data, "--task", "caption", "--arch", "ofa_test", "--bpe-dir", str(BPE_DIR), "--selected-cols", "0,4,2",
        "--patch-image-size", "32", "--batch-size", "4", "--lr", "1e-3", "--clip-norm", "1.0",
        "--weight-decay", "0.01", "--label-smoothing", "0.1", "--save-dir", str(save_dir), "--log-interval", "1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def _needs_bpe(bpe_dir):
    return bpe_dir


def test_unknown_flag_is_an_error(caption_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        train.main(_argv(caption_data, tmp_path, "--max-update", "1", "--bogus-flag", "3"))
    assert err.value.code == 2
    assert "--bogus-flag" in capsys.readouterr().err


def test_a_stop_condition_is_required(caption_data, tmp_path):
    with pytest.raises(SystemExit, match="--max-epoch or --max-update"):
        train.main(_argv(caption_data, tmp_path))


def test_ofa_recipe_flags_parse(caption_data, tmp_path):
    cfg = train.parse_args(
        _argv(caption_data, tmp_path, "--max-epoch", "2", "--warmup-ratio", "0.06", "--adam-betas", "(0.9,0.999)",
              "--user-dir", "ofa_module", "--find-unused-parameters", "--encoder-normalize-before",
              "--drop-worst-ratio", "0.2", "--drop-worst-after", "2500", "--freeze-encoder-embedding",
              "--encoder-drop-path-rate", "0.1", "--ema-alpha", "0.999", "--store-ema", "--fp16-scale-window", "512")
    )  # fmt: skip
    assert cfg.optimization.adam_betas == (0.9, 0.999) and cfg.optimization.warmup_ratio == 0.06
    assert cfg.criterion.drop_worst_ratio == 0.2 and cfg.criterion.label_smoothing == 0.1
    assert cfg.model.freeze_encoder_embedding and cfg.model.encoder_drop_path_rate == 0.1
    assert cfg.ema.store_ema and cfg.ema.ema_decay == 0.999 and cfg.common.fp16_scale_window == 512
    assert cfg.task.patch_image_size == 32 and cfg.task.selected_cols == "0,4,2"


def test_training_writes_checkpoints_and_logs(caption_data, tmp_path):
    assert train.main(_argv(caption_data, tmp_path, "--max-update", "4", "--save-interval-updates", "2",
                            "--validate-interval-updates", "2", "--keep-interval-updates", "1",
                            "--total-num-update", "4")) == 0  # fmt: skip
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_1_4.pt", "checkpoint_best.pt", "checkpoint_last.pt", "train_log.jsonl"]
    ckpt = load_checkpoint_file(tmp_path / "checkpoint_last.pt")
    assert list(ckpt) == ["args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state",
                          "last_optimizer_state"]  # fmt: skip
    assert ckpt["optimizer_history"][-1]["num_updates"] == 4
    assert ckpt["cfg"]["model"].arch == "ofa_test" and ckpt["cfg"]["task"]["_name"] == "caption"
    assert ckpt["cfg"]["optimization"]["lr"] == 1e-3
    assert ckpt["extra_state"]["train_iterator"] == {"epoch": 1, "iterations_in_epoch": 4, "shuffle": True}
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["split"] == "train"]
    assert [x["num_updates"] for x in train_lines] == [1, 2, 3, 4]
    assert all(x["loss"] > 0 and x["gnorm"] > 0 for x in train_lines)
    # polynomial decay over --total-num-update 4 updates, no warm-up: lr after update k is 1e-3 * (1 - k/4)
    assert [x["lr"] for x in train_lines] == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0])
    assert [x["num_updates"] for x in lines if x["split"] == "valid"] == [2, 4]


def _assert_same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint_file(a), load_checkpoint_file(b)
    for key, value in ca["model"].items():
        assert torch.equal(value, cb["model"][key]), key
    sa, sb = ca["last_optimizer_state"]["state"], cb["last_optimizer_state"]["state"]
    assert sa.keys() == sb.keys()
    for idx in sa:
        assert sa[idx]["step"] == sb[idx]["step"]
        assert torch.equal(sa[idx]["exp_avg"], sb[idx]["exp_avg"]) and torch.equal(
            sa[idx]["exp_avg_sq"], sb[idx]["exp_avg_sq"]
        )
    assert ca["optimizer_history"] == cb["optimizer_history"]  # lr schedule state and update count
    assert ca["extra_state"]["train_iterator"] == cb["extra_state"]["train_iterator"]


def test_resume_mid_epoch_is_bitwise(caption_data, tmp_path):
    # dropout and drop-path on, EMA on: randomness and every state must survive the restart
    extra = ("--dropout", "0.1", "--encoder-drop-path-rate", "0.1", "--store-ema", "--ema-decay", "0.9",
             "--max-epoch", "3", "--warmup-ratio", "0.2", "--disable-validation")  # fmt: skip
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main(_argv(caption_data, straight, "--max-update", "8", *extra))
    train.main(_argv(caption_data, resumed, "--max-update", "4", *extra))  # stops mid-epoch (6 batches/epoch)
    assert (
        load_checkpoint_file(resumed / "checkpoint_last.pt")["extra_state"]["train_iterator"]["iterations_in_epoch"]
        == 4
    )
    train.main(_argv(caption_data, resumed, "--max-update", "8", *extra))
    _assert_same_checkpoint(straight / "checkpoint_last.pt", resumed / "checkpoint_last.pt")
    ema_a = load_checkpoint_file(straight / "checkpoint_last.pt")["extra_state"]["ema"]
    ema_b = load_checkpoint_file(resumed / "checkpoint_last.pt")["extra_state"]["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _torchrun(args: list[str], env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *args]
    return _run(cmd, env)


@pytest.mark.parametrize("backend", ["pytorch_ddp", "fully_sharded"])
def test_torchrun_two_ranks_equal_one_rank_with_accumulation(caption_data, tmp_path, backend):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}  # loopback only
    common = ["--max-update", "3", "--disable-validation", "--batch-size", "2"]
    ddp = _torchrun(_argv(caption_data, tmp_path / "ddp", *common, "--ddp-backend", backend), env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "terminate called" not in ddp.stderr
    one = _run([sys.executable, "train.py", *_argv(caption_data, tmp_path / "one", *common, "--update-freq", "2")], env)
    assert one.returncode == 0, one.stderr[-3000:]
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
              for d in ("ddp", "one")]  # fmt: skip
    assert len(losses[0]) == len(losses[1]) == 3
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-6)  # same rows in every update
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    if backend == "fully_sharded":
        # sharded conv weight gradients round differently in the last bits, which Adam's first, sign-like
        # steps amplify; the losses above are the check
        return
    a = load_checkpoint_file(tmp_path / "ddp" / "checkpoint_last.pt")["model"]
    b = load_checkpoint_file(tmp_path / "one" / "checkpoint_last.pt")["model"]
    # BatchNorm running statistics are per rank (as in OFA); parameters must agree
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in params) <= 1e-6


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_file(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint_file({"model": {}, "extra_state": {"n": 0}}, path)
    # a fork server that never ran torch ops forks clean writers (forking this process could deadlock them)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "utils.checkpoint", "tests.ckpt_writer"])
    rng = random.Random(0)
    written = 0
    for _ in range(20):
        ready = ctx.Event()
        proc = ctx.Process(target=write_forever, args=(str(path), ready))
        proc.start()
        assert ready.wait(60), "writer did not start"
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        n = load_checkpoint_file(path)["extra_state"]["n"]
        written += n > 0
    assert written >= 15  # the writers really were writing when killed
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "checkpoint_last.pt"]
    assert all(name.endswith(".tmp") for name in leftovers)  # a killed writer can only leave its temp file


def test_fsdp_resume_is_bitwise(caption_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}  # loopback only
    common = ["--disable-validation", "--batch-size", "2", "--ddp-backend", "fully_sharded", "--dropout", "0.1"]
    for save_dir, stops in ((tmp_path / "straight", ["4"]), (tmp_path / "resumed", ["2", "4"])):
        for stop in stops:
            run = _torchrun(_argv(caption_data, save_dir, *common, "--max-update", stop), env)
            assert run.returncode == 0, run.stderr[-3000:]
    a = load_checkpoint_file(tmp_path / "straight" / "checkpoint_last.pt")
    b = load_checkpoint_file(tmp_path / "resumed" / "checkpoint_last.pt")
    params = [k for k in a["model"] if "running_" not in k and "num_batches" not in k]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in params)
    sa, sb = a["last_optimizer_state"]["state"], b["last_optimizer_state"]["state"]
    assert sa.keys() <= sb.keys() and all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    # the distributed loader initialises every parameter's state; the never-trained ones stay at zero
    assert all(not sb[k]["exp_avg"].any() and not sb[k]["exp_avg_sq"].any() for k in sb.keys() - sa.keys())
