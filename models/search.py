"""Candidate selection for one decoding step: beam search and sampling, plus n-gram blocking.

These follow fairseq's ``search.BeamSearch`` / ``search.Sampling`` and ``NGramRepeatBlock`` (which OFA uses
unchanged), so that hypotheses are token-identical to the original: the same top-2k candidate selection,
the same first-step rule (only beam 0 is expanded, all beams being equal), the same top-p truncation.
Every function takes ``lprobs`` shaped (bsz, beam, V) and returns (scores, token ids, beam ids), each
(bsz, n_candidates).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def beam_step(step: int, lprobs: Tensor, scores: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Top 2*beam continuations by cumulative score. ``scores``: (bsz, beam, step) cumulative so far."""
    bsz, beam, vocab = lprobs.shape
    if step == 0:
        lprobs = lprobs[:, ::beam, :].contiguous()  # all beams are identical at the first step
    else:
        lprobs = lprobs + scores[:, :, step - 1].unsqueeze(-1)
    flat = lprobs.view(bsz, -1)
    top_scores, top_indices = torch.topk(flat, k=min(2 * beam, flat.size(1) - 1))  # -1: never pad
    return top_scores, top_indices.fmod(vocab), torch.div(top_indices, vocab, rounding_mode="floor")


def _top_p(lprobs: Tensor, top_p: float) -> tuple[Tensor, Tensor]:
    """Probabilities of the smallest prefix of the sorted vocabulary whose mass reaches ``top_p``."""
    probs = lprobs.exp()
    sorted_probs, sorted_indices = probs.sort(descending=True)
    inside = sorted_probs.cumsum(dim=2).lt(top_p)
    last = inside.cumsum(dim=2)[:, :, -1:].clamp_(0, inside.size(2) - 1)
    inside = inside.scatter(2, last, True)  # include the token that crosses the threshold
    width = int(last.max()) + 1
    kept = sorted_probs[:, :, :width].masked_fill(~inside[:, :, :width], 0)
    return kept, sorted_indices[:, :, :width]


def sampling_step(
    step: int,
    lprobs: Tensor,
    scores: Tensor | None,
    top_k: int = -1,
    top_p: float = -1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One sampled continuation per beam (the first step draws ``beam`` samples from beam 0)."""
    bsz, beam, _ = lprobs.shape
    if step == 0:
        lprobs = lprobs[:, ::beam, :].contiguous()
    top_indices = None
    if top_p > 0:
        probs, top_indices = _top_p(lprobs, top_p)
    elif top_k > 0:
        lprobs, top_indices = lprobs.topk(top_k)
        probs = lprobs.exp()
    else:
        probs = lprobs.exp()
    if step == 0:
        picked = torch.multinomial(probs.view(bsz, -1), beam, replacement=True, generator=generator)
        probs = probs.expand(bsz, beam, -1)
    else:
        picked = torch.multinomial(probs.view(bsz * beam, -1), 1, replacement=True, generator=generator)
    picked = picked.view(bsz, beam)
    cand_scores = probs.gather(2, picked.unsqueeze(-1)).log_().view(bsz, -1)
    if top_indices is not None:
        picked = top_indices.expand(bsz, beam, -1).gather(2, picked.unsqueeze(-1)).squeeze(2)
    if step == 0:
        beams = picked.new_zeros(bsz, beam)
    else:
        beams = torch.arange(beam, device=picked.device).repeat(bsz, 1)
        cand_scores = cand_scores + scores[:, :, step - 1].gather(1, beams)
    return cand_scores, picked, beams


def block_repeated_ngrams(tokens: Tensor, lprobs: Tensor, step: int, n: int) -> Tensor:
    """Ban every token that would complete an n-gram already present in the row (fairseq semantics).

    tokens: (rows, >= step + 1) decoded so far, bos first; lprobs: (rows, V), modified in place.
    """
    if step + 1 < n:  # no complete n-gram yet (the original only bans pad here, which is banned anyway)
        return lprobs
    seen = tokens[:, : step + 1]
    windows = seen.unfold(1, n, 1)  # rows, W, n
    key = seen[:, step + 2 - n : step + 1]  # the last n-1 tokens
    hits = (windows[:, :, :-1] == key[:, None, :]).all(-1)  # rows, W
    if hits.any():
        rows, cols = hits.nonzero(as_tuple=True)
        lprobs[rows, windows[rows, cols, -1]] = -math.inf
    return lprobs
