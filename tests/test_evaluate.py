"""Probes: C selection on a hold-out or a valid split, balanced vs plain accuracy, ridge
regression, and one probe per task by its kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comm_repro.data.paired import PairedBank
from comm_repro.data.registry import ProbeData
from comm_repro.evaluate import linear_probe, multilabel_probe, probe_all, ridge_probe
from comm_repro.models import Encoded

CS = [1e-4, 1e-2, 1.0, 1e2, 1e4]


def test_separable_features_are_probed_perfectly():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    x = rng.normal(size=(600, 8))
    x[:, 0] += 5 * y  # one informative direction
    res = linear_probe(x[:400], y[:400], x[400:], y[400:], CS, holdout=0.4, seed=0, max_iter=500)
    assert res["balanced_accuracy"] > 0.97
    assert res["n_classes"] == 4
    assert set(res["holdout_balanced_accuracy"]) == {f"{c:g}" for c in CS}
    scores = res["holdout_balanced_accuracy"]
    assert scores[f"{res['best_C']:g}"] == max(scores.values())


def test_noise_features_stay_at_chance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(800, 16)), rng.integers(0, 2, 800)
    res = linear_probe(x[:600], y[:600], x[600:], y[600:], CS, holdout=0.4, seed=0, max_iter=500)
    assert abs(res["balanced_accuracy"] - 0.5) < 0.12


def test_balanced_accuracy_differs_from_accuracy_on_rare_classes():
    """With 10 % positives and uninformative features a probe predicting the majority class gets
    90 % accuracy but 50 % balanced accuracy: the paper's metric is the balanced one."""
    rng = np.random.default_rng(2)
    y = (rng.random(1000) < 0.1).astype(int)
    x = rng.normal(size=(1000, 4))
    res = linear_probe(
        x[:700], y[:700], x[700:], y[700:], [1e-4], holdout=0.4, seed=0, max_iter=200
    )
    assert res["accuracy"] > 0.8
    assert abs(res["balanced_accuracy"] - 0.5) < 0.05


def test_fits_stopped_at_max_iter_are_recorded_not_printed(recwarn):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 600)
    x = rng.normal(size=(600, 32)) + y[:, None] * rng.normal(size=32)
    capped = linear_probe(x[:400], y[:400], x[400:], y[400:], CS, holdout=0.4, seed=0, max_iter=1)
    assert capped["unconverged_C"] and not capped["final_fit_converged"]
    assert capped["final_fit_iterations"] == 1
    assert not [w for w in recwarn if "ConvergenceWarning" in w.category.__name__]
    free = linear_probe(x[:400], y[:400], x[400:], y[400:], CS, holdout=0.4, seed=0, max_iter=5000)
    assert free["final_fit_converged"] and free["unconverged_C"] == []


def test_balanced_class_weights_find_a_rare_class_the_plain_fit_misses():
    """A weak signal for a 10 % class: the plain fit predicts the majority class, the balanced one
    recovers it; the threshold-free ROC AUC sees the signal either way."""
    rng = np.random.default_rng(4)
    y = (rng.random(4000) < 0.1).astype(int)
    x = rng.normal(size=(4000, 4))
    x[:, 0] += 1.2 * y
    fits = {
        w: linear_probe(
            x[:3000],
            y[:3000],
            x[3000:],
            y[3000:],
            [1.0],
            0.4,
            seed=0,
            max_iter=200,
            class_weight=w,
        )
        for w in ("none", "balanced")
    }
    assert fits["none"]["balanced_accuracy"] < 0.6
    assert fits["balanced"]["balanced_accuracy"] > fits["none"]["balanced_accuracy"] + 0.1
    for fit in fits.values():
        assert fit["roc_auc"] > 0.75
    three = y + (x[:, 1] > 0)  # three classes
    multiclass = linear_probe(x[:300], three[:300], x[300:], three[300:], [1.0], 0.4, 0, 50)
    assert multiclass["roc_auc"] is None
    with pytest.raises(ValueError, match="class_weight"):
        linear_probe(x[:300], y[:300], x[300:], y[300:], [1.0], 0.4, 0, 50, class_weight="auto")


