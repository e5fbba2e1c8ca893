"""adjust_label_smoothed_cross_entropy (spec §5.1), the criterion registry and reduce_logs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from criterions import CRITERIONS, build_criterion, reduce_logs
from criterions.label_smoothed_ce import (
    AdjustLabelSmoothedCrossEntropy,
    LabelSmoothedCEConfig,
    duplicate_for_rdrop,
)

PAD, EOS = 1, 2


class FakeModel(nn.Module):
    """Returns the logits it is given (plus a per-row offset), recording the kwargs it saw."""

    def __init__(self, row_offset: torch.Tensor | None = None):
        super().__init__()
        self.row_offset, self.calls = row_offset, []

    def forward(self, logits: torch.Tensor, **kwargs) -> tuple[torch.Tensor, dict]:
        self.calls.append(kwargs)
        if self.row_offset is not None:
            logits = logits + self.row_offset[: logits.size(0), None, None] * torch.arange(logits.size(-1))
        return logits, {}


def make_sample(logits: torch.Tensor, target: torch.Tensor, **extra) -> dict:
    ntokens = int(target.ne(PAD).sum())
    return {"net_input": {"logits": logits}, "target": target, "ntokens": ntokens, **extra}


def crit(**kw) -> AdjustLabelSmoothedCrossEntropy:
    return AdjustLabelSmoothedCrossEntropy(LabelSmoothedCEConfig(**kw))


def ce_sum(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), reduction="sum", ignore_index=PAD)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 3
    target = torch.tensor([[4, 7, 9, 5, EOS], [6, 3, EOS, PAD, PAD], [10, EOS, PAD, PAD, PAD]])
    return logits, target


def test_eps0_is_cross_entropy_and_nll_is_ce_for_any_eps(batch):
    logits, target = batch
    loss, size, log = crit(label_smoothing=0.0)(FakeModel(), make_sample(logits, target))
    assert torch.allclose(loss, ce_sum(logits, target), rtol=1e-6)
    assert size == 10 and log["sample_size"] == 10 and log["ntokens"] == 10 and log["nsentences"] == 3
    smoothed, _, log = crit(label_smoothing=0.1)(FakeModel(), make_sample(logits, target))
    assert torch.allclose(log["nll_loss"], ce_sum(logits, target), rtol=1e-6)
    assert not torch.allclose(smoothed, loss)


def test_padded_batch_is_sum_of_unpadded_items(batch):
    logits, target = batch
    c = crit(label_smoothing=0.1)
    total, size, _ = c(FakeModel(), make_sample(logits, target))
    parts = []
    for row, length in zip(range(3), (5, 3, 2), strict=True):
        part, part_size, _ = c(FakeModel(), make_sample(logits[row : row + 1, :length], target[row : row + 1, :length]))
        assert part_size == length
        parts.append(part)
    assert torch.allclose(total, sum(parts), rtol=1e-6)


def test_label_smoothing_by_hand_one_token():
    logits = torch.tensor([[[0.5, -1.0, 2.0, 0.0, 1.5, -0.5]]])
    loss, size, log = crit(label_smoothing=0.1)(FakeModel(), make_sample(logits, torch.tensor([[4]])))
    row = logits[0, 0].tolist()
    norm = math.log(sum(math.exp(x) for x in row))
    lprobs = [x - norm for x in row]
    eps, eps_i = 0.1, 0.1 / (6 - 1)
    expected = (1 - eps - eps_i) * -lprobs[4] + eps_i * -sum(lprobs)
    assert size == 1
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert log["nll_loss"].item() == pytest.approx(-lprobs[4], rel=1e-6)


def per_token_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), reduction="none")
    return flat[target.reshape(-1).ne(PAD)]


def test_drop_worst_keeps_smallest_tokens_after_threshold(batch):
    logits, target = batch
    c = crit(drop_worst_ratio=0.25, drop_worst_after=3)
    losses = per_token_ce(logits, target)
    kept = int(losses.numel() * (1 - 0.25))
    loss, size, log = c(FakeModel(), make_sample(logits, target), update_num=4)
    assert size == kept == 7 and log["sample_size"] == 7
    assert torch.allclose(loss, losses.sort().values[:kept].sum(), rtol=1e-6)
    assert torch.allclose(log["nll_loss"], loss, rtol=1e-6)  # eps=0: nll of the same kept tokens
    assert log["ntokens"] == 10  # the batch's count, as logged by the original
    loss, size, _ = c(FakeModel(), make_sample(logits, target), update_num=3)
    assert size == 10 and torch.allclose(loss, losses.sum(), rtol=1e-6)


def allowed_loss(logits_row: torch.Tensor, allowed: list[int], tgt: int, eps: float, denom_fix: float) -> float:
    lp = torch.log_softmax(logits_row[allowed].double(), -1)
    nll = -lp[allowed.index(tgt)].item()
    eps_i = eps / (len(allowed) - 1 + denom_fix)
    return (1 - eps - eps_i) * nll + eps_i * -lp.sum().item()


def test_constraint_masks_renormalise_and_smooth_over_allowed(batch):
    logits, target = batch
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(*logits.shape, generator=g) < 0.5
    masks.scatter_(-1, target[..., None], True)
    sample = make_sample(logits, target, constraint_masks=masks)
    c = crit(label_smoothing=0.1)
    lprobs, _, _ = c.lprobs_and_target(logits, sample)
    keep = target.ne(PAD)
    assert torch.isneginf(lprobs[~masks[keep]]).all() and torch.isfinite(lprobs[masks[keep]]).all()
    expected = sum(
        allowed_loss(logits[b, t], masks[b, t].nonzero().flatten().tolist(), int(target[b, t]), 0.1, 1e-6)
        for b, t in keep.nonzero().tolist()
    )
    loss, size, _ = c(FakeModel(), sample)
    assert size == 10 and loss.item() == pytest.approx(expected, rel=1e-5)
    loss0, _, _ = crit()(FakeModel(), sample)
    assert torch.allclose(loss0, ce_sum(logits.masked_fill(~masks, float("-inf")), target), rtol=1e-6)


def test_constraint_range_allows_specials_and_range(batch):
    logits, target = batch
    target = target.clone().masked_fill(target.gt(EOS), 7)  # every real target inside [6, 9)
    allowed = [0, 1, 2, 3, 6, 7, 8]
    c = crit(label_smoothing=0.1, constraint_range="6,9")
    lprobs, _, _ = c.lprobs_and_target(logits, make_sample(logits, target))
    outside = [v for v in range(11) if v not in allowed]
    assert torch.isneginf(lprobs[:, outside]).all() and torch.isfinite(lprobs[:, allowed]).all()
    keep = target.ne(PAD)
    expected = sum(
        allowed_loss(logits[b, t], allowed, int(target[b, t]), 0.1, 1e-6) for b, t in keep.nonzero().tolist()
    )
    loss, _, _ = c(FakeModel(), make_sample(logits, target))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="constraint-range"):
        crit(constraint_range="6")


def test_conf_scales_each_sample(batch):
    logits, target = batch
    c = crit(label_smoothing=0.1)
    items = [c(FakeModel(), make_sample(logits[b : b + 1], target[b : b + 1]))[0] for b in range(3)]
    conf = torch.tensor([2.0, 0.5, 1.0])
    loss, _, log = c(FakeModel(), make_sample(logits, target, conf=conf))
    assert torch.allclose(loss, 2.0 * items[0] + 0.5 * items[1] + items[2], rtol=1e-6)


def test_ignore_prefix_size(batch):
    logits, target = batch
    loss, size, _ = crit(ignore_prefix_size=2)(FakeModel(), make_sample(logits, target))
    assert size == 4 and torch.allclose(loss, ce_sum(logits[:, 2:], target[:, 2:]), rtol=1e-6)


def test_ignore_eos(batch):
    logits, target = batch
    loss, size, _ = crit(ignore_eos=True)(FakeModel(), make_sample(logits, target))
    assert size == 7 and torch.allclose(loss, ce_sum(logits, target.masked_fill(target.eq(EOS), PAD)), rtol=1e-6)
    bad = target.clone()
    bad[0, -1] = 5  # row 0 loses its eos
    with pytest.raises(ValueError, match="one eos"):
        crit(ignore_eos=True)(FakeModel(), make_sample(logits, bad))


def test_report_accuracy_and_sentence_avg(batch):
    logits, target = batch
    _, size, log = crit(report_accuracy=True, sentence_avg=True)(FakeModel(), make_sample(logits, target))
    keep = target.ne(PAD)
    assert size == 3
    assert log["total"] == 10 and log["n_correct"] == int(logits.argmax(-1)[keep].eq(target[keep]).sum())


def test_golden_loss_matches_original(golden, golden_ckpt_path):
    from models import from_pretrained

    model = from_pretrained(golden_ckpt_path)
    i = golden["inputs"]
    keys = ("src_tokens", "src_lengths", "patch_images", "patch_masks", "prev_output_tokens")
    sample = {"net_input": {k: i[k] for k in keys}, "target": i["target"], "ntokens": i["ntokens"]}
    c = build_criterion("adjust_label_smoothed_cross_entropy", LabelSmoothedCEConfig(label_smoothing=0.1))
    with torch.no_grad():
        loss, size, log = c(model, sample)
    out = golden["outputs"]
    assert size == int(out["sample_size_eval"]) == 16
    assert loss.item() == pytest.approx(float(out["loss_eval"]), rel=1e-5)
    assert log["nll_loss"].item() == pytest.approx(float(out["nll_loss_eval"]), rel=1e-5)


def test_list_sample_is_pretraining_pair(batch):
    logits, target = batch
    c = crit(label_smoothing=0.1, sample_patch_num=196)
    s1, s2 = make_sample(logits[:2], target[:2]), make_sample(logits[2:], target[2:])
    l1, ss1, log1 = c(FakeModel(), make_sample(logits[:2], target[:2]))
    l2, ss2, log2 = c(FakeModel(), make_sample(logits[2:], target[2:]))
    model = FakeModel()
    loss, size, log = c(model, [s1, s2])
    assert size == 1 and log["sample_size"] == 1
    assert torch.allclose(loss, l1 / ss1 + l2 / ss2)
    assert torch.allclose(log["nll_loss"], log1["nll_loss"] / ss1 + log2["nll_loss"] / ss2)
    assert (log["sample_size_v1"], log["sample_size_v2"], log["ntokens"], log["nsentences"]) == (8, 2, 10, 3)
    assert torch.equal(log["loss_v1"], l1) and torch.equal(log["loss_v2"], l2)
    assert s1["net_input"]["sample_patch_num"] == 196 and "sample_patch_num" not in s2["net_input"]
    assert [call.get("sample_patch_num") for call in model.calls] == [196, None]
    s1 = make_sample(logits[:2], target[:2])
    crit(sample_patch_num=0)(FakeModel(), [s1, s2])
    assert "sample_patch_num" not in s1["net_input"]


def test_rdrop_duplicates_batch_and_adds_symmetric_kl(batch):
    logits, target = batch
    plain, size, log = crit(label_smoothing=0.1)(FakeModel(), make_sample(logits, target))
    sample = make_sample(logits, target, nsentences=3)
    same, rsize, rlog = crit(label_smoothing=0.1, use_rdrop=True)(FakeModel(), sample)
    # identical copies: the KL is zero and everything else doubles
    assert torch.allclose(same, 2 * plain, rtol=1e-6) and rsize == 2 * size
    assert (rlog["ntokens"], rlog["nsentences"]) == (20, 6) and sample["net_input"]["logits"].size(0) == 3
    offset = torch.tensor([0.0, 0.0, 0.0, 0.3, -0.2, 0.1])  # the second copy's logits differ
    c = crit(label_smoothing=0.1, use_rdrop=True, reg_alpha=0.7)
    loss, _, _ = c(FakeModel(offset), make_sample(logits, target))
    noisy = logits + offset[3:, None, None] * torch.arange(11)
    second, _, _ = crit(label_smoothing=0.1)(FakeModel(), make_sample(noisy, target))
    keep = target.ne(PAD)
    p = torch.log_softmax(logits, -1)[keep].double()
    q = torch.log_softmax(noisy, -1)[keep].double()
    kl = ((p.exp() * (p - q)).sum() + (q.exp() * (q - p)).sum()) / 2
    assert loss.item() == pytest.approx((plain + second).item() + 0.7 * kl.item(), rel=1e-5)


def test_rdrop_drop_worst_selects_same_tokens_in_both_copies(batch):
    logits, target = batch
    c = crit(use_rdrop=True, drop_worst_ratio=0.5)
    loss, size, _ = c(FakeModel(), make_sample(logits, target), update_num=1)
    losses = per_token_ce(logits, target)
    assert size == 10 and torch.allclose(loss, 2 * losses.sort().values[:5].sum(), rtol=1e-6)


def test_duplicate_for_rdrop_types():
    value = {"a": torch.tensor([[1, 2]]), "n": 3, "ids": np.array([4, 5]), "c": None, "flag": True}
    out = duplicate_for_rdrop(value)
    assert out["a"].tolist() == [[1, 2], [1, 2]] and out["n"] == 6 and out["c"] is None and out["flag"] is True
    assert out["ids"].tolist() == [4, 4, 5, 5] and value["n"] == 3
    with pytest.raises(TypeError, match="use-rdrop"):
        duplicate_for_rdrop({"s": "text"})


def test_registry_builds_and_lists_known_names():
    c = build_criterion("adjust_label_smoothed_cross_entropy", LabelSmoothedCEConfig(label_smoothing=0.2))
    assert isinstance(c, AdjustLabelSmoothedCrossEntropy) and c.cfg.label_smoothing == 0.2
    assert (c.padding_idx, c.eos_idx) == (1, 2)
    built = build_criterion("adjust_label_smoothed_cross_entropy", {"_name": "x", "ignore_eos": True})
    assert built.cfg.ignore_eos and build_criterion("adjust_label_smoothed_cross_entropy").cfg.label_smoothing == 0
    with pytest.raises(KeyError, match="adjust_label_smoothed_cross_entropy"):
        build_criterion("label_smoothed_cross_entropy", LabelSmoothedCEConfig())
    with pytest.raises(ValueError, match="no option"):
        build_criterion("adjust_label_smoothed_cross_entropy", {"log_end": 0.5})
    assert "adjust_label_smoothed_encouraging_loss" in CRITERIONS.names()


def test_reduce_logs_ofa_and_fairseq_conventions():
    logs = [
        {
            "loss": torch.tensor(6.0),
            "nll_loss": torch.tensor(4.0),
            "ntokens": 4,
            "nsentences": 2,
            "sample_size": 4,
        },
        {
            "loss": torch.tensor(2.0),
            "nll_loss": torch.tensor(2.0),
            "ntokens": 2,
            "nsentences": 1,
            "sample_size": 2,
        },
    ]
    out = reduce_logs(logs)
    assert (out["ntokens"], out["nsentences"], out["sample_size"]) == (6, 3, 6)
    assert out["loss"] == pytest.approx(8 / 6) and out["nll_loss"] == pytest.approx(1.0)
    assert out["ppl"] == pytest.approx(2.0)
    logs[1]["sample_size"] = 3  # sentence-avg-like: sample_size differs from ntokens
    bits = reduce_logs(logs, base2=True)
    assert bits["loss"] == pytest.approx(8 / 7 / math.log(2)) and bits["nll_loss"] == pytest.approx(1 / math.log(2))
    assert bits["ppl"] == pytest.approx(2 ** (1 / math.log(2)))


def test_reduce_logs_pretraining_and_accuracy():
    log = {"loss": 1.5, "nll_loss": 1.0, "ntokens": 30, "nsentences": 4, "sample_size": 1, "loss_v1": 20.0}
    log |= {"loss_v2": 5.0, "sample_size_v1": 20, "sample_size_v2": 10, "n_correct": 3, "total": 4}
    out = reduce_logs([log, dict(log)])
    assert out["loss"] == pytest.approx(1.5) and out["sample_size"] == 2
    assert out["loss_v1"] == pytest.approx(1.0) and out["loss_v2"] == pytest.approx(0.5)
    assert out["accuracy"] == pytest.approx(75.0) and out["sample_size_v1"] == 40
    empty = reduce_logs([])
    assert math.isnan(empty["loss"]) and empty["ntokens"] == 0
