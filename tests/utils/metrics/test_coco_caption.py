"""COCO caption suite through pycocoevalcap's Java tools (PTB tokenizer, METEOR); one small run."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pytest

from utils.metrics import coco_caption
from utils.metrics.bleu import bleu
from utils.metrics.cider import CiderD

# lower-case and punctuation-free, so PTB tokenisation leaves them unchanged
GTS = {
    1: ["a man riding a horse on a beach", "a person rides a brown horse"],
    2: ["two dogs play with a ball", "dogs playing in the grass"],
    3: ["a red car parked on the street"],
}
RES = {1: "a man rides a horse", 2: "two dogs playing with a ball", 3: "a red car on the street"}


def _child_pids() -> set[int]:
    me = str(os.getpid())
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            children.add(int(stat.parent.name))
    return children


def test_scores_with_java(caplog):
    before = _child_pids()
    with caplog.at_level(logging.INFO, logger=coco_caption.__name__):
        scores = coco_caption.coco_caption_scores(GTS, RES)
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert all(math.isfinite(v) for v in scores.values())
    assert 0 < scores["METEOR"] < 1 and 0 < scores["ROUGE_L"] < 1 and scores["CIDEr"] > 0
    assert coco_caption.SPICE_NOTE in caplog.text
    # the tokenizer left these captions unchanged, so the scores equal this package's own BLEU and CIDEr-D
    res_lists = {k: [v] for k, v in RES.items()}
    corpus_bleu, _ = bleu(GTS, res_lists)
    assert [scores[f"Bleu_{k}"] for k in range(1, 5)] == pytest.approx(corpus_bleu, abs=1e-12)
    assert scores["CIDEr"] == pytest.approx(CiderD().compute_score(GTS, res_lists)[0], abs=1e-12)
    assert _child_pids() <= before  # the METEOR and tokenizer Java processes are gone


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(coco_caption.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs Java"):
        coco_caption.coco_caption_scores(GTS, RES)


def test_bad_inputs():
    with pytest.raises(ValueError, match="candidate caption"):
        coco_caption.coco_caption_scores(GTS, {1: ["a man"]})
    with pytest.raises(ValueError, match="non-empty list"):
        coco_caption.coco_caption_scores(GTS, {4: "a cat"})
