"""Training speed on CPU: ms per update and peak RSS through the real ``Trainer.train_step``.

Default: ofa_tiny, 256 px, batch 2, 2 threads, a caption-like batch (8 source, 12 target tokens), OFA's
caption recipe settings (label smoothing 0.1, dropout 0.1, drop-path 0.1, clip 1.0, weight decay 0.01).
The original code takes ~810 ms per update and 2.1 GB on a 2-core machine.

    .venv/bin/python benchmarks/train_cpu.py [--amp fp32|bf16] [--channels-last] [--steps 10]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.model_cpu import make_sample  # noqa: E402
from criterions import build_criterion  # noqa: E402
from criterions.label_smoothed_ce import LabelSmoothedCEConfig  # noqa: E402
from models import build_model, get_preset  # noqa: E402
from tasks.caption import CaptionConfig  # noqa: E402
from trainer import Trainer  # noqa: E402
from utils.distributed import DistInfo  # noqa: E402
from utils.train_config import CheckpointConfig, CommonConfig, OptimizationConfig, TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ofa_tiny")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true", help="ResNet weights and activations NHWC")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_cfg = get_preset(args.arch).replace(dropout=0.1, encoder_drop_path_rate=0.1, decoder_drop_path_rate=0.1)
    model = build_model(model_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            arch=args.arch, task_name="caption", criterion_name="adjust_label_smoothed_cross_entropy",
            model=model_cfg, task=CaptionConfig(), criterion=LabelSmoothedCEConfig(label_smoothing=0.1),
            common=CommonConfig(bf16=args.amp == "bf16", channels_last=args.channels_last),
            optimization=OptimizationConfig(lr=1e-5, clip_norm=1.0, weight_decay=0.01, max_update=args.steps),
            checkpoint=CheckpointConfig(save_dir=tmp),
        )  # fmt: skip
        criterion = build_criterion(cfg.criterion_name, cfg.criterion)
        trainer = Trainer(cfg, None, model, criterion, DistInfo())
        sample = make_sample(args.batch, args.size)
        if args.channels_last:
            sample["net_input"]["patch_images"] = sample["net_input"]["patch_images"].contiguous(
                memory_format=torch.channels_last
            )
        times = []
        for step in range(args.steps + 2):
            start = time.perf_counter()
            trainer.train_step([sample])
            if step >= 2:  # two warm-up updates
                times.append(time.perf_counter() - start)
    times.sort()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    layout = "channels-last" if args.channels_last else "NCHW"
    print(f"{args.arch} {args.size}px batch {args.batch}, {args.threads} threads, {args.amp}, ResNet {layout}")
    median, best = 1000 * times[len(times) // 2], 1000 * times[0]
    print(f"update (forward+backward+clip+Adam): median {median:.0f} ms, best {best:.0f} ms")
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
