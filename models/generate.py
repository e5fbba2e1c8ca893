"""Sequence generation with the original OFA ``SequenceGenerator`` semantics (spec §6.1).

Decoding starts from bos; ``max_len = max_len_a * src_len + max_len_b`` (src_len = padded text width);
eos is banned before ``min_len`` and forced at ``max_len``; scores are length-normalised by
``(len + 1) ** lenpen`` unless ``unnormalized``; finished hypotheses are collected per sentence until ``beam``
of them exist, exactly as fairseq does, so hypotheses are token-identical to the original.

Constraints: ``prefix_tokens`` (forced, right-padded; VQA's question), a ``Trie`` of allowed continuations
(applied to logits before the softmax, or after it in ``zero_shot`` mode), ``constraint_range`` "s,e"
(boxes / image codes), ``gen_code`` (image-code decoding path) and ``gen_box``.

Unlike the original, the encoder output and the cross-attention cache are kept once per sentence, not once
per beam, and decoding goes through the model's key/value cache.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from criterions.label_smoothed_ce import mask_outside_range, parse_constraint_range
from models.decoder import DecoderState
from models.search import beam_step, block_repeated_ngrams, sampling_step
from utils.trie import Trie

BOS, PAD, EOS, UNK = 0, 1, 2, 3


@dataclass
class GenerationConfig:
    """fairseq/OFA generation flags (``--beam``, ``--max-len-b``, ..., ``--eval-args`` JSON keys)."""

    beam: int = 5
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1
    unnormalized: bool = False
    lenpen: float = 1.0
    unkpen: float = 0.0
    temperature: float = 1.0
    no_repeat_ngram_size: int = 0
    sampling: bool = False
    sampling_topk: int = -1
    sampling_topp: float = -1.0
    seed: int | None = None
    constraint_range: str | None = None
    gen_code: bool = False
    gen_box: bool = False
    ignore_eos: bool = False
    zero_shot: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any] | str) -> GenerationConfig:
        """From a dict or OFA's ``--eval-args`` JSON string; unknown keys raise with the known ones."""
        values = json.loads(args) if isinstance(args, str) else dict(args)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown generation settings {unknown}; known: {sorted(known)}")
        return cls(**values)


