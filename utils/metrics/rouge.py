"""ROUGE for Gigaword (OFA's ``utils/rouge.py`` + ``run_scripts/gigaword/eval_rouge.py``) and the PTB-style
re-tokenisation OFA applies to generated summaries before scoring (``fix_tokenization`` of ``gigaword.py``).

OFA scores with a HuggingFace ``datasets`` metric script that wraps Google's ``rouge_score`` package:
``RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)`` and ``scorer.score(reference, prediction)``
for each pair. Two aggregations exist in the original:

* validation during training (``GigawordTask.valid_step``) takes the **mean over pairs** of each pair's
  F-measure and recall (logged x100): this is ``rouge_scores``' default;
* the offline script ``eval_rouge.py`` prints the **bootstrap "mid"** F-measure of ``BootstrapAggregator``
  (the median of 1000 resampled means). ``rouge_scores(..., bootstrap=True)`` gives it; it differs from the
  mean only by resampling noise, and it draws from NumPy's global RNG exactly as ``rouge_score`` does.

The Porter stemmer ``rouge_score`` uses comes from ``nltk.stem.porter``, which is pure code: nothing is
downloaded (``nltk.download`` is never called; ``rougeLsum``'s sentence splitter, which would need data, is
not used). Values are fractions in [0, 1], as ``rouge_score`` returns them.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from rouge_score import rouge_scorer, scoring

__all__ = ["ROUGE_TYPES", "fix_tokenization", "rouge_pair_scores", "rouge_scores"]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_PUNCTUATION = string.punctuation

# Single tokens rewritten the way the Penn Treebank / Gigaword references spell them.
_PTB_SYMBOLS = {
    "(": "-lrb-",
    ")": "-rrb-",
    "[": "-lsb-",
    "]": "-rsb-",
    "{": "-lcb-",
    "}": "-rcb-",
    "[UNK]": "UNK",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
}
_CLITICS = ("s", "d", "ll")


# ---------------------------------------------------------------------------------------------- ROUGE
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair up")


def rouge_pair_scores(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Per pair: ``{rouge1_f1, rouge1_recall, rouge2_f1, rouge2_recall, rougeL_f1, rougeL_recall}``.

    Each pair is scored as ``scorer.score(target=reference, prediction=prediction)`` (the order matters:
    recall is measured against the reference).
    """
    _check_lengths(predictions, references)
    scorer = _scorer()
    out = []
    for prediction, reference in zip(predictions, references, strict=True):
        result = scorer.score(reference, prediction)
        row: dict[str, float] = {}
        for kind in ROUGE_TYPES:
            row[f"{kind}_f1"] = float(result[kind].fmeasure)
            row[f"{kind}_recall"] = float(result[kind].recall)
        out.append(row)
    return out


