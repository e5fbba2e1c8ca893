"""Gigaword task: samples computed by hand from spec §4.7, the seeded prev_output noise, hypothesis
post-processing, and train -> evaluate end to end on a synthetic ``article\\tsummary`` TSV."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import tasks.gigaword  # noqa: F401  (registers "gigaword")
import train
from data.tokenizer import OFATokenizer
from tasks import TASKS
from tasks.gigaword import OFA_EVAL_ARGS, GigawordConfig, GigawordTask, postprocess_hypothesis

FIRST_CODE = 50265  # len(dict) - code_dict_size - num_bins for OFA's English vocabulary
ROW = ["Japan 's Nikkei <unk> fell / sharply on Monday", "Japan's stocks <unk> fall on profit-taking ahead of data"]
WORDS = [
    "police",
    "said",
    "the",
    "gunman",
    "fled",
    "japan",
    "stocks",
    "fall",
    "rise",
    "sharply",
    "on",
    "monday",
    "after",
    "talks",
    "##",
    "killed",
]


@pytest.fixture(scope="module")
def tokenizer(bpe_dir):
    return OFATokenizer.from_bpe_dir(bpe_dir)


def _task(tokenizer, **cfg) -> GigawordTask:
    return GigawordTask(GigawordConfig(**cfg), tokenizer)


def test_registered_with_ofa_defaults():
    entry = TASKS.get("gigaword")
    assert entry.config is GigawordConfig
    cfg = GigawordConfig()
    assert json.loads(cfg.eval_args) == {"beam": 6, "lenpen": 0.7, "max_len_b": 32, "no_repeat_ngram_size": 3}
    assert cfg.eval_args == OFA_EVAL_ARGS and cfg.noise_ratio == 0.0 and not cfg.eval_rouge
    assert GigawordTask.metric_name == "rougeL_f1"


def test_known_row_prompt_target_and_reference(tokenizer):
    task = _task(tokenizer, max_src_length=64, max_tgt_length=5)
    sample = task.build_sample(ROW, "train", 7)
    # pre_caption by hand: lower, "/" and "-" -> space, squeeze spaces, word limit; then <unk> -> unk
    prompt = ' what is the summary of article " japan \'s nikkei unk fell sharply on monday "?'
    assert sample["source"].tolist() == [0, *tokenizer.encode(prompt).tolist(), 2]
    target = tokenizer.encode("japan's stocks unk fall on").tolist()  # 5 words, no leading space
    assert sample["target"].tolist() == [*target, 2]
    assert sample["prev_output_tokens"].tolist() == [0, *target]
    assert target[0] == tokenizer.encode("japan")[0].item() != tokenizer.encode(" japan")[0].item()
    assert sample["target_str"] == "japan's stocks <unk> fall on profit-taking ahead of data"  # raw, lowered
    assert sample["id"] == 7 and "patch_image" not in sample


def test_source_is_cut_to_max_src_length_bpe_tokens(tokenizer):
    task = _task(tokenizer, max_src_length=6)
    source = task.build_sample(ROW, "valid", 0)["source"]
    full = tokenizer.encode(' what is the summary of article " japan \'s nikkei "?')
    assert source.tolist() == [0, *full[:6].tolist(), 2]


def test_short_row_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="2 columns"):
        _task(tokenizer).build_sample(["only one column"], "train", 0)


def _write_tsv(path: Path, rows: int, seed: int) -> Path:
    rng = np.random.RandomState(seed)
    lines = [
        f"{' '.join(rng.choice(WORDS, rng.randint(6, 14)))}\t{' '.join(rng.choice(WORDS, rng.randint(3, 7)))}"
        for _ in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_zero_noise_keeps_teacher_forcing_input(tokenizer, tmp_path):
    data = _write_tsv(tmp_path / "train.tsv", 4, seed=0)
    dataset = _task(tokenizer, data=str(data), noise_ratio=0.0).dataset("train", epoch=3)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["prev_output_tokens"].tolist() == [0, *sample["target"][:-1].tolist()]


def test_noise_changes_only_prev_output_and_is_seeded(tokenizer):
    task = _task(tokenizer, noise_ratio=0.5, seed=3)
    clean = task.build_sample([ROW[0], " ".join(WORDS * 3)], "train", 0)
    prev = clean["prev_output_tokens"]
    noisy = task.add_noise(prev, epoch=2, index=5)
    assert noisy[0].item() == 0 and noisy.shape == prev.shape and not torch.equal(noisy, prev)
    changed = noisy[1:] != prev[1:]
    assert ((noisy[1:][changed] >= 4) & (noisy[1:][changed] < FIRST_CODE)).all()
    assert torch.equal(noisy, task.add_noise(prev, epoch=2, index=5))  # same (seed, epoch, index)
    assert not torch.equal(noisy, task.add_noise(prev, epoch=3, index=5))
    assert not torch.equal(noisy, task.add_noise(prev, epoch=2, index=6))
    assert not torch.equal(noisy, _task(tokenizer, noise_ratio=0.5, seed=4).add_noise(prev, epoch=2, index=5))
    assert torch.equal(prev, clean["prev_output_tokens"])  # the input tensor is not modified


def test_noise_rate_and_range(tokenizer):
    prev = torch.tensor([0] + [100] * 4000)
    for p in (0.2, 1.0):
        noisy = _task(tokenizer, noise_ratio=p).add_noise(prev, epoch=1, index=0)
        body = noisy[1:]
        assert abs(float((body != 100).float().mean()) - p) < 0.03
        assert int(body.min()) >= 4 and int(body.max()) < FIRST_CODE
    with pytest.raises(ValueError, match="noise-ratio"):
        _task(tokenizer, noise_ratio=1.5)


def test_dataset_noise_is_reproducible_and_leaves_global_rng_alone(tokenizer, tmp_path):
    data = _write_tsv(tmp_path / "train.tsv", 6, seed=1)
    task = _task(tokenizer, data=f"{data},{data}", noise_ratio=0.5)
    state = torch.get_rng_state()
    first = [task.dataset("train", epoch=1)[i] for i in range(6)]
    assert torch.equal(state, torch.get_rng_state())
    again = [task.dataset("train", epoch=1)[i] for i in reversed(range(6))][::-1]
    later = [task.dataset("train", epoch=2)[i] for i in range(6)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["prev_output_tokens"], b["prev_output_tokens"])
    assert any(
        not torch.equal(a["prev_output_tokens"], c["prev_output_tokens"]) for a, c in zip(first, later, strict=True)
    )
    for a, c in zip(first, later, strict=True):
        assert torch.equal(a["target"], c["target"]) and torch.equal(a["source"], c["source"])
    batch = task.collate(first[:3])
    assert batch["target_str"] == [s["target_str"] for s in first[:3]] and "patch_images" not in batch["net_input"]


def test_hypothesis_post_processing():
    assert (
        postprocess_hypothesis("  Japan 's Nikkei ( 1 ) rises 10 pct<unk>  ")
        == "japan 's nikkei -lrb- # -rrb- rises #0 pct<unk>"
    )
    assert postprocess_hypothesis("stocks<unk> up 1 . 5", replace_unk=True) == "stocks unk up #.5"


class _EchoGenerator:
    """Stands in for beam search: returns fixed token sequences as each row's best hypothesis."""

    def __init__(self, sequences: list[list[int]]):
        self.sequences = sequences

    def generate(self, model, sample) -> list[list[dict]]:
        return [[{"tokens": torch.tensor(seq)}] for seq in self.sequences]


