"""Evaluate a checkpoint on a task: ``python evaluate.py DATA --path ckpt.pt --task vqa_gen --gen-subset test``.

The task settings come from the checkpoint's saved task config, overridden by ``--model-overrides`` (OFA's JSON
form) and by explicit flags. Generation flags default to the task's ``eval_args``. Runs on one process or under
``torchrun`` (rows sharded over ranks, predictions gathered). Writes ``{gen_subset}_predict.json`` in the
original's format and ``{gen_subset}_metrics.json`` to ``--results-path``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from data.loading import SkippingCollater, SkippingDataset, check_bad_rows, pop_bad_rows
from data.tsv import epoch_batches
from models import from_pretrained
from models.generate import GenerationConfig
from tasks import TASKS
from trainer import move_to
from utils import distributed
from utils.checkpoint import load_checkpoint_file
from utils.cli import run_cli
from utils.config import fill, parse_strict, strip_ignored
from utils.logging import setup_logging

logger = logging.getLogger("evaluate")

GEN_FLAGS = {
    "beam": int, "max_len_a": float, "max_len_b": int, "min_len": int, "no_repeat_ngram_size": int,
    "lenpen": float, "temperature": float, "sampling_topk": int, "sampling_topp": float, "seed": int,
}  # fmt: skip
TASK_FLAGS = {"selected_cols": str, "bpe_dir": str, "patch_image_size": int, "max_image_size": int}


def build_parser() -> argparse.ArgumentParser:
    usage = "evaluate.py DATA --path CKPT [--task TASK] [flags] (evaluate.py --help lists them)"
    p = argparse.ArgumentParser(prog="evaluate.py", usage=usage, description=__doc__, allow_abbrev=False)
    p.add_argument("data", nargs="?", help="TSV file(s); the last one is evaluated")
    p.add_argument("--path", required=True, help="checkpoint to evaluate")
    p.add_argument("--task", help="task name (default: the checkpoint's)")
    p.add_argument("--gen-subset", default="test")
    p.add_argument("--results-path", default="results")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--skip-bad-rows", type=int, default=0, help="skip up to N malformed rows (counted)")
    p.add_argument("--model-overrides", default="{}", help='JSON of task settings, e.g. {"data": ...}')
    for name, kind in {**GEN_FLAGS, **TASK_FLAGS}.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    for name in ("unnormalized", "sampling", "ema_eval", "zero_shot", "beam_search_vqa_eval", "fp16", "bf16", "cpu",
                 "dry_run"):  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), action="store_true")
    return p


def resolve(argv: Sequence[str]) -> tuple[argparse.Namespace, str, object, GenerationConfig]:
    argv, _ = strip_ignored(argv)
    parser = build_parser()
    args = parse_strict(parser, argv)
    # a dry run may resolve a recipe before its checkpoint exists
    ckpt = {} if args.dry_run and not Path(args.path).exists() else load_checkpoint_file(args.path)
    saved = dict((ckpt.get("cfg") or {}).get("task") or {})
    task_name = args.task or saved.get("_name")
    if task_name is None:
        raise SystemExit(f"evaluate.py: {args.path} stores no task name; pass --task")
    if task_name not in TASKS:
        parser.error(f"unknown --task {task_name!r}; known: {', '.join(TASKS.names())}")
    entry = TASKS.get(task_name)
    values = {**saved, **json.loads(args.model_overrides)}
    values.update({k: getattr(args, k) for k in TASK_FLAGS if getattr(args, k) is not None})
    if args.data:
        values["data"] = args.data
    task_cfg = fill(entry.config, values)
    gen_values = json.loads(getattr(task_cfg, "eval_args", "{}") or "{}")
    gen_values.update({k: getattr(args, k) for k in GEN_FLAGS if getattr(args, k) is not None})
    gen_values.update({k: True for k in ("unnormalized", "sampling", "zero_shot") if getattr(args, k)})
    return args, task_name, task_cfg, GenerationConfig.from_args(gen_values)


def gather(predictions: list[dict], info: distributed.DistInfo) -> list[dict]:
    if not info.distributed:
        return predictions
    parts: list[list[dict]] = [[] for _ in range(info.world_size)]
    dist.all_gather_object(parts, predictions)
    return [p for part in parts for p in part]


@torch.no_grad()
def run(args, task, gen_cfg: GenerationConfig, info: distributed.DistInfo) -> tuple[list[dict], dict]:
    model = from_pretrained(args.path, ema=args.ema_eval, device=info.device)
    generator = task.build_generator(gen_cfg)
    dataset = task.dataset(args.gen_subset)
    if len(dataset) == 0:
        raise ValueError(f"no rows to evaluate in {args.data or task.cfg.data}")
    batches = epoch_batches(len(dataset), args.batch_size, epoch=1, seed=0, rank=info.rank,
                            world_size=info.world_size, shuffle=False)  # fmt: skip
    loader = torch.utils.data.DataLoader(
        SkippingDataset(dataset, args.skip_bad_rows), batch_sampler=batches, collate_fn=SkippingCollater(task.collate),
        num_workers=args.num_workers,
    )  # fmt: skip
    amp = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else None
    predictions, bad_rows = [], 0
    for sample in loader:
        bad_rows += len(pop_bad_rows(sample))
        check_bad_rows(bad_rows, args.skip_bad_rows)
        if not sample:
            continue
        with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
            predictions += task.eval_step(model, move_to(sample, info.device), generator,
                                          beam_search=args.beam_search_vqa_eval, zero_shot=args.zero_shot)  # fmt: skip
    predictions = gather(predictions, info)
    metrics = task.eval_metrics(predictions)
    skipped = int(distributed.all_reduce_sums([bad_rows], info)[0])
    if skipped:  # the metric covers the remaining rows only
        metrics["skipped_bad_rows"] = skipped
    return predictions, metrics


def main(argv: Sequence[str] | None = None) -> int:
    args, task_name, task_cfg, gen_cfg = resolve(list(sys.argv[1:] if argv is None else argv))
    if args.dry_run:
        print(
            json.dumps(
                {
                    "task": task_name,
                    "task_config": dataclasses.asdict(task_cfg),
                    "generation": dataclasses.asdict(gen_cfg),
                    "args": vars(args),
                },
                indent=2,
                default=str,
            )
        )
        return 0  # fmt: skip
    info = distributed.setup(args.cpu)
    setup_logging(info.rank)
    try:
        task = TASKS.build(task_name, task_cfg)
        predictions, metrics = run(args, task, gen_cfg, info)
        if info.is_main:
            out = Path(args.results_path)
            out.mkdir(parents=True, exist_ok=True)
            records = task.prediction_records(predictions)
            (out / f"{args.gen_subset}_predict.json").write_text(json.dumps(records))
            (out / f"{args.gen_subset}_metrics.json").write_text(json.dumps(metrics, indent=2))
            logger.info("%s on %s: %s", task_name, args.gen_subset, json.dumps(metrics))
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("evaluate.py", main))
