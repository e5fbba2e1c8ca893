"""GPU training and generation figures: samples/s, peak memory, estimated MFU (bf16), caption throughput.

MFU = (FLOPs of one update, counted by torch's FlopCounterMode on the real model) / step time / peak bf16
FLOP/s of the device (``--peak-tflops``; H100/H200 SXM dense bf16 ~989). Runs on CPU too (tiny sizes) as a
smoke test.

    python benchmarks/gpu_train.py --arch ofa_base --size 480 --batch 16 [--steps 10] [--generate]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.model_cpu import make_sample  # noqa: E402
from criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy, LabelSmoothedCEConfig  # noqa: E402
from models import build_model, get_preset  # noqa: E402
from models.generate import GenerationConfig, SequenceGenerator  # noqa: E402
from models.ofa import fast_inference  # noqa: E402
from trainer import move_to  # noqa: E402
from utils.optim import FairseqAdam  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_figures(args, device: torch.device) -> None:
    cfg = get_preset(args.arch).replace(dropout=0.1, encoder_drop_path_rate=0.1, decoder_drop_path_rate=0.1)
    model = build_model(cfg).to(device).train()
    model.encoder.embed_images.to(memory_format=torch.channels_last)
    criterion = AdjustLabelSmoothedCrossEntropy(LabelSmoothedCEConfig(label_smoothing=0.1))
    opt = FairseqAdam([p for p in model.parameters() if p.requires_grad], 1e-5, weight_decay=0.01)
    sample = move_to(make_sample(args.batch, args.size, src_len=20, tgt_len=20), device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _, _ = criterion(model, sample)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    mfu = flops / seconds / (args.peak_tflops * 1e12)
    print(
        f"train {args.arch} {args.size}px bf16 batch {args.batch}: {args.batch / seconds:.1f} samples/s, "
        f"{1000 * seconds:.0f} ms/update, peak {peak:.1f} GiB, {flops / 1e12:.2f} TFLOP/update, MFU {100 * mfu:.1f}%"
    )


@torch.no_grad()
def generate_figures(args, device: torch.device) -> None:
    model = fast_inference(build_model(get_preset(args.arch)).to(device))
    gen = SequenceGenerator(GenerationConfig(beam=5, max_len_b=16, no_repeat_ngram_size=3), 59457)
    sample = move_to(make_sample(args.batch, args.size), device)
    sample["net_input"]["patch_images"] = sample["net_input"]["patch_images"].bfloat16()
    gen.generate(model, sample)
    sync(device)
    start = time.perf_counter()
    for _ in range(3):
        gen.generate(model, sample)
    sync(device)
    seconds = (time.perf_counter() - start) / 3
    print(f"caption beam 5 {args.arch} {args.size}px bf16 batch {args.batch}: {args.batch / seconds:.1f} images/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ofa_base")
    p.add_argument("--size", type=int, default=480)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--generate", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.generate:
        generate_figures(args, device)
    else:
        train_figures(args, device)


if __name__ == "__main__":
    main()
