"""Generation: golden parity with the original SequenceGenerator, and properties of search and constraints."""

from __future__ import annotations

import math

import pytest
import torch

from models import build_model, from_pretrained, get_preset
from models.candidates import CandidateTrie, score_candidates
from models.decoder import DecoderState
from models.generate import GenerationConfig, SequenceGenerator
from utils.trie import Trie

V = 59457


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_preset("ofa_test")).eval()


def _net_input(bsz: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 1000, (bsz, 6), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    return {"src_tokens": src, "patch_images": torch.randn(bsz, 3, 32, 32, generator=g)}


@pytest.mark.parametrize("setting", ["caption_cfg", "no_ngram_block"])
def test_golden_beam_search_hypotheses(setting, golden, golden_ckpt_path, bpe_dir):
    from data.tokenizer import OFATokenizer

    model = from_pretrained(golden_ckpt_path)
    ref = golden["outputs"]["generation"][setting]
    inputs = golden["inputs"]
    net_input = {k: inputs[k] for k in ("src_tokens", "src_lengths", "patch_images", "patch_masks")}
    hypos = SequenceGenerator(GenerationConfig.from_args(ref["args"]), V).generate(model, {"net_input": net_input})
    tokenizer = OFATokenizer.from_bpe_dir(bpe_dir)
    for ours, theirs in zip(hypos, ref["hypos"], strict=True):
        assert len(ours) == len(theirs["tokens"]) == 5
        for hyp, tokens, score, positional in zip(
            ours, theirs["tokens"], theirs["score"], theirs["positional_scores"], strict=True
        ):
            assert torch.equal(hyp["tokens"], tokens)
            assert abs(hyp["score"].item() - score.item()) < 1e-4
            assert (hyp["positional_scores"] - positional).abs().max().item() < 1e-4
        assert tokenizer.decode(ours[0]["tokens"]) == theirs["text_top1"]


def test_incremental_decoding_equals_full_prefix_for_20_steps(model):
    net_input = _net_input(seed=1)
    prev = torch.randint(4, 1000, (2, 20), generator=torch.Generator().manual_seed(2))
    prev[:, 0] = 0
    enc = model.encode(**net_input)
    state = DecoderState()
    with torch.no_grad():
        for t in range(20):
            step = model.decode_step(prev[:, : t + 1], enc, state)
            full = model.decoder(prev[:, : t + 1], enc)[0][:, -1]
            assert (step - full).abs().max().item() < 1e-5, t


def _greedy(model, net_input: dict, max_len: int) -> list[list[int]]:
    tokens = torch.zeros(net_input["src_tokens"].size(0), 1, dtype=torch.long)
    with torch.no_grad():
        for step in range(max_len + 1):
            logits = model(**net_input, prev_output_tokens=tokens)[0][:, -1]
            lprobs = torch.log_softmax(logits, -1)
            lprobs[:, 1] = -math.inf
            if step < 1:
                lprobs[:, 2] = -math.inf
            if step == max_len:
                keep = lprobs[:, 2].clone()
                lprobs[:] = -math.inf
                lprobs[:, 2] = keep
            tokens = torch.cat([tokens, lprobs.argmax(-1, keepdim=True)], 1)
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[: row.index(2) + 1])
    return out


def test_beam_one_equals_greedy(model):
    net_input = _net_input(seed=3)
    hypos = SequenceGenerator(GenerationConfig(beam=1, max_len_b=8), V).generate(model, {"net_input": net_input})
    assert [h[0]["tokens"].tolist() for h in hypos] == _greedy(model, net_input, 8)


def test_lengths_and_no_repeat_ngram(model):
    cfg = GenerationConfig(beam=3, max_len_b=10, min_len=4, no_repeat_ngram_size=2)
    for hypos in SequenceGenerator(cfg, V).generate(model, {"net_input": _net_input(seed=4)}):
        assert len(hypos) == 3
        assert hypos[0]["score"] >= hypos[-1]["score"]
        for h in hypos:
            toks = h["tokens"].tolist()
            assert toks[-1] == 2 and 2 not in toks[:-1] and 4 < len(toks) <= 11
            bigrams = list(zip([0] + toks[:-1], toks, strict=True))
            assert len(bigrams) == len(set(bigrams))


