"""Dataset families by name: what a run trains on and what its probes see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comm_repro.config import ConfigError, require
from comm_repro.data import trifeatures as tf
from comm_repro.data.paired import PairedBank
from comm_repro.evaluate import ProbeData


def _trifeature_split(data_dir: Path, split: str, cfg: dict[str, Any]) -> tf.TrifeatureSplit:
    loaded = tf.load_split(data_dir, split)
    size = int(require(cfg, "resolution", "datasets.<name>"))
    loaded.images = tf.downsample(loaded.images, size)
    return loaded


def _trifeature_pairing(cfg: dict[str, Any]) -> bool:
    pairing = require(cfg, "pairing", "datasets.<name>")
    if pairing not in ("biased", "unbiased"):
        raise ConfigError(f"datasets.<name>.pairing must be biased or unbiased, got {pairing!r}")
    return pairing == "biased"


def trifeature_pretrain_data(data_dir: Path, cfg: dict[str, Any]) -> PairedBank:
    split = _trifeature_split(data_dir, "train", cfg)
    pairs = tf.make_pairs(
        split,
        biased=_trifeature_pairing(cfg),
        max_pairs=int(cfg["max_train_pairs"]),
        seed=int(cfg["pairing_seed"]),
    )
    return PairedBank.from_numpy([split.images, split.images], pairs)


def trifeature_probe_data(data_dir: Path, cfg: dict[str, Any]) -> ProbeData:
    """Probes always use unbiased pairs, as in the paper: the synergy label is then rare (~10 %)
    and balanced accuracy tells whether the mapping was learned."""
    mapping = tf.synergy_mapping(int(cfg["generator_seed"]))
    tasks = cfg.get("probe_tasks", list(tf.TASKS))
    unknown = sorted(set(tasks) - set(tf.TASKS))
    if unknown or not tasks:
        raise ConfigError(
            f"datasets.<name>.probe_tasks must be a non-empty subset of {list(tf.TASKS)}, "
            f"got {tasks}"
        )
    banks, labels = {}, {}
    train_pairs = int(require(cfg, "probe_train_pairs", "datasets.<name>"))
    for split_name, max_pairs in (("train", train_pairs), ("test", None)):
        split = _trifeature_split(data_dir, split_name, cfg)
        pairs = tf.make_pairs(
            split, biased=False, max_pairs=max_pairs, seed=int(cfg["pairing_seed"])
        )
        banks[split_name] = PairedBank.from_numpy([split.images, split.images], pairs)
        every_task = tf.task_labels(split, pairs, mapping)
        labels[split_name] = {t: every_task[t] for t in tf.TASKS if t in tasks}
    return ProbeData(banks["train"], banks["test"], labels["train"], labels["test"])


FAMILIES = {
    "trifeatures": {
        "modalities": ["image", "image"],
        "pretrain": trifeature_pretrain_data,
        "probe": trifeature_probe_data,
    },
}


def family(dataset_cfg: dict[str, Any]) -> dict[str, Any]:
    name = dataset_cfg.get("family")
    if name not in FAMILIES:
        raise ConfigError(
            f"datasets.{dataset_cfg.get('name')}.family is {name!r}; known: {sorted(FAMILIES)}"
        )
    return FAMILIES[name]
