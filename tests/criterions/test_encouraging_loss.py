"""adjust_label_smoothed_encouraging_loss (spec §5.2): CE + likelihood bonus, log_end tangent, drop_best."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from criterions import build_criterion
from criterions.encouraging_loss import AdjustLabelSmoothedEncouragingLoss, EncouragingLossConfig
from criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy, LabelSmoothedCEConfig

PAD, EOS = 1, 2


class FakeModel(nn.Module):
    def forward(self, logits: torch.Tensor, **kwargs) -> tuple[torch.Tensor, dict]:
        return logits, {}


def make_sample(logits: torch.Tensor, target: torch.Tensor) -> dict:
    return {"net_input": {"logits": logits}, "target": target, "ntokens": int(target.ne(PAD).sum())}


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    # token (0,0) is confident (p > 0.75: tangent branch), token (1,0) nearly certain (p ~ 1)
    logits = torch.tensor(
        [
            [
                [0.1, -0.3, 0.2, 0.0, 4.0, 0.5],
                [0.3, 0.1, 1.2, -0.4, 0.2, 0.9],
                [1.0, 0.0, 0.4, 0.3, -1.0, 0.2],
            ],
            [
                [0.0, 0.1, 0.2, 30.0, -0.1, 0.3],
                [0.5, -0.5, 0.8, 0.1, 0.0, 0.4],
                [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ],
        ]
    )
    target = torch.tensor([[4, 5, EOS], [3, EOS, PAD]])
    return logits, target


def hand_bonus(logits: torch.Tensor, target: torch.Tensor, eps: float, log_end: float) -> float:
    """The bonus term computed element by element in float64 python arithmetic."""
    total = 0.0
    vocab = logits.size(-1)
    for b, t in target.ne(PAD).nonzero().tolist():
        row = logits[b, t].double()
        probs = torch.softmax(row, -1).tolist()
        for v, p in enumerate(probs):
            if log_end != 1.0 and p > log_end:
                bonus = (p - log_end) / (log_end - 1) + math.log(1 - log_end)
            else:
                bonus = math.log(max(1 - p, 1e-5))
            total += eps / vocab * bonus + ((1 - eps) * bonus if v == target[b, t] else 0.0)
    return total


def el(**kw) -> AdjustLabelSmoothedEncouragingLoss:
    return AdjustLabelSmoothedEncouragingLoss(EncouragingLossConfig(**kw))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_is_ce_plus_bonus_with_tangent(batch, eps):
    logits, target = batch
    assert torch.softmax(logits[0, 0], -1)[4] > 0.75  # the tangent branch is exercised
    ce, ce_size, ce_log = AdjustLabelSmoothedCrossEntropy(LabelSmoothedCEConfig(label_smoothing=eps))(
        FakeModel(), make_sample(logits, target)
    )
    loss, size, log = el(label_smoothing=eps)(FakeModel(), make_sample(logits, target))
    bonus = hand_bonus(logits, target, eps, 0.75)
    assert bonus < 0
    assert loss.item() == pytest.approx(ce.item() + bonus, rel=1e-5)
    assert size == ce_size == 5 and torch.allclose(log["nll_loss"], ce_log["nll_loss"])


def test_tangent_differs_from_log_and_log_end_one_uses_clamped_log(batch):
    logits, target = batch
    ce, _, _ = AdjustLabelSmoothedCrossEntropy(LabelSmoothedCEConfig(label_smoothing=0.1))(
        FakeModel(), make_sample(logits, target)
    )
    loss1, _, _ = el(label_smoothing=0.1, log_end=1.0)(FakeModel(), make_sample(logits, target))
    bonus1 = hand_bonus(logits, target, 0.1, 1.0)
    # p ~ 1 for token (1, 0): the clamp makes its bonus log(1e-5), not -inf
    assert math.isfinite(loss1.item()) and bonus1 < 0.9 * math.log(1e-5)
    assert loss1.item() == pytest.approx(ce.item() + bonus1, rel=1e-5)
    loss_t, _, _ = el(label_smoothing=0.1, log_end=0.75)(FakeModel(), make_sample(logits, target))
    assert loss_t.item() > loss1.item()  # the tangent is above the steep log near p = 1


def test_bonus_matches_original_formula_on_tensors():
    g = torch.Generator().manual_seed(3)
    lprobs = torch.log_softmax(torch.randn(7, 9, generator=g) * 4, -1)
    target = torch.randint(0, 9, (7,), generator=g)
    c = el(label_smoothing=0.2, log_end=0.5)
    probs = lprobs.exp()
    tangent = (probs - 0.5) / (0.5 - 1) + math.log(0.5)
    bonus = torch.where(probs > 0.5, tangent, torch.log(torch.clamp(1 - probs, min=1e-5)))
    expected = 0.8 * F.nll_loss(-bonus, target, reduction="sum") + 0.2 / 9 * bonus.sum()
    assert torch.allclose(c.encouraging_bonus(lprobs, target), expected, rtol=1e-6)


def per_token(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    keep = target.ne(PAD)
    lprobs = torch.log_softmax(logits, -1)[keep]
    tgt = target[keep]
    return -lprobs.gather(-1, tgt[:, None]).squeeze(-1), lprobs, tgt


def test_drop_best_keeps_largest_loss_tokens_after_threshold(batch):
    logits, target = batch
    c = el(log_end=0.75, drop_best_ratio=0.4, drop_best_after=10)
    losses, lprobs, tgt = per_token(logits, target)
    kept = losses.argsort(descending=True)[: int(5 * 0.6)]
    loss, size, log = c(FakeModel(), make_sample(logits, target), update_num=11)
    expected = losses[kept].sum() + c.encouraging_bonus(lprobs[kept], tgt[kept])
    assert size == 3 and torch.allclose(loss, expected, rtol=1e-6)
    assert torch.allclose(log["nll_loss"], losses[kept].sum(), rtol=1e-6)
    loss, size, _ = c(FakeModel(), make_sample(logits, target), update_num=10)
    assert size == 5 and torch.allclose(loss, losses.sum() + c.encouraging_bonus(lprobs, tgt), rtol=1e-6)


def test_drop_worst_then_drop_best(batch):
    logits, target = batch
    c = el(drop_worst_ratio=0.2, drop_best_ratio=0.5)
    losses, lprobs, tgt = per_token(logits, target)
    order = losses.argsort()
    kept = order[: int(5 * 0.8)][-int(4 * 0.5) :]  # smallest 4, then the largest 2 of those
    loss, size, _ = c(FakeModel(), make_sample(logits, target), update_num=1)
    expected = losses[kept].sum() + c.encouraging_bonus(lprobs[kept], tgt[kept])
    assert size == 2 and torch.allclose(loss, expected, rtol=1e-6)


def test_registered_names_and_rejected_options():
    for name in ("adjust_label_smoothed_encouraging_loss", "ajust_label_smoothed_encouraging_loss"):
        c = build_criterion(name, {"log_end": 0.5, "label_smoothing": 0.1})
        assert isinstance(c, AdjustLabelSmoothedEncouragingLoss) and c.cfg.log_end == 0.5
    assert AdjustLabelSmoothedEncouragingLoss.registry_name == "adjust_label_smoothed_encouraging_loss"
    with pytest.raises(NotImplementedError, match="--use-rdrop"):
        el(use_rdrop=True)
    with pytest.raises(ValueError, match="log-end"):
        el(log_end=1.5)
