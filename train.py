"""Train an OFA model: ``python train.py DATA --task caption --arch ofa_base ...`` or under ``torchrun``.

Flags are generated from typed config sections and use OFA's names, so an OFA recipe's command line carries
over; unknown flags are errors. ``main(argv)`` is callable from tests and returns the exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
from collections.abc import Sequence

import numpy as np
import torch

from criterions import CRITERIONS, build_criterion
from models import PRESETS, build_model, get_preset
from models.config import OFAConfig
from tasks import TASKS
from trainer import Trainer
from utils import distributed
from utils.cli import run_cli
from utils.config import add_section, fill, parse_strict, strip_ignored
from utils.logging import setup_logging
from utils.train_config import SECTIONS, TrainConfig

logger = logging.getLogger("train")

ALIASES = {"--ema-alpha": "ema_decay"}
DEFAULT_CRITERION = "adjust_label_smoothed_cross_entropy"


def _choices(argv: Sequence[str]) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--task")
    pre.add_argument("--arch")
    pre.add_argument("--criterion", default=DEFAULT_CRITERION)
    known, _ = pre.parse_known_args(argv)
    return known


def build_parser(task: str | None, criterion: str) -> argparse.ArgumentParser:
    usage = "train.py DATA --task TASK --arch ARCH [flags] (train.py --task TASK --arch ARCH --help lists them)"
    parser = argparse.ArgumentParser(prog="train.py", usage=usage, description=__doc__, allow_abbrev=False)
    parser.add_argument("data_path", nargs="?", help="TSV files, comma-separated (same as --data)")
    parser.add_argument("--task", required=True, choices=TASKS.names())
    parser.add_argument("--arch", required=True, choices=sorted(PRESETS))
    parser.add_argument("--criterion", default=DEFAULT_CRITERION, choices=CRITERIONS.names())
    parser.add_argument("--uses-ema", dest="validate_with_ema", action="store_true", default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the resolved configuration as JSON and exit")
    for alias, dest in ALIASES.items():
        parser.add_argument(alias, dest=dest, type=float, default=None, help=f"alias of --{dest.replace('_', '-')}")
    seen = {"arch"}
    if task in TASKS:
        add_section(parser, TASKS.get(task).config, "task", seen)
    add_section(parser, OFAConfig, "model", seen)
    if criterion in CRITERIONS:
        add_section(parser, CRITERIONS.get(criterion).config, "criterion", seen)
    for name, section in SECTIONS.items():
        add_section(parser, section, name, seen)
    return parser


def parse_args(argv: Sequence[str]) -> TrainConfig:
    argv, ignored = strip_ignored(argv)
    pre = _choices(argv)
    values = vars(parse_strict(build_parser(pre.task, pre.criterion), argv))
    dry_run = values.pop("dry_run")
    data_path = values.pop("data_path")
    if data_path and not values.get("data"):
        values["data"] = data_path
    task_entry, crit_entry = TASKS.get(values["task"]), CRITERIONS.get(values["criterion"])
    model = fill(OFAConfig, values, base=get_preset(values["arch"]))
    cfg = TrainConfig(
        arch=values["arch"],
        task_name=values["task"],
        criterion_name=values["criterion"],
        model=model,
        task=fill(task_entry.config, values),
        criterion=fill(crit_entry.config, values),
        **{attr: fill(cls, values) for attr, cls in _SECTION_FIELDS.items()},
    )
    cfg.dry_run = dry_run
    if cfg.optimization.max_epoch <= 0 and cfg.optimization.max_update <= 0:
        raise SystemExit("train.py: give --max-epoch or --max-update (otherwise training never ends)")
    if ignored:
        logger.info("OFA flags with no effect here were ignored: %s", " ".join(ignored))
    return cfg


_SECTION_FIELDS = {
    "common": SECTIONS["common"],
    "optimization": SECTIONS["optimization"],
    "checkpoint": SECTIONS["checkpoint"],
    "distributed": SECTIONS["distributed_training"],
    "ema": SECTIONS["ema"],
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(list(sys.argv[1:] if argv is None else argv))
    if cfg.dry_run:
        print(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        return 0
    info = distributed.setup(cfg.common.cpu)
    setup_logging(info.rank)
    try:
        seed_everything(cfg.common.seed)
        task = TASKS.build(cfg.task_name, cfg.task)
        cfg.model = cfg.model.replace(vocab_size=len(task.tokenizer), patch_image_size=cfg.task.patch_image_size)
        model = build_model(cfg.model)
        criterion = build_criterion(cfg.criterion_name, cfg.criterion, task.pad, task.eos, task=task)
        params = sum({id(p): p.numel() for p in model.parameters()}.values())
        logger.info(
            "task %s, arch %s (%s parameters), criterion %s",
            cfg.task_name,
            cfg.arch,
            f"{params:,}",
            cfg.criterion_name,
        )
        progress = Trainer(cfg, task, model, criterion, info).fit()
        logger.info("done: epoch %d, %d updates", progress.epoch, progress.num_updates)
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("train.py", main))
