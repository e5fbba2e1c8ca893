"""COCO caption evaluation, as OFA's ``run_scripts/caption/coco_eval.py`` reports final caption results.

Reproduces what pycocoevalcap's ``COCOEvalCap.evaluate`` does for the predicted images: the Stanford PTB tokenizer
(Java; lower-cases and drops punctuation tokens) over references and candidates, then BLEU-1..4, METEOR 1.5 (Java),
ROUGE-L and CIDEr (pycocoevalcap's CIDEr, i.e. CIDEr-D with corpus document frequencies). The scorers are
pycocoevalcap's own. SPICE is skipped: it needs Stanford CoreNLP models downloaded on first use, and nothing may be
downloaded here. The METEOR Java process is shut down before returning.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

SPICE_NOTE = "SPICE skipped: it needs Stanford CoreNLP models downloaded on first use, and nothing is downloaded here"


def _require_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError(
            "coco_caption_scores needs Java: pycocoevalcap's PTB tokenizer and METEOR run as Java programs, but no "
            "'java' executable is on PATH (install a Java runtime, e.g. openjdk-17-jre-headless)"
        )


def _checked(gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, str]) -> list[Hashable]:
    if not res:
        raise ValueError("res is empty: nothing to score")
    for key, caption in res.items():
        if not isinstance(caption, str):
            raise ValueError(f"res[{key!r}] must be the candidate caption (a str)")
        refs = gts.get(key)
        if refs is None or isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"gts[{key!r}] must be a non-empty list of reference captions")
    return list(res)


def _tokenize(
    ids: list[Hashable], gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, str]
) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """PTB-tokenise references and candidates separately, as ``COCOEvalCap`` does."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts_tok = tokenizer.tokenize({i: [{"caption": c} for c in gts[i]] for i in ids})
    res_tok = tokenizer.tokenize({i: [{"caption": res[i]}] for i in ids})
    for name, tokenized in (("references", gts_tok), ("candidates", res_tok)):
        if list(tokenized) != ids:
            raise RuntimeError(f"PTB tokenizer returned {len(tokenized)} of {len(ids)} {name} groups")
    return gts_tok, res_tok


def _close_meteor(meteor: Any) -> None:
    """Stop the METEOR Java process now instead of whenever the wrapper is garbage-collected."""
    proc = meteor.meteor_p
    with meteor.lock:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _meteor(gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]]) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(gts, res)
    finally:
        _close_meteor(meteor)
    return float(score)


def coco_caption_scores(
    gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, str], *, ptb_tokenize: bool = True
) -> dict[str, float]:
    """``Bleu_1..4``, ``METEOR``, ``ROUGE_L`` and ``CIDEr`` of one candidate caption per id against its references.

    ``gts`` maps an id to its raw reference captions and ``res`` maps the same id to the candidate (ids of ``gts``
    absent from ``res`` are ignored, like images without a prediction in ``coco_eval.py``). With
    ``ptb_tokenize=False`` the captions are taken as already tokenised. Raises RuntimeError if Java is missing.
    """
    _require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = _checked(gts, res)
    if ptb_tokenize:
        gts_tok, res_tok = _tokenize(ids, gts, res)
    else:
        gts_tok, res_tok = {i: list(gts[i]) for i in ids}, {i: [res[i]] for i in ids}
    scores: dict[str, float] = {}
    bleus, _ = Bleu(4).compute_score(gts_tok, res_tok, verbose=0)
    for k, value in enumerate(bleus, start=1):
        scores[f"Bleu_{k}"] = float(value)
    scores["METEOR"] = _meteor(gts_tok, res_tok)
    scores["ROUGE_L"] = float(Rouge().compute_score(gts_tok, res_tok)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts_tok, res_tok)[0])
    logger.info(SPICE_NOTE)
    return scores