def _bootstrap_mid(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    scorer, aggregator = _scorer(), scoring.BootstrapAggregator()
    for prediction, reference in zip(predictions, references, strict=True):
        aggregator.add_scores(scorer.score(reference, prediction))
    result = aggregator.aggregate()
    out: dict[str, float] = {}
    for kind in ROUGE_TYPES:
        out[f"{kind}_f1"] = float(result[kind].mid.fmeasure)
        out[f"{kind}_recall"] = float(result[kind].mid.recall)
    return out


def rouge_scores(predictions: Sequence[str], references: Sequence[str], *, bootstrap: bool = False) -> dict[str, float]:
    """ROUGE-1/2/L F1 and recall over paired strings, stemmed, as fractions in [0, 1].

    Default: the mean over pairs (OFA's validation numbers, divided by 100). ``bootstrap=True``: the
    ``BootstrapAggregator`` "mid" values that OFA's ``eval_rouge.py`` prints. An empty input gives zeros.
    """
    _check_lengths(predictions, references)
    keys = [f"{kind}_{part}" for kind in ROUGE_TYPES for part in ("f1", "recall")]
    if not predictions:
        return dict.fromkeys(keys, 0.0)
    if bootstrap:
        return _bootstrap_mid(predictions, references)
    rows = rouge_pair_scores(predictions, references)
    return {key: sum(row[key] for row in rows) / len(rows) for key in keys}


# ---------------------------------------------------------------------------------------------- re-tokenisation
class _Retokenizer:
    """One left-to-right pass over whitespace tokens, as OFA's ``fix_tokenization`` does it.

    The state is the output so far, the position, whether a ``"`` / ``'`` quote is open, and whether the
    previous step glued a ``-`` onto the last output token (so the next word joins it: ``a - b`` -> ``a-b``).
    """

    def __init__(self, text: str) -> None:
        self.tokens = text.split()
        self.out: list[str] = []
        self.i = 0
        self.double_open = False
        self.single_open = False
        self.after_dash = False

    def peek(self, ahead: int) -> str | None:
        """The input token ``ahead`` places after the current one, or None past the end."""
        j = self.i + ahead
        return self.tokens[j] if j < len(self.tokens) else None

    def run(self) -> str:
        while self.i < len(self.tokens):
            glued_dash = self.step(self.tokens[self.i])
            self.after_dash = glued_dash
        return " ".join(self.out)

    def emit(self, token: str, consumed: int = 1) -> bool:
        self.out.append(token)
        self.i += consumed
        return False

    def step(self, tok: str) -> bool:
        """Handle the token at ``self.i``; returns True when it left a dangling ``-`` to join onto."""
        if tok in _PTB_SYMBOLS:
            return self.emit(_PTB_SYMBOLS[tok])
        if tok == '"':
            self.double_open = not self.double_open
            return self.emit("``" if self.double_open else "''")
        if tok == "'":
            return self.apostrophe()
        if tok == "." and self.peek(1) == "." and self.peek(2) == ".":
            return self.emit("...", consumed=3)
        if tok in (",", ".") and self.merge_number(tok):
            return False
        if tok == "." and self.acronym():
            return False
        if tok == "-":
            return self.dash()
        if self.after_dash and self.out and tok[0] not in _PUNCTUATION:
            self.out[-1] += tok
            self.i += 1
            return False
        return self.emit(tok)

    def apostrophe(self) -> bool:
        """``do n ' t`` -> ``do n't``; ``it ' s`` -> ``it 's`` (also ``'d``, ``'ll``); else a ` or ' quote."""
        nxt = self.peek(1)
        if self.out and self.out[-1].endswith("n") and nxt == "t":
            self.out[-1] = self.out[-1][:-1]  # a bare "n" leaves an empty token, as in the original
            return self.emit("n't", consumed=2)
        if nxt in _CLITICS:
            return self.emit("'" + nxt, consumed=2)
        self.single_open = not self.single_open
        return self.emit("`" if self.single_open else "'")

    def merge_number(self, tok: str) -> bool:
        """``3 , 000`` -> ``3,000`` and ``3 . 03`` -> ``3.03`` (glued onto the previous output token)."""
        nxt, last = self.peek(1), (self.out[-1] if self.out else None)
        if nxt is None or last is None:
            return False
        if tok == ",":
            ok = _digits_and_commas(last) and _digits_and_commas(nxt)
        else:
            ok = last.isdigit() and nxt.isdigit()
        if ok:
            self.out[-1] += tok + nxt
            self.i += 2
        return ok

    def acronym(self) -> bool:
        """``U . N .`` -> ``U.N.`` followed by a separate ``.``, exactly as the original.

        The original glues tokens ``i .. k-1`` onto the letter but then advances only two tokens, so the
        final dot is read again and emitted on its own. Its extension loop looks one token past each letter,
        so it only grows on letter pairs (``U . N . X Y .``). Everything is lower-cased before this runs in
        OFA's pipeline, so in practice the rule never fires; it is kept for fidelity.
        """
        last, nxt, after = (self.out[-1] if self.out else ""), self.peek(1), self.peek(2)
        if not (_single_upper(last) and nxt is not None and _single_upper(nxt) and after == "."):
            return False
        k = self.i + 3
        while k + 2 < len(self.tokens) and _single_upper(self.tokens[k + 1]) and self.tokens[k + 2] == ".":
            k += 2
        self.out[-1] += "".join(self.tokens[self.i : k])
        self.i += 2
        return True

    def dash(self) -> bool:
        """``- -`` -> ``--``; a word-internal ``-`` joins its neighbours (``state - of`` -> ``state-of``)."""
        nxt = self.peek(1)
        if nxt == "-":
            return self.emit("--", consumed=2)
        if nxt is None or self.i == 0:
            return self.emit("-")
        # ``in string.punctuation`` on the last output token is a substring test, as in the original
        if self.out[-1] not in _PUNCTUATION and nxt[0] not in _PUNCTUATION:
            self.out[-1] += "-"
            self.i += 1
            return True
        return self.emit("-")


def _digits_and_commas(token: str) -> bool:
    return all(ch.isdigit() or ch == "," for ch in token)


def _single_upper(token: str) -> bool:
    return len(token) == 1 and token.isupper()


def fix_tokenization(text: str) -> str:
    """Re-tokenise a detokenised summary into the PTB style of the Gigaword references.

    Behaviour of OFA's ``fix_tokenization`` (``tasks/nlg_tasks/gigaword.py``), on whitespace tokens, left to
    right: brackets -> ``-lrb-``/``-rrb-``/``-lsb-``/``-rsb-``/``-lcb-``/``-rcb-``; ``&``, ``<``, ``>`` -> HTML
    entities; ``[UNK]`` -> ``UNK``; a double quote alternates between two backticks (opening) and two
    apostrophes (closing); an apostrophe before ``t`` after a word ending in ``n`` -> ``n't``, before
    ``s``/``d``/``ll`` -> ``'s``/``'d``/``'ll``, otherwise it alternates between one backtick and one apostrophe;
    ``. . .`` -> ``...``; number parts split by ``,``/``.`` are re-joined; ``- -`` -> ``--``; a ``-``
    between two non-punctuation tokens joins them; single capital letters with dots become an acronym (see
    ``_Retokenizer.acronym`` for the original's quirk). Tokens are re-joined with single spaces.
    """
    return _Retokenizer(text).run()
