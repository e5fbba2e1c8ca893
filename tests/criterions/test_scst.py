"""scst_reward_criterion (spec §5.3): caption wrapping, leave-one-out reward, reward-weighted loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from criterions import build_criterion
from criterions.scst import (
    ScstRewardConfig,
    ScstRewardCriterion,
    leave_one_out_reward,
    prepare_caption,
    wrap_sentence,
)
from data.tokenizer import OFATokenizer
from models import build_model, get_preset

BOS, PAD, EOS = 0, 1, 2
KEYS = ("src_tokens", "src_lengths", "patch_images", "patch_masks")
HYPS = [
    " a dog on the grass",
    " a brown dog",
    " a dog running in a field",
    " two cats on a bed",
    " a cat",
    " cats sleeping",
]
REFS = [" a brown dog runs on the grass&&a dog in a park", " two cats sleep on a bed&&cats on a sofa"]
SCORES = [0.5, 1.0, 2.0, 3.0, 0.0, 0.0]
# leave-one-out by hand: image 0 baselines (1+2)/2, (0.5+2)/2, (0.5+1)/2; image 1 baselines 0, 1.5, 1.5
REWARDS = [-1.0, -0.25, 1.25, 3.0, -1.5, -1.5]


class FixedScorer:
    """Stand-in for CiderD: returns preset scores and records what it was asked."""

    def __init__(self, scores: list[float]):
        self.scores, self.calls = np.asarray(scores), []

    def compute_score(self, gts: dict, res: dict) -> tuple[float, np.ndarray]:
        self.calls.append((gts, res))
        return float(self.scores.mean()), self.scores.copy()


class FixedGenerator:
    """Stand-in for the SCST generator: fixed hypotheses; records the model and its mode."""

    def __init__(self, hyps: list[list[torch.Tensor]]):
        self.hyps, self.seen = hyps, []

    def generate(self, model: nn.Module, sample: dict) -> list[list[dict]]:
        self.seen.append((model, model.training, torch.is_grad_enabled(), sorted(sample["net_input"])))
        return [[{"tokens": t, "score": torch.tensor(0.0)} for t in per_image] for per_image in self.hyps]


class Wrapper(nn.Module):
    """Mimics DDP: the raw model is ``.module`` and forward delegates to it."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


@pytest.fixture(scope="module")
def tokenizer(bpe_dir) -> OFATokenizer:
    return OFATokenizer.from_bpe_dir(bpe_dir)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(get_preset("ofa_test")).train()


@pytest.fixture
def sample(tokenizer) -> dict:
    src = [tokenizer.encode(" what does the image describe?", add_bos=True, add_eos=True)] * 2
    targets = [tokenizer.encode(ref, add_eos=True) for ref in REFS]
    target = torch.full((2, max(len(t) for t in targets)), PAD)
    for i, t in enumerate(targets):
        target[i, : len(t)] = t
    net_input = {
        "src_tokens": torch.stack(src),
        "src_lengths": torch.tensor([len(src[0])] * 2),
        "patch_images": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
        "patch_masks": torch.tensor([True, True]),
        "prev_output_tokens": torch.full((2, 3), BOS),
    }
    return {"net_input": net_input, "target": target, "ntokens": int(target.ne(PAD).sum()), "nsentences": 2}


def hyp_tokens(tokenizer) -> list[list[torch.Tensor]]:
    rows = [tokenizer.encode(text, add_eos=True) for text in HYPS]
    return [rows[:3], rows[3:]]


def make(tokenizer, scores=SCORES, **cfg) -> tuple[ScstRewardCriterion, FixedGenerator, FixedScorer]:
    crit = ScstRewardCriterion(ScstRewardConfig(**cfg), task=SimpleNamespace(tokenizer=tokenizer))
    crit.generator, crit.scorer = FixedGenerator(hyp_tokens(tokenizer)), FixedScorer(scores)
    return crit, crit.generator, crit.scorer


