"""MIMIC-III as MultiBench distributes it: one pickle, ``im.pk``.

The file is never downloaded: MIMIC-III needs credentialed access on PhysioNet, after which the
MultiBench maintainers send ``im.pk`` on request (:data:`ACCESS`). The user supplies it, at
:func:`default_raw_path` or named by ``datasets.<name>.source`` / ``--source``. It is read with
the restricted unpickler of the affect datasets (numpy arrays, dicts, lists, strings and numbers
only) and converted once (:func:`prepare`) into ``{split}.npz`` + ``manifest.json``.

Keys read (datasets.md §2): ``ep_tdata`` (N, 24, 12) hourly measurements, ``adm_features_all``
(N, 5) static features, ``adm_labels_all`` (N, >= 6) admission outcomes and ``y_icd9`` (N, 20)
ICD-9 groups. The authors' preprocessing, in their order:

1. non-finite values become 0 (counted in the manifest);
2. z-scores: the static features per column, the time series per feature over (N, 24), with
   numpy's mean and (population) std over the **whole file**, as the authors do. That leaks the
   test split's statistics into training; ``stats: train`` takes them from the train split
   alone instead (off by default, so that the default reproduces the paper);
3. the order: ``random.seed(10); random.shuffle`` of the N samples (Python's Mersenne Twister,
   so the permutation depends on N alone), then valid = ``[0, N//10)``, test = ``[N//10,
   N//5)``, train = ``[N//5, N)``.

Labels: ``icd9`` (N, 20) int64, ``y_icd9 > 0`` (the Purushotham et al. benchmark the keys come
from binarises so; the authors pass the raw column); ``label`` = ``icd9[:, task]`` with task 7
(ICD-9 460-519, respiratory) by default; ``mortality`` (N,) int64, the authors' task -1: the
first column j in 1..5 of ``adm_labels_all`` that is > 0, else 0.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from comm_repro import download
from comm_repro.atomic import write_json
from comm_repro.data import multibench, prepared
from comm_repro.errors import DataError

FORMAT_VERSION = 1
FILE = "im.pk"
SPLITS = ("train", "valid", "test")
STEPS, SERIES_FEATURES, STATIC_FEATURES, ICD9_GROUPS = 24, 12, 5, 20
SHUFFLE_SEED = 10
DEFAULT_TASK = 7  # ICD-9 460-519 (respiratory system)
STATS = ("all", "train")
MODALITIES = {"tabular": "tabular", "timeseries": "sequence"}  # name -> modality kind
LABELS = ("label", "icd9", "mortality")
ARRAYS = (*MODALITIES, *LABELS)
ACCESS = (
    "MIMIC-III needs credentialed access on PhysioNet (https://mimic.mit.edu/iv/access/); once "
    "granted, ask the MultiBench maintainers for their preprocessed im.pk (contact in "
    "https://github.com/pliang279/MultiBench, MIMIC section). It is never downloaded here"
)


def default_raw_path() -> Path:
    """``<raw data root>/mimic/im.pk`` (see :func:`comm_repro.download.raw_data_root`)."""
    return download.raw_data_root() / "mimic" / FILE


def obtain_raw(source: str | Path | None = None) -> Path:
    """``source`` if given (it must exist), else the file at :func:`default_raw_path`; when
    there is none, DataError saying how the file is obtained and where it goes."""
    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path} is missing or not a file (--source)")
        return path
    path = default_raw_path()
    if path.is_file():
        return path
    raise DataError(
        f"MIMIC's {FILE} is not at {path}. {ACCESS}. Put the file at {path}, or name it with "
        f"datasets.<name>.source in the study file (`comm-repro prepare mimic --source PATH`)"
    )


def check_structure(data: Any, path: str | Path) -> int:
    """N, the number of samples; DataError naming what is wrong if ``data`` is not
    MultiBench's MIMIC layout."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    expected = {
        "ep_tdata": (STEPS, SERIES_FEATURES),
        "adm_features_all": (STATIC_FEATURES,),
        "y_icd9": (ICD9_GROUPS,),
        "adm_labels_all": None,  # (N, >= 6)
    }
    missing = [k for k in expected if k not in data]
    if missing:
        raise DataError(f"{path}: keys {missing} missing (has {sorted(map(str, data))})")
    n = None
    for key, tail in expected.items():
        array = data[key]
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
            raise DataError(f"{path}: {key!r} is not a numeric array")
        shape = array.shape
        ok = shape[1:] == tail if tail is not None else array.ndim == 2 and shape[1] >= 6
        want = f"(N, {', '.join(map(str, tail))})" if tail is not None else "(N, >= 6)"
        if not ok:
            raise DataError(f"{path}: {key!r} has shape {shape}, expected {want}")
        if n is not None and shape[0] != n:
            raise DataError(f"{path}: {key!r} has {shape[0]} samples, the others {n}")
        n = shape[0]
    if n < 10:
        raise DataError(f"{path}: {n} samples; the authors' split needs at least 10")
    return n


