"""CIDEr-D, as OFA scores caption validation and the SCST reward.

Reproduces OFA's vendored ``utils/cider/pyciderevalcap/ciderD`` (``CiderD`` + ``CiderScorer``), which is also what
pycocoevalcap's ``Cider`` computes:

* n-grams of 1..n words of the whitespace-split, already tokenised sentences;
* tf-idf weights ``tf * (log_ref_len - log(max(1, df)))``, where ``df`` counts the reference *groups* (one per
  scored item) that contain the n-gram and ``log_ref_len`` is the log of the number of groups;
* per n-gram order, a clipped cosine: ``sum(min(w_hyp, w_ref) * w_ref) / (|hyp| |ref|)`` times the Gaussian length
  penalty ``exp(-delta**2 / (2 sigma**2))``. ``delta`` is the difference of the two sentences' *bigram* counts, as
  the original counts the length while visiting bigrams (that is words - 1, so it only departs from a word-count
  difference when a sentence is empty);
* the mean over the n orders, averaged over the references and multiplied by 10.

Document frequencies either come from the references given to each call (``df="corpus"``) or from OFA's cached
pickle (``coco-train-words.p``, ``coco-valid-words.p``): a dict ``{"document_frequency": {ngram_tuple: count},
"ref_len": number_of_reference_documents}``; the scorer uses ``log(float(ref_len))``. Those references were
tokenised with ``" <eos>"`` appended to each caption, which is why OFA's SCST appends it to the sentences it scores.
The pickle is read with an unpickler that only admits plain containers and numbers.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

NGram = tuple[str, ...]
DfTable = dict[str, Any]

# (module, name) pairs a document-frequency pickle may reference; "__builtin__" is Python 2's name for builtins
_SAFE_GLOBALS = frozenset(
    {
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "str"),
        ("builtins", "float"),
        ("builtins", "int"),
        ("collections", "defaultdict"),
    }
)


class _DfUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_SAFE_GLOBALS`` and refuses every other one."""

    def find_class(self, module: str, name: str) -> Any:
        canonical = "builtins" if module == "__builtin__" else module
        if (canonical, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a CIDEr-D document-frequency pickle: only dict, tuple, "
                "str, float, int and collections.defaultdict are allowed"
            )
        return super().find_class(module, name)


def load_df_table(path: str | Path) -> DfTable:
    """Read an OFA document-frequency pickle (``coco-*-words.p``) with the restricted unpickler and check it."""
    data = Path(path).read_bytes()
    # latin1 lets byte strings of Python 2 pickles come back as str, as the original loader does
    table = _DfUnpickler(io.BytesIO(data), encoding="latin1").load()
    return _check_df_table(table, source=str(path))


def _check_df_table(table: Any, source: str) -> DfTable:
    if not isinstance(table, Mapping) or "document_frequency" not in table or "ref_len" not in table:
        raise ValueError(f"{source}: expected a dict with keys 'document_frequency' and 'ref_len'")
    freqs = table["document_frequency"]
    if not isinstance(freqs, Mapping):
        raise ValueError(f"{source}: 'document_frequency' must map n-gram tuples to counts")
    ref_len = table["ref_len"]
    if isinstance(ref_len, bool) or not isinstance(ref_len, int | float) or not ref_len > 0:
        raise ValueError(f"{source}: 'ref_len' must be a positive number of reference documents, got {ref_len!r}")
    return {"document_frequency": freqs, "ref_len": ref_len}


