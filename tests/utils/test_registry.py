from __future__ import annotations

from dataclasses import dataclass

import pytest

from utils.registry import Registry


@dataclass
class _Cfg:
    x: int = 1


def test_register_build_and_errors():
    reg = Registry("widget")

    @reg.register("plain", _Cfg)
    class Plain:
        def __init__(self, cfg, extra=None):
            self.cfg, self.extra = cfg, extra

    built = reg.build("plain", _Cfg(3), extra="e")
    assert built.cfg.x == 3 and built.extra == "e" and Plain.registry_name == "plain"
    assert reg.get("plain").config is _Cfg and "plain" in reg and reg.names() == ["plain"]
    with pytest.raises(KeyError, match=r"unknown widget 'fancy'; known: \['plain'\]"):
        reg.get("fancy")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("plain", _Cfg)(Plain)