def manual_loss(model, sample, hyps, reward, skip=0, crange=None) -> tuple[float, int]:
    """-sum lprob(target) * reward written out token by token, and the number of counted tokens."""
    rows = [h for per_image in hyps for h in per_image]
    k, width = len(hyps[0]), max(len(h) for h in rows)
    prev, target = torch.full((len(rows), width), PAD), torch.full((len(rows), width), PAD)
    for i, h in enumerate(rows):
        prev[i, 0], prev[i, 1 : len(h)], target[i, : len(h)] = BOS, h[:-1], h
    inputs = {key: sample["net_input"][key].repeat_interleave(k, dim=0) for key in KEYS}
    with torch.no_grad():
        logits = model(**inputs, prev_output_tokens=prev)[0].float()
    if crange is not None:
        logits[:, :, 4 : crange[0]] = -math.inf
        logits[:, :, crange[1] :] = -math.inf
    lprobs = torch.log_softmax(logits, dim=-1).double()
    total, count = 0.0, 0
    for i, h in enumerate(rows):
        for t in range(skip, len(h)):
            total -= float(lprobs[i, t, h[t]]) * reward[i]
            count += 1
    return total, count


@pytest.mark.parametrize(
    ("text", "wrapped"),
    [("a dog.", "a dog <eos>"), ("  a dog  ", "a dog <eos>"), ("a dog..", "a dog. <eos>"), ("", " <eos>")],
)
def test_wrap_sentence(text, wrapped):
    assert wrap_sentence(text) == wrapped


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        (" A man, riding a bike! ", "A man riding a bike <eos>"),
        ("a dog.", "a dog <eos>"),
        ("it's a dog's toy .", "its a dogs toy <eos>"),
        ("a  b", "a  b <eos>"),
        ("...", " <eos>"),
    ],
)
def test_prepare_caption_strips_punctuation_then_wraps(text, prepared):
    assert prepare_caption(text) == prepared


