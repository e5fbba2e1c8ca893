"""OFA's ``adjust_label_smoothed_encouraging_loss`` criterion (spec §5.2).

Reproduces ``criterions/label_smoothed_encouraging_loss.py`` of OFA-Sys/OFA: the label-smoothed cross
entropy of §5.1 plus the "encouraging loss" bonus of Zhao et al. (2022, arXiv:2110.06537). After §5.1's
drop_worst, once ``update_num > drop_best_after`` the ``int(N * (1 - drop_best_ratio))`` **largest**-loss
tokens are kept. On those tokens, with ``p = exp(lprobs)``:
``bonus = log(max(1 - p, 1e-5))``, replaced for ``p > log_end`` (when ``log_end != 1``) by its tangent at
``log_end``: ``(p - log_end) / (log_end - 1) + log(1 - log_end)``; and
``loss += (1 - eps) * sum_t bonus[t, target_t] + (eps / V) * sum_{t,v} bonus[t, v]``.
The bonus is <= 0, so it lowers the loss as the target probability grows ("encourages" confident tokens).

The original was first registered as ``ajust_label_smoothed_encouraging_loss`` (sic; the caption ``_el``
scripts use that name) and later renamed; both names build this class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from criterions.base import CRITERIONS
from criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy, LabelSmoothedCEConfig, TokenRows

# smallest 1 - p inside the log, as in the original, so a certain token gives log(1e-5) and not -inf
_MIN_ONE_MINUS_P = 1e-5


@dataclass
class EncouragingLossConfig(LabelSmoothedCEConfig):
    log_end: float = 0.75
    drop_best_ratio: float = 0.0
    drop_best_after: int = 0


@CRITERIONS.register("adjust_label_smoothed_encouraging_loss", EncouragingLossConfig)
@CRITERIONS.register("ajust_label_smoothed_encouraging_loss", EncouragingLossConfig)
class AdjustLabelSmoothedEncouragingLoss(AdjustLabelSmoothedCrossEntropy):
    def __init__(self, cfg: EncouragingLossConfig, padding_idx: int = 1, eos_idx: int = 2):
        if cfg.use_rdrop:
            # the original pairs the R-Drop copies after drop_best has re-sorted the tokens by loss
            # (and fails outright with drop_worst), so there is no coherent behaviour to reproduce
            raise NotImplementedError("--use-rdrop is not supported with the encouraging loss")
        if cfg.log_end > 1.0:
            raise ValueError(f"--log-end must be <= 1 (the tangent needs log(1 - log_end)), got {cfg.log_end}")
        super().__init__(cfg, padding_idx, eos_idx)

    def compute_loss(
        self, lprobs: Tensor, target: Tensor, masks: Tensor | None, update_num: int
    ) -> tuple[Tensor, Tensor, int]:
        loss, nll, ntokens, rows = self._loss_and_kept(lprobs, target, masks, update_num)
        return loss + self.encouraging_bonus(rows[2], rows[3]), nll, ntokens

    def _select_tokens(self, rows: TokenRows, update_num: int) -> TokenRows:
        rows = super()._select_tokens(rows, update_num)
        if update_num > self.cfg.drop_best_after:
            # applied even with ratio 0 (keeps all, sorted by decreasing loss), as in the original
            loss = rows[0]
            kept = int(loss.size(0) * (1 - self.cfg.drop_best_ratio))
            order = torch.topk(loss, k=kept, largest=True).indices
            rows = tuple(t[order] for t in rows)  # type: ignore[assignment]
        return rows

    def encouraging_bonus(self, lprobs: Tensor, target: Tensor) -> Tensor:
        """The summed, label-smoothed bonus term added to the loss (a non-positive scalar)."""
        probs = lprobs.exp()
        bonus = torch.log(torch.clamp(1.0 - probs, min=_MIN_ONE_MINUS_P))
        log_end = self.cfg.log_end
        if log_end != 1.0:
            # past log_end, follow the tangent of log(1 - p) at log_end instead of diverging to -inf
            tangent = (probs - log_end) / (log_end - 1.0) + math.log(1.0 - log_end)
            bonus = torch.where(probs > log_end, tangent, bonus)
        on_target = bonus.gather(-1, target[:, None]).sum()
        eps = self.cfg.label_smoothing
        return (1.0 - eps) * on_target + (eps / lprobs.size(-1)) * bonus.sum()
