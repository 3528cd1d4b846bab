"""Linear probe: C selection on a hold-out, balanced vs plain accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from comm_repro.evaluate import linear_probe

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
