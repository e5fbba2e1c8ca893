"""Text infilling noise (spec §4.9.1): Poisson span lengths, the masking budget and the <mask> replacement rules."""

from __future__ import annotations

import math

import pytest
import torch

from data.noise import WholeWordMasking, poisson_span_probabilities
from data.tokenizer import OFATokenizer

# distinct words, several of them more than one BPE token, so whole-word handling is visible
# fmt: off
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike",
    "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "photosynthesis", "antidisestablishmentarianism",
]
# fmt: on


@pytest.fixture(scope="module")
def tokenizer(bpe_dir) -> OFATokenizer:
    return OFATokenizer.from_bpe_dir(bpe_dir)


@pytest.fixture(scope="module")
def words(tokenizer) -> list[list[int]]:
    return [tokenizer.encode(" " + w).tolist() for w in WORDS]


@pytest.fixture(scope="module")
def text(tokenizer) -> torch.Tensor:
    return tokenizer.encode(" " + " ".join(WORDS), add_bos=True, add_eos=True)


def masker(tokenizer: OFATokenizer, **options) -> WholeWordMasking:
    return WholeWordMasking(tokenizer.word_start_mask(), tokenizer.mask, tokenizer.code_offset, **options)


def kept_words(output: list[int], words: list[list[int]], mask: int) -> tuple[list[int], list[int]]:
    """Parse ``output`` (without bos/eos) as the input words in order, some removed, with <mask> tokens anywhere
    (insertion noise may put one inside a word). Returns the indices of the words kept whole and, for each gap
    before/between/after them, how many <mask> tokens it holds."""
    plain = [(i, t) for i, t in enumerate(output) if t != mask]
    tokens = [t for _, t in plain]
    kept, bounds, pos = [], [], 0
    for index, word in enumerate(words):
        if tokens[pos : pos + len(word)] == word:
            kept.append(index)
            bounds.append((plain[pos][0], plain[pos + len(word) - 1][0]))
            pos += len(word)
    assert pos == len(tokens), f"output is not the input's words with some removed: {output}"
    edges = [-1] + [i for b in bounds for i in b] + [len(output)]
    gaps = list(zip(edges[::2], edges[1::2], strict=True))
    return kept, [output[a + 1 : b].count(mask) for a, b in gaps]


def test_poisson_span_probabilities_are_truncated_after_the_first_below_1e7():
    probs = poisson_span_probabilities(3.0)
    expected = [math.exp(-3) * 3**k / math.factorial(k) for k in range(len(probs))]
    assert torch.allclose(probs, torch.tensor(expected), rtol=1e-6, atol=0)
    assert len(probs) == 18 and probs[-1] < 1e-7 <= probs[-2]  # k = 0..17 for lambda 3


def test_span_lengths_follow_poisson_3(tokenizer):
    """Chi-square goodness of fit of 20,000 span draws against Poisson(3), tail k >= 9 pooled (df 9)."""
    draws = masker(tokenizer).sample_spans(20000, torch.Generator().manual_seed(0))
    observed = torch.bincount(draws, minlength=18).double()
    probs = poisson_span_probabilities(3.0).double()
    expected = probs / probs.sum() * len(draws)
    observed = torch.cat([observed[:9], observed[9:].sum(0, keepdim=True)])
    expected = torch.cat([expected[:9], expected[9:].sum(0, keepdim=True)])
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 27.88  # the 0.999 quantile of chi-square with 9 degrees of freedom
    assert float(draws.double().mean()) == pytest.approx(3.0, abs=0.05)


@pytest.mark.parametrize("budget", [1, 2, 9, 40])
def test_span_lengths_are_trimmed_to_the_budget(tokenizer, budget):
    m = masker(tokenizer)
    for seed in range(50):
        lengths = m.span_lengths(budget, torch.Generator().manual_seed(seed))
        assert int(lengths.sum()) == budget and bool((lengths >= 0).all())
        assert len(lengths) == 1 or int(lengths[:-1].sum()) < budget  # only the last span reaches the budget