def test_eval_and_valid_step_score_post_processed_hypotheses(tokenizer):
    task = _task(tokenizer, eval_rouge=True)
    unk = tokenizer.unk
    sequences = [
        [*tokenizer.encode("Japan stocks fall 1 pct").tolist(), 2],
        [*tokenizer.encode("stocks").tolist(), unk, *tokenizer.encode(" rise").tolist(), 2],
    ]
    generator = _EchoGenerator(sequences)
    sample = {"id": [0, 1], "target_str": ["japan stocks fall # pct", "stocks unk rise"]}
    preds = task.eval_step(torch.nn.Identity(), sample, generator)
    assert [p["hyp"] for p in preds] == ["japan stocks fall # pct", "stocks<unk> rise"]  # evaluate.py keeps <unk>
    assert [p["score"] for p in preds] == [100.0, 100.0]
    assert task.prediction_records(preds)[0] == {"hyp": "japan stocks fall # pct", "ref": "japan stocks fall # pct"}
    assert task.eval_metrics(preds)["rougeL_f1"] == 100.0 and task.eval_metrics(preds)["count"] == 2

    task._valid_generator = generator
    criterion = lambda model, sample: (torch.tensor(1.0), 2, {"loss": 1.0})  # noqa: E731
    _, _, log = task.valid_step(torch.nn.Identity(), criterion, sample)
    assert log["_rouge_cnt"] == 2 and log["_rougeL_f1_sum"] == pytest.approx(200.0)
    assert task.reduce_metrics([log])["rouge2_recall"] == 100.0


