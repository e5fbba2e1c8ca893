"""Validation and evaluation metrics of OFA's tasks: CIDEr-D, BLEU, the COCO caption suite, VQA soft accuracy,
grounding Acc@0.5, and a mergeable running mean for the ``_score_sum`` / ``_score_cnt`` logging OFA's tasks use.

``accuracy`` and ``MeanAccumulator`` reproduce OFA's ``score_sum / score_cnt`` bookkeeping: tasks log a sum and a
count per batch, the trainer sums both over batches and ranks, and the metric is their quotient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from utils.metrics.bleu import bleu
from utils.metrics.boxes import bins_to_boxes, box_hits, box_iou, boxes_to_bins
from utils.metrics.cider import CiderD, build_df_table, load_df_table
from utils.metrics.coco_caption import coco_caption_scores
from utils.metrics.vqa import parse_vqa_answers, vqa_score

__all__ = [
    "CiderD",
    "MeanAccumulator",
    "accuracy",
    "bins_to_boxes",
    "bleu",
    "box_hits",
    "box_iou",
    "boxes_to_bins",
    "build_df_table",
    "coco_caption_scores",
    "load_df_table",
    "parse_vqa_answers",
    "vqa_score",
]

SUM_KEY = "_score_sum"
CNT_KEY = "_score_cnt"


def accuracy(hits: Tensor | Sequence[bool | float]) -> float:
    """Fraction of hits (bools, or per-item scores in [0, 1]); ValueError when there is nothing to average."""
    values = torch.as_tensor(hits, dtype=torch.float64).reshape(-1)
    if values.numel() == 0:
        raise ValueError("accuracy of an empty set of hits is undefined")
    return float(values.mean())


class MeanAccumulator:
    """A running sum and count whose dict form (``{"_score_sum": s, "_score_cnt": c}``) can be summed across
    batches and ranks before taking ``mean``."""

    def __init__(self, total: float = 0.0, count: float = 0.0):
        self.sum = float(total)
        self.count = float(count)

    def add(self, value: float, n: int = 1) -> None:
        """Add ``n`` items whose mean is ``value`` (fairseq's ``AverageMeter.update`` convention)."""
        self.sum += float(value) * n
        self.count += n

    def extend(self, values: Iterable[float] | Tensor) -> None:
        """Add one item per value (e.g. the per-sample scores of a batch)."""
        flat = torch.as_tensor(values if isinstance(values, Tensor) else list(values), dtype=torch.float64)
        self.sum += float(flat.sum())
        self.count += flat.numel()

    @property
    def mean(self) -> float:
        """``sum / count``, or 0.0 before anything was added."""
        return self.sum / self.count if self.count > 0 else 0.0

    def merge(self, other: MeanAccumulator) -> MeanAccumulator:
        """A new accumulator holding both sums and both counts."""
        return MeanAccumulator(self.sum + other.sum, self.count + other.count)

    def to_dict(self, sum_key: str = SUM_KEY, cnt_key: str = CNT_KEY) -> dict[str, float]:
        return {sum_key: self.sum, cnt_key: self.count}

    @classmethod
    def from_dict(
        cls, state: Mapping[str, float | Tensor], sum_key: str = SUM_KEY, cnt_key: str = CNT_KEY
    ) -> MeanAccumulator:
        """Read back a (possibly rank-summed) dict form; missing keys count as zero."""
        return cls(float(state.get(sum_key, 0.0)), float(state.get(cnt_key, 0.0)))

    def __repr__(self) -> str:
        return f"MeanAccumulator(sum={self.sum}, count={self.count})"
