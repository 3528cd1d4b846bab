"""Dataset families: how a dataset is prepared, and what its runs train and are probed on.

A family is an object with three methods (see :class:`Family`); the project's own are listed in
``FAMILIES``, and ``datasets.<name>.family: package.module:attribute`` names one defined
elsewhere, imported when a run needs it. A dataset's config declares its modalities (name,
kind) and tasks (name, kind, metric, labels); the family checks that its data provides them
and returns them in the declared order.
"""

from __future__ import annotations

import importlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from comm_repro.config import ConfigError
from comm_repro.data.paired import PairedBank


@dataclass
class ProbeData:
    """Frozen-feature probes: train (fitted), test (scored) and, where the dataset has one, a
    valid split on which the probe's C is chosen (else a hold-out of train is). ``encoded``:
    the modalities whose banks hold their encoder's outputs already (tokens, masks), not inputs
    (:func:`comm_repro.features.use_features`)."""

    train: PairedBank
    test: PairedBank
    train_labels: dict[str, np.ndarray]
    test_labels: dict[str, np.ndarray]
    valid: PairedBank | None = None
    valid_labels: dict[str, np.ndarray] = field(default_factory=dict)
    encoded: frozenset[int] = frozenset()


class Family(Protocol):
    def prepare(
        self,
        out_dir: Path,
        options: dict[str, Any],
        source: Path | None,
        download_to: str | None,
        progress: bool,
    ) -> str:
        """Make the prepared files in ``out_dir`` (``manifest.json`` last); return a summary
        line. ``options``: the dataset's ``prepare:`` section."""

    def pretrain_data(self, data_dir: Path, dataset: dict[str, Any]) -> PairedBank:
        """The training samples, modalities in the order ``dataset['modalities']`` declares."""

    def probe_data(
        self, data_dir: Path, dataset: dict[str, Any], probe: dict[str, Any]
    ) -> ProbeData:
        """Labelled splits for the probes, one label array per declared task."""


def declared(dataset: dict[str, Any], known: dict[str, str], what: str = "modalities") -> None:
    """Check that every declared modality (or task label) is one the family has, of the kind it
    has; ``known`` maps a name to its kind (None: any kind)."""
    for i, item in enumerate(dataset.get(what) or []):
        key = item["labels"] if what == "tasks" else item["name"]
        where = f"datasets.{dataset.get('name')}.{what}[{i}]"
        if key not in known:
            raise ConfigError(f"{where}: {key!r} is not in this dataset; it has {sorted(known)}")
        if what == "modalities" and known[key] not in (None, item["kind"]):
            raise ConfigError(f"{where}: {key!r} is a {known[key]} modality, not {item['kind']}")


def on_own_splits(name: str, probe: dict[str, Any], part) -> ProbeData:
    """Probe data on a dataset's own train / valid / test splits (C chosen on valid, test
    scored); ``part(split)`` gives the split's bank and its labels per task. The splits are the
    authors', so ``probe.max_train_samples`` may not cut the training split."""
    parts = {split: part(split) for split in ("train", "valid", "test")}
    limit = probe.get("max_train_samples")
    if limit is not None and limit < len(parts["train"][0]):
        raise ConfigError(
            f"probe.max_train_samples does not apply to {name} (its splits are the authors'); "
            "remove it"
        )
    (train, train_labels), (valid, valid_labels), (test, test_labels) = parts.values()
    return ProbeData(train, test, train_labels, test_labels, valid, valid_labels)


def named_arrays_bank(
    module, data_dir: Path, split: str, dataset: dict[str, Any], with_labels=False
):
    """A split's bank and its labels per declared task, for a dataset module whose
    ``load_split`` returns a dict of arrays named by its ``MODALITIES`` (name -> kind) and
    ``LABELS`` (MIMIC, Vision&Touch): one row per sample, no padding masks. Training banks
    carry every label array, so which tasks the probes fit does not change a run's data
    digest."""
    declared(dataset, module.MODALITIES)
    declared(dataset, dict.fromkeys(module.LABELS), "tasks")
    loaded = module.load_split(data_dir, split)
    labels = {t["name"]: loaded[t["labels"]] for t in dataset["tasks"]}
    every = {k: loaded[k] for k in module.LABELS} if with_labels else None
    bank = PairedBank.aligned([loaded[m["name"]] for m in dataset["modalities"]], None, every)
    return bank, labels


def prepared_summary(manifest: dict, what: str, source, out_dir, t0: float, details: str) -> str:
    """The line `comm-repro prepare` prints: the split counts of ``manifest``, ``what`` they
    count, where from and to, the time since ``t0``, and ``details``."""
    counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    seconds = time.perf_counter() - t0
    return f"wrote {counts} {what} from {source} to {out_dir} in {seconds:.1f} s ({details})"


