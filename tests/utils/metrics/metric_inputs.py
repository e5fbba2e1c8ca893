"""Shared inputs of the metric tests (imported by them, not a test module): a fixed, seeded set of tokenised
caption groups."""

from __future__ import annotations

import random

VOCAB = [
    "a",
    "an",
    "the",
    "man",
    "woman",
    "dog",
    "cat",
    "red",
    "blue",
    "green",
    "sits",
    "runs",
    "on",
    "in",
    "near",
    "table",
    "street",
    "ball",
]
NO_OVERLAP_ID = "no-overlap"


def _sentence(rng: random.Random, low: int = 1, high: int = 10) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(low, high)))


def make_groups(seed: int = 1234, count: int = 30) -> tuple[dict, dict]:
    """``(gts, res)`` with ``count`` random groups of 1-5 references, plus hand-made edge cases."""
    rng = random.Random(seed)
    gts: dict = {}
    res: dict = {}
    for i in range(count):
        gts[i] = [_sentence(rng) for _ in range(rng.randint(1, 5))]
        res[i] = [_sentence(rng)]
    # a candidate sharing no n-gram with its references, a one-word candidate, repeated n-grams, a copy
    gts[NO_OVERLAP_ID] = ["a man sits on the table", "the man sits"]
    res[NO_OVERLAP_ID] = ["zebra xylophone quartz"]
    gts["one-word"] = ["a dog runs in the street", "dog"]
    res["one-word"] = ["dog"]
    gts["repeats"] = ["the cat the cat sits", "a cat sits near the cat"]
    res["repeats"] = ["the cat the cat the cat"]
    gts["copy"] = ["a red ball on the table", "the red ball"]
    res["copy"] = ["a red ball on the table"]
    return gts, res
