"""Criterion registry, construction by name, and aggregation of criterion logging outputs.

Reproduces two pieces of OFA's training glue: criterions are looked up by their registered OFA name
(``--criterion=adjust_label_smoothed_cross_entropy``), and the per-batch logging dicts they return are
summed across batches/workers and turned into the numbers printed in the training log, as OFA's
``AdjustLabelSmoothedCrossEntropyCriterion.reduce_metrics`` does.

OFA's own ``reduce_metrics`` differs from stock fairseq's: ``loss`` and ``nll_loss`` are reported in
**nats** (no division by ln 2), ``nll_loss`` is divided by ``sample_size`` (not ``ntokens``), and ``ppl``
is still ``2 ** nll_loss`` (fairseq's ``get_perplexity``). ``reduce_logs`` reproduces that by default so
our logs can be compared line by line with OFA's; ``base2=True`` gives stock fairseq's base-2 numbers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any

import torch
from torch import nn

from utils.registry import Registry

CRITERIONS = Registry("criterion")


def build_criterion(name: str, cfg: Any = None, padding_idx: int = 1, eos_idx: int = 2, task: Any = None) -> nn.Module:
    """Instantiate the criterion registered as ``name``.

    ``cfg`` is an instance of the criterion's config dataclass, ``None`` (all defaults) or a mapping of
    config fields (e.g. a checkpoint's ``cfg["criterion"]``; its ``_name`` key is ignored). ``task`` is
    passed on only to criterions whose constructor takes a ``task`` argument (SCST needs its tokenizer).
    """
    entry = CRITERIONS.get(name)
    if cfg is None:
        cfg = entry.config()
    elif isinstance(cfg, Mapping):
        known = {f.name for f in fields(entry.config)}
        values = {k: v for k, v in cfg.items() if k != "_name"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"criterion {name!r} has no option(s) {unknown}; known: {sorted(known)}")
        cfg = entry.config(**values)
    elif not (is_dataclass(cfg) and isinstance(cfg, entry.config)):
        raise TypeError(f"criterion {name!r} needs a {entry.config.__name__}, got {type(cfg).__name__}")
    extra = {"task": task} if task is not None and "task" in inspect.signature(entry.cls).parameters else {}
    return CRITERIONS.build(name, cfg, padding_idx=padding_idx, eos_idx=eos_idx, **extra)


def _as_float(value: Any) -> float | None:
    """Numeric logging values (python numbers or one-element tensors) as float; anything else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().item())
    return None


def _sum_logs(logs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for log in logs:
        for key, value in log.items():
            number = _as_float(value)
            if number is not None:
                totals[key] = totals.get(key, 0.0) + number
    return totals


def _ratio(num: float, den: float) -> float:
    # an interval without target tokens has no defined loss; nan rather than a ZeroDivisionError
    return num / den if den else float("nan")


def reduce_logs(logs: Iterable[Mapping[str, Any]], *, base2: bool = False) -> dict[str, float]:
    """Sum criterion logging dicts and derive the logged metrics.

    Every numeric key is summed (``ntokens``, ``nsentences``, ``sample_size``, ``sample_size_v1/v2``,
    ``n_correct``, ``total``, ...). Then, as in OFA's ``reduce_metrics`` (natural log, the default):
    ``loss = sum(loss) / sample_size``, ``nll_loss = sum(nll_loss) / sample_size``, ``ppl = 2 ** nll_loss``;
    for pretraining batches ``loss_v1/v2 = sum(loss_v1/v2) / max(sample_size_v1/v2, 1)``; with
    ``report_accuracy`` ``accuracy = 100 * n_correct / total``. The pair entries are left out when both pair
    sample sizes are 0, and ``n_correct``/``total`` when ``total`` is 0 (the trainer sums them as zeros).
    With ``base2=True`` (stock fairseq): ``loss = sum(loss) / sample_size / ln 2`` and
    ``nll_loss = sum(nll_loss) / ntokens / ln 2`` (bits), ``ppl = 2 ** nll_loss``.
    """
    out = _sum_logs(logs)
    for key in ("loss", "nll_loss", "ntokens", "nsentences", "sample_size"):
        out.setdefault(key, 0.0)
    scale = math.log(2) if base2 else 1.0
    loss_sum, nll_sum = out["loss"], out["nll_loss"]
    out["loss"] = _ratio(loss_sum, out["sample_size"]) / scale
    out["nll_loss"] = _ratio(nll_sum, out["ntokens"] if base2 else out["sample_size"]) / scale
    try:
        out["ppl"] = 2.0 ** out["nll_loss"]
    except OverflowError:
        out["ppl"] = float("inf")
    if out.get("sample_size_v1", 0.0) or out.get("sample_size_v2", 0.0):
        for part in ("v1", "v2"):
            if f"loss_{part}" in out:
                out[f"loss_{part}"] /= max(out.get(f"sample_size_{part}", 0.0), 1.0) * scale
    else:  # no pretraining pair among the logs (the trainer sums these keys as zeros for every criterion)
        for key in ("loss_v1", "loss_v2", "sample_size_v1", "sample_size_v2"):
            out.pop(key, None)
    if out.get("total", 0.0) > 0:
        out["accuracy"] = 100.0 * out.get("n_correct", 0.0) / out["total"]
    else:
        out.pop("n_correct", None)
        out.pop("total", None)
    if "score" in out:  # SCST: summed CIDEr of the hypotheses, logged per hypothesis as OFA does
        out["score"] = _ratio(out["score"], out["nsentences"])
    return out
