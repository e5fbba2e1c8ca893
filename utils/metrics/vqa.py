"""VQA soft accuracy as OFA computes it (``vqa_gen``): the precomputed confidence of the predicted answer.

Reproduces ``VqaGenDataset``'s parsing of the TSV answers column, ``"conf|!+answer&&conf|!+answer..."`` into
``{answer: float(conf)}`` (items split on ``&&``, each on ``|!+``; answers are not stripped; a repeated answer keeps
its last confidence), and ``eval_vqa_gen``'s score ``ref_dict.get(answer, 0)``. Where OFA would crash with an
IndexError (a missing separator, an empty column) or quietly take the second part of an item holding two
separators, a ValueError naming the item is raised instead; so it is for a confidence that is not a finite number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

ITEM_SEPARATOR = "&&"
CONF_SEPARATOR = "|!+"


def parse_vqa_answers(field: str) -> dict[str, float]:
    """``{answer: confidence}`` from OFA's answers column ``"conf|!+answer&&conf|!+answer..."``."""
    if not isinstance(field, str):
        raise TypeError(f"answers column must be a str, got {type(field).__name__}")
    if not field:
        raise ValueError("empty VQA answers column: expected 'conf|!+answer&&conf|!+answer...'")
    answers: dict[str, float] = {}
    for item in field.split(ITEM_SEPARATOR):
        parts = item.split(CONF_SEPARATOR)
        if len(parts) != 2:
            raise ValueError(
                f"malformed VQA answer item {item!r} in {field!r}: expected exactly one '{CONF_SEPARATOR}' "
                "between a confidence and an answer"
            )
        conf_text, answer = parts
        try:
            conf = float(conf_text)
        except ValueError:
            raise ValueError(
                f"malformed VQA answer item {item!r} in {field!r}: {conf_text!r} is not a number"
            ) from None
        if not math.isfinite(conf):
            raise ValueError(f"malformed VQA answer item {item!r} in {field!r}: confidence must be finite")
        answers[answer] = conf
    return answers


def vqa_score(prediction: str, ref_dict: Mapping[str, float]) -> float:
    """OFA's VQA score: the confidence of ``prediction`` among the reference answers, 0 if it is not one of them."""
    return float(ref_dict.get(prediction, 0))
