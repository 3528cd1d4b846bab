"""Methods by name. Adding one is a file here plus an entry in METHODS and in the config."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from comm_repro.config import ConfigError
from comm_repro.methods.base import Method
from comm_repro.methods.cmc import CMC
from comm_repro.methods.comm import CoMM
from comm_repro.methods.cross import Cross
from comm_repro.methods.cross_self import CrossSelf
from comm_repro.methods.factorcl import FactorCL
from comm_repro.methods.frozen_embeddings import FrozenEmbeddings
from comm_repro.methods.simclr import SimCLR
from comm_repro.methods.supcon import SupCon

METHODS: dict[str, type[Method]] = {
    "comm": CoMM,
    "cross": Cross,
    "cross_self": CrossSelf,
    "cmc": CMC,
    "factorcl": FactorCL,
    "supcon": SupCon,
    "simclr": SimCLR,
    "frozen_embeddings": FrozenEmbeddings,
}


def task_targets(
    tasks: Sequence[dict[str, Any]], label_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, dict[str, Any]]:
    """The dataset's tasks by name, each with ``dim``: its number of classes (2 for binary,
    the task's ``classes`` for multiclass) or of regression outputs (from the shape of its
    labels in ``label_shapes``, by label array); None where neither says."""
    shapes = label_shapes or {}
    out = {}
    for task in tasks:
        if task["kind"] == "binary":
            dim = 2
        elif task["kind"] == "multiclass":
            dim = task.get("classes")
        else:
            shape = shapes.get(task.get("labels", task["name"]))
            dim = None if shape is None else math.prod(shape)
        out[task["name"]] = {**task, "labels": task.get("labels", task["name"]), "dim": dim}
    return out


def build_method(
    run_cfg: dict[str, Any],
    shapes: Sequence[Sequence[int]],
    label_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Method:
    """The method of a run, from its resolved settings, for modalities of the sample
    ``shapes`` the data has (without the batch axis); ``label_shapes``: each label array's
    sample shape, for methods that train with labels."""
    kind = run_cfg["method"]["kind"]
    if kind not in METHODS:
        raise ConfigError(f"methods.*.kind {kind!r} is unknown; known: {sorted(METHODS)}")
    cfg = {**run_cfg["model"], **run_cfg["method"]}
    targets = task_targets(run_cfg["dataset"].get("tasks") or [], label_shapes)
    return METHODS[kind](cfg, run_cfg["dataset"]["modalities"], shapes, targets)


__all__ = [
    "CMC",
    "METHODS",
    "CoMM",
    "Cross",
    "CrossSelf",
    "FactorCL",
    "FrozenEmbeddings",
    "Method",
    "SimCLR",
    "SupCon",
    "build_method",
    "task_targets",
]
