"""DataLoader plumbing shared by training and evaluation: bad-row skipping with a limit.

Without ``--skip-bad-rows`` a malformed row stops the run with an error naming its file and line. With
``--skip-bad-rows N`` such rows are dropped from their batch, reported in the batch as ``bad_rows`` (so the
trainer can count them across workers) and the run stops once more than N were skipped. A batch that is a list
of batches (pretraining's ``[v1, v2]``) carries the report in its first part; ``pop_bad_rows`` takes it out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from data.tsv import BadRowError

logger = logging.getLogger(__name__)

_BAD = "__bad_row__"


class SkippingDataset(torch.utils.data.Dataset):
    def __init__(self, dataset, limit: int):
        self.dataset, self.limit = dataset, limit

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except BadRowError as err:
            if self.limit <= 0:
                raise
            logger.warning("skipping bad row: %s", err)
            return {_BAD: str(err)}


class SkippingCollater:
    def __init__(self, collate: Callable[[list], dict]):
        self.collate = collate

    def __call__(self, samples: list) -> dict | list:
        good = [s for s in samples if not (isinstance(s, dict) and _BAD in s)]
        batch = self.collate(good) if good else {}
        head = batch[0] if isinstance(batch, list) else batch
        head["bad_rows"] = [s[_BAD] for s in samples if isinstance(s, dict) and _BAD in s]
        return batch


def pop_bad_rows(batch: dict | list) -> list[str]:
    """Remove and return the skipped rows' reports from a collated batch (a dict or a list of dicts)."""
    head = batch[0] if isinstance(batch, list) else batch
    return head.pop("bad_rows", [])


class TooManyBadRowsError(RuntimeError):
    """More malformed rows were skipped than ``--skip-bad-rows`` allows."""


def check_bad_rows(count: int, limit: int) -> None:
    if count > limit:
        raise TooManyBadRowsError(
            f"{count} malformed rows were skipped, more than --skip-bad-rows {limit}: fix the data or raise the limit"
        )
