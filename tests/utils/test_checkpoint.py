"""Tests for utils/checkpoint.py: fairseq-layout checkpoints, restricted unpickling, atomic saves.

Golden tests read the checkpoint written by the original OFA trainer (``ckpt_small.pt``). fairseq and
omegaconf are imitated by throwaway classes/modules that pickle the way the real ones do.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import random
import subprocess
import sys
import types
import typing
import zipfile
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import checkpoint as ckpt_mod
from utils.checkpoint import (
    CFG_SECTIONS,
    TOP_LEVEL_KEYS,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    build_checkpoint,
    load_checkpoint_file,
    model_args_from_checkpoint,
    save_checkpoint_file,
    state_dict_from_checkpoint,
)

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden"
CKPT_SMALL = GOLDEN / "ckpt_small.pt"
needs_golden = pytest.mark.skipif(not CKPT_SMALL.is_file(), reason=f"golden fixture {CKPT_SMALL} not present")


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_checkpoint_file(CKPT_SMALL)


@needs_golden
def test_golden_loads_with_namespace_cfg(golden: dict) -> None:
    assert list(golden) == list(TOP_LEVEL_KEYS)
    assert isinstance(golden["cfg"]["model"], argparse.Namespace)
    assert golden["cfg"]["task"]["_name"] == "caption"
    assert tuple(golden["cfg"]) == CFG_SECTIONS


@needs_golden
def test_golden_model_args_and_state_dict(golden: dict) -> None:
    args = model_args_from_checkpoint(golden)
    assert isinstance(args, dict) and args["encoder_embed_dim"] == 64 and args["patch_image_size"] == 64
    assert args["resnet_type"] == "resnet18"
    assert args["_name"] == "ofa_tiny" and args["arch"] == "ofa_tiny"
    args["encoder_embed_dim"] = 1  # the result is a copy, not a view into the checkpoint
    assert golden["cfg"]["model"].encoder_embed_dim == 64
    state = state_dict_from_checkpoint(golden)
    assert len(state) == 299
    assert state["decoder.image_position_idx"].dtype == torch.int64
    with pytest.raises(ValueError, match="EMA"):
        state_dict_from_checkpoint(golden, ema=True)


@needs_golden
def test_golden_round_trip(golden: dict, tmp_path: Path) -> None:
    model_args = {k: v for k, v in vars(golden["cfg"]["model"]).items() if k not in ("_name", "arch")}
    task_args = {k: v for k, v in golden["cfg"]["task"].items() if k != "_name"}
    built = build_checkpoint(
        golden["model"], model_args, task_args, arch="ofa_tiny", task_name="caption",
        criterion_name="AdjustLabelSmoothedCrossEntropyCriterion", optimizer_name="FairseqAdam",
        optimizer_state=golden["last_optimizer_state"],
    )  # fmt: skip
    path = tmp_path / "out" / "checkpoint_last.pt"
    save_checkpoint_file(built, path)
    loaded = load_checkpoint_file(path)
    assert list(loaded) == list(golden)
    assert list(loaded["cfg"]) == list(golden["cfg"])
    assert vars(loaded["cfg"]["model"]) == vars(golden["cfg"]["model"])
    assert loaded["cfg"]["task"] == golden["cfg"]["task"]
    history = [list(h.items()) for h in golden["optimizer_history"]]
    assert [list(h.items()) for h in loaded["optimizer_history"]] == history
    assert list(loaded["extra_state"]) == list(golden["extra_state"])
    assert list(loaded["model"]) == list(golden["model"])
    for key, value in golden["model"].items():
        assert loaded["model"][key].dtype == value.dtype and torch.equal(loaded["model"][key], value), key
    assert model_args_from_checkpoint(loaded) == model_args_from_checkpoint(golden)


def _synthetic_state() -> OrderedDict:
    tied = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    state = OrderedDict(embed=tied, out_proj=tied, fc=torch.randn(4, 5).half(), bn=torch.randn(5).bfloat16())
    state.update(steps=torch.tensor(3), bucket=torch.arange(12).view(3, 4), mask=torch.tensor([True, False]))
    return state


def test_round_trip_bit_identical(tmp_path: Path) -> None:
    state = _synthetic_state()
    built = build_checkpoint(
        state, {"encoder_embed_dim": 3}, {"patch_image_size": 480, "num_bins": 1000}, arch="ofa_base",
        task_name="vqa_gen", criterion_name="C", optimizer_name="O", num_updates=17,
    )  # fmt: skip
    path = tmp_path / "a" / "b" / "ckpt.pt"
    save_checkpoint_file(built, path)
    for loaded in (load_checkpoint_file(path), torch.load(path, weights_only=False)):
        assert list(loaded) == list(TOP_LEVEL_KEYS)
        assert tuple(loaded["cfg"]) == CFG_SECTIONS
        for key, value in state.items():
            assert loaded["model"][key].dtype == value.dtype and torch.equal(loaded["model"][key], value)
        assert loaded["model"]["embed"].data_ptr() == loaded["model"]["out_proj"].data_ptr()  # still tied
        assert loaded["optimizer_history"][0]["num_updates"] == 17
    args = model_args_from_checkpoint(load_checkpoint_file(path))
    assert args["_name"] == args["arch"] == "ofa_base"
    assert args["patch_image_size"] == 480 and args["encoder_embed_dim"] == 3


def test_build_checkpoint_layout() -> None:
    first = build_checkpoint({}, {"dropout": 0.1}, arch="ofa_tiny", task_name="caption")
    second = build_checkpoint({}, {"dropout": 0.1}, arch="ofa_tiny")
    assert first["args"] is first["criterion"] is first["last_optimizer_state"] is None
    assert first["task_state"] == {}
    assert first["cfg"]["task"] == {"_name": "caption"} and second["cfg"]["task"] == {"_name": None}
    assert first["cfg"]["bpe"] is None and first["cfg"]["common"] == {"_name": None}
    assert first["extra_state"]["train_iterator"] == {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True}
    assert first["extra_state"]["val_loss"] is None
    first["extra_state"]["train_iterator"]["epoch"] = 5  # defaults must not be shared between calls
    assert second["extra_state"]["train_iterator"]["epoch"] == 1
    assert first["optimizer_history"][0]["lr_scheduler_state"] == {"best": None}
    custom = build_checkpoint({}, {}, arch="x", extra_state={"ema": {}, "best": 1.0})
    assert custom["extra_state"]["best"] == 1.0 and "train_iterator" not in custom["extra_state"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_old_args_layout(tmp_path: Path, legacy: bool) -> None:
    ns = argparse.Namespace(arch="ofa_base", encoder_embed_dim=768, patch_image_size=384, lr=[1e-4])
    path = tmp_path / "old.pt"
    ckpt = {"args": ns, "model": OrderedDict(w=torch.ones(2))}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    loaded = load_checkpoint_file(path)
    assert model_args_from_checkpoint(loaded) == vars(ns)
    assert torch.equal(state_dict_from_checkpoint(loaded)["w"], torch.ones(2))


def test_model_args_task_fields_and_errors() -> None:
    task = {"patch_image_size": 480, "num_bins": 1000}
    ckpt = {"cfg": {"model": {"_name": "ofa_large", "num_bins": 7}, "task": task}}
    args = model_args_from_checkpoint(ckpt)
    assert args["patch_image_size"] == 480 and args["num_bins"] == 7  # model args win over the task
    old = argparse.Namespace(arch="ofa_base", max_positions=512)  # fairseq prefers a non-None args
    args = model_args_from_checkpoint({**ckpt, "args": old})
    assert args["arch"] == "ofa_base" and args["max_source_positions"] == args["max_target_positions"] == 512
    for bad in ({"model": {}}, {"args": None, "cfg": {"model": None}}):
        with pytest.raises(ValueError, match="neither"):
            model_args_from_checkpoint(bad)


def test_ema_weights() -> None:
    ema = OrderedDict(w=torch.randn(3).half(), idx=torch.arange(3), b=torch.ones(2))
    ckpt = {"model": {"w": torch.zeros(3)}, "extra_state": {"ema": ema}}
    state = state_dict_from_checkpoint(ckpt, ema=True)
    assert state["w"].dtype == torch.float32 and torch.equal(state["w"], ema["w"].float())
    assert state["idx"].dtype == torch.int64 and state["b"].dtype == torch.float32
    assert torch.equal(state_dict_from_checkpoint(ckpt)["w"], torch.zeros(3))
    for bad in ({"model": {}}, {"model": {}, "extra_state": None}, {"model": {}, "extra_state": {"ema": {}}}):
        with pytest.raises(ValueError, match=r"extra_state\['ema'\]"):
            state_dict_from_checkpoint(bad, ema=True)
    with pytest.raises(ValueError, match="'model'"):
        state_dict_from_checkpoint({"extra_state": {}})


class _Payload:
    """Pickles as a call to ``func(*args)``: what a malicious checkpoint would run on load."""

    def __init__(self, func: typing.Callable, *args: typing.Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


class NotAllowedThing:
    """An ordinary class that is simply not on the allow-list."""


def _payloads(marker: Path) -> dict[str, tuple[object, str]]:
    return {
        "os.system": (_Payload(os.system, f"touch {marker}"), "system"),
        "builtins.eval": (_Payload(eval, f"__import__('os').system('touch {marker}')"), "eval"),
        "subprocess": (_Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        "unknown class": (NotAllowedThing(), "NotAllowedThing"),
    }


# "torch-only" skips the pre-scan, so torch's own weights_only refusal must still catch the payload.
@pytest.mark.parametrize("mode", ["zip", "legacy", "torch-only"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess", "unknown class"])
def test_malicious_pickle_refused(tmp_path: Path, kind: str, mode: str, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    payload, name = _payloads(marker)[kind]
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra_state": {"x": payload}}, path, _use_new_zipfile_serialization=mode != "legacy")
    if mode == "torch-only":
        monkeypatch.setattr(ckpt_mod, "_globals_in_file", lambda _path: set())
        name = "not a checkpoint this project will unpickle"  # torch names some globals differently
    before = set(torch.serialization.get_safe_globals())
    with pytest.raises(UnsafeCheckpointError, match=name) as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value) and "not a checkpoint this project will unpickle" in str(info.value)
    assert not marker.exists()
    assert set(torch.serialization.get_safe_globals()) == before  # the allow-list is only active while loading


def test_numpy_values_and_defaultdict(tmp_path: Path) -> None:
    extra = {
        "best": np.float64(0.25),
        "count": np.int64(3),
        "hist": np.arange(4.0),
        "d": defaultdict(list, a=[1]),
    }
    path = tmp_path / "np.pt"
    torch.save({"args": argparse.Namespace(arch="ofa_tiny"), "model": {}, "extra_state": extra}, path)
    loaded = load_checkpoint_file(path)["extra_state"]
    assert isinstance(loaded["best"], np.float64) and loaded["best"] == 0.25
    assert loaded["count"] == 3 and np.array_equal(loaded["hist"], np.arange(4.0))
    assert loaded["d"] == {"a": [1]} and type(loaded["d"]) is dict


def _claims(full_name: str) -> typing.Callable[[type], type]:
    """Gives a fake class the module/qualified name of the real one, so pickle writes that name."""

    def mark(cls: type) -> type:
        cls.__module__, cls.__qualname__ = full_name.rsplit(".", 1)
        return cls

    return mark


@_claims("omegaconf.base.Metadata")
@dataclasses.dataclass
class _FakeMetadata:
    """Like omegaconf.base.Metadata: a dataclass, pickled as its field dict."""

    ref_type: typing.Any
    object_type: typing.Any
    optional: bool
    key: typing.Any
    flags: dict = dataclasses.field(default_factory=dict)
    resolver_cache: dict = dataclasses.field(default_factory=lambda: defaultdict(dict))


@_claims("omegaconf.base.ContainerMetadata")
@dataclasses.dataclass
class _FakeContainerMetadata(_FakeMetadata):
    key_type: typing.Any = None
    element_type: typing.Any = None


class _FakeStateful:
    def __getstate__(self) -> dict:  # omegaconf drops its flags cache and pickles __dict__
        return {k: v for k, v in self.__dict__.items() if k != "_flags_cache"}


@_claims("omegaconf.nodes.AnyNode")
class _FakeAnyNode(_FakeStateful):
    def __init__(self, value: typing.Any, parent: typing.Any, key: typing.Any) -> None:
        meta = _FakeMetadata(ref_type=typing.Any, object_type=None, optional=True, key=key)
        self.__dict__.update(_val=value, _parent=parent, _metadata=meta, _flags_cache=None)


@_claims("omegaconf.nodes.EnumNode")
class _FakeEnumNode(_FakeAnyNode):
    def __init__(self, value: enum.Enum, parent: typing.Any, key: typing.Any) -> None:
        super().__init__(value, parent, key)
        self.__dict__["enum_type"] = type(value)


class _FakeContainer(_FakeStateful):
    """DictConfig/ListConfig: nodes in ``_content``, each pointing back at its parent container."""

    def __init__(self, content: typing.Any, parent: typing.Any = None, key: typing.Any = None) -> None:
        meta = _FakeContainerMetadata(typing.Any, None, True, key, key_type=typing.Any, element_type=typing.Any)
        self.__dict__.update(_metadata=meta, _parent=parent, _flags_cache={})
        items = content.items() if isinstance(content, dict) else enumerate(content)
        wrapped = {k: _fake_node(v, self, k) for k, v in items}
        self.__dict__["_content"] = wrapped if isinstance(content, dict) else list(wrapped.values())


_FakeDictConfig = _claims("omegaconf.dictconfig.DictConfig")(type("DictConfig", (_FakeContainer,), {}))
_FakeListConfig = _claims("omegaconf.listconfig.ListConfig")(type("ListConfig", (_FakeContainer,), {}))
# fairseq's ChoiceEnum members pickle as a call of their class with the value.
_FakeChoices = enum.Enum("Choices", {"c10d": "c10d", "no_c10d": "no_c10d"}, module="fairseq.dataclass.constants")
_FAKE_CLASSES = [_FakeMetadata, _FakeContainerMetadata, _FakeAnyNode, _FakeEnumNode, _FakeDictConfig]
_FAKE_CLASSES += [_FakeListConfig, _FakeChoices]


def _fake_node(value: typing.Any, parent: typing.Any, key: typing.Any) -> typing.Any:
    if isinstance(value, dict | list):
        return (_FakeDictConfig if isinstance(value, dict) else _FakeListConfig)(value, parent, key)
    return (_FakeEnumNode if isinstance(value, enum.Enum) else _FakeAnyNode)(value, parent, key)


def _install_fake_omegaconf(monkeypatch) -> None:
    """Registers the fakes' modules in sys.modules (pickle looks classes up there by name)."""
    for cls in _FAKE_CLASSES:
        parts = cls.__module__.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in sys.modules:
                monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        setattr(sys.modules[cls.__module__], cls.__qualname__, cls)


