"""fairseq's Adam, polynomial decay with warm-up, the loss scaler and EMA."""

from __future__ import annotations

import math

import pytest
import torch

from utils.optim import EMA, DynamicLossScaler, FairseqAdam, PolynomialDecay


def _reference_adam(p, grads, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """fairseq's formula written out: decoupled decay, then lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)."""
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        p = p - wd * lr * p
        p = p - lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t) * m / (v.sqrt() + eps)
    return p


def test_fairseq_adam_matches_the_fairseq_formula():
    torch.manual_seed(0)
    start = torch.randn(50, 20, dtype=torch.float64)
    grads = [torch.randn(50, 20, dtype=torch.float64) * 10**-k for k in range(6)]  # tiny grads stress eps
    param = torch.nn.Parameter(start.float())
    opt = FairseqAdam([param], lr=1e-2, weight_decay=0.1)
    for g in grads:
        param.grad = g.float()
        opt.step()
    expected = _reference_adam(start, grads, 1e-2, 0.1)
    assert (param.double() - expected).abs().max().item() < 1e-5


def test_polynomial_decay_with_warmup_follows_fairseq():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = PolynomialDecay(opt, peak_lr=1.0, total_num_update=10, warmup_updates=4, end_learning_rate=0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # first update uses 1/warmup
    lrs = [sched.step_update(n) for n in range(1, 12)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(0.9 * (1 - 1 / 6) + 0.1)
    assert lrs[9:] == pytest.approx([0.1, 0.1])
    sched.reinit(total_num_update=100, warmup_ratio=0.06, num_updates=0)
    assert sched.warmup_updates == 6 and opt.param_groups[0]["lr"] == pytest.approx(1 / 6)


def test_loss_scaler_halves_on_overflow_and_grows_after_a_window():
    scaler = DynamicLossScaler(init_scale=8.0, scale_window=2, min_loss_scale=1.0)
    scaler.update(True)
    assert scaler.scale == 4.0 and scaler.overflows == 1
    scaler.update(False)
    scaler.update(False)
    assert scaler.scale == 8.0
    for _ in range(3):  # 8 -> 4 -> 2 -> 1: still at the minimum
        scaler.update(True)
    with pytest.raises(FloatingPointError, match="--min-loss-scale"):
        scaler.update(True)


def test_ema_averages_floats_and_copies_integers():
    model = torch.nn.BatchNorm1d(3)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
    model.num_batches_tracked.fill_(7)
    ema.step(model, num_updates=1)
    assert torch.allclose(ema.state["weight"], torch.full((3,), 2.0))
    assert ema.state["num_batches_tracked"].item() == 7