class NamedArraysFamily:
    """A family whose data module (``data``, imported on use) loads splits as named arrays:
    see :func:`named_arrays_bank`."""

    module = ""  # e.g. "comm_repro.data.mimic"

    @property
    def data(self):
        return importlib.import_module(self.module)

    def pretrain_data(self, data_dir, dataset):
        return named_arrays_bank(self.data, data_dir, "train", dataset, with_labels=True)[0]


# ---------------------------------------------------------------------------------------------
# Trifeature (generated)


class TrifeatureFamily:
    """Bimodal Trifeature: two images of one rendered set per pair (datasets.md §5)."""

    def prepare(self, out_dir, options, source, download_to, progress):
        from comm_repro.data import trifeatures as tf

        for option, value in (("--source", source), ("--download-to", download_to)):
            if value is not None:
                raise ConfigError(
                    f"{option} does not apply to trifeatures: the stimuli are generated"
                )
        unknown = sorted(set(options) - {"generator_seed", "num_per_combination"})
        if unknown:
            raise ConfigError(
                f"trifeatures takes the options generator_seed and "
                f"num_per_combination, not {unknown}"
            )
        seed, per = (
            int(options.get("generator_seed", 42)),
            int(options.get("num_per_combination", 3)),
        )
        t0 = time.perf_counter()
        splits = tf.generate(seed=seed, num_per_combination=per, progress=progress)
        tf.save_splits(splits, out_dir, seed=seed, num_per_combination=per)
        counts = ", ".join(f"{k} {len(v.images)}" for k, v in splits.items())
        return f"wrote {counts} images to {out_dir} in {time.perf_counter() - t0:.1f} s"

    @staticmethod
    def _check(dataset):
        if len(dataset["modalities"]) != 2:
            raise ConfigError(
                f"datasets.{dataset['name']}.modalities: Trifeature pairs have two image modalities"
            )
        declared(dataset, {m["name"]: "image" for m in dataset["modalities"]})

    @staticmethod
    def _split(data_dir, split, dataset):
        from comm_repro.data import trifeatures as tf

        loaded = tf.load_split(data_dir, split)
        loaded.images = tf.downsample(loaded.images, int(dataset["resolution"]))
        return loaded

    def pretrain_data(self, data_dir, dataset):
        from comm_repro.data import trifeatures as tf

        self._check(dataset)
        split = self._split(data_dir, "train", dataset)
        pairs = tf.make_pairs(
            split,
            biased=dataset["pairing"] == "biased",
            max_pairs=int(dataset["max_train_pairs"]),
            seed=int(dataset["pairing_seed"]),
        )
        return PairedBank.from_numpy([split.images, split.images], pairs)

    def probe_data(self, data_dir, dataset, probe):
        """Probes always use unbiased pairs, as in the paper: the synergy label is then rare
        (~10 %) and balanced accuracy tells whether the mapping was learned."""
        from comm_repro.data import trifeatures as tf

        self._check(dataset)
        declared(dataset, {t: None for t in tf.TASKS}, "tasks")
        mapping = tf.synergy_mapping(int(dataset["prepare"]["generator_seed"]))
        banks, labels = {}, {}
        for name, max_pairs in (("train", probe.get("max_train_samples")), ("test", None)):
            split = self._split(data_dir, name, dataset)
            pairs = tf.make_pairs(
                split, biased=False, max_pairs=max_pairs, seed=int(dataset["pairing_seed"])
            )
            banks[name] = PairedBank.from_numpy([split.images, split.images], pairs)
            every = tf.task_labels(split, pairs, mapping)
            labels[name] = {t["name"]: every[t["labels"]] for t in dataset["tasks"]}
        return ProbeData(banks["train"], banks["test"], labels["train"], labels["test"])


# ---------------------------------------------------------------------------------------------
# MultiBench affect (a raw pickle, converted once)


