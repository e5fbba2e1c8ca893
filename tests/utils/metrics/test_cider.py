"""CIDEr-D: agreement with pycocoevalcap's Cider, hand-computed values, cached document frequencies and the
restricted unpickler."""

from __future__ import annotations

import math
import os
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from tests.utils.metrics.metric_inputs import NO_OVERLAP_ID, make_groups
from utils.metrics.cider import CiderD, build_df_table, document_frequencies, load_df_table, ngram_counts


@pytest.fixture(scope="module")
def caption_groups() -> tuple[dict, dict]:
    return make_groups()


def test_matches_pycocoevalcap(caption_groups):
    gts, res = caption_groups
    assert len(res) >= 25
    ref_mean, ref_scores = Cider().compute_score(gts, res)
    mean, scores = CiderD().compute_score(gts, res)
    assert scores.shape == (len(res),) and scores.dtype == np.float64
    assert abs(mean - ref_mean) <= 1e-6
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)
    assert mean > 0.1  # not trivially zero
    assert scores[list(res).index(NO_OVERLAP_ID)] == 0.0


def test_scores_follow_res_order_and_ignore_extra_references(caption_groups):
    gts, res = caption_groups
    _, scores = CiderD().compute_score(gts, res)
    reversed_res = dict(reversed(list(res.items())))
    extra_gts = {**gts, "unused": ["never scored"]}
    _, reversed_scores = CiderD().compute_score(extra_gts, reversed_res)
    np.testing.assert_array_equal(reversed_scores, scores[::-1])


def test_hand_computed_values():
    # two documents: every n-gram below appears in exactly one, so each weight is tf * log(2)
    gts = {"x": ["a b c"], "y": ["q"]}
    res = {"x": ["a b"], "y": ["q"]}
    _, scores = CiderD().compute_score(gts, res)
    # x: unigram cosine 2/sqrt(6), bigram cosine 1/sqrt(2), no 3/4-grams; bigram counts 1 vs 2 -> delta 1
    expected_x = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / (2 * 6.0**2))
    # y: identical single words: unigram cosine 1, nothing else
    assert scores[0] == pytest.approx(expected_x, abs=1e-12)
    assert scores[1] == pytest.approx(10 * 1 / 4, abs=1e-12)
    _, scores_sigma3 = CiderD(sigma=3.0).compute_score(gts, res)
    assert scores_sigma3[0] == pytest.approx(expected_x / math.exp(-1 / 72) * math.exp(-1 / 18), abs=1e-12)


def test_identical_long_sentence_scores_ten():
    gts = {0: ["a b c d e"], 1: ["x y z w"]}
    res = {0: ["a b c d e"], 1: ["x y z w"]}
    _, scores = CiderD().compute_score(gts, res)
    np.testing.assert_allclose(scores, [10.0, 10.0], rtol=0, atol=1e-12)


def test_single_document_corpus_scores_zero():
    # log(ref_len) = log(1) = 0 makes every weight 0
    mean, scores = CiderD().compute_score({0: ["a dog"]}, {0: ["a dog"]})
    assert mean == 0.0 and scores.tolist() == [0.0]


def test_ngram_counts_and_document_frequencies():
    assert ngram_counts("a b a", n=2) == {("a",): 2, ("b",): 1, ("a", "b"): 1, ("b", "a"): 1}
    freqs = document_frequencies([["a b", "a"], ["a c"]], n=2)
    assert freqs == {("a",): 2.0, ("b",): 1.0, ("a", "b"): 1.0, ("c",): 1.0, ("a", "c"): 1.0}


def test_df_dict_equals_corpus_mode(caption_groups):
    gts, res = caption_groups
    table = build_df_table({k: gts[k] for k in res})
    assert table["ref_len"] == float(len(res))
    corpus = CiderD(df="corpus").compute_score(gts, res)
    cached = CiderD(df=table).compute_score(gts, res)
    assert cached[0] == corpus[0]
    np.testing.assert_array_equal(cached[1], corpus[1])
    assert CiderD(df=None).compute_score(gts, res)[0] == corpus[0]


def test_cached_df_uses_its_own_statistics(caption_groups):
    gts, res = caption_groups
    table = build_df_table({k: gts[k] for k in res})
    subset = {k: res[k] for k in list(res)[:3]}
    full_scores = CiderD(df=table).compute_score(gts, res)[1]
    subset_scores = CiderD(df=table).compute_score(gts, subset)[1]
    np.testing.assert_array_equal(subset_scores, full_scores[:3])  # corpus mode would change with the subset


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_df_pickle_round_trip(tmp_path: Path, caption_groups, protocol: int):
    gts, res = caption_groups
    table = build_df_table({k: gts[k] for k in res})
    freqs = defaultdict(float, table["document_frequency"])  # the original files hold a defaultdict(float)
    path = tmp_path / "coco-valid-words.p"
    path.write_bytes(pickle.dumps({"document_frequency": freqs, "ref_len": len(res)}, protocol=protocol))
    loaded = load_df_table(path)
    assert loaded["ref_len"] == len(res) and dict(loaded["document_frequency"]) == table["document_frequency"]
    np.testing.assert_array_equal(
        CiderD(df=path).compute_score(gts, res)[1], CiderD(df=str(path)).compute_score(gts, res)[1]
    )
    np.testing.assert_array_equal(CiderD(df=path).compute_score(gts, res)[1], CiderD().compute_score(gts, res)[1])


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.p"
    path.write_bytes(pickle.dumps({"document_frequency": _Exploit(marker), "ref_len": 1.0}))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|nt|os)\.system"):
        CiderD(df=path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_classes(tmp_path: Path):
    path = tmp_path / "ordered.p"
    path.write_bytes(pickle.dumps({"document_frequency": np.float64(1.0), "ref_len": 1.0}))
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        load_df_table(path)


@pytest.mark.parametrize(
    "table",
    [
        {"document_frequency": {}},
        {"ref_len": 3.0},
        {"document_frequency": [], "ref_len": 3.0},
        {"document_frequency": {}, "ref_len": 0},
        {"document_frequency": {}, "ref_len": "3"},
    ],
)
def test_bad_df_layout(table):
    with pytest.raises(ValueError, match="df dict"):
        CiderD(df=table)


def test_bad_inputs():
    scorer = CiderD()
    with pytest.raises(ValueError, match="one-element list"):
        scorer.compute_score({0: ["a b"]}, {0: "a b"})
    with pytest.raises(ValueError, match="one-element list"):
        scorer.compute_score({0: ["a b"]}, {0: ["a b", "c"]})
    with pytest.raises(ValueError, match="non-empty list"):
        scorer.compute_score({0: []}, {0: ["a b"]})
    with pytest.raises(KeyError, match="no references"):
        scorer.compute_score({1: ["a b"]}, {0: ["a b"]})
    with pytest.raises(ValueError, match="empty"):
        scorer.compute_score({}, {})