def test_omegaconf_and_fairseq_stubs(tmp_path: Path, monkeypatch) -> None:
    _install_fake_omegaconf(monkeypatch)
    cfg = _FakeDictConfig(
        {"_name": None, "common": {"seed": 1, "fp16": False}, "optimization": {"lr": [1e-5]},
         "distributed_training": {"ddp_backend": _FakeChoices.c10d}, "checkpoint": {"save_dir": "???"},
         "model": argparse.Namespace(_name="ofa_tiny", encoder_embed_dim=64), "bpe": None,
         "task": {"_name": "caption", "patch_image_size": 480, "nested": [{"a": 1}, [2, 3]]}}
    )  # fmt: skip
    path = tmp_path / "hydra.pt"
    torch.save({"args": None, "cfg": cfg, "model": OrderedDict(w=torch.ones(1))}, path)
    names = {"omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.nodes.EnumNode"}
    assert names | {"fairseq.dataclass.constants.Choices", "typing.Any"} <= ckpt_mod._globals_in_file(path)
    monkeypatch.undo()  # the real packages are not installed: loading must not need them
    assert "omegaconf" not in sys.modules and "fairseq.dataclass.constants" not in sys.modules
    loaded = load_checkpoint_file(path)
    cfg = loaded["cfg"]
    assert type(cfg) is dict and cfg["common"] == {"seed": 1, "fp16": False}
    assert cfg["optimization"]["lr"] == [1e-5] and type(cfg["optimization"]["lr"]) is list
    assert cfg["distributed_training"]["ddp_backend"] == "c10d"
    assert cfg["checkpoint"]["save_dir"] == "???" and cfg["bpe"] is None
    assert cfg["task"]["nested"] == [{"a": 1}, [2, 3]] and isinstance(cfg["model"], argparse.Namespace)
    args = model_args_from_checkpoint(loaded)
    assert args["encoder_embed_dim"] == 64 and args["patch_image_size"] == 480


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    torch.save({"model": {"w": torch.randn(64, 64)}}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    files = {"random": random.Random(0).randbytes(4096), "truncated zip": data[: len(data) // 2],
             "empty": b"", "text": b"this is not a checkpoint\n"}  # fmt: skip
    paths = {name: tmp_path / f"{name.replace(' ', '_')}.pt" for name in files}
    for name, content in files.items():
        paths[name].write_bytes(content)
    paths["plain zip"] = tmp_path / "plain.zip"
    with zipfile.ZipFile(paths["plain zip"], "w") as archive:
        archive.writestr("hello.txt", "hi")
    return paths


@pytest.mark.parametrize("kind", ["random", "truncated zip", "empty", "text", "plain zip"])
def test_corrupt_file(tmp_path: Path, kind: str) -> None:
    path = _corrupt_files(tmp_path)[kind]
    with pytest.raises(CorruptCheckpointError, match="not a readable PyTorch checkpoint") as info:
        load_checkpoint_file(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no torch stack trace


def test_not_a_dict_missing_and_directory(tmp_path: Path) -> None:
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), tensor_file)
    with pytest.raises(CorruptCheckpointError, match="not a dict"):
        load_checkpoint_file(tensor_file)
    missing = tmp_path / "nope" / "missing.pt"
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint_file(missing)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_checkpoint_file(tmp_path)


def test_save_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint_file(build_checkpoint({"w": torch.ones(1)}, {}, arch="a"), path)
    save_checkpoint_file(build_checkpoint({"w": torch.zeros(1)}, {}, arch="a"), path)  # overwrite
    assert torch.equal(load_checkpoint_file(path)["model"]["w"], torch.zeros(1))
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises for an unpicklable object
        save_checkpoint_file({"model": {"w": torch.ones(1)}, "bad": lambda: None}, path)
    assert torch.equal(load_checkpoint_file(path)["model"]["w"], torch.zeros(1))  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp file left behind
