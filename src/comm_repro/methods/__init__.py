"""Methods by name. Adding one is a file here plus an entry in METHODS and in the config."""

from __future__ import annotations

from typing import Any

from comm_repro.augment import ViewTransforms
from comm_repro.config import ConfigError
from comm_repro.methods.base import Method
from comm_repro.methods.comm import CoMM
from comm_repro.methods.cross import Cross
from comm_repro.methods.cross_self import CrossSelf

METHODS: dict[str, type[Method]] = {"comm": CoMM, "cross": Cross, "cross_self": CrossSelf}


def build_method(kind: str, cfg: dict[str, Any], transforms: list[ViewTransforms]) -> Method:
    if kind not in METHODS:
        raise ConfigError(f"methods.*.kind {kind!r} is unknown; known: {sorted(METHODS)}")
    return METHODS[kind](cfg, transforms)


__all__ = ["METHODS", "CoMM", "Cross", "CrossSelf", "Method", "build_method"]
