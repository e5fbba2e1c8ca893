"""BLEU-1..4: agreement with pycocoevalcap's Bleu(4) and hand-computed smoothing / length cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu

from tests.utils.metrics.metric_inputs import NO_OVERLAP_ID, make_groups
from utils.metrics.bleu import bleu


@pytest.fixture(scope="module")
def caption_groups() -> tuple[dict, dict]:
    return make_groups()


def test_matches_pycocoevalcap(caption_groups):
    gts, res = caption_groups
    assert len(res) >= 25
    ref_corpus, ref_items = Bleu(4).compute_score(gts, res, verbose=0)
    corpus, items = bleu(gts, res)
    assert len(corpus) == 4 and len(items) == 4 and all(len(row) == len(res) for row in items)
    np.testing.assert_allclose(corpus, ref_corpus, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.array(items), np.array(ref_items), rtol=0, atol=1e-6)
    assert corpus[0] > 0.3
    no_overlap = list(res).index(NO_OVERLAP_ID)
    assert items[0][no_overlap] < 1e-14  # only the 1e-15 smoothing numerator is left


def test_matches_pycocoevalcap_other_seed():
    gts, res = make_groups(seed=7, count=40)
    ref_corpus, ref_items = Bleu(4).compute_score(gts, res, verbose=0)
    corpus, items = bleu(gts, res)
    np.testing.assert_allclose(corpus, ref_corpus, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.array(items), np.array(ref_items), rtol=0, atol=1e-6)


def test_perfect_match():
    corpus, items = bleu({0: ["a b c d"]}, {0: ["a b c d"]})
    np.testing.assert_allclose(corpus, [1.0] * 4, rtol=0, atol=1e-9)
    np.testing.assert_allclose([row[0] for row in items], [1.0] * 4, rtol=0, atol=1e-9)


def test_brevity_penalty_and_smoothing_by_hand():
    # 2 of 4 reference words: p1 = p2 = 1, no 3/4-grams to guess, so they get (0 + 1e-15) / (0 + 1e-9) = 1e-6
    corpus, _ = bleu({0: ["a b c d"]}, {0: ["a b"]})
    bp = math.exp(1 - 4 / 2)
    p1 = (2 + 1e-15) / (2 + 1e-9)
    p2 = (1 + 1e-15) / (1 + 1e-9)
    expected = [p1 * bp, (p1 * p2) ** 0.5 * bp, (p1 * p2 * 1e-6) ** (1 / 3) * bp, (p1 * p2 * 1e-12) ** 0.25 * bp]
    np.testing.assert_allclose(corpus, expected, rtol=1e-9, atol=0)


def test_closest_reference_length_prefers_the_shorter_on_ties():
    # 3 words, references of 2 and 4 words: both 1 away, the 2-word one is used, so there is no brevity penalty
    corpus, _ = bleu({0: ["a b", "a b c d"]}, {0: ["a b c"]})
    assert corpus[0] == pytest.approx(1.0, abs=1e-9)
    # with only the 4-word reference the penalty exp(1 - 4/3) applies
    corpus_long, _ = bleu({0: ["a b c d"]}, {0: ["a b c"]})
    assert corpus_long[0] == pytest.approx(math.exp(1 - 4 / 3), abs=1e-9)


def test_clipping_by_max_reference_count():
    # "the" occurs 3 times in the candidate but at most twice in one reference
    corpus, _ = bleu({0: ["the cat the", "the dog"]}, {0: ["the the the"]})
    # equal lengths still get a (tiny) brevity penalty: the smoothed ratio (3 + 1e-15) / (3 + 1e-9) is below 1
    ratio = (3 + 1e-15) / (3 + 1e-9)
    assert corpus[0] == pytest.approx((2 + 1e-15) / (3 + 1e-9) * math.exp(1 - 1 / ratio), abs=1e-15)
    assert corpus[0] < (2 + 1e-15) / (3 + 1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match="one-element list"):
        bleu({0: ["a"]}, {0: "a"})
    with pytest.raises(KeyError, match="no references"):
        bleu({1: ["a"]}, {0: ["a"]})
    with pytest.raises(ValueError, match="non-empty list"):
        bleu({0: []}, {0: ["a"]})
    with pytest.raises(ValueError, match="empty"):
        bleu({}, {})