def split_rows(n: int) -> dict[str, np.ndarray]:
    """The authors' split of n samples: their seeded shuffle, then valid / test / train."""
    order = list(range(n))
    random.Random(SHUFFLE_SEED).shuffle(order)
    rows = np.asarray(order, dtype=np.int64)
    return {"valid": rows[: n // 10], "test": rows[n // 10 : n // 5], "train": rows[n // 5 :]}


def _zscore(x: np.ndarray, rows: np.ndarray, axes: tuple[int, ...], what: str, path) -> np.ndarray:
    fit = x[rows]
    mean, std = fit.mean(axis=axes), fit.std(axis=axes)
    if np.any(std == 0):
        cols = np.flatnonzero(std == 0).tolist()
        raise DataError(f"{path}: {what} features {cols} are constant; their z-score is undefined")
    return (x - mean) / std


def mortality_class(adm_labels: np.ndarray) -> np.ndarray:
    """The authors' task -1: the first column j in 1..5 with a value > 0, else 0."""
    positive = adm_labels[:, 1:6] > 0
    return np.where(positive.any(axis=1), positive.argmax(axis=1) + 1, 0).astype(np.int64)


def preprocess(data: dict, path, stats: str = "all", task: int = DEFAULT_TASK):
    """The arrays of each split and the counts the manifest records (see the module doc)."""
    if stats not in STATS:
        raise DataError(f"MIMIC's stats option must be one of {STATS}, got {stats!r}")
    if not 0 <= task < ICD9_GROUPS:
        raise DataError(f"MIMIC's task must be an ICD-9 group in 0..{ICD9_GROUPS - 1}, got {task}")
    n = check_structure(data, path)
    series = np.array(data["ep_tdata"], dtype=np.float64)
    static = np.array(data["adm_features_all"], dtype=np.float64)
    replaced = {}
    for name, x in (("timeseries", series), ("tabular", static)):
        bad = ~np.isfinite(x)
        replaced[name] = int(bad.sum())
        x[bad] = 0.0
    rows = split_rows(n)
    fit = np.arange(n) if stats == "all" else rows["train"]
    static = _zscore(static, fit, (0,), "static", path)
    series = _zscore(series, fit, (0, 1), "time-series", path)
    icd9 = (np.asarray(data["y_icd9"]) > 0).astype(np.int64)
    arrays = {
        "tabular": static.astype(np.float32),
        "timeseries": series.astype(np.float32),
        "label": icd9[:, task],
        "icd9": icd9,
        "mortality": mortality_class(np.asarray(data["adm_labels_all"])),
    }
    return {split: {k: v[r] for k, v in arrays.items()} for split, r in rows.items()}, replaced


def prepare(
    raw: str | Path,
    out_dir: str | Path,
    stats: str = "all",
    task: int = DEFAULT_TASK,
    progress: bool = True,
) -> dict:
    """Convert ``im.pk`` into ``{split}.npz`` (tabular (N, 5) and timeseries (N, 24, 12)
    float32; label, icd9, mortality int64) and ``manifest.json`` in ``out_dir``; returns the
    manifest."""
    raw, out_dir = Path(raw), Path(out_dir)
    t0 = time.perf_counter()
    data, digest, size = multibench.load_pickle(raw, progress=progress)
    splits, replaced = preprocess(data, raw, stats, task)
    del data
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # a half-rewritten set never verifies
    manifest = {
        "dataset": "mimic",
        "format_version": FORMAT_VERSION,
        "raw": {"file": str(raw), "size": size, "sha256": digest},
        "task": task,
        "stats": stats,
        "preprocessing": (
            "non-finite values set to 0; z-scores (static per column, time series per feature "
            f"over all steps) from {'the whole file' if stats == 'all' else 'the train split'}; "
            f"random.seed({SHUFFLE_SEED}) shuffle, valid/test/train = [0, N//10) / "
            "[N//10, N//5) / [N//5, N); icd9 = y_icd9 > 0, label = icd9[:, task]"
        ),
        "non_finite_replaced": replaced,
        "splits": {},
    }
    for split in SPLITS:
        arrays = splits[split]
        label = arrays["label"]
        manifest["splits"][split] = {
            "count": len(label),
            "label_counts": {str(k): int((label == k).sum()) for k in (0, 1)},
            "mortality_counts": {str(k): int((arrays["mortality"] == k).sum()) for k in range(6)},
            **prepared.write_split(out_dir, split, arrays),
        }
    manifest["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def load_split(data_dir: str | Path, split: str, verify: bool = True) -> dict[str, np.ndarray]:
    """A prepared split's arrays (:data:`ARRAYS`), checked against the manifest."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return prepared.load_arrays(data_dir, split, ARRAYS, verify)
