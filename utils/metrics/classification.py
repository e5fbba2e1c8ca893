"""Binary-classification metrics that OFA's GLUE tasks log next to accuracy (spec §4.5).

CoLA reports the Matthews correlation coefficient, MRPC and QQP report F1. Both come from true/false
positive/negative counts over the answer words ``"yes"`` (positive) and ``"no"`` (negative). The counts are
sums, so they can be added over batches and ranks before the metric is taken, as OFA does with its ``_TP``,
``_FP``, ``_TN`` and ``_FN`` log entries.

Where the original divides by zero (MCC with an empty row or column of the confusion matrix; F1 with no
positives anywhere) these functions return 0.0, the convention of scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


class ConfusionCounts(NamedTuple):
    """True positives, false positives, true negatives and false negatives (ints, or summed floats)."""

    tp: float
    fp: float
    tn: float
    fn: float


def confusion_counts(
    predicted: Sequence[str], gold: Sequence[str], positive: str = "yes", negative: str = "no"
) -> ConfusionCounts:
    """Count OFA's way: a prediction of ``positive`` is a TP when the gold answer is ``positive`` and a FP
    otherwise; a prediction of ``negative`` is a TN when the gold answer is ``negative`` and a FN otherwise.
    Predictions that are neither word are not counted (they cannot occur under the answer trie)."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions but {len(gold)} gold answers")
    tp = fp = tn = fn = 0
    for hyp, ref in zip(predicted, gold, strict=True):
        if hyp == positive:
            tp, fp = (tp + 1, fp) if ref == positive else (tp, fp + 1)
        elif hyp == negative:
            tn, fn = (tn + 1, fn) if ref == negative else (tn, fn + 1)
    return ConfusionCounts(tp, fp, tn, fn)


def matthews_corrcoef(tp: float, fp: float, tn: float, fn: float) -> float:
    """``(TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``; 0.0 when the denominator is zero."""
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denominator == 0:
        return 0.0
    return float((tp * tn - fp * fn) / math.sqrt(denominator))


def f1_score(tp: float, fp: float, fn: float) -> float:
    """``2*TP / (2*TP + FP + FN)`` (the harmonic mean of precision and recall); 0.0 when all three are zero."""
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0