# ---------------------------------------------------------------------------------------------
# A valid split: C (or alpha) chosen on it, the probe refitted on train + valid

COV = np.array([[1.0, 0.9], [0.9, 1.0]])


def _correlated(rng, n):
    return rng.normal(size=(n, 2)) @ np.linalg.cholesky(COV).T


def test_valid_split_chooses_C_where_a_hold_out_of_train_would_choose_another():
    """Correlated features: a strongly regularised probe points along the class-mean difference
    COV @ w, a weakly regularised one along w itself. Train labels follow w, so a hold-out of
    train prefers a large C; valid labels that follow COV @ w prefer a small one."""
    rng = np.random.default_rng(0)
    w = np.array([1.0, -0.8])
    x = _correlated(rng, 1000)
    y = (x @ w + 0.1 * rng.normal(size=1000) > 0).astype(int)
    test_x = _correlated(rng, 1000)
    test_y = (test_x @ w > 0).astype(int)
    valid_x = _correlated(rng, 500)
    cs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e2]
    args = (x, y, test_x, test_y, cs, 0.4, 0, 500)
    holdout = linear_probe(*args)
    assert holdout["C_chosen_on"] == "holdout" and holdout["best_C"] >= 1.0
    by_mean = linear_probe(*args, valid=(valid_x, (valid_x @ (COV @ w) > 0).astype(int)))
    assert by_mean["C_chosen_on"] == "valid" and by_mean["best_C"] <= 1e-3
    scores = by_mean["holdout_balanced_accuracy"]  # the scores on valid it chose by
    assert scores[f"{by_mean['best_C']:g}"] == max(scores.values()) > 0.95
    by_w = linear_probe(*args, valid=(valid_x, (valid_x @ w > 0).astype(int)))
    assert by_w["C_chosen_on"] == "valid" and by_w["best_C"] >= 1.0


def test_the_final_probe_is_refitted_on_train_and_valid():
    """Train labels follow feature 0, the ten times larger valid split and the test split
    feature 1: only a probe fitted on valid too can score on test."""
    rng = np.random.default_rng(1)
    x, valid_x, test_x = (rng.normal(size=(n, 4)) for n in (100, 1000, 1000))
    y, valid_y, test_y = (x[:, 0] > 0).astype(int), valid_x[:, 1] > 0, test_x[:, 1] > 0
    valid_y, test_y = valid_y.astype(int), test_y.astype(int)
    args = (x, y, test_x, test_y, [1.0], 0.4, 0, 500)
    assert linear_probe(*args)["balanced_accuracy"] < 0.6
    assert linear_probe(*args, valid=(valid_x, valid_y))["balanced_accuracy"] > 0.9
    ridge = (x, x[:, 0], test_x, test_x[:, 1], [1.0], 0.4, 0)
    assert ridge_probe(*ridge)["r2"] < 0.1
    assert ridge_probe(*ridge, valid=(valid_x, valid_x[:, 1]))["r2"] > 0.7


def _linear_target(rng, n, beta):
    x = rng.normal(size=(n, 6)) * np.array([0.5, 1, 2, 3, 4, 5]) + 3
    return x, x @ beta + 1.5