@pytest.mark.parametrize("seed", range(4))
def test_trie_constraint_only_emits_allowed_sequences(model, seed):
    g = torch.Generator().manual_seed(seed)
    allowed = {
        tuple(torch.randint(4, 40, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist())
        for _ in range(12)
    }
    trie = Trie.from_sequences(allowed, bos=0, eos=2)
    gen = SequenceGenerator(GenerationConfig(beam=4, max_len_b=6), V, constraint_trie=trie)
    for hypos in gen.generate(model, {"net_input": _net_input(seed=seed)}):
        for h in hypos:
            assert tuple(h["tokens"].tolist()[:-1]) in allowed


def test_forced_prefix_then_trie(model):
    prefix = torch.tensor([[50, 51, 52], [60, 1, 1]])  # right-padded, like VQA questions
    trie = Trie.from_sequences([(11,), (12, 13)], bos=0, eos=2)
    gen = SequenceGenerator(GenerationConfig(beam=2, max_len_b=8, unnormalized=True), V, constraint_trie=trie)
    hypos = gen.generate(model, {"net_input": _net_input(seed=5)}, prefix_tokens=prefix)
    for row, sent in enumerate(hypos):
        plen = int(prefix[row].ne(1).sum())
        for h in sent:
            toks = h["tokens"].tolist()
            assert toks[:plen] == prefix[row, :plen].tolist()
            assert tuple(toks[plen:-1]) in {(11,), (12, 13)}


def test_constraint_range_and_code_generation(model):
    cfg = GenerationConfig(beam=2, min_len=5, max_len_b=5, constraint_range="50265,58457", gen_code=True)
    for hypos in SequenceGenerator(cfg, V).generate(model, {"net_input": _net_input(seed=6)}):
        for h in hypos:
            toks = h["tokens"].tolist()
            assert len(toks) == 6 and toks[-1] == 2
            assert all(50265 <= t < 58457 for t in toks[:-1])


def test_sampling_is_seeded_and_respects_top_k(model):
    cfg = GenerationConfig(beam=3, max_len_b=5, sampling=True, sampling_topk=5, seed=7)
    net_input = {"net_input": _net_input(seed=7)}
    first = SequenceGenerator(cfg, V).generate(model, net_input)
    again = SequenceGenerator(cfg, V).generate(model, net_input)
    assert [[h["tokens"].tolist() for h in s] for s in first] == [[h["tokens"].tolist() for h in s] for s in again]
    # with top-k 1 sampling is greedy
    greedy = SequenceGenerator(GenerationConfig(beam=1, max_len_b=5, sampling=True, sampling_topk=1, seed=0), V)
    sampled = greedy.generate(model, {"net_input": _net_input(seed=8)})
    assert [h[0]["tokens"].tolist() for h in sampled] == _greedy(model, _net_input(seed=8), 5)


def test_top_p_sampling_runs_and_ends_with_eos(model):
    cfg = GenerationConfig(beam=2, max_len_b=4, sampling=True, sampling_topp=0.5, seed=1)
    for hypos in SequenceGenerator(cfg, V).generate(model, {"net_input": _net_input(seed=9)}):
        assert all(h["tokens"][-1].item() == 2 for h in hypos)


def test_generation_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="max_len_b"):
        GenerationConfig.from_args('{"beam": 5, "max_len_c": 3}')


def _teacher_forced_scores(model, net_input, cands, prompts) -> torch.Tensor:
    """The original's all-candidate algorithm: decode prompt + answer with trie-masked logits."""
    trie = Trie.from_sequences(cands, bos=0, eos=2)
    enc = model.encode(**net_input)
    out = torch.zeros(len(prompts), len(cands))
    for b, prompt in enumerate(prompts):
        for c, cand in enumerate(cands):
            prev, target = torch.tensor([prompt + cand]), torch.tensor([prompt[1:] + cand + [2]])
            mask = torch.zeros(prev.size(1), V, dtype=torch.bool)
            for i in range(len(cand) + 1):
                mask[len(prompt) - 1 + i, trie.get_next_layer([0] + cand[:i])] = True
            logits = model.decoder(prev, enc.index_select(torch.tensor([b])))[0].masked_fill(~mask, -math.inf)
            lp = torch.log_softmax(logits, -1).gather(-1, target[..., None]).squeeze(-1)
            out[b, c] = lp.masked_fill((~mask).all(-1), 0).sum()
    return out


@torch.no_grad()
def test_all_candidate_scores_equal_teacher_forced_sums(model):
    g = torch.Generator().manual_seed(10)
    cands = [
        [int(torch.randint(10, 13, (1,), generator=g)), *torch.randint(20, 24, (k,), generator=g).tolist()]
        for k in [0, 1, 2, 0, 1, 2, 1, 3, 0, 2]
    ]
    cands.append(cands[1][:1])  # an answer that is a prefix of another one
    net_input = _net_input(seed=10)
    prompts = [[0, 50, 51, 52], [0]]
    fast = score_candidates(model, net_input, cands, prompts, chunk=3)
    assert fast.shape == (2, len(cands))
    assert (fast - _teacher_forced_scores(model, net_input, cands, prompts)).abs().max().item() < 1e-5


def test_candidate_trie_shares_prefixes():
    trie = CandidateTrie.build([[5, 6], [5, 7], [5], [8]])
    assert trie.parent.numel() == 5  # root, 5, 6, 7, 8
    assert [lvl.numel() for lvl in trie.levels] == [2, 2]
    assert trie.edge_token.tolist().count(2) == 4  # one eos arc per distinct end node
