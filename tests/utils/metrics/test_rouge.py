"""ROUGE wrapper against direct ``rouge_score`` calls and hand values; ``fix_tokenization`` hand cases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rouge_score import rouge_scorer

from utils.metrics.rouge import fix_tokenization, rouge_pair_scores, rouge_scores

REPO = Path(__file__).resolve().parents[3]
WORDS = [
    "police",
    "killed",
    "gunman",
    "gunmen",
    "were",
    "running",
    "runs",
    "cat",
    "cats",
    "the",
    "a",
    "on",
    "in",
    "of",
    "stocks",
    "fall",
    "japan",
    "#",
    "rise",
]


def _pairs(count: int = 20, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.RandomState(seed)
    preds = [" ".join(rng.choice(WORDS, rng.randint(1, 9))) for _ in range(count)]
    refs = [" ".join(rng.choice(WORDS, rng.randint(1, 9))) for _ in range(count)]
    preds[0], refs[0] = "identical words here", "identical words here"
    preds[1], refs[1] = "nothing shared", "completely different"
    return preds, refs


def test_mean_equals_direct_rouge_score_calls():
    preds, refs = _pairs()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(ref, pred) for pred, ref in zip(preds, refs, strict=True)]  # (target, prediction)
    ours = rouge_scores(preds, refs)
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert ours[f"{kind}_f1"] == pytest.approx(np.mean([d[kind].fmeasure for d in direct]), abs=1e-12)
        assert ours[f"{kind}_recall"] == pytest.approx(np.mean([d[kind].recall for d in direct]), abs=1e-12)
    rows = rouge_pair_scores(preds, refs)
    assert rows[0]["rougeL_f1"] == 1.0 and rows[1]["rouge1_f1"] == 0.0
    assert 0.0 < ours["rougeL_f1"] < 1.0


def test_recall_is_measured_against_the_reference():
    (row,) = rouge_pair_scores(["japan stocks"], ["japan stocks fall sharply"])
    assert row["rouge1_recall"] == pytest.approx(0.5) and row["rouge1_f1"] == pytest.approx(2 / 3)


def test_hand_checked_rouge_l_with_stemming():
    # stems: ref [the, cat, were, run], pred [a, cat, run]; LCS = (cat, run): P = 2/3, R = 2/4, F = 4/7
    (row,) = rouge_pair_scores(["a cat runs"], ["the cats were running"])
    assert row["rougeL_f1"] == pytest.approx(4 / 7, abs=1e-12)
    assert row["rougeL_recall"] == pytest.approx(0.5) and row["rouge2_f1"] == 0.0


def test_bootstrap_mid_is_close_to_the_mean():
    preds, refs = _pairs(count=40, seed=3)
    np.random.seed(0)  # BootstrapAggregator resamples with NumPy's global RNG
    mid, mean = rouge_scores(preds, refs, bootstrap=True), rouge_scores(preds, refs)
    assert set(mid) == set(mean)
    for key in mean:
        assert mid[key] == pytest.approx(mean[key], abs=0.03)


def test_empty_and_mismatched_inputs():
    assert rouge_scores([], []) == dict.fromkeys(
        ["rouge1_f1", "rouge1_recall", "rouge2_f1", "rouge2_recall", "rougeL_f1", "rougeL_recall"], 0.0
    )
    with pytest.raises(ValueError, match="pair up"):
        rouge_scores(["a"], [])


def test_no_nltk_data_is_needed_or_downloaded(tmp_path):
    """The Porter stemmer is pure code: scoring works with an empty NLTK data path and writes nothing."""
    env = {**os.environ, "HOME": str(tmp_path), "NLTK_DATA": str(tmp_path / "nltk"), "PYTHONPATH": str(REPO)}
    code = (
        "from utils.metrics.rouge import rouge_scores; print(rouge_scores(['cats run'], ['the cat runs'])['rouge1_f1'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert float(out.stdout) == pytest.approx(0.8) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('he said " hello " ( ok )', "he said `` hello '' -lrb- ok -rrb-"),
        ("[ x ] { y } a & b < c > d [UNK]", "-lsb- x -rsb- -lcb- y -rcb- a &amp; b &lt; c &gt; d UNK"),
        ("i don ' t know", "i do n't know"),
        ("it ' s , they ' d , we ' ll", "it 's , they 'd , we 'll"),
        ("he ' quoted ' this", "he ` quoted ' this"),
        ("wait . . . now", "wait ... now"),
        ("$ 3 , 000 , 000 and 3 . 03 . 5", "$ 3,000,000 and 3.03 . 5"),
        ("state - of - the - art", "state-of-the-art"),
        ("a - - b", "a -- b"),
        ("- start end -", "- start end -"),
        ("x - , y", "x - , y"),
        ("x , - y", "x , - y"),  # "," is punctuation: no joining
        ("U . N . vote", "U.N. . vote"),  # the original re-reads the final dot
        ("u . n . vote", "u . n . vote"),  # lower case (OFA lowers first): the acronym rule never fires
        ("n ' t", " n't"),  # a bare "n" leaves an empty token, hence the leading space
        ("  spaced\tout \n text ", "spaced out text"),
        ("", ""),
    ],
)
def test_fix_tokenization_hand_cases(text, expected):
    assert fix_tokenization(text) == expected
