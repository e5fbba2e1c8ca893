"""VQA answers parsing and soft score, and the mergeable running mean tasks log their scores with."""

from __future__ import annotations

import pytest
import torch

from utils.metrics import MeanAccumulator, parse_vqa_answers, vqa_score


def test_parse_answers():
    assert parse_vqa_answers("1.0|!+yes&&0.3|!+no") == {"yes": 1.0, "no": 0.3}
    assert parse_vqa_answers("0.6|!+two dogs") == {"two dogs": 0.6}
    # answers are not stripped, a repeated answer keeps its last confidence
    assert parse_vqa_answers("0.9|!+ red&&0.3|!+red&&0.6|!+red") == {" red": 0.9, "red": 0.6}
    assert parse_vqa_answers(" 0.5 |!+yes") == {"yes": 0.5}  # float() tolerates surrounding spaces


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("", "empty"),
        ("yes", "exactly one"),
        ("1.0|!+yes&&no", "exactly one"),
        ("1.0|!+yes&&", "exactly one"),
        ("0.5|!+a|!+b", "exactly one"),
        ("high|!+yes", "not a number"),
        ("|!+yes", "not a number"),
        ("nan|!+yes", "finite"),
        ("inf|!+yes", "finite"),
    ],
)
def test_parse_malformed(field, message):
    with pytest.raises(ValueError, match=message):
        parse_vqa_answers(field)


def test_parse_rejects_non_str():
    with pytest.raises(TypeError):
        parse_vqa_answers(None)  # type: ignore[arg-type]


def test_vqa_score():
    ref = parse_vqa_answers("1.0|!+yes&&0.3|!+no")
    assert vqa_score("yes", ref) == 1.0
    assert vqa_score("no", ref) == 0.3
    assert vqa_score("maybe", ref) == 0.0
    assert vqa_score(" yes", ref) == 0.0  # exact string match, as in OFA
    assert isinstance(vqa_score("maybe", ref), float)


def test_mean_accumulator():
    acc = MeanAccumulator()
    assert acc.mean == 0.0 and acc.to_dict() == {"_score_sum": 0.0, "_score_cnt": 0.0}
    acc.add(1.0)
    acc.add(0.5, n=2)  # two items of mean 0.5
    acc.extend([0.3, 0.0])
    acc.extend(torch.tensor([1.0, 1.0]))
    assert acc.sum == pytest.approx(4.3) and acc.count == 7
    assert acc.mean == pytest.approx(4.3 / 7)


def test_mean_accumulator_merges_across_ranks():
    rank0, rank1 = MeanAccumulator(), MeanAccumulator()
    rank0.extend([1.0, 0.0, 1.0])
    rank1.extend([0.3])
    summed = {k: rank0.to_dict()[k] + rank1.to_dict()[k] for k in rank0.to_dict()}
    merged = MeanAccumulator.from_dict(summed)
    assert merged.mean == pytest.approx(2.3 / 4)
    assert rank0.merge(rank1).to_dict() == merged.to_dict()
    keyed = rank0.to_dict(sum_key="_vqa_score_sum", cnt_key="_vqa_cnt")
    assert keyed == {"_vqa_score_sum": 2.0, "_vqa_cnt": 3.0}
    from_tensors = {"_vqa_score_sum": torch.tensor(2.0), "_vqa_cnt": torch.tensor(3)}
    assert MeanAccumulator.from_dict(from_tensors, "_vqa_score_sum", "_vqa_cnt").mean == pytest.approx(2 / 3)
    assert MeanAccumulator.from_dict({}).mean == 0.0
