"""Generation speed on CPU (issue #3's reference points). Prints figures; asserts nothing.

1. Caption beam search: ofa_tiny, 256 px, batch 2, beam 5, max_len_b 20, no_repeat_ngram_size 3
   (the original takes ~770 ms per batch on a 2-core machine).
2. All-candidate scoring: ofa_tiny, 480 px, 3,129 candidate answers per sample, a 22-token question prompt
   (the original takes ~95 s per sample). The candidates are synthetic BPE sequences with VQA-like lengths
   (1-4 tokens, shared first tokens), since the real answer list is a dataset file. The original algorithm
   (each candidate decoded with the prompt, full-vocabulary masked log-softmax) is timed on a slice of the
   candidates and extrapolated, and its scores are compared with ours on that slice.

    .venv/bin/python benchmarks/generate_cpu.py [--dtype fp32|bf16|both] [--skip-candidates]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model, get_preset  # noqa: E402
from models.candidates import score_candidates  # noqa: E402
from models.generate import GenerationConfig, SequenceGenerator  # noqa: E402
from models.ofa import fast_inference  # noqa: E402
from utils.trie import Trie  # noqa: E402

V = 59457


def _net_input(bsz: int, size: int, src_len: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 50000, (bsz, src_len), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    return {"src_tokens": src, "patch_images": torch.randn(bsz, 3, size, size, generator=g)}


def _timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], out


def bench_beam(model, dtype: torch.dtype, repeats: int) -> None:
    cfg = GenerationConfig(beam=5, max_len_b=20, no_repeat_ngram_size=3)
    gen = SequenceGenerator(cfg, V)
    net_input = _net_input(2, 256, 8)
    net_input["patch_images"] = net_input["patch_images"].to(dtype)
    seconds, hypos = _timed(lambda: gen.generate(model, {"net_input": net_input}), repeats)
    lengths = [len(h[0]["tokens"]) for h in hypos]
    print(f"  caption beam 5, batch 2, 256 px: {1000 * seconds:.0f} ms per batch (top-1 lengths {lengths})")


def _candidates(count: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([0.55, 0.3, 0.1, 0.05])
    out, seen = [], set()
    while len(out) < count:
        length = int(torch.multinomial(weights, 1, generator=g)) + 1
        first = int(torch.randint(100, 6000, (1,), generator=g))
        cand = (first, *torch.randint(100, 20000, (length - 1,), generator=g).tolist())
        if cand not in seen:
            seen.add(cand)
            out.append(list(cand))
    return out


def original_allcand(model, net_input, cands, prompt, chunk: int = 20) -> torch.Tensor:
    """The original algorithm: prompt + answer decoded per candidate, full-vocabulary masked log-softmax."""
    trie = Trie.from_sequences(cands, bos=0, eos=2)
    enc = model.encode(**net_input)
    scores = []
    for start in range(0, len(cands), chunk):
        part = cands[start : start + chunk]
        width = len(prompt) + max(len(c) for c in part)
        prev = torch.ones(len(part), width, dtype=torch.long)
        target = torch.ones(len(part), width, dtype=torch.long)
        mask = torch.ones(len(part), width, V, dtype=torch.bool)
        for i, cand in enumerate(part):
            prev[i, : len(prompt) + len(cand)] = torch.tensor(prompt + cand)
            target[i, : len(prompt) + len(cand)] = torch.tensor(prompt[1:] + cand + [2])
            mask[i, : len(prompt) + len(cand)] = False
            for j in range(len(cand) + 1):
                mask[i, len(prompt) - 1 + j, trie.get_next_layer([0] + cand[:j])] = True
        logits = model.decoder(prev, enc.index_select(torch.zeros(len(part), dtype=torch.long)))[0]
        lprobs = torch.log_softmax(logits.float().masked_fill(~mask, -math.inf), -1)
        lp = lprobs.gather(-1, target[..., None]).squeeze(-1)
        lp = lp.masked_fill(target.eq(1), 0).masked_fill((~mask).all(-1), 0)
        scores.append(lp.sum(1))
    return torch.cat(scores)


@torch.no_grad()
def bench_candidates(model, dtype: torch.dtype, reference_slice: int) -> None:
    cands = _candidates(3129)
    prompt = [0] + list(range(1000, 1021))  # bos + a 21-token question: 22 decoder prompt tokens
    net_input = _net_input(1, 480, 8)
    net_input["patch_images"] = net_input["patch_images"].to(dtype)
    seconds, scores = _timed(lambda: score_candidates(model, net_input, cands, [prompt]), 2)
    print(f"  all-candidate scoring, {len(cands)} candidates, 480 px: {seconds:.2f} s per sample")
    if reference_slice and dtype == torch.float32:
        part = cands[:reference_slice]
        start = time.perf_counter()
        ref = original_allcand(model, net_input, part, prompt)
        ref_seconds = (time.perf_counter() - start) * len(cands) / len(part)
        ours = score_candidates(model, net_input, part, [prompt])[0]
        diff = (ours - ref).abs().max().item()
        print(
            f"  original algorithm (extrapolated from {len(part)} candidates): {ref_seconds:.1f} s/sample "
            f"-> {ref_seconds / seconds:.0f}x; max |score diff| on that slice {diff:.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-candidates", action="store_true")
    parser.add_argument("--reference-slice", type=int, default=200, help="candidates timed with the original algorithm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_model(get_preset("ofa_tiny")).eval()
    dtypes = {"fp32": [torch.float32], "bf16": [torch.bfloat16], "both": [torch.float32, torch.bfloat16]}
    for dtype in dtypes[args.dtype]:
        # fp32: the exact model as loaded; bf16: models.ofa.fast_inference (bf16, channels-last ResNet)
        model = base if dtype == torch.float32 else fast_inference(base, dtype)
        print(f"ofa_tiny, {args.threads} threads, weights in {dtype}:")
        bench_beam(model, dtype, args.repeats)
        if not args.skip_candidates:
            bench_candidates(model, dtype, args.reference_slice)


if __name__ == "__main__":
    main()
