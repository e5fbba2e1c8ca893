"""OFA's ``scst_reward_criterion``: self-critical sequence training with a CIDEr-D reward (spec §5.3).

Reproduces ``criterions/scst_loss.py`` of OFA-Sys/OFA (caption stage 2, RefCOCO ``--scst``). One call:

1. the raw model (``model.module`` under DDP) goes to eval mode and the SCST generator decodes every
   sample; **all** hypotheses it returns are kept, so beam search with ``beam=5`` gives ``seq_per_img=5``;
2. hypotheses (eos dropped) and references (each ``target`` row without pads, decoded and split on ``&&``)
   are decoded with the task's tokenizer, stripped, cleared of ``string.punctuation`` and wrapped as
   ``"<text> <eos>"`` (a trailing '.' is dropped first), to match the cached document frequencies;
3. CIDEr-D scores every hypothesis against its image's references; the reward is the score minus the mean
   score of the image's *other* ``seq_per_img - 1`` hypotheses (leave-one-out baseline), in float64;
4. the model goes back to train mode and is teacher-forced on the hypotheses: sources and images are
   repeat-interleaved ``seq_per_img`` times, ``prev_output_tokens = [bos] + hyp[:-1]`` and ``target = hyp``
   (ending with eos), both right-padded with pad;
5. ``constraint_range`` masks the logits (as in ``adjust_label_smoothed_cross_entropy``), then
   ``loss = -sum(log p(target_t) * reward)`` over non-pad targets, after dropping ``ignore_prefix_size``
   positions. The loss is float64, as in the original (float32 log-probs times a float64 reward).

Returned ``sample_size`` is the number of non-pad target tokens, or the number of hypotheses with
``sentence_avg``. The logging dict holds ``loss``, ``score`` (the **sum** of the hypotheses' CIDEr-D;
OFA's ``reduce_metrics`` logs ``score / nsentences``, the mean per hypothesis), ``ntokens`` (non-pad
targets), ``nsentences`` (hypotheses, i.e. batch size times ``seq_per_img``) and ``sample_size``.

Differences from the original, none of which changes a loss or a reward: the training mode the model had
on entry is restored on exit (the original leaves it in train mode, also during validation); one hypothesis
per image (no baseline: a 0/0 reward) and unequal hypothesis counts per image raise instead of producing
nan or misaligned rewards; a one-token hypothesis does not hit the original's over-eager ``squeeze()``.

The generator is, in order: ``criterion.generator`` if set, ``task.scst_generator`` if the task has one,
else one built from ``scst_args``. The CIDEr-D scorer is built on first use (``criterion.scorer`` may be
set instead) from ``scst_cider_cached_tokens`` (OFA's ``coco-train-words.p``), or with ``None`` from the
document frequencies of each batch's references ("corpus").
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from criterions.base import CRITERIONS
from criterions.label_smoothed_ce import mask_outside_range, parse_constraint_range

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NET_INPUT_KEYS = ("src_tokens", "src_lengths", "patch_images", "patch_masks")


class CaptionScorer(Protocol):
    def compute_score(self, gts: dict[Any, list[str]], res: dict[Any, list[str]]) -> tuple[float, np.ndarray]: ...


class HypothesisGenerator(Protocol):
    def generate(self, model: nn.Module, sample: dict) -> list[list[dict[str, Tensor]]]: ...


@dataclass
class ScstRewardConfig:
    scst_cider_cached_tokens: str | None = None
    ignore_prefix_size: int = 0
    sentence_avg: bool = False
    constraint_range: str | None = None
    scst_args: str = '{"beam":5,"max_len_b":16,"no_repeat_ngram_size":3}'


def wrap_sentence(text: str) -> str:
    """OFA's ``_wrap_sentence``: strip, drop one trailing '.', end with ``' <eos>'``."""
    text = text.strip()
    if text.endswith("."):
        text = text[:-1]
    return text + " <eos>"


def prepare_caption(text: str) -> str:
    """A caption as CIDEr-D sees it in SCST: stripped, without punctuation, then ``wrap_sentence``."""
    return wrap_sentence(text.strip().translate(_NO_PUNCTUATION))


def leave_one_out_reward(scores: np.ndarray, seq_per_img: int) -> np.ndarray:
    """``score - mean(scores of the image's other hypotheses)``; scores are grouped by image, in order."""
    if seq_per_img < 2:
        raise ValueError("SCST's leave-one-out baseline needs at least 2 hypotheses per image (beam >= 2)")
    grouped = np.asarray(scores, dtype=np.float64).reshape(-1, seq_per_img)
    baseline = (grouped.sum(axis=1, keepdims=True) - grouped) / (seq_per_img - 1)
    return (grouped - baseline).reshape(-1)


