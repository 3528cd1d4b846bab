"""Frozen-feature evaluation: feature extraction and linear probes.

Features are computed without augmentation. Each modality bank is encoded once, and only the
cheap fusion step runs per sample row, so probing 14k Trifeature pairs costs 2 x 2,600 encoder
passes rather than 28k.

Each task is probed by its kind: logistic regression for binary and multiclass tasks, one
logistic regression per label for multilabel tasks, ridge regression for regression tasks. The
regularisation is chosen on the dataset's valid split where it has one (MultiBench, MM-IMDb),
else on a hold-out of the training features (stratified for classes; Trifeature); the final
probe is refitted on everything but the test split, which alone is scored.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    hamming_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from comm_repro.config import CLASSIFICATION
from comm_repro.data.paired import PairedBank
from comm_repro.data.registry import ProbeData
from comm_repro.models.encoders import Encoded
from comm_repro.train import autocast_context

CLASS_WEIGHTS = ("none", "balanced")


def _batches(n: int, batch_size: int, desc: str, progress: bool):
    starts = range(0, n, batch_size)
    return tqdm(starts, desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def encode_banks(
    method: torch.nn.Module,
    data: PairedBank,
    device: torch.device,
    batch_size: int = 256,
    precision: str = "auto",
    progress: bool = True,
    precomputed: frozenset[int] = frozenset(),
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each modality bank of ``data`` through its encoding (``method.encode``), once per bank
    sample; the banks of the modalities ``precomputed`` hold their encoder's outputs already
    (tokens, masks)."""
    method.eval()
    encoded = []
    for m, (bank, masks) in enumerate(zip(data.banks, data.masks)):
        chunks, chunk_masks = [], []
        for s in _batches(len(bank), batch_size, f"encode modality {m}", progress):
            x = bank[s : s + batch_size].to(device)
            mask = None if masks is None else masks[s : s + batch_size].to(device)
            with autocast_context(device, precision):
                if m in precomputed:
                    z, z_mask = method.from_encoded(m, Encoded(x.float(), mask))
                else:
                    z, z_mask = method.encode(m, x, mask)
            chunks.append(z.float())
            chunk_masks.append(z_mask)
        joined = None if chunk_masks[0] is None else torch.cat(chunk_masks)
        encoded.append((torch.cat(chunks), joined))
    return encoded


@torch.no_grad()
def fuse_rows(
    method: torch.nn.Module,
    data: PairedBank,
    encoded: list[tuple[torch.Tensor, torch.Tensor | None]],
    device: torch.device,
    batch_size: int = 256,
    precision: str = "auto",
    progress: bool = True,
    subset: list[int] | None = None,
) -> np.ndarray:
    """(P, F) float32 features of every row of ``data`` from its banks' encodings: of every
    modality, or of the modalities ``subset`` alone (``method.fuse_subset``)."""
    out = []
    for s in _batches(len(data), batch_size, "fuse", progress):
        idx = data.index[s : s + batch_size].to(device)
        rows = [
            (z[idx[:, m]], None if k is None else k[idx[:, m]]) for m, (z, k) in enumerate(encoded)
        ]
        with autocast_context(device, precision):
            feats = method.fuse(rows) if subset is None else method.fuse_subset(rows, subset)
        out.append(feats.float().cpu())
    return torch.cat(out).numpy()


def extract_features(method: torch.nn.Module, data: PairedBank, device: torch.device, **options):
    """(P, F) float32 features of every row of ``data``: each bank encoded once
    (:func:`encode_banks`, whose keyword arguments ``options`` are), then the cheap fusion per
    row (:func:`fuse_rows`)."""
    encoded = encode_banks(method, data, device, **options)
    fusing = {k: v for k, v in options.items() if k != "precomputed"}
    return fuse_rows(method, data, encoded, device, **fusing)


