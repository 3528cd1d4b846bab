"""Study configuration: YAML files, command-line overrides, and the per-run view of them.

A study config (``config/config.yaml``) names datasets, methods, seeds and the shared training,
augmentation and probe settings. A *run* needs only one dataset and one method: ``run_config``
cuts that slice out and fills method settings from their defaults, and the result is stored
beside the run's outputs so a run can be probed or resumed without the study file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from comm_repro.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the key."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``cfg`` with ``dotted.key=value`` overrides applied (values parsed as YAML)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return cfg


def _section(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"config key {key!r} is missing or is not a mapping")
    return value


def run_config(cfg: dict[str, Any], dataset: str, method: str, seed: int) -> dict[str, Any]:
    """The resolved settings of one (dataset, method, seed) run."""
    datasets = _section(cfg, "datasets")
    methods = _section(cfg, "methods")
    if dataset not in datasets:
        raise ConfigError(f"datasets.{dataset}: unknown dataset; configured: {sorted(datasets)}")
    if method not in methods:
        raise ConfigError(f"methods.{method}: unknown method; configured: {sorted(methods)}")
    method_cfg = dict(methods[method] or {})
    kind = method_cfg.pop("kind", method)
    return {
        "dataset": {"name": dataset, **copy.deepcopy(datasets[dataset])},
        "method": {"name": method, "kind": kind, **copy.deepcopy(method_cfg)},
        "model": copy.deepcopy(_section(cfg, "model")),
        "train": copy.deepcopy(_section(cfg, "train")),
        "augment": copy.deepcopy(_section(cfg, "augment")),
        "probe": copy.deepcopy(_section(cfg, "probe")),
        "seed": int(seed),
    }


def require(section: dict[str, Any], key: str, where: str) -> Any:
    """A mandatory setting; the error names ``where.key`` so the user can find it."""
    if key not in section:
        raise ConfigError(f"config key {where}.{key} is required")
    return section[key]
