"""Shared fixtures: a tiny study config and a small prepared Trifeature set."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

IMAGES = [{"name": "image1", "kind": "image"}, {"name": "image2", "kind": "image"}]
TRIFEATURE_TASKS = [
    {"name": "share", "kind": "multiclass"},
    {"name": "unique1", "kind": "multiclass"},
    {"name": "unique2", "kind": "multiclass"},
    {"name": "synergy", "kind": "binary"},
]


def _trifeatures(pairing: str) -> dict:
    return {
        "family": "trifeatures",
        "prepare": {"generator_seed": 42},
        "resolution": 64,
        "pairing": pairing,
        "pairing_seed": 42,
        "max_train_pairs": 96,
        "modalities": copy.deepcopy(IMAGES),
        "tasks": copy.deepcopy(TRIFEATURE_TASKS),
        "probe": {"max_train_samples": 300},
    }


TINY_CONFIG = {
    "datasets": {
        "trifeatures": _trifeatures("unbiased"),
        "trifeatures_synergy": _trifeatures("biased"),
    },
    "methods": {
        "comm": {"kind": "comm", "terms": "both", "reduce": "mean", "temperature": 0.1},
        "cross": {"kind": "cross", "proj_dim": 32},
        "cross_self": {
            "kind": "cross_self",
            "ssl_hidden": 64,
            "ssl_out": 32,
            "ssl_scale": 1.0,
            "temperature": 0.1,
        },
        "cmc": {"kind": "cmc", "proj_dim": 32, "temperature": 0.1},
    },
    "model": {
        "embed_dim": 32,
        "heads": 2,
        "layers": 1,
        "mlp_ratio": 2,
        "head_hidden": 32,
        "head_out": 16,
    },
    "encoders": {
        "image": {"name": "alexnet"},
        "sequence": {
            "name": "transformer",
            "dim": 16,
            "layers": 2,
            "heads": 2,
            "dim_feedforward": 32,
            "dropout": 0.1,
        },
    },
    "train": {
        "epochs": 3,
        "batch_size": 16,
        "lr": 3.0e-4,
        "weight_decay": 1.0e-4,
        "device": "cpu",
        "precision": "fp32",
    },
    "augment": {
        "image": {
            "strong": {
                "crop_scale": [0.08, 1.0],
                "jitter": [0.4, 0.4, 0.4, 0.1],
                "jitter_p": 0.8,
                "gray_p": 0.2,
                "blur_p": 0.5,
                "blur_sigma": [0.1, 2.0],
                "flip_p": 0.5,
            },
            "weak": {
                "crop_scale": [0.5, 1.0],
                "jitter_p": 0.0,
                "gray_p": 0.0,
                "blur_p": 0.0,
                "flip_p": 0.0,
            },
        },
        "sequence": {
            "strong": {"drop_p": 0.5, "drop_frac": [0.0, 0.8], "noise_p": 0.5, "noise_std": 0.1},
            "weak": {"drop_p": 0.0, "noise_p": 0.0},
        },
    },
    "probe": {
        "C_grid": [0.01, 1.0, 100.0],
        "holdout_fraction": 0.4,
        "max_iter": 200,
        "class_weight": "balanced",
        "batch_size": 128,
    },
}


def tiny_run(dataset: str = "trifeatures", method: str = "comm", seed: int = 0, **sections):
    """The resolved settings of one run of the tiny study (sections replaced by ``sections``)."""
    from comm_repro.config import run_config

    cfg = copy.deepcopy(TINY_CONFIG)
    cfg.update(sections)
    return run_config(cfg, dataset, method, seed)


@pytest.fixture
def tiny_config(tmp_path: Path) -> tuple[dict, Path]:
    cfg = copy.deepcopy(TINY_CONFIG)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, path


@pytest.fixture(scope="session")
def trifeature_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Trifeature set prepared by `comm-repro prepare`, one train image per combination."""
    from comm_repro.cli import main

    out = tmp_path_factory.mktemp("trifeatures")
    args = ["prepare", "trifeatures", "--out", str(out), "--num-per-combination", "1", "--quiet"]
    assert main(args) == 0
    return out


def pretrain_args(config, data, out, *extra: str, method: str = "cross", seed: int = 0) -> list:
    """`comm-repro pretrain` arguments for one run of the ``trifeatures`` dataset."""
    return [
        "pretrain", "--config", str(config), "--dataset", "trifeatures", "--method", method,
        "--seed", str(seed), "--data", str(data), "--out", str(out), *extra,
    ]  # fmt: skip
