"""OFA models: configuration, presets, the network, and loading/saving fairseq-format checkpoints.

Public entry points:
- ``from_pretrained(path, ema=False)``: an OFA checkpoint (original or written here) -> model in eval mode,
  with ``model.cfg`` (OFAConfig) and ``model.task_args`` (the checkpoint's stored task settings).
- ``save_pretrained(model, path, ...)``: write the same fairseq dict layout OFA-era tooling reads.
- ``build_model(cfg)``, ``get_preset(name)``, ``PRESETS``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from models.checkpoint_compat import upgrade_state_dict
from models.config import OFAConfig
from models.ofa import OFAModel, build_model
from models.presets import PRESETS, get_preset
from utils.checkpoint import (
    build_checkpoint,
    load_checkpoint_file,
    model_args_from_checkpoint,
    save_checkpoint_file,
    state_dict_from_checkpoint,
)

__all__ = [
    "OFAConfig",
    "OFAModel",
    "PRESETS",
    "build_model",
    "from_pretrained",
    "get_preset",
    "save_pretrained",
]

logger = logging.getLogger(__name__)


def config_from_checkpoint(ckpt: dict[str, Any], **overrides: Any) -> OFAConfig:
    """The model configuration stored in a checkpoint: its arch preset, updated by the stored arguments."""
    args = model_args_from_checkpoint(ckpt)
    arch = args.get("arch") or args.get("_name")
    base = get_preset(arch) if arch in PRESETS else OFAConfig()
    if arch not in PRESETS:
        logger.warning("checkpoint arch %r is not a known preset; building it from its stored arguments", arch)
    cfg = OFAConfig.from_ofa_args(args, base)
    return cfg.replace(**overrides) if overrides else cfg


def task_args_from_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    cfg = ckpt.get("cfg") or {}
    task = cfg.get("task") if isinstance(cfg, dict) else None
    return dict(task) if isinstance(task, dict) else dict(model_args_from_checkpoint(ckpt))


def from_pretrained(
    path: str | Path, ema: bool = False, device: str | torch.device = "cpu", **overrides: Any
) -> OFAModel:
    """Load an OFA checkpoint (original or ours) safely and return the model in eval mode.

    ``ema=True`` takes the EMA weights from ``extra_state["ema"]`` (OFA's ``--ema-eval``). ``overrides``
    replace stored model settings (e.g. ``dropout=0.1`` for fine-tuning).
    """
    ckpt = load_checkpoint_file(path)
    cfg = config_from_checkpoint(ckpt, **overrides)
    model = build_model(cfg)
    try:
        state = upgrade_state_dict(model, state_dict_from_checkpoint(ckpt, ema=ema))
    except ValueError as err:  # keys or shapes that do not fit the configuration stored beside them
        raise ValueError(f"{path}: {err}") from None
    model.load_state_dict(state, strict=True)
    model.task_args = task_args_from_checkpoint(ckpt)
    return model.to(device).eval()


def save_pretrained(
    model: OFAModel,
    path: str | Path,
    task_args: dict[str, Any] | None = None,
    **checkpoint_fields: Any,
) -> None:
    """Write ``model`` as a fairseq-layout checkpoint (``cfg["model"]`` an argparse.Namespace of OFA args)."""
    task_args = dict(task_args if task_args is not None else getattr(model, "task_args", {}) or {})
    ckpt = build_checkpoint(
        model.state_dict(),
        model.cfg.to_ofa_args(),
        task_args,
        arch=model.cfg.arch,
        task_name=task_args.get("_name"),
        **checkpoint_fields,
    )
    save_checkpoint_file(ckpt, path)