class AffectFamily:
    """MOSI, UR-FUNNY (humor) and MUsTARD (sarcasm): aligned, padded sequence modalities
    (datasets.md §1). Every modality shares the sample's mask; labels ``label`` (binary) and
    ``label_raw`` (the raw score, MOSI's sentiment for regression)."""

    def __init__(self, corpus: str) -> None:
        self.corpus = corpus

    def prepare(self, out_dir, options, source, download_to, progress):
        from comm_repro.data import multibench

        if options:
            raise ConfigError(f"{self.corpus} takes no preparation options, got {sorted(options)}")
        if source is not None and download_to is not None:
            raise ConfigError("give --source (a file you have) or --download-to, not both")
        t0 = time.perf_counter()
        raw = multibench.obtain_raw(
            self.corpus, source=source, download_to=download_to, progress=progress
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", multibench.RawDigestWarning)
            try:
                manifest = multibench.prepare(self.corpus, raw, out_dir, progress=progress)
            finally:
                for w in caught:
                    if issubclass(w.category, multibench.RawDigestWarning):
                        print(f"comm-repro prepare: warning: {w.message}", file=sys.stderr)
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        details = (
            f"dropped {manifest['dropped_samples']} with all-zero text, set "
            f"{manifest['non_finite_replaced']} non-finite values to 0"
        )
        return prepared_summary(manifest, f"samples of {self.corpus}", raw, out_dir, t0, details)

    def _bank(self, data_dir, split, dataset, with_labels=False):
        """A split's bank of the declared modalities and its labels per declared task."""
        from comm_repro.data import multibench

        declared(dataset, {m: "sequence" for m in multibench.MODALITIES})
        declared(dataset, {k: None for k in ("label", "label_raw")}, "tasks")
        loaded = multibench.load_split(data_dir, split)
        labels = {t["name"]: getattr(loaded, t["labels"]) for t in dataset["tasks"]}
        modalities = [m["name"] for m in dataset["modalities"]]
        # Training batches carry every label array the dataset has, so that which tasks the
        # probes fit does not change what a run trains on (its data digest).
        every = {k: getattr(loaded, k) for k in ("label", "label_raw")}
        bank = PairedBank.aligned(
            [getattr(loaded, m) for m in modalities],
            [loaded.mask] * len(modalities),
            every if with_labels else None,
        )
        return bank, labels

    def pretrain_data(self, data_dir, dataset):
        return self._bank(data_dir, "train", dataset, with_labels=True)[0]

    def probe_data(self, data_dir, dataset, probe):
        return on_own_splits(self.corpus, probe, lambda split: self._bank(data_dir, split, dataset))


# ---------------------------------------------------------------------------------------------
# MIMIC-III (a pickle the user supplies, converted once)


class MimicFamily(NamedArraysFamily):
    """MIMIC-III (datasets.md §2): a ``tabular`` modality (N, 5) of static patient features and
    a ``timeseries`` modality (N, 24, 12) of hourly measurements, no padding; labels ``label``
    (the chosen ICD-9 group, binary), ``icd9`` (all 20 groups) and ``mortality`` (6 classes)."""

    OPTIONS = ("stats", "task")
    module = "comm_repro.data.mimic"

    def prepare(self, out_dir, options, source, download_to, progress):
        from comm_repro.data import mimic

        if download_to is not None:
            raise ConfigError(f"--download-to does not apply to mimic: {mimic.ACCESS}")
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ConfigError(f"mimic takes the options {list(self.OPTIONS)}, not {unknown}")
        stats = str(options.get("stats", "all"))
        task = int(options.get("task", mimic.DEFAULT_TASK))
        t0 = time.perf_counter()
        raw = mimic.obtain_raw(source)
        manifest = mimic.prepare(raw, out_dir, stats=stats, task=task, progress=progress)
        details = (
            f"ICD-9 task {task}, z-scores from "
            f"{'the whole file' if stats == 'all' else 'the train split'}, "
            f"{sum(manifest['non_finite_replaced'].values())} non-finite values set to 0"
        )
        return prepared_summary(manifest, "samples of mimic", raw, out_dir, t0, details)

    def probe_data(self, data_dir, dataset, probe):
        return on_own_splits(
            "mimic", probe, lambda split: named_arrays_bank(self.data, data_dir, split, dataset)
        )


# ---------------------------------------------------------------------------------------------
# Vision&Touch (a zip of .h5 files, converted once into memory-mapped arrays)


class VisionTouchFamily(NamedArraysFamily):
    """Vision&Touch (datasets.md §3): ``image`` (N, 128, 128, 3) uint8, ``force`` (N, 32, 6)
    and ``proprio`` (N, 8) float32; labels ``ee_yaw_next`` (regression), ``contact_next``
    (binary) and ``action_next``. Splits train and test only: the authors' validation split is
    the test split, so the probes choose C on the split they are scored on, as in the paper.
    The arrays stay memory-mapped (about 7 GB of images)."""

    module = "comm_repro.data.vision_touch"

    def prepare(self, out_dir, options, source, download_to, progress):
        from comm_repro.data import vision_touch as vt

        if options:
            raise ConfigError(f"vision_touch takes no preparation options, got {sorted(options)}")
        if source is not None and download_to is not None:
            raise ConfigError("give --source (a folder or zip you have) or --download-to, not both")
        t0 = time.perf_counter()
        raw = vt.obtain_raw(source=source, download_to=download_to, progress=progress)
        manifest = vt.prepare(raw, out_dir, progress=progress)
        what = f"samples of vision_touch ({manifest['raw']['files']} files)"
        details = "no validation split: the authors validate on test"
        return prepared_summary(manifest, what, raw, out_dir, t0, details)

    def probe_data(self, data_dir, dataset, probe):
        """Train and test banks; ``valid`` is the test bank itself (the authors' val = test,
        datasets.md §0.5), so C is chosen on the scored split as the paper's numbers were."""
        banks = {}

        def part(split):
            split = "test" if split == "valid" else split
            if split not in banks:
                banks[split] = named_arrays_bank(self.data, data_dir, split, dataset)
            return banks[split]

        return on_own_splits("vision_touch", probe, part)


# ---------------------------------------------------------------------------------------------
# MM-IMDb (a tarball of posters and JSON, converted once; plots tokenized per job)


class MmimdbFamily:
    """MM-IMDb (datasets.md §4): ``poster`` (N, 224, 224, 3) uint8, memory-mapped, and ``plot``,
    each movie's plots as token ids of the plot modality's text encoder (tokenized when a job
    starts, so the prepared copy serves every encoder); labels ``genres`` (N, 23) 0/1. Splits
    train, valid (the authors' dev) and test. A training batch draws one of a movie's plots
    (both views read it); the probes read the first."""

    def prepare(self, out_dir, options, source, download_to, progress):
        from comm_repro.data import mmimdb

        unknown = sorted(set(options) - {"size"})
        if unknown:
            raise ConfigError(f"mmimdb takes the option size, not {unknown}")
        if source is not None and download_to is not None:
            raise ConfigError(
                "give --source (a folder or tarball you have) or --download-to, not both"
            )
        t0 = time.perf_counter()
        raw = mmimdb.obtain_raw(source=source, download_to=download_to, progress=progress)
        manifest = mmimdb.prepare(
            raw, out_dir, size=int(options.get("size", mmimdb.IMAGE_SIZE)), progress=progress
        )
        details = (
            f"{manifest['size_check']}; {len(manifest['truncated_posters'])} truncated posters "
            f"read as far as they go, {sum(manifest['unknown_genres_dropped'].values())} unknown "
            "genre labels dropped"
        )
        return prepared_summary(manifest, "movies of mmimdb", raw, out_dir, t0, details)

    def _bank(self, data_dir, split, dataset, training=False):
        from comm_repro.data import mmimdb
        from comm_repro.models.frozen import text_tokenizer

        declared(dataset, mmimdb.MODALITIES)
        declared(dataset, dict.fromkeys(mmimdb.LABELS), "tasks")
        loaded = mmimdb.load_split(data_dir, split)
        banks, masks, choices = [], [], []
        for modality in dataset["modalities"]:
            if modality["kind"] == "image":
                banks.append(loaded["image"])
                masks.append(None)
                choices.append(None)
                continue
            tokenizer, max_length = text_tokenizer(modality["encoder"])
            ids, mask, counts = mmimdb.token_bank(
                loaded["plots"], tokenizer, max_length, first_only=not training
            )
            banks.append(ids if training else ids[:, 0])
            masks.append(mask if training else mask[:, 0])
            choices.append(counts if training else None)
        labels = {t["name"]: loaded[t["labels"]] for t in dataset["tasks"]}
        every = {k: loaded[k] for k in mmimdb.LABELS} if training else None
        return PairedBank.aligned(banks, masks, every, choices), labels

    def pretrain_data(self, data_dir, dataset):
        return self._bank(data_dir, "train", dataset, training=True)[0]

    def probe_data(self, data_dir, dataset, probe):
        return on_own_splits("mmimdb", probe, lambda split: self._bank(data_dir, split, dataset))


FAMILIES: dict[str, Family] = {
    "trifeatures": TrifeatureFamily(),
    **{corpus: AffectFamily(corpus) for corpus in ("mosi", "humor", "sarcasm")},
    "mimic": MimicFamily(),
    "vision_touch": VisionTouchFamily(),
    "mmimdb": MmimdbFamily(),
}


def family(name: str) -> Family:
    """A family by name, or by ``module:attribute`` for one defined outside the project."""
    if name in FAMILIES:
        return FAMILIES[name]
    module, sep, attribute = name.partition(":")
    if not sep:
        raise ConfigError(
            f"dataset family {name!r} is unknown; known: {sorted(FAMILIES)}, or "
            "package.module:attribute of one of your own"
        )
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"dataset family {name!r} cannot be imported ({err})") from None
    return found() if isinstance(found, type) else found
