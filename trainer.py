"""The training loop: DDP / FSDP2 on torch.distributed, accumulation, clipping, AMP, EMA, checkpoints.

It follows fairseq's trainer where results depend on it (spec §7): the loss is a sum and gradients are
divided by the global sample size; the torch seed is ``seed + num_updates`` at every update (so dropout is
reproducible after a resume); ``iterations_in_epoch`` counts batches; checkpoints use the fairseq layout.
No task knowledge lives here: the task builds datasets, batches and validation metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from criterions import reduce_logs
from data.loading import SkippingCollater, SkippingDataset, check_bad_rows, pop_bad_rows
from data.tsv import epoch_batches
from utils import distributed
from utils.checkpoint_manager import CheckpointManager
from utils.logging import MetricsLogger
from utils.optim import EMA, DynamicLossScaler, FairseqAdam, PolynomialDecay
from utils.train_config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    epoch: int = 1
    iterations_in_epoch: int = 0  # batches of the current epoch already consumed
    num_updates: int = 0
    best: float | None = None
    bad_rows: int = 0


class Trainer:
    def __init__(self, cfg: TrainConfig, task, model, criterion, info: distributed.DistInfo):
        self.cfg, self.task, self.criterion, self.info = cfg, task, criterion, info
        self.model = model.to(info.device)
        if cfg.common.channels_last:
            self.model.encoder.embed_images.to(memory_format=torch.channels_last)
        self.progress = Progress()
        self.checkpoints = CheckpointManager(self, cfg.checkpoint)
        self.checkpoints.load_weights()  # into the plain module, before DDP/FSDP wrapping
        self.wrapped = self._wrap(self.model)
        opt = cfg.optimization
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = FairseqAdam(params, opt.lr, opt.adam_betas, opt.adam_eps, opt.weight_decay)
        # OFA's fork: the decay horizon is --total-num-update (default 1e6), or derived from --max-epoch below
        total, warmup = opt.total_num_update, opt.warmup_updates
        if opt.lr_scheduler == "fixed":
            total, warmup = 10**12, 0
        self.scheduler = PolynomialDecay(self.optimizer, opt.lr, total, warmup, opt.end_learning_rate, opt.power)
        common = cfg.common
        self.scaler = None
        if common.fp16:
            window = common.fp16_scale_window or max(1, 2**14 // info.world_size // opt.update_freq)
            self.scaler = DynamicLossScaler(common.fp16_init_scale, window, common.min_loss_scale)
        self.amp_dtype = torch.float16 if common.fp16 else torch.bfloat16 if common.bf16 else None
        self.ema = EMA(self.model, cfg.ema.ema_decay, cfg.ema.ema_start_update) if cfg.ema.store_ema else None
        self.metrics = MetricsLogger(cfg.checkpoint.save_dir, common.tensorboard_logdir, info.is_main)
        self._dummy = None
        self.nan_skips = 0  # updates skipped in a row for a NaN/inf loss or gradient

    # ------------------------------------------------------------------ state (full, whatever the wrapping)
    @property
    def sharded(self) -> bool:
        return self.info.distributed and self.cfg.distributed.ddp_backend == "fully_sharded"

    def model_state_dict(self) -> dict:
        if self.sharded:
            from utils.fsdp import full_model_state

            return full_model_state(self.model)
        return self.model.state_dict()

    def optimizer_state_dict(self) -> dict:
        if self.sharded:
            from utils.fsdp import full_optimizer_state

            return full_optimizer_state(self.model, self.optimizer)
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict, path) -> None:
        if self.sharded:  # keyed by parameter name; the distributed loader checks it
            from utils.fsdp import load_full_optimizer_state

            load_full_optimizer_state(self.model, self.optimizer, state)
            return
        params = [p for p in self.model.parameters() if p.requires_grad]
        saved = state.get("state", {}) if isinstance(state, dict) else {}
        for index, entry in saved.items():
            exp_avg = entry.get("exp_avg") if isinstance(entry, dict) else None
            if (
                not isinstance(index, int)
                or index >= len(params)
                or (exp_avg is not None and tuple(exp_avg.shape) != tuple(params[index].shape))
            ):
                raise ValueError(
                    f"{path}: its optimizer state does not fit this model's parameters; pass --reset-optimizer "
                    "to keep the weights and start the optimizer afresh (OFA's fine-tuning recipes do)"
                )
        self.optimizer.load_state_dict(state)

    def _wrap(self, model):
        if not self.info.distributed:
            return model
        backend = self.cfg.distributed.ddp_backend
        if backend == "fully_sharded":
            from utils.fsdp import shard_model

            return shard_model(model)
        device_ids = [self.info.device.index] if self.info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    # ------------------------------------------------------------------ data
    def epoch_plan(self, epoch: int, split: str = "train") -> tuple[object, list[list[int]]]:
        dataset = self.task.dataset(split, epoch)
        if len(dataset) == 0:  # an epoch without batches would repeat forever under --max-update
            raise ValueError(f"the {split} data of epoch {epoch} has no rows (--data {self.cfg.task.data})")
        opt = self.cfg.optimization
        bsz = opt.batch_size if split == "train" else (opt.batch_size_valid or opt.batch_size)
        batches = epoch_batches(
            len(dataset), bsz, epoch=epoch, seed=self.cfg.common.seed, rank=self.info.rank,
            world_size=self.info.world_size, shuffle=split == "train",
        )  # fmt: skip
        return dataset, batches

    def loader(self, dataset, batches: list[list[int]]):
        limit = self.cfg.common.skip_bad_rows
        return torch.utils.data.DataLoader(
            SkippingDataset(dataset, limit),
            batch_sampler=batches,
            collate_fn=SkippingCollater(self.task.collate),
            num_workers=self.cfg.common.num_workers,
            generator=torch.Generator(),  # keep the global RNG untouched: resumes stay bitwise
        )

    def updates_per_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.epoch_plan(epoch)[1]) / self.cfg.optimization.update_freq)

    # ------------------------------------------------------------------ one update
    def _forward_backward(self, sample: dict, sync: bool) -> tuple[float, dict]:
        empty = isinstance(sample, dict) and "net_input" not in sample  # lists are pretraining (v1, v2) pairs
        if empty and self._dummy is None:  # every row so far was skipped as bad: nothing to run yet
            if self.info.distributed:  # the other ranks wait in the backward's all-reduce
                raise RuntimeError("a rank's first batch held only skipped bad rows; fix the data first")
            return 0.0, {}
        if empty:  # this rank ran out of rows: a zero-weight pass keeps the collectives in step
            sample = self._dummy
        else:
            self._dummy = self._dummy or sample
        sample = move_to(sample, self.info.device)
        no_sync = getattr(self.wrapped, "no_sync", None)
        ctx = contextlib.nullcontext() if sync or no_sync is None else no_sync()
        with ctx:
            with torch.autocast(self.info.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss, sample_size, log = self.criterion(self.wrapped, sample, update_num=self.progress.num_updates)
            if empty:
                loss, sample_size, log = loss * 0.0, 0, {}
            scale = self.scaler.scale if self.scaler is not None else 1.0
            (loss * scale).backward()
        return float(sample_size), log

    def train_step(self, samples: list[dict]) -> dict[str, float] | None:
        """One optimizer update over ``update_freq`` micro-batches; returns the reduced logs or None if skipped."""
        torch.manual_seed(self.cfg.common.seed + self.progress.num_updates)
        self.model.train()
        sizes, logs = 0.0, []
        for i, sample in enumerate(samples):
            size, log = self._forward_backward(sample, sync=i == len(samples) - 1)
            sizes += size
            logs.append(log)
        # the same keys on every rank (a rank with an empty batch logs nothing), so the reduction lines up
        keys = list(getattr(self.criterion, "log_keys", ("loss", "nll_loss", "ntokens", "nsentences", "sample_size")))
        totals = distributed.all_reduce_sums(
            [sizes] + [sum(float(lg.get(k, 0)) for lg in logs) for k in keys], self.info
        )
        sample_size, sums = totals[0], dict(zip(keys, totals[1:], strict=True))
        if sample_size == 0:  # every row of every rank was skipped as bad: no update
            self.optimizer.zero_grad(set_to_none=True)
            return None
        grad_norm, overflow = self._finish_gradients(sample_size)
        if overflow:
            self.scaler.update(True)
            self.optimizer.zero_grad(set_to_none=True)
            logger.warning("fp16 overflow: update skipped, loss scale now %g", self.scaler.scale)
            return None
        if not (math.isfinite(grad_norm) and math.isfinite(sums.get("loss", 0.0))):
            return self._skip_non_finite(grad_norm, sums.get("loss", 0.0))
        self.nan_skips = 0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.num_updates += 1
        self.scheduler.step_update(self.progress.num_updates)
        if self.scaler is not None:
            self.scaler.update(False)
        if self.ema is not None:
            self.ema.step(self.model, self.progress.num_updates)
        out = reduce_logs([sums])
        out.update(gnorm=grad_norm, lr=self.optimizer.param_groups[0]["lr"])
        if self.scaler is not None:
            out["loss_scale"] = self.scaler.scale
        return out

    def _skip_non_finite(self, grad_norm: float, loss: float) -> None:
        """Drop an update whose loss or gradient is NaN/inf; stop after --max-consecutive-nan-skips in a row.

        fairseq raises at the first one; skipping lets a long run survive one bad batch. Every rank sees the
        same reduced loss and norm, so all ranks skip together.
        """
        self.optimizer.zero_grad(set_to_none=True)
        self.nan_skips += 1
        limit, update = self.cfg.common.max_consecutive_nan_skips, self.progress.num_updates + 1
        logger.warning(
            "non-finite loss %g / gradient norm %g at update %d: update skipped (%d in a row, stop at %d)",
            loss, grad_norm, update, self.nan_skips, limit,
        )  # fmt: skip
        if self.nan_skips >= limit:
            raise FloatingPointError(
                f"{self.nan_skips} updates in a row had a NaN/inf loss or gradient (update {update}, "
                f"--max-consecutive-nan-skips {limit}): stopping (the skipped updates changed no weights)"
            )

    def _finish_gradients(self, sample_size: float) -> tuple[float, bool]:
        """Divide summed gradients by the global sample size (DDP already averaged over ranks), clip."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        scale = self.scaler.scale if self.scaler is not None else 1.0
        world = self.info.world_size  # DDP and FSDP average gradients over ranks
        factor = world / (sample_size or 1.0) / scale
        torch._foreach_mul_([p.grad for p in params], factor)
        clip = self.cfg.optimization.clip_norm
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        return norm, self.scaler is not None and not math.isfinite(norm)

    # ------------------------------------------------------------------ epochs
    def fit(self) -> Progress:
        self.checkpoints.restore()
        opt = self.cfg.optimization
        if opt.max_epoch > 0 and opt.warmup_ratio > 0 and opt.lr_scheduler == "polynomial_decay":
            total = sum(self.updates_per_epoch(e) for e in range(1, opt.max_epoch + 1))
            self.scheduler.reinit(total, opt.warmup_ratio, self.progress.num_updates)
            logger.info("lr schedule: %d updates, %d warm-up", total, self.scheduler.warmup_updates)
        while not self._done():
            self.train_epoch()
        self.metrics.close()
        return self.progress

    def _done(self) -> bool:
        opt, p = self.cfg.optimization, self.progress
        return (opt.max_update > 0 and p.num_updates >= opt.max_update) or (
            opt.max_epoch > 0 and p.epoch > opt.max_epoch
        )

    def train_epoch(self) -> None:
        p, opt = self.progress, self.cfg.optimization
        dataset, batches = self.epoch_plan(p.epoch)
        remaining = batches[p.iterations_in_epoch :]
        groups = [remaining[i : i + opt.update_freq] for i in range(0, len(remaining), opt.update_freq)]
        stream = iter(self.loader(dataset, remaining)) if remaining else iter(())
        start, seen = time.perf_counter(), {"nsentences": 0.0, "ntokens": 0.0}
        for done_updates, group in enumerate(groups, start=1):
            samples = [next(stream) for _ in group]
            for s in samples:
                p.bad_rows += len(pop_bad_rows(s))
            check_bad_rows(p.bad_rows, self.cfg.common.skip_bad_rows)
            stats = self.train_step(samples)
            p.iterations_in_epoch += len(group)
            for key in seen:
                seen[key] += stats.get(key, 0.0) if stats else 0.0
            if stats is not None and p.num_updates % self.cfg.common.log_interval == 0:
                elapsed = time.perf_counter() - start
                stats.update(ups=done_updates / elapsed, bad_rows=p.bad_rows)
                stats.update(sps=seen["nsentences"] / elapsed, wps=seen["ntokens"] / elapsed)
                self.metrics.log("train", p.num_updates, stats)
            self.metrics.advance()
            stop = opt.max_update > 0 and p.num_updates >= opt.max_update
            self.validate_and_save(end_of_epoch=False, stopping=stop)
            if stop:
                return
        p.epoch, p.iterations_in_epoch = p.epoch + 1, 0
        self.validate_and_save(end_of_epoch=True, stopping=self._done())

    # ------------------------------------------------------------------ validation and saving
    def validate_and_save(self, end_of_epoch: bool, stopping: bool) -> None:
        """fairseq's rules, decided independently: save at epoch ends (--save-interval), every
        --save-interval-updates and when stopping; validate at epoch ends (--validate-interval), every
        --validate-interval-updates, before every save and when stopping."""
        p, ckpt, common = self.progress, self.cfg.checkpoint, self.cfg.common
        epoch = p.epoch - 1 if end_of_epoch else p.epoch  # the epoch that just ended, or the current one
        every_save, every_valid = ckpt.save_interval_updates, common.validate_interval_updates
        updates_hit = not end_of_epoch and p.num_updates > 0
        do_save = (
            (end_of_epoch and epoch % ckpt.save_interval == 0)
            or stopping
            or (updates_hit and every_save > 0 and p.num_updates % every_save == 0)
        )
        do_validate = not common.disable_validation and (
            (updates_hit and do_save)
            or (end_of_epoch and epoch % common.validate_interval == 0)
            or stopping
            or (updates_hit and every_valid > 0 and p.num_updates % every_valid == 0)
        )
        stats = self.validate() if do_validate else None
        if do_save:
            self.checkpoints.save(stats, end_of_epoch=end_of_epoch, epoch=epoch if end_of_epoch else None)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        dataset, batches = self.epoch_plan(self.progress.epoch, split="valid")
        with self._eval_weights():
            self.model.eval()
            if self.cfg.common.fixed_validation_seed is not None:
                torch.manual_seed(self.cfg.common.fixed_validation_seed)
            logs = []
            for sample in self.loader(dataset, batches):
                pop_bad_rows(sample)
                if sample:
                    _, _, log = self.task.valid_step(self.model, self.criterion, move_to(sample, self.info.device))
                    logs.append(log)
        stats = reduce_valid_logs(logs, self.task, self.info)
        self.metrics.log("valid", self.progress.num_updates, stats)
        return stats

    @contextlib.contextmanager
    def _eval_weights(self):
        """Validate with the EMA weights when asked (OFA's --uses-ema / --ema-eval), then restore."""
        if self.ema is None or not self.cfg.ema.validate_with_ema:
            yield
            return
        current = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(current)


def reduce_valid_logs(logs: list[dict], task, info: distributed.DistInfo) -> dict[str, float]:
    keys = sorted({k for lg in logs for k, v in lg.items() if isinstance(v, int | float | torch.Tensor)})
    keys = distributed_keys(keys, info)
    sums = distributed.all_reduce_sums([sum(float(lg.get(k, 0)) for lg in logs) for k in keys], info)
    summed = dict(zip(keys, sums, strict=True))
    stats = reduce_logs([summed])
    stats.update(task.reduce_metrics([summed]))
    return stats


def distributed_keys(keys: list[str], info: distributed.DistInfo) -> list[str]:
    """Every rank must reduce the same keys, even a rank whose shard was empty."""
    if not info.distributed:
        return keys
    gathered: list[list[str]] = [[] for _ in range(info.world_size)]
    torch.distributed.all_gather_object(gathered, keys)
    return sorted({k for ks in gathered for k in ks})


def move_to(sample, device: torch.device):
    if isinstance(sample, torch.Tensor):
        return sample.to(device, non_blocking=True)
    if isinstance(sample, dict):
        return {k: move_to(v, device) for k, v in sample.items()}
    if isinstance(sample, list):
        return [move_to(v, device) for v in sample]
    return sample
