"""Text infilling noise for pretraining: BART's whole-word span masking, as OFA's ``unify_task`` applies it.

Spec §4.9.1 (OFA's ``UnifyDataset.add_whole_word_mask`` / ``add_insertion_noise``, which follow fairseq's BART
``DenoisingDataset``). For a token sequence ``bos ... eos``:

* Word starts are the tokens whose BPE piece begins with a space (``OFATokenizer.word_start_mask``); the first
  and last positions never are. ``mask_length="subword"`` makes every token a word start.
* ``ceil(#word_starts * mask_ratio)`` words are to be masked. With ``"span-poisson"`` span lengths (in words) are
  drawn from a Poisson(``poisson_lambda``) categorical over k = 0, 1, ... that stops after the first
  probability below 1e-7 (k < 128), drawn in rounds of that many until they cover the budget, then the span that
  crosses the budget is cut to fit and later ones are dropped. Zero-length spans become insertions of
  ``<mask>``. ``"word"`` and ``"subword"`` use spans of length 1.
* Span starts are distinct word starts in random order. With ``replace_length=1`` a span's first token becomes
  ``<mask>`` (or, with probability ``random_ratio``, a random token id in ``[4, first code id)``) and the rest of
  the span's words are deleted; ``0`` deletes the whole span; ``-1`` replaces every token by ``<mask>``. Spans
  never run into the last token. Spans may overlap, as in the original (a later span's ``<mask>`` can be deleted
  by an earlier one).
* Insertion noise puts ``ceil(len * p)`` new tokens at random positions strictly inside the sequence: the first
  ``ceil(n * random_ratio)`` of them random ids, the rest ``<mask>``.

Random draws come from ``generator`` when one is given, else from torch's global CPU generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MASK_LENGTHS = ("subword", "word", "span-poisson")
_MAX_SPAN = 128
_MIN_PROBABILITY = 1e-7


def poisson_span_probabilities(poisson_lambda: float) -> Tensor:
    """Unnormalised Poisson(lambda) probabilities of span lengths 0, 1, ..., up to the first one below 1e-7."""
    probs, power, factorial = [], 1.0, 1
    for k in range(_MAX_SPAN):
        probs.append(math.exp(-poisson_lambda) * power / factorial)
        power *= poisson_lambda
        factorial *= k + 1
        if probs[-1] < _MIN_PROBABILITY:
            break
    return torch.tensor(probs, dtype=torch.float32)


class WholeWordMasking:
    """Callable ``tokens -> noised tokens`` (1-D long tensors that start with bos and end with eos)."""

    def __init__(
        self,
        word_starts: Tensor,
        mask_idx: int,
        random_high: int,
        *,
        mask_ratio: float = 0.3,
        random_ratio: float = 0.0,
        mask_length: str = "span-poisson",
        poisson_lambda: float = 3.0,
        replace_length: int = 1,
    ) -> None:
        if mask_length not in MASK_LENGTHS:
            raise ValueError(f"--mask-length must be one of {MASK_LENGTHS}, got {mask_length!r}")
        if replace_length not in (-1, 0, 1):
            raise ValueError(f"--replace-length must be -1, 0 or 1, got {replace_length}")
        if mask_length == "subword" and replace_length == -1:
            raise ValueError("--mask-length subword needs --replace-length 0 or 1")
        self.word_starts = None if mask_length == "subword" else word_starts.bool()
        self.mask_idx, self.random_high = mask_idx, random_high
        self.mask_ratio, self.random_ratio, self.replace_length = mask_ratio, random_ratio, replace_length
        self.span_probs = poisson_span_probabilities(poisson_lambda) if mask_length == "span-poisson" else None

    def sample_spans(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """``count`` raw span lengths drawn from the Poisson categorical (no budget trimming)."""
        return torch.multinomial(self.span_probs, count, replacement=True, generator=generator)

    def span_lengths(self, budget: int, generator: torch.Generator | None = None) -> Tensor:
        """Span lengths (zeros included) whose sum is exactly ``budget`` words, in draw order."""
        lengths = self.sample_spans(budget, generator)
        while int(lengths.sum()) < budget:  # draw further rounds of ``budget`` spans until they cover it
            lengths = torch.cat([lengths, self.sample_spans(budget, generator)])
        cumulative = torch.cumsum(lengths, 0)
        last = int(torch.nonzero(cumulative >= budget)[0, 0])
        lengths = lengths[: last + 1].clone()
        lengths[last] = budget - (int(cumulative[last - 1]) if last > 0 else 0)
        return lengths

    def is_word_start(self, tokens: Tensor) -> Tensor:
        starts = torch.ones_like(tokens, dtype=torch.bool) if self.word_starts is None else self.word_starts[tokens]
        starts = starts.clone()
        starts[0] = starts[-1] = False
        return starts

    def __call__(self, tokens: Tensor, generator: torch.Generator | None = None) -> Tensor:
        tokens = tokens.clone()
        is_start = self.is_word_start(tokens)
        budget = math.ceil(int(is_start.sum()) * self.mask_ratio)
        if budget == 0:
            return tokens
        if self.span_probs is None:
            lengths = torch.ones(budget, dtype=torch.long)
        else:
            lengths = self.span_lengths(budget, generator)
        inserts = int((lengths == 0).sum())
        lengths = lengths[lengths > 0]
        if len(lengths) == 0:
            return self.insert(tokens, inserts / len(tokens), generator)
        starts = torch.nonzero(is_start).squeeze(1)
        indices = starts[torch.randperm(len(starts), generator=generator)[: len(lengths)]]
        random = torch.rand(len(indices), generator=generator) < self.random_ratio
        keep = self._mask_spans(tokens, is_start, indices, lengths, random, generator)
        tokens = tokens[keep]
        return self.insert(tokens, inserts / len(tokens), generator) if inserts else tokens

    def _replace(self, tokens: Tensor, indices: Tensor, random: Tensor, generator: torch.Generator | None) -> None:
        tokens[indices] = self.mask_idx
        chosen = indices[random]
        tokens[chosen] = torch.randint(4, self.random_high, (len(chosen),), generator=generator)

    def _mask_spans(
        self, tokens: Tensor, is_start: Tensor, indices: Tensor, lengths: Tensor, random: Tensor, generator
    ) -> Tensor:
        """Replace or delete each span in place; returns the keep mask over ``tokens``."""
        keep = torch.ones(len(tokens), dtype=torch.bool)
        if self.replace_length == 0:
            keep[indices] = False
        else:
            self._replace(tokens, indices, random, generator)
        # a word-start count per step; the last token counts as a huge word so no span runs into it
        step = is_start.long()
        step[-1] = 255
        remaining = lengths - 1  # words still to cover after the span's first word
        while len(indices):
            remaining = remaining - step[indices + 1]
            going = remaining >= 0
            indices, remaining, random = indices[going] + 1, remaining[going], random[going]
            if self.replace_length == -1:
                self._replace(tokens, indices, random, generator)
            else:
                keep[indices] = False
        return keep

    def insert(self, tokens: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
        """Insertion noise: ``ceil(len(tokens) * p)`` new tokens strictly between the first and last one."""
        if p == 0.0:
            return tokens
        num_tokens = len(tokens)
        n = math.ceil(num_tokens * p)
        positions = torch.randperm(num_tokens + n - 2, generator=generator)[:n] + 1
        inserted = torch.zeros(num_tokens + n, dtype=torch.bool)
        inserted[positions] = True
        out = torch.full((num_tokens + n,), -1, dtype=torch.long)
        num_random = math.ceil(n * self.random_ratio)
        out[positions[num_random:]] = self.mask_idx
        out[positions[:num_random]] = torch.randint(4, self.random_high, (num_random,), generator=generator)
        out[~inserted] = tokens
        return out
