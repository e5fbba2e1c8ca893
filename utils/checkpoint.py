"""Read and write OFA / fairseq checkpoint files without arbitrary unpickling.

Reproduces the layout OFA's trainer writes (fairseq f34abcf ``Trainer.state_dict`` via
``torch_persistent_save``, spec section 1.11): keys ``TOP_LEVEL_KEYS``, ``cfg["model"]`` an
``argparse.Namespace`` with every CLI argument, ``cfg["task"]`` a plain dict, EMA weights in
``extra_state["ema"]``; old files with a top-level ``args`` Namespace and no ``cfg`` are read too.

Loading uses ``torch.load(weights_only=True)`` plus an allow-list. fairseq/omegaconf are not installed:
``omegaconf`` DictConfig/ListConfig/value nodes/metadata, ``collections.defaultdict`` and the
``fairseq.dataclass.constants`` choice enums are read through local stand-ins registered under their
original names and turned into plain dicts/lists/strings afterwards. Any other global (``os.system``,
``builtins.eval``, unknown classes) is refused with :class:`UnsafeCheckpointError` before unpickling.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import copy
import errno
import importlib
import logging
import os
import pickletools
import re
import tempfile
import typing
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import torch

logger = logging.getLogger(__name__)

# Key order of the dict written by fairseq's Trainer.state_dict (checked against ckpt_small.pt).
TOP_LEVEL_KEYS = (
    "args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state",
    "last_optimizer_state",
)  # fmt: skip
# Sections of fairseq's FairseqConfig, in the order OmegaConf.to_container emits them.
CFG_SECTIONS = (
    "_name", "common", "common_eval", "distributed_training", "dataset", "optimization", "checkpoint",
    "bmuf", "generation", "eval_lm", "interactive", "model", "task", "criterion", "optimizer",
    "lr_scheduler", "scoring", "bpe", "tokenizer", "ema", "simul_type",
)  # fmt: skip
# Sections whose unset value is None rather than a dataclass dict (bpe/tokenizer are optional choices).
_NONE_SECTIONS = ("_name", "bpe", "tokenizer", "simul_type")
# What OFA's train loop passes as extra_state for a fresh run.
_DEFAULT_EXTRA_STATE = {
    "train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
    "val_loss": None,
}
# Task options that OFAModel/encoder/decoder read from the model Namespace (they come from the task
# dataclass, which in the cfg layout is stored separately in cfg["task"]).
MODEL_TASK_FIELDS = (
    "patch_image_size", "orig_patch_image_size", "code_dict_size", "num_bins", "max_source_positions",
    "max_target_positions", "code_image_size",
)  # fmt: skip
_FAIRSEQ_CHOICE_ENUMS = (
    "Choices", "StrEnum", "LOG_FORMAT_CHOICES", "DDP_BACKEND_CHOICES", "DDP_COMM_HOOK_OPTIONS",
    "DATASET_IMPL_CHOICES", "DISTRIBUTED_WRAPPER_CHOICES", "GENERATION_CONSTRAINTS_CHOICES",
    "GENERATION_DECODING_FORMAT_CHOICES", "ZERO_SHARDING_CHOICES", "PIPELINE_CHECKPOINT_CHOICES",
    "PRINT_ALIGNMENT_CHOICES",
)  # fmt: skip
_OMEGACONF_NODES = (
    "ValueNode", "AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode",
    "EnumNode", "InterpolationResultNode",
)  # fmt: skip
# Globals torch's weights_only unpickler accepts by itself (besides torch.* which it checks itself).
_TORCH_DEFAULT_GLOBALS = frozenset({
    "collections.OrderedDict", "collections.Counter", "_codecs.encode", "builtins.set", "builtins.bytearray",
    "builtins.complex",
})  # fmt: skip


class UnsafeCheckpointError(RuntimeError, ValueError):
    """The file references a global outside the allow-list, so it is refused before unpickling.

    Also a ``ValueError`` (the file's content is refused), so the command lines report it in one line, like
    any other bad input.
    """


class CorruptCheckpointError(ValueError):
    """The file exists but is not a readable PyTorch checkpoint dict."""


class _OmegaConfStub:
    """Keeps the pickled ``__dict__`` of an omegaconf object; omegaconf pickles plain instance state."""

    def __setstate__(self, state: Any) -> None:
        # Pickle may hand over (dict_state, slot_state); omegaconf only uses the first.
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if isinstance(state, dict):
            self.__dict__.update(state)


class _ContainerStub(_OmegaConfStub):
    """DictConfig/ListConfig: ``_content`` is a dict or list of nodes, None, or a "???"/"${..}" string."""


class _NodeStub(_OmegaConfStub):
    """An omegaconf value node; its value is ``_val``."""


def _fairseq_choice(value: Any = None, *_: Any) -> Any:
    """Rebuilds a fairseq ChoiceEnum member as its value, which equals its name (``enum_to_str``)."""
    return value


def _defaultdict_as_dict(*_: Any) -> dict:
    """Reads ``collections.defaultdict`` as a plain dict (the factory is not needed after loading)."""
    return {}


def _numpy_globals() -> list[Any]:
    """numpy scalars/arrays/dtypes as they appear in old fairseq metric and ``best`` values."""
    try:
        import numpy as np
    except ImportError:  # numpy is optional for loading; such files then fail as unsafe
        return []
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
    entries: list[Any] = [np.dtype, np.ndarray]
    # numpy 1.x writers reference numpy.core.*, numpy 2.x writers numpy._core.*; accept both names.
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [
            (multiarray.scalar, f"{prefix}.scalar"),
            (multiarray._reconstruct, f"{prefix}._reconstruct"),
        ]
    dtypes = getattr(np, "dtypes", None)  # BUILD on a dtype checks its concrete DType class
    if dtypes is not None:
        entries += [c for c in vars(dtypes).values() if isinstance(c, type) and issubclass(c, np.dtype)]
    return entries


@lru_cache(maxsize=1)
def _safe_globals() -> tuple[Any, ...]:
    """Everything a legitimate OFA/fairseq checkpoint may reference, in torch's safe_globals form."""
    entries: list[Any] = [argparse.Namespace, (_defaultdict_as_dict, "collections.defaultdict")]
    entries += [(t, f"builtins.{t.__name__}") for t in (dict, list, tuple, str, int, float, bool)]
    entries += [(getattr(typing, n), f"typing.{n}") for n in ("Any", "Dict", "List", "Tuple")]
    entries += [(_ContainerStub, "omegaconf.dictconfig.DictConfig")]
    entries += [(_ContainerStub, "omegaconf.listconfig.ListConfig")]
    entries += [(_OmegaConfStub, f"omegaconf.base.{n}") for n in ("Metadata", "ContainerMetadata")]
    entries += [(_NodeStub, f"omegaconf.nodes.{n}") for n in _OMEGACONF_NODES]
    entries += [(_fairseq_choice, f"fairseq.dataclass.constants.{n}") for n in _FAIRSEQ_CHOICE_ENUMS]
    return tuple(entries + _numpy_globals())


@lru_cache(maxsize=1)
def _allowed_names() -> frozenset[str]:
    names = {e[1] if isinstance(e, tuple) else f"{e.__module__}.{e.__qualname__}" for e in _safe_globals()}
    return frozenset(names | _TORCH_DEFAULT_GLOBALS)


def _global_name(module: str, name: str) -> str:
    # Python-2 era pickles say e.g. "__builtin__ dict"; map them the way pickle (and torch) does.
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _pickle_globals(stream: BinaryIO, count: int) -> set[str]:
    """Names of all globals in the next ``count`` pickles of ``stream``, without executing anything."""
    found: set[str] = set()
    strings: list[str] = []
    try:
        for _ in range(count):
            for op, arg, _pos in pickletools.genops(stream):
                if op.name == "GLOBAL":
                    found.add(_global_name(*str(arg).split(" ", 1)))
                elif op.name == "STACK_GLOBAL":  # protocol >= 4: name comes from the two last strings
                    found.add(".".join(strings[-2:]) if len(strings) >= 2 else "<unnamed STACK_GLOBAL>")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception as err:  # a malformed stream is reported by torch.load itself later
        logger.debug("pickle scan stopped early: %s", err)
    return found


def _globals_in_file(path: Path) -> set[str]:
    """Globals of a zip checkpoint's data.pkl, or of the leading pickles of the legacy format."""
    if zipfile.is_zipfile(path):
        found: set[str] = set()
        try:  # every data.pkl, so a crafted archive cannot hide its real pickle behind a decoy
            with zipfile.ZipFile(path) as archive:
                for name in (n for n in archive.namelist() if n.endswith("data.pkl")):
                    with archive.open(name) as stream:
                        found |= _pickle_globals(stream, 1)  # type: ignore[arg-type]
        except (zipfile.BadZipFile, OSError, EOFError):
            logger.debug("zip scan of %s failed", path)
        return found
    with open(path, "rb") as stream:
        # Legacy torch.save: magic number, protocol, sys info, then the object pickle.
        return _pickle_globals(stream, 4)


def _unsafe_error(path: Path, refused: Iterable[str]) -> UnsafeCheckpointError:
    names = ", ".join(sorted(refused))
    return UnsafeCheckpointError(
        f"{path}: refused to unpickle global(s) {names}; this is not a checkpoint this project will "
        "unpickle (only tensors, containers, argparse.Namespace, numpy scalars and stand-ins for "
        "fairseq/omegaconf config classes are allowed)"
    )


def _torch_reason(err: BaseException) -> str:
    """The part of torch's (long, multi-line) weights_only message that says what actually failed."""
    text = str(err).split("Check the documentation of torch.load")[0]
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed"):
        text = text.split("\n", 1)[-1]  # drop the generic "re-run with weights_only=False" advice
    return (" ".join(text.split()) or repr(err))[:300]


def _refused_in_message(reason: str) -> list[str]:
    """Globals named in a refusal raised by torch's unpickler (the fallback to the pre-scan)."""
    names = re.findall(r"GLOBAL ([\w.]+)", reason)
    names += re.findall(r"(?:unrecognized function|add_safe_globals`,? but got) (<[^>]+>|\S+)", reason)
    return names


def _to_plain(obj: Any, seen: set[int]) -> Any:
    """Replaces stand-in objects by plain dicts/lists/values, in place where containers allow it."""
    if isinstance(obj, _ContainerStub):
        content = obj.__dict__.get("_content")
        if isinstance(content, dict):
            return {k: _to_plain(v, seen) for k, v in content.items()}
        if isinstance(content, list):
            return [_to_plain(v, seen) for v in content]
        return content  # None, "???" (missing) or an unresolved "${...}" interpolation string
    if isinstance(obj, _NodeStub):
        return _to_plain(obj.__dict__.get("_val"), seen)
    if isinstance(obj, _OmegaConfStub):  # metadata: only seen if a caller pickled it on its own
        return {k: _to_plain(v, seen) for k, v in vars(obj).items() if k != "_parent"}
    if isinstance(obj, torch.Tensor) or id(obj) in seen:
        return obj
    if isinstance(obj, dict | list | argparse.Namespace):
        seen.add(id(obj))  # memoised pickles can share or even nest containers
        items = vars(obj) if isinstance(obj, argparse.Namespace) else obj
        for key in list(items.keys()) if isinstance(items, dict) else range(len(items)):
            items[key] = _to_plain(items[key], seen)
        return obj
    if type(obj) is tuple:  # exact tuples only: torch.Size and namedtuples keep their type
        return tuple(_to_plain(v, seen) for v in obj)
    return obj


def load_checkpoint_file(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """Loads an OFA/fairseq checkpoint dict with torch's restricted unpickler and the allow-list."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, f"no checkpoint file at {path}", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory, not a checkpoint file", str(path))
    # torch.* names are left to torch's own unpickler, which allows only its rebuild/storage/dtype names.
    refused = sorted(n for n in _globals_in_file(path) if n not in _allowed_names() and n[:6] != "torch.")
    if refused:
        raise _unsafe_error(path, refused)
    with torch.serialization.safe_globals(list(_safe_globals())):
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises many types here; callers get one clear error instead
            reason = _torch_reason(err)
            logger.debug("torch.load(%s) failed", path, exc_info=True)
            named = _refused_in_message(reason)
            if named:
                raise _unsafe_error(path, named) from None
            raise CorruptCheckpointError(f"{path} is not a readable PyTorch checkpoint: {reason}") from None
    if not isinstance(obj, dict):
        raise CorruptCheckpointError(f"{path} is a PyTorch file but holds {type(obj).__name__}, not a dict")
    return _to_plain(obj, set())


def _as_dict(section: Any) -> dict[str, Any]:
    items = vars(section) if isinstance(section, argparse.Namespace) else section
    return copy.deepcopy(dict(items)) if isinstance(items, Mapping) else {}


def model_args_from_checkpoint(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The model's stored arguments: ``args`` (old layout) if set, else ``cfg["model"]``.

    Like fairseq's loader, a non-None ``args`` wins (fairseq rebuilds cfg from it). In the cfg layout
    the task options the model reads (``MODEL_TASK_FIELDS``) are filled from ``cfg["task"]`` when the
    model section lacks them, as OFA's model builder expects them in one Namespace.
    """
    if ckpt.get("args") is not None:
        args = _as_dict(ckpt["args"])
        if "max_positions" in args and "max_source_positions" not in args:  # fairseq's old-file upgrade
            args["max_source_positions"] = args["max_target_positions"] = args["max_positions"]
        return args
    cfg = ckpt.get("cfg")
    if not isinstance(cfg, Mapping) or cfg.get("model") is None:
        raise ValueError(
            "checkpoint holds neither args (old layout) nor cfg['model'] (fairseq >= 0.10 layout); "
            f"its top-level keys are {sorted(map(str, ckpt.keys()))}"
        )
    args, task = _as_dict(cfg["model"]), _as_dict(cfg.get("task"))
    args.update({n: task[n] for n in MODEL_TASK_FIELDS if n in task and n not in args})
    return args


def state_dict_from_checkpoint(ckpt: Mapping[str, Any], ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights, or with ``ema=True`` the EMA weights (``--ema-eval``), fp16 cast to fp32."""
    if not ema:
        if ckpt.get("model") is None:
            raise ValueError("checkpoint has no 'model' state dict")
        return ckpt["model"]
    extra = ckpt.get("extra_state")
    weights = extra.get("ema") if isinstance(extra, Mapping) else None
    if not weights:
        raise ValueError(
            "checkpoint has no EMA weights: extra_state['ema'] is missing or empty "
            "(the model was not trained with --store-ema); load it with ema=False"
        )
    # fairseq's load_ema_from_checkpoint upcasts half tensors; any low-precision float gets fp32 here.
    return OrderedDict(
        (k, v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in weights.items()
    )


def _build_cfg(
    model_args: Mapping[str, Any],
    task_args: Mapping[str, Any] | None,
    arch: str,
    task_name: str | None,
) -> dict[str, Any]:
    """fairseq's cfg dict: model as a Namespace with every argument, other sections plain dicts."""
    cfg: dict[str, Any] = {n: None if n in _NONE_SECTIONS else {"_name": None} for n in CFG_SECTIONS}
    task = {"_name": task_name, **dict(task_args or {})}
    if task_name is not None:
        task["_name"] = task_name
    cfg["task"] = task
    # OFA builds the model from this one Namespace, so task options ride along (model args win).
    merged = {k: v for k, v in task.items() if k != "_name"}
    merged.update(model_args)
    merged.update(_name=arch, arch=arch)
    cfg["model"] = argparse.Namespace(**merged)
    return cfg


def build_checkpoint(
    model_state: Mapping[str, torch.Tensor],
    model_args: Mapping[str, Any],
    task_args: Mapping[str, Any] | None = None,
    *,
    arch: str,
    task_name: str | None = None,
    criterion_name: str | None = None,
    optimizer_name: str | None = None,
    optimizer_state: dict | None = None,
    lr_scheduler_state: dict | None = None,
    num_updates: int = 0,
    extra_state: dict | None = None,
    sections: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint dict in the layout OFA's trainer writes (see ``TOP_LEVEL_KEYS``).

    ``sections`` fills other ``cfg`` sections (``optimization``, ``checkpoint``, ``criterion``, ...) with the
    resolved training configuration, as plain dicts.
    """
    state = model_state if isinstance(model_state, OrderedDict) else OrderedDict(model_state)
    history = {
        "criterion_name": criterion_name,
        "optimizer_name": optimizer_name,
        # fairseq's lr schedulers save {"best": ...} and read that key back on resume.
        "lr_scheduler_state": lr_scheduler_state if lr_scheduler_state is not None else {"best": None},
        "num_updates": num_updates,
    }
    # The trainer always prepends its meters and elapsed time to the caller's extra state.
    extra: dict[str, Any] = {"metrics": OrderedDict(), "previous_training_time": 0.0}
    extra.update(copy.deepcopy(_DEFAULT_EXTRA_STATE) if extra_state is None else extra_state)
    cfg = _build_cfg(model_args, task_args, arch, task_name)
    for name, values in (sections or {}).items():
        if name in ("model", "task"):
            raise ValueError(f"cfg section {name!r} is built from model_args/task_args, not sections")
        cfg[name] = dict(values)
    return {
        "args": None,
        "cfg": cfg,
        "model": state,
        "criterion": None,
        "optimizer_history": [history],
        "task_state": {},
        "extra_state": extra,
        "last_optimizer_state": optimizer_state,
    }


class _RecordingWriter:
    """A binary stream that remembers the OSError of a failed write: torch.save reports such a failure only as
    an opaque ``RuntimeError`` ("unexpected pos ..."), losing "No space left on device"."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.error = stream, None

    def write(self, data: bytes) -> int:
        try:
            return self.stream.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.stream.flush()


def _write_error(path: Path, err: BaseException) -> OSError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())[:200]
    number = err.errno if isinstance(err, OSError) and err.errno else errno.EIO
    return OSError(
        number, f"could not write checkpoint {path}: {reason}; the previous {path.name} (if any) is unchanged"
    )


def save_checkpoint_file(ckpt: Mapping[str, Any], path: str | Path) -> None:
    """Writes ``ckpt`` with ``torch.save`` atomically: temp file in the same dir, fsync, rename.

    A failed write (disk full, quota, file size limit, permissions) raises ``OSError`` naming the file and the
    reason, and leaves the previous file at ``path`` as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _write_error(path, err) from None
    writer = _RecordingWriter(os.fdopen(handle, "wb"))
    try:
        with writer.stream:
            torch.save(dict(ckpt), writer)
            writer.flush()
            os.fsync(writer.stream.fileno())
        os.replace(tmp_name, path)
    except (OSError, RuntimeError) as err:
        Path(tmp_name).unlink(missing_ok=True)
        raise _write_error(path, writer.error or err) from err
    except BaseException:
        # Never leave a half-written temp file behind (including on KeyboardInterrupt).
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("saved checkpoint %s", path)