class SequenceGenerator:
    def __init__(self, cfg: GenerationConfig, vocab_size: int, constraint_trie: Trie | None = None):
        if cfg.temperature <= 0:
            raise ValueError("--temperature must be greater than 0")
        self.cfg, self.vocab_size, self.trie = cfg, vocab_size, constraint_trie
        self.beam = min(cfg.beam, vocab_size - 1)
        self.range = parse_constraint_range(cfg.constraint_range)
        if self.trie is not None and self.range is not None:
            raise ValueError("a constraint trie and --constraint-range cannot be combined")
        self.rng = None
        if cfg.seed is not None:
            self.rng = torch.Generator().manual_seed(cfg.seed)

    # ------------------------------------------------------------------ per-step log-probs
    def _allowed(self, tokens: Tensor, prefix_tokens: Tensor | None) -> Tensor:
        """Trie mask (rows, V): tokens continuing an allowed sequence after the forced prefix."""
        mask = torch.zeros(tokens.size(0), self.vocab_size, dtype=torch.bool)
        beam = tokens.size(0) // prefix_tokens.size(0) if prefix_tokens is not None else 1
        for row, seq in enumerate(tokens.tolist()):
            start = int(prefix_tokens[row // beam].ne(PAD).sum()) if prefix_tokens is not None else 0
            if self.cfg.zero_shot:
                mask[row, self.trie.get_next_layer(seq)] = True
            elif len(seq) > start:
                mask[row, self.trie.get_next_layer([BOS] + seq[start + 1 :])] = True
            else:
                mask[row] = True  # still inside the forced prefix
        return mask.to(tokens.device)

    def _mask(self, scores: Tensor, tokens: Tensor, prefix_tokens: Tensor | None) -> Tensor:
        if self.trie is not None:
            scores = scores.masked_fill(~self._allowed(tokens, prefix_tokens), -math.inf)
        return mask_outside_range(scores, self.range)

    def _lprobs(self, model, tokens, enc, state, prefix_tokens) -> Tensor:
        code_masks = torch.full((tokens.size(0),), self.cfg.gen_code, dtype=torch.bool, device=tokens.device)
        logits = model.decode_step(tokens, enc, state, code_masks=code_masks).float()
        if self.cfg.temperature != 1.0:
            logits = logits / self.cfg.temperature
        if self.cfg.zero_shot:  # zero-shot masks after the softmax: no renormalisation
            return self._mask(torch.log_softmax(logits, dim=-1), tokens, prefix_tokens)
        return torch.log_softmax(self._mask(logits, tokens, prefix_tokens), dim=-1)

    def _step_rules(self, step: int, lprobs: Tensor, max_len: int) -> Tensor:
        """NaN/pad/unk/code/box/max-length rules applied after prefix forcing, in the original's order."""
        lprobs.nan_to_num_(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        lprobs[:, PAD] = -math.inf
        lprobs[:, UNK] -= self.cfg.unkpen
        if (self.cfg.gen_code or self.cfg.gen_box) and step < max_len:
            lprobs[:, :4] = -math.inf
        if self.cfg.gen_box:
            # the original hard-codes the English vocabulary size here
            lprobs[:, -1] = -math.inf
            if (step + 1) % 5 == 0:
                lprobs[:, self.range[0] : 59457] = -math.inf
            else:
                lprobs[:, 59457:] = -math.inf
        if step >= max_len:
            lprobs[:, :EOS] = -math.inf
            lprobs[:, EOS + 1 :] = -math.inf
            if self.cfg.ignore_eos:
                lprobs[:, EOS] = 1
        return lprobs

    def _force_prefix(self, step, lprobs, tokens, scores, prefix_tokens):
        beam = self.beam
        forced = prefix_tokens[:, step].repeat_interleave(beam)
        forced_lprobs = lprobs.gather(-1, forced.unsqueeze(-1))
        rows = forced.ne(PAD)
        lprobs[rows] = -math.inf if self.trie is not None else torch.min(forced_lprobs) - 1
        lprobs[rows] = lprobs[rows].scatter(-1, forced[rows].unsqueeze(-1), forced_lprobs[rows])
        eos_rows = forced.eq(EOS)
        if eos_rows.any():  # a prefix ending early: every beam of that sentence copies the first one
            sentences = eos_rows.view(-1, beam)[:, 0]
            for t in (tokens, scores, lprobs):
                view = t.view(-1, beam, t.size(-1))
                view[sentences] = view[sentences][:, :1, :]
        return lprobs

    # ------------------------------------------------------------------ main loop
    @torch.no_grad()
    def generate(self, model, sample: dict, prefix_tokens: Tensor | None = None) -> list[list[dict[str, Tensor]]]:
        """``sample["net_input"]`` as for the model. Returns, per sentence, its hypotheses best first:
        ``{"tokens": (L,) ending with eos, no bos; "score": normalised log-prob; "positional_scores": (L,)}``.
        """
        net_input = sample["net_input"]
        src_tokens = net_input["src_tokens"]
        bsz, src_len = src_tokens.shape
        beam = self.beam
        max_len = int(self.cfg.max_len_a * src_len + self.cfg.max_len_b)
        if self.cfg.min_len > max_len:
            raise ValueError(f"min_len {self.cfg.min_len} cannot be larger than max_len {max_len}")
        enc = model.encode(**net_input)
        device = src_tokens.device
        search = _Search(bsz, beam, max_len, device)
        state = DecoderState()
        for step in range(max_len + 1):
            if search.reorder is not None:
                state.reorder(search.state_order(), search.kept)
                if search.kept is not None:
                    enc = enc.index_select(search.kept)
                    prefix_tokens = prefix_tokens[search.kept] if prefix_tokens is not None else None
            tokens = search.tokens[:, : step + 1]
            lprobs = self._lprobs(model, tokens, enc, state, prefix_tokens)
            if prefix_tokens is not None and step < prefix_tokens.size(1) and step < max_len:
                lprobs = self._force_prefix(step, lprobs, search.tokens, search.scores, prefix_tokens)
            elif step < self.cfg.min_len:
                lprobs[:, EOS] = -math.inf
            lprobs = self._step_rules(step, lprobs, max_len)
            if self.cfg.no_repeat_ngram_size > 0:
                lprobs = block_repeated_ngrams(search.tokens, lprobs, step, self.cfg.no_repeat_ngram_size)
            cands = self._candidates(step, lprobs.view(search.bsz, beam, -1), search)
            if search.advance(step, cands, self._finalize_score) or step >= max_len:
                break
        return search.sorted_results()

    def _candidates(self, step: int, lprobs: Tensor, search: _Search) -> tuple[Tensor, Tensor, Tensor]:
        prev = search.scores.view(search.bsz, self.beam, -1)[:, :, :step]
        if self.cfg.sampling:
            return sampling_step(step, lprobs, prev, self.cfg.sampling_topk, self.cfg.sampling_topp, self.rng)
        return beam_step(step, lprobs, prev)

    def _finalize_score(self, eos_scores: Tensor, step: int) -> Tensor:
        if self.cfg.unnormalized:
            return eos_scores
        return eos_scores / (step + 1) ** self.cfg.lenpen


class _Search:
    """The bookkeeping of fairseq's beam search: token/score buffers, finished sentences, batch pruning."""

    def __init__(self, bsz: int, beam: int, max_len: int, device: torch.device):
        self.bsz, self.beam, self.max_len = bsz, beam, max_len
        self.scores = torch.zeros(bsz * beam, max_len + 1, device=device)
        self.tokens = torch.full((bsz * beam, max_len + 2), PAD, dtype=torch.long, device=device)
        self.tokens[:, 0] = BOS
        self.ignore = torch.zeros(bsz, beam, dtype=torch.bool, device=device)
        self.finalized: list[list[dict[str, Tensor]]] = [[] for _ in range(bsz)]
        self.finished = [False] * bsz
        self.remaining = bsz
        self.offsets = (torch.arange(bsz, device=device) * beam).unsqueeze(1)
        self.reorder: Tensor | None = None  # rows to continue, in the current batch
        self.kept: Tensor | None = None  # sentences kept after this step (None: all)

    def state_order(self) -> Tensor:
        """``reorder`` in the numbering of the decoder state, which still holds the dropped sentences."""
        if self.kept is None:
            return self.reorder
        shift = self.kept - torch.arange(self.kept.numel(), device=self.kept.device)
        return (self.reorder.view(-1, self.beam) + shift[:, None] * self.beam).view(-1)

    def advance(self, step: int, cands: tuple[Tensor, Tensor, Tensor], normalise) -> bool:
        """Finalise eos candidates, drop finished sentences, pick the next beams. True when all are done."""
        cand_scores, cand_tokens, cand_beams = cands
        beam, cand_size = self.beam, 2 * self.beam
        cand_rows = cand_beams + self.offsets
        eos_mask = cand_tokens.eq(EOS) & cand_scores.ne(-math.inf)
        eos_mask[:, :beam][self.ignore] = False
        eos_rows = cand_rows[:, :beam].masked_select(eos_mask[:, :beam])
        done: list[int] = []
        if eos_rows.numel() > 0:
            eos_scores = cand_scores[:, :beam].masked_select(eos_mask[:, :beam])
            done = self._finalize(step, eos_rows, eos_scores, normalise)
            self.remaining -= len(done)
        if self.remaining == 0:
            return True
        if step >= self.max_len:
            return False
        self.kept = None
        if done:
            keep = torch.ones(self.bsz, dtype=torch.bool, device=cand_tokens.device)
            keep[done] = False
            self.kept = keep.nonzero().squeeze(1)
            eos_mask, cand_beams = eos_mask[self.kept], cand_beams[self.kept]
            cand_scores, cand_tokens, self.ignore = (
                cand_scores[self.kept],
                cand_tokens[self.kept],
                self.ignore[self.kept],
            )
            self.bsz = self.kept.numel()
            self.offsets = self.offsets[: self.bsz]
            cand_rows = cand_beams + self.offsets
            self.scores = self.scores.view(-1, beam, self.scores.size(1))[self.kept].view(self.bsz * beam, -1)
            self.tokens = self.tokens.view(-1, beam, self.tokens.size(1))[self.kept].view(self.bsz * beam, -1)
        # pick the first `beam` candidates that did not end (eos ones sort after cand_size)
        eos_mask[:, :beam] = self.ignore | eos_mask[:, :beam]
        offsets = torch.arange(cand_size, device=cand_tokens.device)[: eos_mask.size(1)]
        active = eos_mask.long() * cand_size + offsets
        new_ignore, active_hypos = torch.topk(active, k=beam, dim=1, largest=False)
        self.ignore = new_ignore.ge(cand_size)[:, :beam]
        rows = cand_rows.gather(1, active_hypos).view(-1)
        self.tokens[:, : step + 1] = self.tokens[:, : step + 1].index_select(0, rows)
        self.tokens.view(self.bsz, beam, -1)[:, :, step + 1] = cand_tokens.gather(1, active_hypos)
        if step > 0:
            self.scores[:, :step] = self.scores[:, :step].index_select(0, rows)
        self.scores.view(self.bsz, beam, -1)[:, :, step] = cand_scores.gather(1, active_hypos)
        self.reorder = rows
        return False

    def _finalize(self, step: int, rows: Tensor, eos_scores: Tensor, normalise) -> list[int]:
        """Store finished hypotheses; return the (current-batch) indices of sentences now complete."""
        tokens = self.tokens.index_select(0, rows)[:, 1 : step + 2]
        tokens[:, step] = EOS
        positional = self.scores.index_select(0, rows)[:, : step + 1]
        positional[:, step] = eos_scores
        positional[:, 1:] = positional[:, 1:] - positional[:, :-1]
        eos_scores = normalise(eos_scores, step)
        unfinished = [i for i, f in enumerate(self.finished) if not f]  # current index -> original sentence
        current = torch.div(rows, self.beam, rounding_mode="floor").tolist()
        for i, cur in enumerate(current):
            hypos = self.finalized[unfinished[cur]]
            if len(hypos) < self.beam:
                hypos.append({"tokens": tokens[i], "score": eos_scores[i], "positional_scores": positional[i]})
        done = []
        for cur in sorted(set(current)):
            sent = unfinished[cur]
            if not self.finished[sent] and (len(self.finalized[sent]) == self.beam or step == self.max_len):
                self.finished[sent] = True
                done.append(cur)
        return done

    def sorted_results(self) -> list[list[dict[str, Tensor]]]:
        for i, hypos in enumerate(self.finalized):
            order = torch.sort(torch.tensor([float(h["score"]) for h in hypos]), descending=True)[1]
            self.finalized[i] = [hypos[j] for j in order.tolist()]
        return self.finalized
