"""MCC, F1 and the yes/no confusion counts against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from utils.metrics.classification import ConfusionCounts, confusion_counts, f1_score, matthews_corrcoef


def test_confusion_counts_follow_ofa_yes_no_convention():
    hyps = ["yes", "yes", "no", "no", "yes", "no"]
    refs = ["yes", "no", "no", "yes", "yes", "no"]
    assert confusion_counts(hyps, refs) == ConfusionCounts(tp=2, fp=1, tn=2, fn=1)


def test_confusion_counts_skip_words_other_than_yes_and_no():
    # mnli's "maybe" is neither positive nor negative; a gold "maybe" makes a "no" a false negative
    assert confusion_counts(["maybe", "no", "yes"], ["maybe", "maybe", "maybe"]) == (0, 1, 0, 1)


def test_confusion_counts_other_words_and_length_check():
    assert confusion_counts(["positive", "negative"], ["positive", "positive"], "positive", "negative") == (1, 0, 0, 1)
    with pytest.raises(ValueError):
        confusion_counts(["yes"], ["yes", "no"])


def test_matthews_corrcoef_by_hand():
    # (6*3 - 2*1) / sqrt(8 * 7 * 5 * 4) = 16 / sqrt(1120)
    assert matthews_corrcoef(6, 2, 3, 1) == pytest.approx(16 / math.sqrt(1120))
    assert matthews_corrcoef(6, 2, 3, 1) == pytest.approx(0.478091, abs=1e-6)
    assert matthews_corrcoef(2, 0, 2, 0) == 1.0
    assert matthews_corrcoef(0, 2, 0, 2) == -1.0
    assert matthews_corrcoef(1, 1, 1, 1) == 0.0


def test_matthews_corrcoef_degenerate_cases_are_zero():
    assert matthews_corrcoef(3, 2, 0, 0) == 0.0  # every prediction "yes": TN + FN = 0
    assert matthews_corrcoef(0, 0, 4, 1) == 0.0  # every prediction "no"
    assert matthews_corrcoef(0, 0, 5, 0) == 0.0  # one class only, all correct
    assert matthews_corrcoef(0, 0, 0, 0) == 0.0
    # counts summed from validation logs arrive as floats
    assert matthews_corrcoef(6.0, 2.0, 3.0, 1.0) == pytest.approx(0.478091, abs=1e-6)


def test_f1_score_by_hand():
    assert f1_score(6, 2, 1) == pytest.approx(12 / 15)  # precision 6/8, recall 6/7
    assert f1_score(3, 2, 0) == pytest.approx(0.75)  # all "yes": precision 3/5, recall 1
    assert f1_score(0, 0, 4) == 0.0  # never predicts "yes"
    assert f1_score(0, 0, 0) == 0.0  # no positives anywhere: undefined -> 0
    assert f1_score(5, 0, 0) == 1.0
