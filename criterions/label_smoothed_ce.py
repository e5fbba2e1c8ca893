"""OFA's ``adjust_label_smoothed_cross_entropy`` criterion (spec §5.1).

Reproduces ``criterions/label_smoothed_cross_entropy.py`` of OFA-Sys/OFA. Per target token:
``loss = (1 - eps - eps_i) * nll + eps_i * smooth`` where ``smooth`` is minus the sum of log-probs over the
allowed tokens and ``eps_i = eps / (n_allowed - 1)`` (+1e-6 in the denominator when constrained). Allowed
tokens are the whole vocabulary, the trie's ``constraint_masks`` (logits outside are -inf before the
log-softmax) or ``constraint_range`` ("start,end": specials 0..3 plus [start, end)). Log-probs are
multiplied by the sample's ``conf`` (VQA answer confidence) after the log-softmax. ``drop_worst_ratio``
keeps the lowest-loss *tokens* once ``update_num > drop_worst_after``. Losses are **sums**;
``sample_size`` is the number of kept target tokens (or sentences with ``sentence_avg``).

A list/tuple sample is a pretraining pair (v1, v2): the criterion runs on each and returns
``l1/ss1 + l2/ss2`` with ``sample_size`` 1. ``use_rdrop`` duplicates the batch and adds
``reg_alpha`` times the symmetric KL between the two copies' log-probs (R-Drop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from criterions.base import CRITERIONS

# Rows of (loss, nll, lprobs, target) for the N kept target tokens, in the order they are summed.
TokenRows = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass
class LabelSmoothedCEConfig:
    label_smoothing: float = 0.0
    ignore_prefix_size: int = 0
    ignore_eos: bool = False
    sentence_avg: bool = False
    drop_worst_ratio: float = 0.0
    drop_worst_after: int = 0
    report_accuracy: bool = False
    use_rdrop: bool = False
    reg_alpha: float = 1.0
    constraint_range: str | None = None
    sample_patch_num: int = 196


def parse_constraint_range(spec: str | None) -> tuple[int, int] | None:
    if not spec:
        return None
    try:
        start, end = (int(v) for v in spec.split(","))
    except ValueError as err:
        raise ValueError(f"--constraint-range must be 'start,end' (two integers), got {spec!r}") from err
    return start, end


def duplicate_for_rdrop(value: Any) -> Any:
    """The batch twice over, for R-Drop: tensors repeated along dim 0, ints doubled, dicts recursed.

    Like the original, *every* int doubles (``ntokens``, ``nsentences``, and also a ``sample_patch_num``
    set by the pretraining path) and numpy arrays repeat element-wise. Unlike the original the input is
    not modified in place (the caller may reuse the batch, e.g. for generation in validation).
    """
    if isinstance(value, dict):
        return {key: duplicate_for_rdrop(item) for key, item in value.items()}
    if isinstance(value, Tensor):
        return value.repeat(2, *([1] * (value.dim() - 1)))
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value * 2
    if isinstance(value, np.ndarray):
        return value.repeat(2)
    raise TypeError(f"--use-rdrop cannot duplicate a batch entry of type {type(value).__name__}")


def mask_outside_range(logits: Tensor, constraint_range: tuple[int, int] | None) -> Tensor:
    """-inf outside ``[start, end)`` on the last dim, keeping the specials 0..3 (boxes: bins; images: codes)."""
    if constraint_range is None:
        return logits
    start, end = constraint_range
    logits = logits.clone()
    logits[..., 4:start] = float("-inf")
    logits[..., end:] = float("-inf")
    return logits


@CRITERIONS.register("adjust_label_smoothed_cross_entropy", LabelSmoothedCEConfig)
class AdjustLabelSmoothedCrossEntropy(nn.Module):
    # the logging values the trainer sums over micro-batches and ranks (``reduce_logs`` leaves out the pair and
    # accuracy entries of runs that have none)
    log_keys = ("loss", "nll_loss", "ntokens", "nsentences", "sample_size")
    log_keys += ("loss_v1", "loss_v2", "sample_size_v1", "sample_size_v2", "n_correct", "total")

    def __init__(self, cfg: LabelSmoothedCEConfig, padding_idx: int = 1, eos_idx: int = 2):
        super().__init__()
        self.cfg, self.padding_idx, self.eos_idx = cfg, padding_idx, eos_idx
        self.constraint_range = parse_constraint_range(cfg.constraint_range)
        self._allowed: Tensor | None = None
        if self.constraint_range is not None:
            start, end = self.constraint_range
            self._allowed = torch.cat([torch.arange(4), torch.arange(start, end)])

    def forward(self, model: nn.Module, sample: dict | list[dict], update_num: int = 0) -> tuple[Tensor, int, dict]:
        """Returns (summed loss, sample_size, logging dict), like fairseq criterions."""
        if isinstance(sample, list | tuple):
            return self._forward_pair(model, sample, update_num)
        if self.cfg.use_rdrop:
            sample = duplicate_for_rdrop(sample)
        logits = model(**sample["net_input"])[0]
        lprobs, target, masks = self.lprobs_and_target(logits, sample)
        loss, nll, ntokens = self.compute_loss(lprobs, target, masks, update_num)
        nsentences = sample["target"].size(0)
        sample_size = nsentences if self.cfg.sentence_avg else ntokens
        log = {
            "loss": loss.detach(),
            "nll_loss": nll.detach(),
            # the batch's own count (the collater's ntokens), not the kept tokens, as in the original
            "ntokens": sample.get("ntokens", ntokens),
            "nsentences": sample.get("nsentences", nsentences),
            "sample_size": sample_size,
        }
        if self.cfg.report_accuracy:
            # the original's compute_accuracy crashes (it unpacks 3 values into 2); this is its intent
            log["n_correct"] = int(lprobs.argmax(-1).eq(target).sum())
            log["total"] = int(target.numel())
        return loss, sample_size, log

    def _forward_pair(self, model: nn.Module, pair: list[dict] | tuple, update_num: int) -> tuple:
        """Pretraining: the collater yields (v1, v2); v1 samples ``sample_patch_num`` image patches."""
        if self.cfg.sample_patch_num > 0:
            pair[0]["net_input"]["sample_patch_num"] = self.cfg.sample_patch_num
        loss1, size1, log1 = self.forward(model, pair[0], update_num)
        loss2, size2, log2 = self.forward(model, pair[1], update_num)
        loss = loss1 / size1 + loss2 / size2
        log = {
            "loss": loss.detach(),
            "loss_v1": loss1.detach(),
            "loss_v2": loss2.detach(),
            "nll_loss": log1["nll_loss"] / size1 + log2["nll_loss"] / size2,
            "ntokens": log1["ntokens"] + log2["ntokens"],
            "nsentences": log1["nsentences"] + log2["nsentences"],
            "sample_size": 1,
            "sample_size_v1": size1,
            "sample_size_v2": size2,
        }
        for key in ("n_correct", "total"):
            if key in log1:
                log[key] = log1[key] + log2[key]
        return loss, 1, log

    def lprobs_and_target(self, logits: Tensor, sample: dict) -> tuple[Tensor, Tensor, Tensor | None]:
        """Flattened (N, V) log-probs, (N,) targets and (N, V) constraint masks of the non-pad targets."""
        masks = sample.get("constraint_masks")
        if masks is not None:
            logits = logits.masked_fill(~masks, float("-inf"))
        logits = mask_outside_range(logits, self.constraint_range)
        lprobs = F.log_softmax(logits.float(), dim=-1)
        if sample.get("conf") is not None:
            # scaling the log-probs (not the loss afterwards) is what the original does
            lprobs = lprobs * sample["conf"][:, None, None]
        target = sample["target"]
        if self.cfg.ignore_prefix_size > 0:
            skip = self.cfg.ignore_prefix_size
            lprobs, target = lprobs[:, skip:], target[:, skip:]
            masks = masks[:, skip:] if masks is not None else None
        if self.cfg.ignore_eos:
            lprobs, target, masks = self._drop_eos(lprobs, target, masks)
        keep = target.ne(self.padding_idx)
        return lprobs[keep], target[keep], masks[keep] if masks is not None else None

    def _drop_eos(self, lprobs: Tensor, target: Tensor, masks: Tensor | None) -> tuple:
        # the original reshapes to (B, T-1), i.e. it assumes exactly one eos per row; say so if not
        not_eos = target.ne(self.eos_idx)
        if not bool((not_eos.sum(1) == target.size(1) - 1).all()):
            raise ValueError("--ignore-eos needs exactly one eos in every target row")
        bsz = target.size(0)
        lprobs = lprobs[not_eos].view(bsz, -1, lprobs.size(-1))
        masks = masks[not_eos].view(bsz, -1, masks.size(-1)) if masks is not None else None
        return lprobs, target[not_eos].view(bsz, -1), masks

    def compute_loss(
        self, lprobs: Tensor, target: Tensor, masks: Tensor | None, update_num: int
    ) -> tuple[Tensor, Tensor, int]:
        """(summed loss, summed nll, number of kept tokens) for flattened non-pad targets."""
        loss, nll, ntokens, _ = self._loss_and_kept(lprobs, target, masks, update_num)
        return loss, nll, ntokens

    def _loss_and_kept(
        self, lprobs: Tensor, target: Tensor, masks: Tensor | None, update_num: int
    ) -> tuple[Tensor, Tensor, int, TokenRows]:
        """Summed loss and nll, the number of kept tokens and the kept tokens' rows."""
        loss, nll = self._smoothed_nll(lprobs, target, masks)
        rows = self._select_tokens((loss, nll, lprobs, target), update_num)
        loss, nll, lprobs = rows[0], rows[1], rows[2]
        total = loss.sum()
        if self.cfg.use_rdrop:
            total = total + self._rdrop_kl(lprobs) * self.cfg.reg_alpha
        return total, nll.sum(), loss.numel(), rows

    def _smoothed_nll(self, lprobs: Tensor, target: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-token (loss, nll) over N flattened target tokens."""
        eps = self.cfg.label_smoothing
        nll = -lprobs.gather(-1, target[:, None]).squeeze(-1)
        if masks is not None:
            # masked-out log-probs are -inf: zero them so they do not enter the smoothing sum
            smooth = -lprobs.masked_fill(~masks, 0.0).sum(-1)
            eps_i = eps / (masks.sum(-1).float() - 1 + 1e-6)
        elif self._allowed is not None:
            allowed = self._allowed.to(lprobs.device)
            smooth = -lprobs.index_select(-1, allowed).sum(-1)
            eps_i = eps / (allowed.numel() - 1 + 1e-6)
        else:
            smooth = -lprobs.sum(-1)
            eps_i = eps / (lprobs.size(-1) - 1)
        loss = (1.0 - eps - eps_i) * nll + eps_i * smooth
        return loss, nll

    def _select_tokens(self, rows: TokenRows, update_num: int) -> TokenRows:
        """drop_worst: keep the int(N * (1 - ratio)) smallest-loss tokens (token level, not sentences)."""
        ratio = self.cfg.drop_worst_ratio
        if not (ratio > 0 and update_num > self.cfg.drop_worst_after):
            return rows
        loss = rows[0]
        if self.cfg.use_rdrop:
            # choose on the first copy and keep the same tokens of the second, so the KL pairs stay aligned
            half = loss.size(0) // 2
            order = torch.topk(loss[:half], k=int(half * (1 - ratio)), largest=False).indices
            order = torch.cat([order, order + half])
        else:
            # sorted like the original's topk, so the sum runs in the same order
            order = torch.topk(loss, k=int(loss.size(0) * (1 - ratio)), largest=False).indices
        return tuple(t[order] for t in rows)  # type: ignore[return-value]

    def _rdrop_kl(self, lprobs: Tensor) -> Tensor:
        """Symmetric KL between the two copies' log-probs (restricted to constraint_range if set)."""
        half = lprobs.size(0) // 2
        p, q = lprobs[:half], lprobs[half:]
        if self._allowed is not None:
            allowed = self._allowed.to(lprobs.device)
            p, q = p.index_select(-1, allowed), q.index_select(-1, allowed)
        forward_kl = F.kl_div(p, q.exp(), reduction="sum")
        backward_kl = F.kl_div(q, p.exp(), reduction="sum")
        return (forward_kl + backward_kl) / 2
