"""The training configuration sections (common, optimization, checkpoint, distributed, EMA).

Field names are fairseq/OFA's argument names, so ``utils.config`` turns them into the same flags
(``--max-epoch``, ``--update-freq``, ``--warmup-ratio``, ``--save-interval-updates``, ...). Defaults are fairseq's.
Model, task and criterion settings live in their own dataclasses (``OFAConfig``, the task's and the
criterion's config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CommonConfig:
    seed: int = 1
    cpu: bool = False
    fp16: bool = False
    bf16: bool = False
    fp16_init_scale: int = 128
    fp16_scale_window: int | None = None
    min_loss_scale: float = 1e-4
    log_interval: int = 100
    tensorboard_logdir: str | None = None
    num_workers: int = 0
    skip_bad_rows: int = field(default=0, metadata={"help": "skip up to N malformed rows (counted) instead of failing"})
    max_consecutive_nan_skips: int = field(
        default=10, metadata={"help": "skip an update with a NaN/inf loss or gradient; stop after K in a row"}
    )
    validate_interval: int = 1
    validate_interval_updates: int = 0
    disable_validation: bool = False
    fixed_validation_seed: int | None = None
    channels_last: bool = field(
        default=False, metadata={"help": "keep the ResNet channels-last: faster, not bit-identical to OFA"}
    )


@dataclass
class OptimizationConfig:
    max_epoch: int = 0
    max_update: int = 0
    batch_size: int = 8
    batch_size_valid: int | None = None
    update_freq: int = 1
    lr: float = 1e-4
    clip_norm: float = 0.0
    optimizer: str = field(default="adam", metadata={"choices": ["adam"]})
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    lr_scheduler: str = field(default="polynomial_decay", metadata={"choices": ["polynomial_decay", "fixed"]})
    warmup_ratio: float = 0.0
    warmup_updates: int = 0
    total_num_update: int = 1000000
    end_learning_rate: float = 0.0
    power: float = 1.0


@dataclass
class CheckpointConfig:
    save_dir: str = "checkpoints"
    restore_file: str = "checkpoint_last.pt"
    reset_optimizer: bool = False
    reset_dataloader: bool = False
    reset_meters: bool = False
    reset_lr_scheduler: bool = False
    save_interval: int = 1
    save_interval_updates: int = 0
    keep_last_epochs: int = -1
    keep_interval_updates: int = -1
    no_save: bool = False
    no_epoch_checkpoints: bool = False
    no_last_checkpoints: bool = False
    best_checkpoint_metric: str = "loss"
    maximize_best_checkpoint_metric: bool = False


@dataclass
class DistributedConfig:
    ddp_backend: str = field(
        default="pytorch_ddp",
        metadata={"choices": ["pytorch_ddp", "c10d", "legacy_ddp", "no_c10d", "fully_sharded"]},
    )


@dataclass
class EMAConfig:
    store_ema: bool = False
    ema_decay: float = 0.9999
    ema_start_update: int = 0
    ema_fp32: bool = False
    validate_with_ema: bool = field(default=False, metadata={"help": "validate with the EMA weights (--uses-ema)"})


@dataclass
class TrainConfig:
    """Everything train.py resolved: saved in every checkpoint."""

    arch: str
    task_name: str
    criterion_name: str
    model: Any
    task: Any
    criterion: Any
    common: CommonConfig = field(default_factory=CommonConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


SECTIONS = {
    "common": CommonConfig,
    "optimization": OptimizationConfig,
    "checkpoint": CheckpointConfig,
    "distributed_training": DistributedConfig,
    "ema": EMAConfig,
}
