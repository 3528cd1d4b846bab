"""Methods by name. Adding one is a file here plus an entry in METHODS and in the config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from comm_repro.config import ConfigError
from comm_repro.methods.base import Method
from comm_repro.methods.cmc import CMC
from comm_repro.methods.comm import CoMM
from comm_repro.methods.cross import Cross
from comm_repro.methods.cross_self import CrossSelf

METHODS: dict[str, type[Method]] = {
    "comm": CoMM,
    "cross": Cross,
    "cross_self": CrossSelf,
    "cmc": CMC,
}


def build_method(run_cfg: dict[str, Any], shapes: Sequence[Sequence[int]]) -> Method:
    """The method of a run, from its resolved settings, for modalities of the sample
    ``shapes`` the data has (without the batch axis)."""
    kind = run_cfg["method"]["kind"]
    if kind not in METHODS:
        raise ConfigError(f"methods.*.kind {kind!r} is unknown; known: {sorted(METHODS)}")
    cfg = {**run_cfg["model"], **run_cfg["method"]}
    return METHODS[kind](cfg, run_cfg["dataset"]["modalities"], shapes)


__all__ = ["CMC", "METHODS", "CoMM", "Cross", "CrossSelf", "Method", "build_method"]
