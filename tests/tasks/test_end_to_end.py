"""Every task end to end: synthetic TSV in the original layout -> train a few steps -> checkpoint ->
evaluate.py -> a finite metric and a predictions file in the original's format."""

from __future__ import annotations

import json
import math

import pytest

import evaluate
import train
from tests.conftest import BPE_DIR, write_task_tsv

TASK_FLAGS = {
    "caption": ["--eval-cider", "--eval-args", '{"beam":2,"max_len_b":5,"no_repeat_ngram_size":3}'],
    "vqa_gen": ["--prompt-type", "prev_output", "--ans2label-dict", '{"yes": 0, "no": 1, "red dog": 2}'],
    "refcoco": ["--eval-acc", "--eval-args", '{"beam":2,"min_len":4,"max_len_a":0,"max_len_b":4}'],
    "snli_ve": ["--prompt-type", "prev_output", "--add-caption"],
}
PREDICTION_KEYS = {
    "caption": {"image_id", "caption"},
    "vqa_gen": {"question_id", "answer"},
    "refcoco": {"uniq_id", "box"},
    "snli_ve": {"uniq_id", "answer"},
}
METRIC = {"caption": "cider", "vqa_gen": "vqa_score", "refcoco": "score", "snli_ve": "snli_score"}


@pytest.mark.parametrize("task", sorted(TASK_FLAGS))
def test_train_then_evaluate(task, tmp_path, bpe_dir):
    train_tsv, cols = write_task_tsv(task, tmp_path / "train.tsv", 8, seed=0)
    valid_tsv, _ = write_task_tsv(task, tmp_path / "valid.tsv", 4, seed=1)
    data = f"{train_tsv},{valid_tsv}"
    save = tmp_path / "ckpt"
    argv = [data, "--task", task, "--arch", "ofa_test", "--bpe-dir", str(BPE_DIR), "--selected-cols", cols,
            "--patch-image-size", "32", "--batch-size", "4", "--max-update", "2", "--lr", "1e-4",
            "--save-dir", str(save), "--label-smoothing", "0.1", *TASK_FLAGS[task]]  # fmt: skip
    assert train.main(argv) == 0
    log = [json.loads(x) for x in (save / "train_log.jsonl").read_text().splitlines()]
    valid = [x for x in log if x["split"] == "valid"]
    assert valid and math.isfinite(valid[-1]["loss"]) and METRIC[task] in valid[-1]
    results = tmp_path / "results"
    assert evaluate.main([str(valid_tsv), "--path", str(save / "checkpoint_last.pt"), "--gen-subset", "test",
                          "--results-path", str(results), "--batch-size", "3"]) == 0  # fmt: skip
    metrics = json.loads((results / "test_metrics.json").read_text())
    assert math.isfinite(metrics[METRIC[task]]) and metrics["count"] == 4
    predictions = json.loads((results / "test_predict.json").read_text())
    assert len(predictions) == 4 and all(set(p) == PREDICTION_KEYS[task] for p in predictions)