def test_ridge_probe_recovers_a_linear_target_and_chooses_alpha_on_valid():
    rng = np.random.default_rng(2)
    beta = rng.normal(size=6)
    x, y = _linear_target(rng, 300, beta)
    y = y + 0.01 * rng.normal(size=300)
    test_x, test_y = _linear_target(rng, 200, beta)
    alphas = [1e-3, 1.0, 1e6]
    res = ridge_probe(x, y, test_x, test_y, alphas, holdout=0.4, seed=0)
    assert res["r2"] > 0.999 and res["pearson"] > 0.999 and res["mse"] < 1e-3
    assert res["best_alpha"] == 1e-3 and res["alpha_chosen_on"] == "holdout"
    assert set(res["holdout_mse"]) == {f"{a:g}" for a in alphas}
    assert res["holdout_mse"]["1e+06"] > 100 * res["holdout_mse"]["0.001"]
    # A valid split whose target is the training mean: only the strongest penalty predicts it.
    valid_x, valid_y = _linear_target(rng, 200, beta)
    flat = ridge_probe(
        *(x, y, test_x, test_y, alphas, 0.4, 0), valid=(valid_x, 0 * valid_y + y.mean())
    )
    assert flat["best_alpha"] == 1e6 and flat["alpha_chosen_on"] == "valid"
    assert flat["holdout_mse"]["1e+06"] == min(flat["holdout_mse"].values())
    real = ridge_probe(*(x, y, test_x, test_y, alphas, 0.4, 0), valid=(valid_x, valid_y))
    assert real["best_alpha"] == 1e-3 and real["r2"] > 0.999


# ---------------------------------------------------------------------------------------------
# probe_all: features of every split (masks passed), one probe per task by its kind


