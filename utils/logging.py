"""Training logs: a tqdm bar on rank 0 in a terminal (plain lines otherwise), tensorboardX scalars and
one JSON line per log interval in the save dir (``train_log.jsonl``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def setup_logging(rank: int) -> None:
    logging.basicConfig(
        format=f"%(asctime)s | rank {rank} | %(levelname)s | %(name)s | %(message)s",
        level=logging.INFO if rank == 0 else logging.WARNING,
        stream=sys.stderr,
        force=True,
    )


class MetricsLogger:
    def __init__(self, save_dir: str | None, tensorboard_dir: str | None, enabled: bool, total: int | None = None):
        self.enabled = enabled
        self.jsonl = None
        self.writer = None
        self.bar = None
        self.start = time.perf_counter()
        if not enabled:
            return
        if save_dir:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
            self.jsonl = open(Path(save_dir) / "train_log.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard_dir:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(tensorboard_dir)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, dynamic_ncols=True, desc="train")

    def log(self, split: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"split": split, "num_updates": step, **{k: _plain(v) for k, v in values.items()}}
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "num_updates":
                    self.writer.add_scalar(f"{split}/{key}", value, step)
        text = " | ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k not in ("split",))
        if self.bar is not None and split == "train":
            self.bar.set_postfix_str(text, refresh=False)
        else:
            logger.info("[%s] %s", split, text)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        for handle in (self.bar, self.writer, self.jsonl):
            if handle is not None:
                handle.close()


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
