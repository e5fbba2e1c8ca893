"""Corpus BLEU-1..n as pycocoevalcap's ``Bleu(4).compute_score`` computes it (the caption metric OFA reports).

Reproduced details: clipped n-gram matches against the per-n-gram maximum count over the references; the
"closest" reference length (ties go to the shorter reference); the corpus score pools matches, guesses and lengths
over all items; smoothing adds ``1e-15`` to every numerator and ``1e-9`` to every denominator (so an n-gram order
with no match gives a tiny, non-zero precision); the brevity penalty ``exp(1 - ref_len / hyp_len)`` applies when the
(smoothed) length ratio is below 1. Per-sentence scores are returned as well, with the same smoothing. Sentences are
already tokenised (whitespace split); nothing is printed.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from utils.metrics.cider import paired_inputs

_TINY = 1e-15  # added to the numerators
_SMALL = 1e-9  # added to the denominators


@dataclass
class _Stats:
    """Length and n-gram statistics of one candidate against its references."""

    hyp_len: int
    ref_len: int
    guess: list[int]
    correct: list[int]


def _counts(words: list[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def _stats(hyp: str, refs: Sequence[str], n: int) -> _Stats:
    max_ref_counts: dict[tuple[str, ...], int] = {}
    ref_lens = []
    for ref in refs:
        words = ref.split()
        ref_lens.append(len(words))
        for gram, count in _counts(words, n).items():
            max_ref_counts[gram] = max(max_ref_counts.get(gram, 0), count)
    hyp_words = hyp.split()
    hyp_len = len(hyp_words)
    closest = min((abs(length - hyp_len), length) for length in ref_lens)[1]
    correct = [0] * n
    for gram, count in _counts(hyp_words, n).items():
        correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
    guess = [max(0, hyp_len - k + 1) for k in range(1, n + 1)]
    return _Stats(hyp_len, closest, guess, correct)


def _cumulative_bleu(correct: Sequence[float], guess: Sequence[float], hyp_len: float, ref_len: float) -> list[float]:
    """BLEU-1..n (geometric means of the smoothed precisions) with the brevity penalty."""
    scores = []
    product = 1.0
    for k in range(len(correct)):
        product *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def bleu(
    gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]], n: int = 4
) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n and, for each order, the per-item scores in the order of ``res``'s keys.

    ``res`` maps each id to a one-element list holding the candidate, ``gts`` maps it to its references (ids of
    ``gts`` absent from ``res`` are ignored). Returns ``([bleu_1, ..., bleu_n], [[per-item bleu_k] for k in 1..n])``,
    the shape of pycocoevalcap's ``Bleu(n).compute_score``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    per_item: list[list[float]] = [[] for _ in range(n)]
    total = _Stats(0, 0, [0] * n, [0] * n)
    for hyp, refs in paired_inputs(gts, res):
        stats = _stats(hyp, refs, n)
        for k, score in enumerate(_cumulative_bleu(stats.correct, stats.guess, stats.hyp_len, stats.ref_len)):
            per_item[k].append(score)
        total.hyp_len += stats.hyp_len
        total.ref_len += stats.ref_len
        total.guess = [a + b for a, b in zip(total.guess, stats.guess, strict=True)]
        total.correct = [a + b for a, b in zip(total.correct, stats.correct, strict=True)]
    corpus = _cumulative_bleu(total.correct, total.guess, total.hyp_len, total.ref_len)
    return corpus, per_item
