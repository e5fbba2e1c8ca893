"""OFA's ``adjust_label_smoothed_cross_entropy`` criterion (spec §5.1).

Per target token: ``loss = (1 - eps - eps_i) * nll + eps_i * smooth`` where ``smooth`` is minus the sum
of log-probs over the allowed tokens and ``eps_i = eps / (n_allowed - 1)``. Allowed tokens are the
whole vocabulary, the trie's ``constraint_masks`` (logits outside are -inf before the log-softmax) or
``constraint_range`` ("start,end": specials 0..3 plus [start, end)). Log-probs are multiplied by the
sample's ``conf`` (VQA answer confidence). ``drop_worst_ratio`` keeps the lowest-loss *tokens* after
``drop_worst_after`` updates. Losses are **sums**; ``sample_size`` is the number of kept target tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LabelSmoothedCEConfig:
    label_smoothing: float = 0.0
    ignore_prefix_size: int = 0
    ignore_eos: bool = False
    sentence_avg: bool = False
    drop_worst_ratio: float = 0.0
    drop_worst_after: int = 0
    report_accuracy: bool = False
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


class AdjustLabelSmoothedCrossEntropy(nn.Module):
    def __init__(self, cfg: LabelSmoothedCEConfig, padding_idx: int = 1, eos_idx: int = 2):
        super().__init__()
        self.cfg, self.padding_idx, self.eos_idx = cfg, padding_idx, eos_idx
        self.constraint_range = parse_constraint_range(cfg.constraint_range)

    def forward(self, model: nn.Module, sample: dict, update_num: int = 0) -> tuple[Tensor, int, dict]:
        """Returns (summed loss, sample_size, logging dict), like fairseq criterions."""
        logits = model(**sample["net_input"])[0]
        lprobs, target, masks = self._lprobs_and_target(logits, sample)
        keep = target.ne(self.padding_idx)
        lprobs, target = lprobs[keep], target[keep]
        masks = masks[keep] if masks is not None else None
        loss, nll = self._smoothed_nll(lprobs, target, masks)
        if self.cfg.drop_worst_ratio > 0 and update_num > self.cfg.drop_worst_after:
            kept = int(loss.numel() * (1 - self.cfg.drop_worst_ratio))
            loss, order = torch.topk(loss, k=kept, largest=False, sorted=False)
            nll = nll[order]
        ntokens = loss.numel()
        sample_size = sample["target"].size(0) if self.cfg.sentence_avg else ntokens
        log = {
            "loss": loss.sum().detach(),
            "nll_loss": nll.sum().detach(),
            "ntokens": sample.get("ntokens", ntokens),
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if self.cfg.report_accuracy:
            log["n_correct"] = int(lprobs.argmax(-1).eq(target).sum())
            log["total"] = int(target.numel())
        return loss.sum(), sample_size, log

    def _lprobs_and_target(self, logits: Tensor, sample: dict) -> tuple[Tensor, Tensor, Tensor | None]:
        masks = sample.get("constraint_masks")
        if masks is not None:
            logits = logits.masked_fill(~masks, float("-inf"))
        if self.constraint_range is not None:
            start, end = self.constraint_range
            logits = logits.clone()
            logits[:, :, 4:start] = float("-inf")
            logits[:, :, end:] = float("-inf")
        lprobs = F.log_softmax(logits.float(), dim=-1)
        if sample.get("conf") is not None:
            lprobs = lprobs * sample["conf"][:, None, None]
        target = sample["target"]
        if self.cfg.ignore_prefix_size > 0:
            skip = self.cfg.ignore_prefix_size
            lprobs, target = lprobs[:, skip:], target[:, skip:]
            masks = masks[:, skip:] if masks is not None else None
        if self.cfg.ignore_eos:
            # one eos per row: drop that position from every row
            keep = target.ne(self.eos_idx)
            bsz = target.size(0)
            lprobs = lprobs[keep].view(bsz, -1, lprobs.size(-1))
            target = target[keep].view(bsz, -1)
            masks = masks[keep].view(bsz, -1, masks.size(-1)) if masks is not None else None
        return lprobs, target, masks

    def _smoothed_nll(self, lprobs: Tensor, target: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-token (loss, nll) over N flattened target tokens."""
        eps = self.cfg.label_smoothing
        nll = -lprobs.gather(-1, target[:, None]).squeeze(-1)
        if masks is not None:
            smooth = -lprobs.masked_fill(~masks, 0.0).sum(-1)
            eps_i = eps / (masks.sum(-1).float() - 1 + 1e-6)
        elif self.constraint_range is not None:
            start, end = self.constraint_range
            allowed = torch.cat([torch.arange(4), torch.arange(start, end)]).to(lprobs.device)
            smooth = -lprobs.index_select(-1, allowed).sum(-1)
            eps_i = eps / (allowed.numel() - 1 + 1e-6)
        else:
            smooth = -lprobs.sum(-1)
            eps_i = eps / (lprobs.size(-1) - 1)
        loss = (1.0 - eps - eps_i) * nll + eps_i * smooth
        return loss, nll
