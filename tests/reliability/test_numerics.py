"""Numerics: an injected NaN/inf loss or gradient is detected, its update skipped and logged; K in a row stop the
run with one clear line (--max-consecutive-nan-skips K); under --fp16 an overflow lowers the loss scale, which
recovers."""

from __future__ import annotations

import pytest

import train
from tests.reliability.helpers import FaultyCriterion, cli_error, finite_weights, read_log
from tests.test_trainer import _argv
from utils.checkpoint import load_checkpoint_file


@pytest.fixture
def inject(monkeypatch):
    """``inject(plan)``: train.py's criterion makes the loss NaN / the gradient inf on the planned calls."""

    def setup(plan: dict[int, str]) -> None:
        build = train.build_criterion
        monkeypatch.setattr(train, "build_criterion", lambda *args, **kw: FaultyCriterion(build(*args, **kw), plan))

    return setup


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_nan_loss_and_inf_gradient_skip_their_update_and_are_logged(inject, caption_data, tmp_path, capsys):
    inject({1: "nan_loss", 2: "inf_grad"})  # attempts 2 and 3; two in a row stay below K = 3
    flags = ("--max-update", "3", "--disable-validation", "--max-consecutive-nan-skips", "3")
    assert train.main(_argv(caption_data, tmp_path, *flags)) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "update skipped" in line]
    assert len(warnings) == 2
    assert "non-finite loss nan / gradient norm nan at update 2: update skipped (1 in a row, stop at 3)" in warnings[0]
    assert "at update 2: update skipped (2 in a row, stop at 3)" in warnings[1]  # the loss was finite
    log = read_log(tmp_path)
    assert [x["num_updates"] for x in log] == [1, 2, 3] and all(x["loss"] == x["loss"] for x in log)
    ckpt = load_checkpoint_file(tmp_path / "checkpoint_last.pt")
    assert ckpt["extra_state"]["train_iterator"]["iterations_in_epoch"] == 5  # the skipped batches were consumed
    assert finite_weights(ckpt["model"])


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_k_non_finite_updates_in_a_row_stop_the_run(inject, caption_data, tmp_path, capsys):
    inject({i: "nan_loss" for i in range(1, 100)})
    flags = ("--max-update", "4", "--disable-validation", "--max-consecutive-nan-skips", "3")
    line = cli_error(capsys, "train.py", train.main, _argv(caption_data, tmp_path, *flags))
    assert line == (
        "train.py: error: 3 updates in a row had a NaN/inf loss or gradient (update 2, "
        "--max-consecutive-nan-skips 3): stopping (the skipped updates changed no weights)"
    )
    assert [x["num_updates"] for x in read_log(tmp_path)] == [1]


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_fp16_overflow_lowers_the_loss_scale_and_it_recovers(inject, caption_data, tmp_path, capsys):
    inject({0: "inf_grad"})
    flags = ("--max-update", "1", "--batch-size", "2", "--disable-validation", "--no-save", "--fp16",
             "--fp16-init-scale", "128", "--fp16-scale-window", "1")  # fmt: skip
    assert train.main(_argv(caption_data, tmp_path, *flags)) == 0
    assert "fp16 overflow: update skipped, loss scale now 64" in capsys.readouterr().err
    log = read_log(tmp_path)  # one clean update at scale 64, then the window of 1 doubles it back
    assert [(x["num_updates"], x["loss_scale"]) for x in log] == [(1, 128.0)] and log[0]["loss"] == log[0]["loss"]