def test_leave_one_out_reward_hand_numbers():
    reward = leave_one_out_reward(np.array(SCORES), 3)
    assert reward.dtype == np.float64
    np.testing.assert_allclose(reward, REWARDS)
    np.testing.assert_allclose(leave_one_out_reward(np.array([1.0, 4.0, 2.0, 2.0]), 2), [-3.0, 3.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_reward(np.array([1.0, 2.0]), 1)


def test_scorer_sees_wrapped_candidates_and_their_images_references(model, sample, tokenizer):
    crit, _, scorer = make(tokenizer)
    crit(model, sample)
    (gts, res) = scorer.calls[0]
    assert list(res) == list(range(6))
    assert res == {i: [prepare_caption(text)] for i, text in enumerate(HYPS)}
    image0 = ["a brown dog runs on the grass <eos>", "a dog in a park <eos>"]
    image1 = ["two cats sleep on a bed <eos>", "cats on a sofa <eos>"]
    assert gts == {i: image0 if i < 3 else image1 for i in range(6)}


@pytest.mark.parametrize(
    "cfg",
    [{}, {"ignore_prefix_size": 1}, {"constraint_range": "0,50265"}, {"constraint_range": "5,20000"}],
)
def test_loss_is_reward_weighted_nll_of_the_hypotheses(model, sample, tokenizer, cfg):
    crit, _, _ = make(tokenizer, **cfg)
    loss, sample_size, log = crit(model, sample)
    crange = tuple(int(v) for v in cfg["constraint_range"].split(",")) if "constraint_range" in cfg else None
    expected, count = manual_loss(
        model, sample, hyp_tokens(tokenizer), REWARDS, cfg.get("ignore_prefix_size", 0), crange
    )
    assert loss.dtype == torch.float64
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert sample_size == count == log["ntokens"]
    assert log["nsentences"] == 6 and log["sample_size"] == count
    assert log["score"] == pytest.approx(sum(SCORES))
    assert float(log["loss"]) == float(loss.detach())


def test_sentence_avg_counts_hypotheses(model, sample, tokenizer):
    crit, _, _ = make(tokenizer, sentence_avg=True)
    _, sample_size, log = crit(model, sample)
    assert sample_size == log["sample_size"] == log["nsentences"] == 6
    assert log["ntokens"] == sum(len(h) for per_image in hyp_tokens(tokenizer) for h in per_image)


def test_gradients_flow(model, sample, tokenizer):
    crit, _, _ = make(tokenizer)
    model.zero_grad()
    loss, _, _ = crit(model, sample)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()


def test_equal_scores_give_zero_reward_and_zero_loss(model, sample, tokenizer):
    crit, _, _ = make(tokenizer, scores=[0.75] * 6)
    loss, _, _ = crit(model, sample)
    assert float(loss.detach()) == 0.0


@pytest.mark.parametrize("start_training", [True, False])
def test_generates_with_the_raw_model_in_eval_mode_and_restores_the_mode(model, sample, tokenizer, start_training):
    wrapped = Wrapper(model).train(start_training)
    crit, generator, _ = make(tokenizer)
    crit(wrapped, sample)
    seen_model, seen_training, grad_enabled, _ = generator.seen[0]
    assert seen_model is model and not seen_training and not grad_enabled
    assert wrapped.training is start_training and model.training is start_training
    model.train()


def test_teacher_forced_pass_runs_in_train_mode(model, sample, tokenizer):
    modes = []
    handle = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    try:
        make(tokenizer)[0](model.eval(), sample)
    finally:
        handle.remove()
        model.train()
    assert modes == [True]


def test_real_generator_from_scst_args(model, sample, tokenizer):
    crit = ScstRewardCriterion(ScstRewardConfig(scst_args='{"beam":2,"max_len_b":4,"no_repeat_ngram_size":3}'))
    crit.task = SimpleNamespace(tokenizer=tokenizer)
    crit.scorer = FixedScorer([0.1, 0.4, 0.9, 0.2])
    loss, sample_size, log = crit(model, sample)
    assert log["nsentences"] == 4 and torch.isfinite(loss)
    assert 4 <= sample_size <= 4 * 5
    assert len(crit.scorer.calls[0][1]) == 4


def test_task_scst_generator_is_used(model, sample, tokenizer):
    generator = FixedGenerator(hyp_tokens(tokenizer))
    crit = ScstRewardCriterion(ScstRewardConfig(), task=SimpleNamespace(tokenizer=tokenizer, scst_generator=generator))
    crit.scorer = FixedScorer(SCORES)
    crit(model, sample)
    assert len(generator.seen) == 1


def test_unequal_hypothesis_counts_raise(model, sample, tokenizer):
    crit, generator, _ = make(tokenizer)
    generator.hyps = [generator.hyps[0], generator.hyps[1][:2]]
    with pytest.raises(ValueError, match="same number of hypotheses"):
        crit(model, sample)
    assert model.training


def test_missing_task_raises(model, sample, tokenizer):
    crit = ScstRewardCriterion(ScstRewardConfig())
    crit.generator, crit.scorer = FixedGenerator(hyp_tokens(tokenizer)), FixedScorer(SCORES)
    with pytest.raises(RuntimeError, match="needs the task"):
        crit(model, sample)


def test_build_criterion_passes_task_only_where_accepted():
    task = SimpleNamespace(tokenizer=None)
    crit = build_criterion("scst_reward_criterion", {"ignore_prefix_size": 2}, task=task)
    assert isinstance(crit, ScstRewardCriterion) and crit.task is task and crit.cfg.ignore_prefix_size == 2
    assert build_criterion("scst_reward_criterion").task is None
    other = build_criterion("adjust_label_smoothed_cross_entropy", task=task)
    assert not hasattr(other, "task")


def test_with_real_cider_d(model, sample, tokenizer):
    cider = pytest.importorskip("utils.metrics.cider")
    crit, _, _ = make(tokenizer)
    crit.scorer = cider.CiderD(df="corpus")
    loss, _, log = crit(model, sample)
    assert torch.isfinite(loss) and log["score"] >= 0.0
