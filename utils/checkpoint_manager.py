"""Training checkpoints: what is saved, under which names, and how a run resumes (fairseq conventions).

Names: ``checkpoint{epoch}.pt`` at epoch ends, ``checkpoint_{epoch}_{updates}.pt`` every
``--save-interval-updates``, ``checkpoint_best.pt`` when ``--best-checkpoint-metric`` improves, and
``checkpoint_last.pt`` always. Each file is written to a temporary file and renamed, so a crash never leaves
a broken one, and a failed write (disk full) names the file and leaves the previous one intact; ``--save-dir``
is probed before training (writable, room for the weights). A checkpoint holds the model, optimizer, lr
schedule, loss scaler, EMA, RNG states, the data position (epoch, batches consumed) and the resolved training
configuration, in the fairseq dict layout.

``--restore-file`` (default ``checkpoint_last.pt`` in ``--save-dir``) resumes; the ``--reset-*`` flags keep the
weights but start the optimizer / lr schedule / data position / meters afresh (OFA's fine-tuning recipes).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint_compat import upgrade_state_dict
from utils.checkpoint import (
    build_checkpoint,
    load_checkpoint_file,
    save_checkpoint_file,
    state_dict_from_checkpoint,
)

logger = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def _copy_atomic(src: Path, dst: Path) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(handle)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, dst)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"could not write checkpoint {dst}: {err.strerror}; the previous {dst.name} (if any) is unchanged",
        ) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_save_dir(path: Path, needed_bytes: int) -> None:
    """Before training: ``path`` (--save-dir) must be creatable, writable and have room for a checkpoint."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_probe.") as probe:
            probe.write(b"probe")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise OSError(err.errno, f"--save-dir {path} is not writable: {err.strerror or err}") from None
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise OSError(
            errno.ENOSPC,
            f"--save-dir {path} has {free / 2**20:.1f} MiB free, less than the {needed_bytes / 2**20:.1f} MiB "
            "the model's weights alone take in a checkpoint",
        )


