"""OFA's training criterions, registered by their OFA names (``--criterion=...``).

Importing this package imports every criterion module so that each one registers in ``CRITERIONS``.
"""

from criterions import encouraging_loss, label_smoothed_ce
from criterions.base import CRITERIONS, build_criterion, reduce_logs
from criterions.clip_scst import ClipScstRewardCriterion  # noqa: F401 (registers clip_scst_reward_criterion)
from criterions.encouraging_loss import AdjustLabelSmoothedEncouragingLoss, EncouragingLossConfig
from criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy, LabelSmoothedCEConfig
from criterions.scst import ScstRewardConfig, ScstRewardCriterion  # noqa: F401 (registers scst_reward_criterion)

__all__ = [
    "CRITERIONS",
    "AdjustLabelSmoothedCrossEntropy",
    "AdjustLabelSmoothedEncouragingLoss",
    "EncouragingLossConfig",
    "LabelSmoothedCEConfig",
    "build_criterion",
    "encouraging_loss",
    "label_smoothed_ce",
    "reduce_logs",
]
