"""Name -> (class, config dataclass) registries for tasks and criterions (OFA's registration names).

A component registers itself with ``@REGISTRY.register("name", ConfigClass)``; the command line and the
checkpoint's saved config refer to it by that name. Unknown or duplicate names raise with the known names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    config: type


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config: type) -> Callable[[type], type]:
        def wrap(cls: type) -> type:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({self._entries[name].cls} and {cls})")
            self._entries[name] = Entry(name, cls, config)
            cls.registry_name = name
            return cls

        return wrap

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {sorted(self._entries)}")
        return self._entries[name]

    def build(self, name: str, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        return self.get(name).cls(cfg, *args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