def _selection(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid: tuple[np.ndarray, np.ndarray] | None,
    holdout: float,
    seed: int,
    stratify: bool,
):
    """(fit, val, final) feature/label pairs, standardised by the statistics of ``final``:
    C is chosen by fitting on ``fit`` and scoring ``val``; the probe then refits on ``final``
    (train + valid, or all of train when val is a hold-out of it)."""
    if valid is None:
        final_x, final_y = train_x, train_y
    else:
        final_x, final_y = np.concatenate([train_x, valid[0]]), np.concatenate([train_y, valid[1]])
    scaler = StandardScaler().fit(final_x)
    # float32 halves the cost of every L-BFGS iteration; the probe needs no more precision.
    scale = lambda x: scaler.transform(x).astype(np.float32)  # noqa: E731
    if valid is None:
        x = scale(train_x)
        splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(
            n_splits=1, test_size=holdout, random_state=seed
        )
        fit_idx, val_idx = next(splitter.split(x, train_y))
        return (x[fit_idx], train_y[fit_idx]), (x[val_idx], train_y[val_idx]), (x, train_y), scale
    fit = (scale(train_x), train_y)
    return fit, (scale(valid[0]), valid[1]), (scale(final_x), final_y), scale


def _class_weights(class_weight: str) -> str | None:
    """scikit-learn's ``class_weight`` for the probe setting (``none`` or ``balanced``)."""
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"probe.class_weight must be one of {CLASS_WEIGHTS}, got {class_weight!r}")
    return None if class_weight == "none" else class_weight


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cs: list[float],
    holdout: float,
    seed: int,
    max_iter: int,
    class_weight: str = "none",
    valid: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Logistic-regression probe; C chosen by balanced accuracy on ``valid`` (features, labels)
    or, without one, on a stratified hold-out of the training features, then refit on train
    (+ valid).

    ``class_weight``: ``none`` fits the plain log-loss (the authors' probe); ``balanced`` weights
    each class by the inverse of its frequency, so the fit minimises the loss that balanced
    accuracy scores. On a rare class (the synergy label is ~10 % positive) the plain fit predicts
    the majority class unless the signal is strong, and its balanced accuracy stays near 50 %
    even where the features rank the pairs well (``roc_auc``, threshold-free, tells).
    """
    weights = _class_weights(class_weight)
    (fit_x, fit_y), (val_x, val_y), (final_x, final_y), scale = _selection(
        train_x, train_y, valid, holdout, seed, stratify=True
    )
    test_x = scale(test_x)

    # Ascending C with warm starts: each fit begins at the previous, more regularised solution,
    # which cuts the L-BFGS iterations of the weakly regularised end of the grid.
    clf = LogisticRegression(max_iter=max_iter, warm_start=True, class_weight=weights)
    scores, unconverged = {}, []
    for c in sorted(cs):
        if not _fit(clf.set_params(C=c), fit_x, fit_y):
            unconverged.append(c)
        scores[c] = balanced_accuracy_score(val_y, clf.predict(val_x))
    best_c = max(cs, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    final = LogisticRegression(C=best_c, max_iter=max_iter, class_weight=weights)
    final_converged = _fit(final, final_x, final_y)
    pred = final.predict(test_x)
    binary = len(final.classes_) == 2
    return {
        "balanced_accuracy": float(balanced_accuracy_score(test_y, pred)),
        "accuracy": float(accuracy_score(test_y, pred)),
        "roc_auc": float(roc_auc_score(test_y, final.decision_function(test_x)))
        if binary
        else None,
        "class_weight": class_weight,
        "best_C": float(best_c),
        "C_chosen_on": "holdout" if valid is None else "valid",
        "holdout_balanced_accuracy": {f"{c:g}": float(v) for c, v in scores.items()},
        "n_classes": int(len(np.unique(train_y))),
        # Fits that stopped at max_iter: their C may be under-fitted; raise probe.max_iter.
        "unconverged_C": [float(c) for c in unconverged],
        "final_fit_converged": final_converged,
        "final_fit_iterations": int(final.n_iter_.max()),
    }


def multilabel_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cs: list[float],
    holdout: float,
    seed: int,
    max_iter: int,
    class_weight: str = "none",
    valid: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """One-vs-rest probe of a multilabel task (labels (N, K) of 0/1): one logistic regression
    per label, C chosen by macro F1 on ``valid`` (or a hold-out of train), then refit on train
    (+ valid); the authors' MM-IMDb probe (one ``LogisticRegression`` per genre, C from the
    grid by macro F1 on the dev split). Scored on the hard predictions: weighted F1 and macro F1
    (the paper's MM-IMDb columns), micro and per-sample F1, each label's F1, exact-match
    accuracy and the Hamming loss. A label constant in a fit (absent from its samples) is
    predicted constant; a label absent from the test split counts as F1 0 in the macro mean
    (``zero_division``)."""
    weights = _class_weights(class_weight)
    train_y = train_y.reshape(len(train_y), -1).astype(np.int64)
    test_y = test_y.reshape(len(test_y), -1).astype(np.int64)
    if valid is not None:
        valid = (valid[0], valid[1].reshape(len(valid[1]), -1).astype(np.int64))
    (fit_x, fit_y), (val_x, val_y), (final_x, final_y), scale = _selection(
        train_x, train_y, valid, holdout, seed, stratify=False
    )

    def probe(c: float) -> OneVsRestClassifier:
        return OneVsRestClassifier(LogisticRegression(C=c, max_iter=max_iter, class_weight=weights))

    scores, unconverged = {}, []
    with warnings.catch_warnings():  # recorded below (constant labels), not printed per fit
        warnings.filterwarnings("ignore", "Label .* is present in all training examples")
        for c in sorted(cs):
            clf = probe(c)
            if not _fit(clf, fit_x, fit_y):
                unconverged.append(c)
            scores[c] = f1_score(val_y, clf.predict(val_x), average="macro", zero_division=0)
        best_c = max(cs, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
        final = probe(best_c)
        final_converged = _fit(final, final_x, final_y)
    pred = final.predict(scale(test_x))
    f1 = {
        f"f1_{average}": float(f1_score(test_y, pred, average=average, zero_division=0))
        for average in ("weighted", "macro", "micro", "samples")
    }
    per_label = f1_score(test_y, pred, average=None, zero_division=0)
    return {
        **f1,
        "f1_per_label": [float(v) for v in per_label],
        "subset_accuracy": float(accuracy_score(test_y, pred)),
        "hamming_loss": float(hamming_loss(test_y, pred)),
        "class_weight": class_weight,
        "best_C": float(best_c),
        "C_chosen_on": "holdout" if valid is None else "valid",
        "holdout_f1_macro": {f"{c:g}": float(v) for c, v in scores.items()},
        "n_labels": int(train_y.shape[1]),
        "labels_constant_in_training": [
            int(j) for j in np.flatnonzero(final_y.min(axis=0) == final_y.max(axis=0))
        ],
        "unconverged_C": [float(c) for c in unconverged],
        "final_fit_converged": final_converged,
    }


def mean_pearson(y: np.ndarray, pred: np.ndarray) -> float:
    """Pearson's r between each target column and its prediction, averaged over the columns
    (the authors' V&T figure for their 4 outputs; one column: r itself)."""
    y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
    return float(np.mean([np.corrcoef(y[:, j], pred[:, j])[0, 1] for j in range(y.shape[1])]))


def ridge_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    cs: list[float],
    holdout: float,
    seed: int,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Ridge-regression probe of a regression task: the penalty alpha from the grid ``cs``
    chosen by mean squared error on ``valid`` (or a hold-out of train), then refit on train
    (+ valid). A target of several columns (N, k) is scored as the authors do: MSE and R² are
    averaged uniformly over the columns, Pearson's r per column then averaged."""
    train_y, test_y = train_y.astype(np.float64), test_y.astype(np.float64)
    if valid is not None:
        valid = (valid[0], valid[1].astype(np.float64))
    (fit_x, fit_y), (val_x, val_y), (final_x, final_y), scale = _selection(
        train_x, train_y, valid, holdout, seed, stratify=False
    )
    scores = {
        a: mean_squared_error(val_y, Ridge(alpha=a).fit(fit_x, fit_y).predict(val_x))
        for a in sorted(cs)
    }
    best = min(cs, key=lambda a: (scores[a], -a))
    pred = Ridge(alpha=best).fit(final_x, final_y).predict(scale(test_x))
    return {
        "mse": float(mean_squared_error(test_y, pred)),
        "mae": float(mean_absolute_error(test_y, pred)),
        "r2": float(r2_score(test_y, pred)),
        "pearson": mean_pearson(test_y, pred),
        "best_alpha": float(best),
        "alpha_chosen_on": "holdout" if valid is None else "valid",
        "holdout_mse": {f"{a:g}": float(v) for a, v in scores.items()},
    }


def _fit(clf: LogisticRegression | OneVsRestClassifier, x: np.ndarray, y: np.ndarray) -> bool:
    """Fit ``clf``; False when L-BFGS stopped at max_iter (recorded in the result rather than
    printed once per fit). Other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return converged


def _probe_tasks(
    features: dict[str, np.ndarray], data: ProbeData, probe_cfg: dict, tasks: list[dict], seed: int
) -> dict:
    """One probe per task (by its kind) on the ``features`` of each split."""
    cs = [float(c) for c in probe_cfg["C_grid"]]
    train_x, test_x, valid_x = features["train"], features["test"], features.get("valid")
    results = {}
    for task in tasks:
        name = task["name"]
        valid = None if valid_x is None else (valid_x, data.valid_labels[name])
        common = dict(cs=cs, holdout=float(probe_cfg["holdout_fraction"]), seed=seed, valid=valid)
        if task["kind"] in (*CLASSIFICATION, "multilabel"):
            probe = multilabel_probe if task["kind"] == "multilabel" else linear_probe
            results[name] = probe(
                train_x,
                data.train_labels[name],
                test_x,
                data.test_labels[name],
                **common,
                max_iter=int(probe_cfg["max_iter"]),
                class_weight=probe_cfg["class_weight"],
            )
        elif task["kind"] == "regression":
            results[name] = ridge_probe(
                train_x, data.train_labels[name], test_x, data.test_labels[name], **common
            )
        else:
            raise ValueError(f"task {name!r}: no probe for tasks of kind {task['kind']!r}")
        results[name].update(kind=task["kind"], metric=task["metric"])
    return results


def probe_all(
    method: torch.nn.Module,
    data: ProbeData,
    probe_cfg: dict,
    tasks: list[dict],
    device: torch.device,
    seed: int,
    precision: str = "auto",
    progress: bool = True,
    modalities: list[str] | None = None,
) -> dict:
    """Features once, then one probe per task (by its kind). With ``probe.subsets``, every task
    is also probed on the features of each modality alone (``modalities``: their names):
    CoMM's Z_i, the baselines' own embedding of that modality. Returns metrics and timing."""
    t0 = time.perf_counter()
    batch = int(probe_cfg.get("batch_size", 256))
    how = dict(precision=precision, progress=progress)
    splits = {"train": data.train, "test": data.test}
    if data.valid is not None:
        splits["valid"] = data.valid
    encoded = {
        name: encode_banks(method, bank, device, batch, **how, precomputed=data.encoded)
        for name, bank in splits.items()
    }
    features = {
        name: fuse_rows(method, splits[name], enc, device, batch, **how)
        for name, enc in encoded.items()
    }
    extract_s = time.perf_counter() - t0
    results = _probe_tasks(features, data, probe_cfg, tasks, seed)
    subsets = {}
    if probe_cfg.get("subsets"):
        names = modalities or [f"modality{m}" for m in range(data.train.n_modalities)]
        for m, modality in enumerate(tqdm(names, desc="subsets", disable=not progress)):
            alone = {
                name: fuse_rows(method, splits[name], enc, device, batch, **how, subset=[m])
                for name, enc in encoded.items()
            }
            subsets[modality] = _probe_tasks(alone, data, probe_cfg, tasks, seed)
    rows = sum(len(bank) for bank in splits.values())
    out = {
        "tasks": results,
        "n_train": len(data.train),
        "n_valid": 0 if data.valid is None else len(data.valid),
        "n_test": len(data.test),
        "feature_dim": int(features["train"].shape[1]),
        "extract_s": round(extract_s, 2),
        "extract_rows_per_s": round(rows / extract_s, 1),
        "probe_s": round(time.perf_counter() - t0 - extract_s, 2),
    }
    if probe_cfg.get("subsets"):
        out["subsets"] = subsets
    return out