class CheckpointManager:
    def __init__(self, trainer, cfg):
        self.trainer, self.cfg = trainer, cfg
        self.dir = Path(cfg.save_dir)
        if trainer.info.is_main and not cfg.no_save:  # fail now, not after the first hours of training
            self.prepare_save_dir()

    def prepare_save_dir(self) -> None:
        """Probe --save-dir (writable, room for the weights); remove temporary files of interrupted saves."""
        tensors = self.trainer.model.state_dict().values()
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}  # tied: once
        check_save_dir(self.dir, sum(storages.values()))
        for stale in self.dir.glob(".checkpoint*.pt.*.tmp"):  # a killed run's; this run writes its own
            logger.info("removing %s, the temporary file of an interrupted save", stale)
            stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------ saving
    def _is_better(self, value: float) -> bool:
        best = self.trainer.progress.best
        if best is None:
            return True
        return value > best if self.cfg.maximize_best_checkpoint_metric else value < best

    def _names(self, stats: dict | None, end_of_epoch: bool, epoch: int | None) -> list[str]:
        p, cfg = self.trainer.progress, self.cfg
        names = []
        if end_of_epoch and not cfg.no_epoch_checkpoints and epoch is not None and epoch % cfg.save_interval == 0:
            names.append(f"checkpoint{epoch}.pt")
        every = cfg.save_interval_updates
        if not end_of_epoch and every > 0 and p.num_updates % every == 0:
            names.append(f"checkpoint_{p.epoch}_{p.num_updates}.pt")
        metric = (stats or {}).get(cfg.best_checkpoint_metric)
        if metric is not None and self._is_better(metric):
            p.best = float(metric)
            names.append("checkpoint_best.pt")
        if stats is not None and cfg.best_checkpoint_metric not in stats:
            logger.warning("--best-checkpoint-metric %r is not among %s", cfg.best_checkpoint_metric, sorted(stats))
        if not cfg.no_last_checkpoints:
            names.append("checkpoint_last.pt")
        return names

    def save(self, stats: dict | None, end_of_epoch: bool, epoch: int | None = None) -> list[Path]:
        names = [] if self.cfg.no_save else self._names(stats, end_of_epoch, epoch)
        state = self.state_dict(stats) if names else None  # collective under FSDP: every rank builds it
        if not names or not self.trainer.info.is_main:
            return []
        paths = [self.dir / n for n in names]
        # checkpoint_last.pt first: a crash between the writes still leaves the newest state where a restart looks
        first, *rest = sorted(paths, key=lambda path: path.name != "checkpoint_last.pt")
        save_checkpoint_file(state, first)
        for path in rest:
            _copy_atomic(first, path)
        self._rotate()
        return paths

    def state_dict(self, stats: dict | None) -> dict:
        t, p = self.trainer, self.trainer.progress
        cfg = t.cfg
        extra = {
            "train_iterator": {
                "epoch": p.epoch,
                "iterations_in_epoch": p.iterations_in_epoch,
                "shuffle": True,
            },
            "val_loss": (stats or {}).get("loss"),
            "best": p.best,
            "bad_rows": p.bad_rows,
            "rng": rng_state(),
            "train_config": dataclasses.asdict(cfg),
        }
        if t.ema is not None:
            extra["ema"] = t.ema.state_dict()
        if t.scaler is not None:
            extra["loss_scaler"] = t.scaler.state_dict()
        sections = {name: dataclasses.asdict(getattr(cfg, attr)) for name, attr in _SECTION_ATTRS.items()}
        sections["criterion"] = {"_name": cfg.criterion_name, **dataclasses.asdict(cfg.criterion)}
        return build_checkpoint(
            t.model_state_dict(),
            cfg.model.to_ofa_args(),
            dataclasses.asdict(cfg.task),
            arch=cfg.arch,
            task_name=cfg.task_name,
            criterion_name=cfg.criterion_name,
            optimizer_name="adam",
            optimizer_state=t.optimizer_state_dict(),
            lr_scheduler_state=t.scheduler.state_dict(),
            num_updates=p.num_updates,
            extra_state=extra,
            sections=sections,
        )

    def _rotate(self) -> None:
        """Delete the oldest interval / epoch checkpoints beyond --keep-interval-updates / --keep-last-epochs."""
        rules = [
            (self.cfg.keep_interval_updates, re.compile(r"checkpoint_\d+_(\d+)\.pt$")),
            (self.cfg.keep_last_epochs, re.compile(r"checkpoint(\d+)\.pt$")),
        ]
        for keep, pattern in rules:
            if keep < 0:
                continue
            found = sorted((int(m.group(1)), f) for f in self.dir.iterdir() if (m := pattern.match(f.name)))
            for _, old in found[: max(0, len(found) - keep)]:
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ restoring
    def restore_path(self) -> Path | None:
        name = self.cfg.restore_file
        if name == "checkpoint_last.pt":
            path = self.dir / name
            return path if path.exists() else None
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"--restore-file {name} does not exist")
        return path

    def load_weights(self) -> bool:
        """Phase 1, before the model is wrapped/sharded: read the checkpoint and load the model weights."""
        path = self.restore_path()
        self._pending = None
        if path is None:
            logger.info("no checkpoint in %s: starting from scratch", self.dir)
            return False
        ckpt = load_checkpoint_file(path)
        try:
            state = upgrade_state_dict(self.trainer.model, state_dict_from_checkpoint(ckpt))
        except ValueError as err:  # keys or shapes that do not fit this model
            raise ValueError(f"--restore-file {path}: {err}") from None
        self.trainer.model.load_state_dict(state)
        self._pending = (path, ckpt)
        return True

    def restore(self) -> bool:
        """Phase 2, once the optimizer exists: optimizer, lr schedule, scaler, EMA, data position, RNG."""
        if getattr(self, "_pending", None) is None:
            return False
        (path, ckpt), self._pending = self._pending, None
        t, cfg = self.trainer, self.cfg
        extra = ckpt.get("extra_state") or {}
        history = (ckpt.get("optimizer_history") or [{}])[-1]
        if not cfg.reset_optimizer and ckpt.get("last_optimizer_state") is not None:
            t.load_optimizer_state(ckpt["last_optimizer_state"], path)
            t.progress.num_updates = int(history.get("num_updates", 0))
            if t.scaler is not None and "loss_scaler" in extra:
                t.scaler.load_state_dict(extra["loss_scaler"])
        scheduler_state = history.get("lr_scheduler_state", {})
        if not cfg.reset_optimizer and not cfg.reset_lr_scheduler and "total_num_update" in scheduler_state:
            t.scheduler.load_state_dict(scheduler_state)
        if not cfg.reset_dataloader and "train_iterator" in extra:
            it = extra["train_iterator"]
            t.progress.epoch, t.progress.iterations_in_epoch = int(it["epoch"]), int(it["iterations_in_epoch"])
        if not cfg.reset_meters:
            t.progress.best = extra.get("best")
            t.progress.bad_rows = int(extra.get("bad_rows", 0))
        if t.ema is not None and "ema" in extra:
            t.ema.load_state_dict(extra["ema"])
        if "rng" in extra and not cfg.reset_dataloader:
            set_rng_state(extra["rng"])
        logger.info("restored %s (epoch %d, %d updates)", path, t.progress.epoch, t.progress.num_updates)
        return True


_SECTION_ATTRS = {
    "common": "common",
    "optimization": "optimization",
    "checkpoint": "checkpoint",
    "distributed_training": "distributed",
    "ema": "ema",
}