class _MeanPool(torch.nn.Module):
    """A 'method' whose features are each modality's mean over its real steps, concatenated."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def encode(self, m, x, mask=None):
        self.modes.append(self.training)
        return x, mask

    def fuse(self, encoded):
        return torch.cat([Encoded(x, k).pooled() for x, k in encoded], dim=1)


def _split(rng, n, garbage=1e6):
    """Two padded modalities whose real-step means carry a class (feature 0 of modality 0) and
    a score (feature 1 of modality 1); huge values at the padded steps."""
    means = [rng.normal(size=(n, 3)), rng.normal(size=(n, 2))]
    banks, masks = [], []
    for mean in means:
        lengths = rng.integers(1, 6, n)
        mask = np.arange(5)[None, :] < lengths[:, None]
        steps = mean[:, None, :] + 0.05 * rng.normal(size=(n, 5, mean.shape[1]))
        banks.append(np.where(mask[..., None], steps, garbage).astype(np.float32))
        masks.append(mask)
    labels = {"cls": (means[0][:, 0] > 0).astype(int), "reg": 2.0 * means[1][:, 1] - 1.0}
    return PairedBank.aligned(banks, masks), labels


PROBE = {"C_grid": [0.1, 1.0, 10.0], "holdout_fraction": 0.4, "max_iter": 500,
         "class_weight": "balanced", "batch_size": 7}  # fmt: skip
TASKS = [
    {"name": "cls", "kind": "binary", "metric": "balanced_accuracy", "labels": "cls"},
    {"name": "reg", "kind": "regression", "metric": "mse", "labels": "reg"},
]


@pytest.mark.parametrize("with_valid", [False, True])
def test_probe_all_dispatches_by_task_kind(with_valid):
    rng = np.random.default_rng(5)
    (train, train_labels), (test, test_labels), (valid, valid_labels) = (
        _split(rng, n) for n in (200, 100, 80)
    )
    data = ProbeData(train, test, train_labels, test_labels)
    if with_valid:
        data = ProbeData(train, test, train_labels, test_labels, valid, valid_labels)
    method = _MeanPool().train()
    res = probe_all(method, data, PROBE, TASKS, torch.device("cpu"), seed=0, progress=False)
    assert not any(method.modes)  # features are extracted in eval mode
    assert res["feature_dim"] == 5 and res["n_train"] == 200 and res["n_test"] == 100
    assert res["n_valid"] == (80 if with_valid else 0)
    cls, reg = res["tasks"]["cls"], res["tasks"]["reg"]
    assert cls["kind"] == "binary" and cls["metric"] == "balanced_accuracy"
    assert "best_C" in cls and "mse" not in cls
    assert cls["balanced_accuracy"] > 0.95  # the padded garbage did not reach the features
    assert reg["kind"] == "regression" and reg["metric"] == "mse"
    assert "best_alpha" in reg and "balanced_accuracy" not in reg
    assert reg["r2"] > 0.99
    chosen = "valid" if with_valid else "holdout"
    assert cls["C_chosen_on"] == reg["alpha_chosen_on"] == chosen


def test_probe_all_refuses_a_task_kind_it_has_no_probe_for():
    rng = np.random.default_rng(6)
    (train, train_labels), (test, test_labels) = _split(rng, 60), _split(rng, 30)
    data = ProbeData(train, test, train_labels, test_labels)
    ranking = [{"name": "cls", "kind": "ranking", "metric": "mse"}]
    with pytest.raises(ValueError, match="'ranking'"):
        probe_all(_MeanPool(), data, PROBE, ranking, torch.device("cpu"), 0, progress=False)


def test_ridge_probe_averages_several_outputs_per_column():
    """Two outputs on very different scales: the reported r is the mean of the two columns'
    r, not the r of the pooled values (which the larger column would dominate)."""
    rng = np.random.default_rng(4)
    beta = rng.normal(size=6)
    x, y = _linear_target(rng, 300, beta)
    test_x, test_y = _linear_target(rng, 200, beta)
    noisy = rng.normal(size=200)
    two = np.stack([100 * y, rng.normal(size=300)], axis=1)  # column 2: unpredictable noise
    two_test = np.stack([100 * test_y, noisy], axis=1)
    res = ridge_probe(x, two, test_x, two_test, [1e-3, 1.0], holdout=0.4, seed=0)
    assert 0.3 < res["pearson"] < 0.7  # about (1 + 0) / 2; pooled it would be about 1
    assert res["r2"] < 0.6  # uniform average over the columns, not variance-weighted


def _genres(rng, n, weights):
    """Features (n, 8) and 0/1 labels (n, 4): labels 0-2 each read one feature (label 2 on about
    5 % of the samples), label 3 is noise; ``weights`` scales the signal."""
    x = rng.normal(size=(n, 8))
    logits = np.stack([x[:, 0], x[:, 1] - 0.5, x[:, 2] - 2.0], axis=1) * weights
    y = np.concatenate(
        [(logits + 0.3 * rng.normal(size=logits.shape) > 0), rng.random((n, 1)) < 0.3], axis=1
    )
    return x, y.astype(np.int64)


def test_multilabel_probe_fits_one_classifier_per_label_and_scores_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(7)
    (x, y), (vx, vy), (tx, ty) = (_genres(rng, n, 4.0) for n in (600, 200, 400))
    res = multilabel_probe(
        x, y, tx, ty, [0.01, 1.0], holdout=0.4, seed=0, max_iter=500, valid=(vx, vy)
    )
    assert res["n_labels"] == 4 and res["C_chosen_on"] == "valid"
    assert set(res["holdout_f1_macro"]) == {"0.01", "1"}
    best = max(res["holdout_f1_macro"], key=res["holdout_f1_macro"].get)
    assert res["best_C"] == float(best)
    # the three readable labels near 1, the noise label near 0 (predicted absent): macro F1
    # near 3/4; weighted F1 weighs the rare label 2 least and the noise label by its 30 %
    assert 0.65 < res["f1_macro"] < 0.8
    per_label = f1_score(ty[:, :3], (tx[:, :3] > [0, 0.5, 2]).astype(int), average=None)
    assert (per_label > 0.8).all()  # the features do carry labels 0-2
    support = ty.sum(axis=0)
    assert res["f1_weighted"] < res["f1_micro"] and res["f1_weighted"] != res["f1_macro"]
    assert support[2] < support[3]  # so macro and weighted F1 weigh labels differently
    assert 0.0 <= res["hamming_loss"] <= 0.15 and 0.0 < res["subset_accuracy"] < 0.8


def test_multilabel_probe_on_noise_and_a_label_absent_from_training():
    rng = np.random.default_rng(8)
    x, y = _genres(rng, 300, 0.0)  # no signal: every label is noise
    tx, ty = _genres(rng, 200, 0.0)
    y[:, 1] = 0  # never present in the training split
    res = multilabel_probe(x, y, tx, ty, [1.0], holdout=0.4, seed=0, max_iter=200)
    assert res["C_chosen_on"] == "holdout" and res["f1_macro"] < 0.5
    assert res["labels_constant_in_training"] == [1]
    with pytest.raises(ValueError, match="class_weight"):
        multilabel_probe(x, y, tx, ty, [1.0], 0.4, 0, 200, class_weight="inverse")


def test_probe_all_runs_the_multilabel_probe_for_a_multilabel_task():
    rng = np.random.default_rng(9)
    (train, train_labels), (test, test_labels) = _split(rng, 120), _split(rng, 60)
    train_labels["tags"] = np.stack([train_labels["cls"], 1 - train_labels["cls"]], axis=1)
    test_labels["tags"] = np.stack([test_labels["cls"], 1 - test_labels["cls"]], axis=1)
    data = ProbeData(train, test, train_labels, test_labels)
    tags = [{"name": "tags", "kind": "multilabel", "metric": "f1_weighted", "labels": "tags"}]
    res = probe_all(_MeanPool(), data, PROBE, tags, torch.device("cpu"), 0, progress=False)
    assert res["tasks"]["tags"]["kind"] == "multilabel" and res["tasks"]["tags"]["n_labels"] == 2
    assert res["tasks"]["tags"]["f1_weighted"] > 0.9


def test_subset_probes_read_each_modality_alone():
    # CoMM's features of one modality are its fused embedding with only that modality visible
    # (Z_i); a concatenating method's are that modality's own part of its features
    from conftest import tiny_run

    from comm_repro.data.paired import PairedBank
    from comm_repro.data.registry import ProbeData
    from comm_repro.evaluate import encode_banks, fuse_rows, probe_all
    from comm_repro.methods import build_method

    torch.manual_seed(0)
    g = np.random.default_rng(0)
    images = [g.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8) for _ in range(2)]
    bank = PairedBank.aligned(images)
    labels = {"t": np.arange(24) % 2}
    data = ProbeData(bank, bank, labels, labels)
    cpu = torch.device("cpu")
    for kind in ("comm", "cross"):
        method = build_method(tiny_run(method=kind), [(64, 64, 3)] * 2).eval()
        encoded = encode_banks(method, bank, cpu, 8, "fp32", False)
        full = fuse_rows(method, bank, encoded, cpu, 8, "fp32", False)
        alone = [fuse_rows(method, bank, encoded, cpu, 8, "fp32", False, [m]) for m in (0, 1)]
        with torch.no_grad():
            tokens = [method.encode(m, torch.from_numpy(images[m]))[0] for m in (0, 1)]
            if kind == "comm":
                want = [method.fusion(tokens, [m]).numpy() for m in (0, 1)]
            else:  # Cross: the two projections side by side
                want = [tokens[0].numpy(), tokens[1].numpy()]
        for m in (0, 1):
            np.testing.assert_allclose(alone[m], want[m], atol=1e-5)
        if kind == "cross":
            np.testing.assert_allclose(full, np.concatenate(alone, axis=1), atol=1e-6)
        else:
            assert not np.allclose(full, alone[0], atol=1e-3)  # Z is not Z_1
    probe = {
        "C_grid": [1.0],
        "holdout_fraction": 0.4,
        "max_iter": 50,
        "class_weight": "none",
        "subsets": True,
    }
    task = {"name": "t", "kind": "binary", "metric": "balanced_accuracy"}
    result = probe_all(method, data, probe, [task], cpu, 0, "fp32", False, ["image1", "image2"])
    assert set(result["subsets"]) == {"image1", "image2"}
    for scores in result["subsets"].values():
        assert 0.0 <= scores["t"]["balanced_accuracy"] <= 1.0
    assert "subsets" not in probe_all(method, data, {**probe, "subsets": False}, [task], cpu, 0)