def test_reduce_metrics_divides_summed_rouge_by_count(tokenizer):
    task = _task(tokenizer)
    logs = [
        {"_rougeL_f1_sum": 150.0, "_rouge1_f1_sum": 90.0, "_rouge_cnt": 2},
        {"_rougeL_f1_sum": 30.0, "_rouge_cnt": 1},
    ]
    metrics = task.reduce_metrics(logs)
    assert metrics["rougeL_f1"] == 60.0 and metrics["rouge1_f1"] == 30.0 and metrics["rouge2_recall"] == 0.0
    assert task.reduce_metrics([{"loss": 1.0}]) == {}


def test_train_then_evaluate(tmp_path, bpe_dir):
    train_tsv = _write_tsv(tmp_path / "train.tsv", 8, seed=0)
    valid_tsv = _write_tsv(tmp_path / "valid.tsv", 4, seed=1)
    save = tmp_path / "ckpt"
    eval_args = '{"beam":2,"lenpen":0.7,"max_len_b":6,"no_repeat_ngram_size":3}'
    argv = [f"{train_tsv},{valid_tsv}", "--task", "gigaword", "--arch", "ofa_test", "--bpe-dir", str(bpe_dir),
            "--selected-cols", "0,1", "--batch-size", "4", "--max-update", "2", "--lr", "1e-4",
            "--max-src-length", "32", "--max-tgt-length", "8", "--noise-ratio", "0.2", "--save-dir", str(save),
            "--label-smoothing", "0.1", "--eval-rouge", "--eval-print-samples", "--eval-args", eval_args,
            "--best-checkpoint-metric", "rougeL_f1", "--maximize-best-checkpoint-metric"]  # fmt: skip
    assert train.main(argv) == 0
    log = [json.loads(x) for x in (save / "train_log.jsonl").read_text().splitlines()]
    valid = [x for x in log if x["split"] == "valid"]
    assert valid and math.isfinite(valid[-1]["loss"])
    assert all(0.0 <= valid[-1][k] <= 100.0 for k in ("rouge1_f1", "rouge2_f1", "rougeL_f1", "rougeL_recall"))
    results = tmp_path / "results"
    assert evaluate.main([str(valid_tsv), "--path", str(save / "checkpoint_last.pt"), "--gen-subset", "test",
                          "--results-path", str(results), "--batch-size", "3"]) == 0  # fmt: skip
    metrics = json.loads((results / "test_metrics.json").read_text())
    assert metrics["count"] == 4 and all(math.isfinite(metrics[k]) for k in ("rouge1_f1", "rouge2_f1", "rougeL_f1"))
    predictions = json.loads((results / "test_predict.json").read_text())
    assert len(predictions) == 4 and all(set(p) == {"hyp", "ref"} for p in predictions)
    summaries = [line.split("\t")[1].lower() for line in valid_tsv.read_text().splitlines()]
    assert sorted(p["ref"] for p in predictions) == sorted(summaries)


def test_seed_flag_is_shared_by_the_noise_and_training(capsys):
    argv = ["a.tsv,b.tsv", "--task", "gigaword", "--arch", "ofa_test", "--bpe-dir", "unused", "--max-update", "1",
            "--seed", "7", "--dry-run"]  # fmt: skip
    assert train.main(argv) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["task"]["seed"] == resolved["common"]["seed"] == 7
