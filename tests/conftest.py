"""Shared fixtures: a tiny study config and a small prepared Trifeature set."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

TINY_CONFIG = {
    "seeds": [0],
    "datasets": {
        "trifeatures": {
            "family": "trifeatures",
            "generator_seed": 42,
            "resolution": 64,
            "pairing": "unbiased",
            "pairing_seed": 42,
            "max_train_pairs": 96,
            "probe_train_pairs": 300,
        },
        "trifeatures_synergy": {
            "family": "trifeatures",
            "generator_seed": 42,
            "resolution": 64,
            "pairing": "biased",
            "pairing_seed": 42,
            "max_train_pairs": 96,
            "probe_train_pairs": 300,
        },
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
    },
    "model": {
        "encoder": "alexnet",
        "embed_dim": 32,
        "heads": 2,
        "layers": 1,
        "mlp_ratio": 2,
        "head_hidden": 32,
        "head_out": 16,
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
    "probe": {
        "C_grid": [0.01, 1.0, 100.0],
        "holdout_fraction": 0.4,
        "max_iter": 200,
        "class_weight": "balanced",
        "batch_size": 128,
    },
}


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