def ngram_counts(sentence: str, n: int = 4) -> dict[NGram, int]:
    """Counts of every 1..n-gram of the whitespace-split sentence, shorter n-grams first, then by position."""
    words = sentence.split()
    counts: dict[NGram, int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def document_frequencies(reference_groups: Iterable[Sequence[str]], n: int = 4) -> dict[NGram, float]:
    """Number of reference groups in which each n-gram appears (each group counts once per n-gram)."""
    freqs: dict[NGram, float] = {}
    for refs in reference_groups:
        seen: set[NGram] = set()
        for ref in refs:
            seen.update(ngram_counts(ref, n))
        for gram in seen:
            freqs[gram] = freqs.get(gram, 0.0) + 1.0
    return freqs


def build_df_table(gts: Mapping[Hashable, Sequence[str]], n: int = 4) -> DfTable:
    """A document-frequency table in OFA's pickle layout, built from one reference group per id."""
    return {"document_frequency": document_frequencies(gts.values(), n), "ref_len": float(len(gts))}


class _Vector:
    """tf-idf weights of one sentence, split by n-gram order, with their norms and the bigram count."""

    __slots__ = ("weights", "norms", "length")

    def __init__(self, counts: Mapping[NGram, int], freqs: Mapping[NGram, float], log_ref_len: float, n: int):
        self.weights: list[dict[NGram, float]] = [{} for _ in range(n)]
        squares = [0.0] * n
        self.length = 0
        for gram, tf in counts.items():
            order = len(gram) - 1
            weight = float(tf) * (log_ref_len - np.log(max(1.0, freqs.get(gram, 0.0))))
            self.weights[order][gram] = weight
            squares[order] += weight**2
            if order == 1:
                self.length += tf
        self.norms = [np.sqrt(s) for s in squares]


def _similarity(hyp: _Vector, ref: _Vector, n: int, sigma: float) -> np.ndarray:
    """Clipped, length-penalised cosine similarity for each n-gram order."""
    delta = float(hyp.length - ref.length)
    penalty = np.e ** (-(delta**2) / (2 * sigma**2))
    val = np.zeros(n)
    for order in range(n):
        ref_weights = ref.weights[order]
        for gram, weight in hyp.weights[order].items():
            ref_weight = ref_weights.get(gram, 0.0)
            val[order] += min(weight, ref_weight) * ref_weight
        if hyp.norms[order] != 0 and ref.norms[order] != 0:
            val[order] /= hyp.norms[order] * ref.norms[order]
        if math.isnan(val[order]):
            raise FloatingPointError("CIDEr-D similarity is NaN")
        val[order] *= penalty
    return val


class CiderD:
    """OFA's CIDEr-D scorer (``n=4``, ``sigma=6``; clipped, Gaussian length penalty, times 10).

    ``df`` is ``"corpus"`` (or ``None``) to take document frequencies from the references of each call, like
    pycocoevalcap's ``Cider``; a path to OFA's cached pickle; or a dict in that pickle's layout. Unlike OFA's wrapper,
    which never hands ``sigma`` to its scorer (so 6.0 always applies), a non-default ``sigma`` is honoured here.
    """

    def __init__(self, n: int = 4, sigma: float = 6.0, df: str | Path | Mapping[str, Any] | None = "corpus"):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.sigma = float(sigma)
        self.df_mode = "corpus" if df is None or (isinstance(df, str) and df == "corpus") else "cached"
        self._freqs: Mapping[NGram, float] | None = None
        self._log_ref_len: float | None = None
        if self.df_mode == "cached":
            table = _check_df_table(df, source="df dict") if isinstance(df, Mapping) else load_df_table(df)
            self._freqs = table["document_frequency"]
            self._log_ref_len = float(np.log(float(table["ref_len"])))

    def compute_score(
        self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
    ) -> tuple[float, np.ndarray]:
        """Mean CIDEr-D and the per-id scores, in the order of ``res``'s keys.

        ``res`` maps each id to a one-element list holding the candidate; ``gts`` maps it to its reference
        sentences (ids of ``gts`` absent from ``res`` are ignored). Sentences are already tokenised.
        """
        pairs = paired_inputs(gts, res)
        cooked = [(ngram_counts(hyp, self.n), [ngram_counts(r, self.n) for r in refs]) for hyp, refs in pairs]
        if self._freqs is None:
            freqs: Mapping[NGram, float] = _cooked_frequencies(refs for _, refs in cooked)
            log_ref_len = float(np.log(float(len(cooked))))
        else:
            freqs, log_ref_len = self._freqs, float(self._log_ref_len or 0.0)
        scores = np.array([self._score_one(hyp, refs, freqs, log_ref_len) for hyp, refs in cooked], dtype=np.float64)
        return float(np.mean(scores)), scores

    def _score_one(
        self, hyp: Mapping[NGram, int], refs: list[dict[NGram, int]], freqs: Mapping[NGram, float], log_ref_len: float
    ) -> float:
        hyp_vec = _Vector(hyp, freqs, log_ref_len, self.n)
        total = np.zeros(self.n)
        for ref in refs:
            total += _similarity(hyp_vec, _Vector(ref, freqs, log_ref_len, self.n), self.n, self.sigma)
        return float(np.mean(total) / len(refs) * 10.0)

    def method(self) -> str:
        return "CIDEr-D"


def _cooked_frequencies(groups: Iterable[list[dict[NGram, int]]]) -> dict[NGram, float]:
    freqs: dict[NGram, float] = {}
    for refs in groups:
        for gram in {g for ref in refs for g in ref}:
            freqs[gram] = freqs.get(gram, 0.0) + 1.0
    return freqs


def paired_inputs(
    gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
) -> list[tuple[str, list]]:
    """(candidate, references) for each id of ``res``, checking the shapes pycocoevalcap asserts."""
    if not res:
        raise ValueError("res is empty: nothing to score")
    pairs = []
    for key, hyp in res.items():
        if isinstance(hyp, str) or len(hyp) != 1:
            raise ValueError(f"res[{key!r}] must be a one-element list holding the candidate sentence")
        if key not in gts:
            raise KeyError(f"id {key!r} of res has no references in gts")
        refs = gts[key]
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"gts[{key!r}] must be a non-empty list of reference sentences")
        pairs.append((hyp[0], list(refs)))
    return pairs