def test_word_masking_replaces_exactly_the_budget_of_whole_words(tokenizer, words, text):
    """mask_length=word, replace_length=1: ceil(0.3 * 28) = 9 words each become one <mask>, the rest intact."""
    m = masker(tokenizer, mask_length="word")
    for seed in range(20):
        out = m(text, torch.Generator().manual_seed(seed)).tolist()
        assert out[0] == tokenizer.bos and out[-1] == tokenizer.eos
        kept, masks = kept_words(out[1:-1], words, tokenizer.mask)
        assert len(WORDS) - len(kept) == math.ceil(0.3 * len(WORDS)) == out.count(tokenizer.mask) == sum(masks)


def test_span_masking_covers_whole_words_within_the_budget(tokenizer, words, text):
    """span-poisson: each gap of removed words is marked by <mask>; on average ~30 % of the words go."""
    m = masker(tokenizer)
    budget, fractions = math.ceil(0.3 * len(WORDS)), []
    for seed in range(200):
        out = m(text, torch.Generator().manual_seed(seed)).tolist()
        assert out[0] == tokenizer.bos and out[-1] == tokenizer.eos
        kept, masks = kept_words(out[1:-1], words, tokenizer.mask)
        removed = len(WORDS) - len(kept)
        assert 0 < removed <= budget
        gaps = [i for i, (a, b) in enumerate(zip([-1, *kept], [*kept, len(WORDS)], strict=True)) if b - a > 1]
        assert all(masks[i] >= 1 for i in gaps)  # every removed run of words left a <mask> in its place
        fractions.append(removed / len(WORDS))
    assert 0.25 < sum(fractions) / len(fractions) <= budget / len(WORDS)


def test_replace_length_zero_deletes_and_minus_one_masks_every_token(tokenizer, words, text):
    """Word spans (no zero-length spans, so no insertions): 0 deletes the words, -1 masks each of their tokens."""
    budget = math.ceil(0.3 * len(WORDS))
    deleted = masker(tokenizer, mask_length="word", replace_length=0)(text, torch.Generator().manual_seed(3))
    assert tokenizer.mask not in deleted.tolist()
    kept, _ = kept_words(deleted[1:-1].tolist(), words, tokenizer.mask)
    assert len(WORDS) - len(kept) == budget
    masked = masker(tokenizer, mask_length="word", replace_length=-1)(text, torch.Generator().manual_seed(3))
    assert len(masked) == len(text)
    hit = [i for i, word in enumerate(words) if masked[1 + sum(map(len, words[:i]))].item() == tokenizer.mask]
    assert len(hit) == budget
    expected = [tokenizer.mask] * sum(len(words[i]) for i in hit)
    assert masked[masked != text].tolist() == expected  # exactly the tokens of the hit words, all <mask>


def test_random_ratio_one_replaces_masks_by_text_tokens(tokenizer, text):
    out = masker(tokenizer, mask_length="word", random_ratio=1.0)(text, torch.Generator().manual_seed(5))
    assert tokenizer.mask not in out.tolist()
    new = set(out.tolist()) - set(text.tolist())
    assert new and all(4 <= t < tokenizer.code_offset for t in new)  # random ids never codes, bins or <mask>


def test_insertion_noise_adds_masks_strictly_inside(tokenizer, text):
    m = masker(tokenizer)
    out = m.insert(text, 0.25, torch.Generator().manual_seed(1))
    assert len(out) == len(text) + math.ceil(len(text) * 0.25)
    assert out[0] == text[0] and out[-1] == text[-1]
    assert out[out != tokenizer.mask].tolist() == text.tolist()


def test_no_word_starts_or_zero_ratio_leaves_the_text_alone(tokenizer, text):
    assert torch.equal(masker(tokenizer, mask_ratio=0.0)(text), text)
    bare = torch.tensor([tokenizer.bos, tokenizer.eos])
    assert torch.equal(masker(tokenizer)(bare), bare)


def test_bad_options_are_refused(tokenizer):
    with pytest.raises(ValueError, match="mask-length"):
        masker(tokenizer, mask_length="sentence")
    with pytest.raises(ValueError, match="replace-length"):
        masker(tokenizer, replace_length=2)
