"""Forward+backward time and peak memory of one training step on CPU (issue #2's reference point).

Default: ofa_tiny, 256 px, batch 2, 2 threads, a caption-like batch (8 source tokens, 12 target tokens),
label-smoothed CE, dropout 0.1. The original code takes ~810-830 ms per step on a 2-core machine.

    .venv/bin/python benchmarks/model_cpu.py [--arch ofa_tiny] [--size 256] [--batch 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy, LabelSmoothedCEConfig  # noqa: E402
from models import build_model, get_preset  # noqa: E402


def make_sample(batch: int, size: int, src_len: int = 8, tgt_len: int = 12) -> dict:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 50000, (batch, src_len), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    target = torch.randint(4, 50000, (batch, tgt_len), generator=g)
    target[:, -1] = 2
    prev = torch.cat([torch.zeros(batch, 1, dtype=torch.long), target[:, :-1]], dim=1)
    net_input = {
        "src_tokens": src,
        "src_lengths": torch.full((batch,), src_len),
        "patch_images": torch.randn(batch, 3, size, size, generator=g),
        "patch_masks": torch.ones(batch, dtype=torch.bool),
        "prev_output_tokens": prev,
    }
    return {"net_input": net_input, "target": target, "ntokens": int(target.numel())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ofa_tiny")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "explicit"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(get_preset(args.arch).replace(dropout=0.1)).train()
    for m in model.modules():
        if hasattr(m, "impl"):
            m.impl = args.attention
    criterion = AdjustLabelSmoothedCrossEntropy(LabelSmoothedCEConfig(label_smoothing=0.1))
    sample = make_sample(args.batch, args.size)
    times = []
    for step in range(args.steps + 2):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss, _, _ = criterion(model, sample)
        loss.backward()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    times.sort()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.arch} {args.size}px batch {args.batch}, {args.threads} threads, attention={args.attention}")
    print(f"forward+backward: median {1000 * times[len(times) // 2]:.0f} ms, best {1000 * times[0]:.0f} ms")
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