def collate_right(rows: Sequence[Tensor], pad: int, device: torch.device, bos: int | None = None) -> Tensor:
    """Rows right-padded with ``pad``; with ``bos`` each row is shifted right behind it (its last token dropped)."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        row = row.to(device=device, dtype=torch.long)
        if bos is not None:
            row = torch.cat([row.new_tensor([bos]), row[:-1]])
        out[i, : len(row)] = row
    return out


def scst_loss(lprobs: Tensor, target: Tensor, reward: Tensor, padding_idx: int) -> tuple[Tensor, int]:
    """``-sum_t lprobs[target_t] * reward`` over non-pad targets and their count; (N, T, V), (N, T), (N,)."""
    picked = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    weighted = -picked * reward.unsqueeze(-1)
    pad = target.eq(padding_idx)
    return weighted.masked_fill(pad, 0.0).sum(), int((~pad).sum())


@CRITERIONS.register("scst_reward_criterion", ScstRewardConfig)
class ScstRewardCriterion(nn.Module):
    log_keys = ("loss", "nll_loss", "ntokens", "nsentences", "sample_size", "score")
    CIDER_REWARD_WEIGHT = 1.0

    def __init__(self, cfg: ScstRewardConfig, padding_idx: int = 1, eos_idx: int = 2, task: Any = None):
        super().__init__()
        self.cfg, self.padding_idx, self.eos_idx, self.task = cfg, padding_idx, eos_idx, task
        self.constraint_range = parse_constraint_range(cfg.constraint_range)
        self.generator: HypothesisGenerator | None = None
        self.scorer: CaptionScorer | None = None

    def forward(self, model: nn.Module, sample: dict, update_num: int = 0) -> tuple[Tensor, int, dict]:
        """Returns (summed loss, sample_size, logging dict), like fairseq criterions."""
        was_training = model.training
        try:
            hyps, candidates, references = self.generate(model, sample)
            seq_per_img = len(hyps) // len(references)
            scores = self.cider_scores(candidates, references, seq_per_img)
            reward = leave_one_out_reward(scores, seq_per_img)
            reward_t = torch.as_tensor(reward, dtype=torch.float64, device=sample["target"].device)
            model.train()
            logits, target = self.teacher_force(model, sample, hyps, seq_per_img)
            lprobs, target = self.lprobs_and_target(logits, target)
            loss, ntokens = scst_loss(lprobs, target, reward_t, self.padding_idx)
        finally:
            model.train(was_training)
        nsentences = target.size(0)
        sample_size = nsentences if self.cfg.sentence_avg else ntokens
        log = {
            "loss": loss.detach(),
            "score": float(scores.sum()),
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        return loss, sample_size, log

    # ------------------------------------------------------------------ generation and decoding
    @property
    def tokenizer(self) -> Any:
        if self.task is None or getattr(self.task, "tokenizer", None) is None:
            raise RuntimeError("scst_reward_criterion needs the task (its tokenizer): pass task= or set .task")
        return self.task.tokenizer

    def get_generator(self) -> HypothesisGenerator:
        if self.generator is None:
            self.generator = getattr(self.task, "scst_generator", None)
        if self.generator is None:
            from models.generate import GenerationConfig, SequenceGenerator

            cfg = GenerationConfig.from_args(self.cfg.scst_args)
            self.generator = SequenceGenerator(cfg, len(self.tokenizer))
        return self.generator

    def get_scorer(self) -> CaptionScorer:
        if self.scorer is None:
            from utils.metrics.cider import CiderD

            self.scorer = CiderD(df=self.cfg.scst_cider_cached_tokens or "corpus")
        return self.scorer

    def hypotheses(self, model: nn.Module, sample: dict) -> list[Tensor]:
        """Every hypothesis the generator returns (eval mode, no grad), sample by sample, as token rows."""
        raw = getattr(model, "module", model)
        model.eval()
        with torch.no_grad():
            out = self.get_generator().generate(raw, {"net_input": sample["net_input"]})
        counts = {len(per_sample) for per_sample in out}
        if len(out) != sample["target"].size(0) or len(counts) != 1:
            raise ValueError(f"SCST needs the same number of hypotheses for each sample, got {sorted(counts)}")
        return [hyp["tokens"] for per_sample in out for hyp in per_sample]

    def generate(self, model: nn.Module, sample: dict) -> tuple[list[Tensor], list[str], list[list[str]]]:
        """Hypothesis token rows (all of them, image by image), their texts, and each image's references."""
        hyps = self.hypotheses(model, sample)
        candidates = [self.decode(tokens[:-1] if tokens[-1] == self.eos_idx else tokens) for tokens in hyps]
        references = [self.decode(row[row.ne(self.padding_idx)]).split("&&") for row in sample["target"]]
        return hyps, candidates, references

    def decode(self, tokens: Tensor) -> str:
        return self.tokenizer.decode(tokens.int().cpu()).strip()

    def cider_scores(self, candidates: list[str], references: list[list[str]], seq_per_img: int) -> np.ndarray:
        """CIDEr-D of each candidate against the references of image ``i // seq_per_img`` (times the weight)."""
        wrapped_refs = [[prepare_caption(ref) for ref in refs] for refs in references]
        res = {i: [prepare_caption(text)] for i, text in enumerate(candidates)}
        gts = {i: wrapped_refs[i // seq_per_img] for i in range(len(candidates))}
        _, scores = self.get_scorer().compute_score(gts, res)
        return self.CIDER_REWARD_WEIGHT * np.asarray(scores, dtype=np.float64)

    # ------------------------------------------------------------------ teacher forcing
    def teacher_force(self, model: nn.Module, sample: dict, hyps: list[Tensor], seq_per_img: int) -> tuple:
        """Logits of the model (train mode, with grad) fed the hypotheses, and the padded hypotheses."""
        net_input = sample["net_input"]
        device = sample["target"].device
        inputs = {
            key: net_input[key].repeat_interleave(seq_per_img, dim=0) if net_input.get(key) is not None else None
            for key in _NET_INPUT_KEYS
        }
        bos = getattr(self.tokenizer, "bos", 0)
        inputs["prev_output_tokens"] = collate_right(hyps, self.padding_idx, device, bos=bos)
        target = collate_right(hyps, self.padding_idx, device)
        return model(**inputs)[0], target

    def lprobs_and_target(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        logits = mask_outside_range(logits, self.constraint_range)
        lprobs = F.log_softmax(logits.float(), dim=-1)
        skip = self.cfg.ignore_prefix_size
        if skip > 0:
            lprobs, target = lprobs[:, skip:], target[:, skip:]
        return lprobs, target
