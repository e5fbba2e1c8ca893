"""Typed configuration sections and the command line generated from them, with OFA's flag names.

Each section is a dataclass; every field becomes ``--field-name`` (underscores to dashes), which is how
fairseq/OFA spell the same settings, so an OFA recipe's flags carry over. Booleans get ``--x`` and
``--no-x``. A flag left out keeps the section's default (``None`` on the command line means "not given").
Unknown flags are errors; a handful of OFA flags that have no effect here are accepted and reported.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import logging
import types
import typing
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

# OFA/fairseq flags that recipes pass but that change nothing here (the behaviour is built in or moot).
IGNORED_OFA_FLAGS = {
    "--user-dir": 1,
    "--log-format": 1,
    "--find-unused-parameters": 0,
    "--required-batch-size-multiple": 1,
    "--ddp-backend-legacy": 0,
    "--fp16-no-flatten-grads": 0,
    "--memory-efficient-fp16": 0,
    "--no-progress-bar": 0,
    "--distributed-world-size": 1,
    "--distributed-port": 1,
    "--distributed-no-spawn": 0,
    "--cpu-offload": 0,
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of an annotation such as ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return tp, False


def _parse_value(kind: Any, name: str):
    def parse(text: str):
        if kind is bool:
            raise argparse.ArgumentTypeError("booleans are flags")
        if kind in (int, float):
            # fairseq writes some numbers as one-element lists ("--lr 1e-5" but also "[1e-5]")
            stripped = text.strip().strip("[]")
            try:
                return kind(float(stripped)) if kind is int and "e" in stripped.lower() else kind(stripped)
            except ValueError as err:
                raise argparse.ArgumentTypeError(f"{flag(name)} expects a number, got {text!r}") from err
        if typing.get_origin(kind) is tuple:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as err:
                raise argparse.ArgumentTypeError(
                    f"{flag(name)} expects a tuple like (0.9,0.999), got {text!r}"
                ) from err
            return tuple(float(v) for v in value)
        return text

    return parse


def add_section(parser: argparse.ArgumentParser, cls: type, title: str, seen: set[str]) -> None:
    """Add every field of dataclass ``cls`` as a flag; a name already added by another section is shared."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in seen:
            continue
        seen.add(f.name)
        kind, _ = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if kind is bool:
            group.add_argument(flag(f.name), dest=f.name, action="store_true", default=None, help=help_text)
            group.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", default=None)
        else:
            choices = f.metadata.get("choices")
            group.add_argument(
                flag(f.name),
                dest=f.name,
                type=_parse_value(kind, f.name),
                default=None,
                choices=choices,
                help=help_text,
            )


def strip_ignored(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Remove OFA flags that have no effect here; return (remaining argv, removed flags)."""
    out, removed, i = [], [], 0
    argv = list(argv)
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in IGNORED_OFA_FLAGS:
            removed.append(name)
            takes = IGNORED_OFA_FLAGS[name] and "=" not in argv[i]
            i += 1 + int(bool(takes))
            continue
        out.append(argv[i])
        i += 1
    return out, removed


def fill(cls: type, values: dict[str, Any], base: Any | None = None) -> Any:
    """An instance of ``cls``: ``base`` (or the defaults) updated with the non-None entries of ``values``."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in values.items() if k in names and v is not None}
    if base is not None:
        return dataclasses.replace(base, **given)
    return cls(**given)


def parse_strict(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, whose unknown-flag error names the closest known flags (a misspelt flag)."""
    values, unknown = parser.parse_known_args(argv)
    if unknown:
        known = [name for name in parser._option_string_actions if name.startswith("--")]
        hints = []
        for item in unknown:
            close = difflib.get_close_matches(item.split("=", 1)[0], known, n=2) if item.startswith("--") else []
            hints.append(f"{item} (did you mean {' or '.join(close)}?)" if close else item)
        parser.error(f"unrecognized arguments: {' '.join(hints)}")
    return values
