"""MIMIC-III (im.pk): the user's file only, the authors' preprocessing and split, the labels, and
the refusals; on fixture pickles written in MultiBench's layout."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from test_multibench import Payload, write_pickle

from comm_repro import download
from comm_repro.cli import main
from comm_repro.data import mimic
from comm_repro.data.registry import family
from comm_repro.errors import DataError

N = 37  # valid 3, test 4, train 30


def mimic_data(n: int = N, seed: int = 0) -> dict:
    """A dict as in im.pk: float64 arrays with NaN and inf, admission labels with 6 columns,
    ICD-9 counts (including values > 1 and exact 0)."""
    rng = np.random.default_rng(seed)
    series = rng.normal(3.0, 2.0, (n, mimic.STEPS, mimic.SERIES_FEATURES))
    series[0, 0, 0], series[1, 5, 3], series[2, 7, 11] = np.nan, np.inf, -np.inf
    static = rng.normal(50.0, 10.0, (n, mimic.STATIC_FEATURES))
    static[3, 2] = np.nan
    adm = np.zeros((n, 7))
    adm[np.arange(n), rng.integers(0, 7, n)] = 1.0
    adm[4, [2, 4]] = 1.0  # two outcomes: the first of columns 1..5 counts
    icd9 = rng.integers(0, 3, (n, mimic.ICD9_GROUPS)).astype(np.float64)
    return {"ep_tdata": series, "adm_features_all": static, "adm_labels_all": adm, "y_icd9": icd9}


def authors_split(data: dict, task: int) -> dict[str, list]:
    """The authors' loader, step by step as they write it (CoMM's dataset/mimic/get_data.py):
    zero non-finite values, whole-file z-scores in a per-sample loop, the raw ICD-9 column,
    random.seed(10) + random.shuffle over the zipped list, then slices."""
    x_t, x_s = data["ep_tdata"].copy(), data["adm_features_all"].copy()
    for x in (x_t, x_s):
        x[np.isinf(x)] = 0
        x[np.isnan(x)] = 0
    s_avg, s_std = np.average(x_s, axis=0), np.std(x_s, axis=0)
    t_avg, t_std = np.average(x_t, axis=(0, 1)), np.std(x_t, axis=(0, 1))
    for i in range(len(x_s)):
        x_s[i] = (x_s[i] - s_avg) / s_std
        for j in range(len(x_t[0])):
            x_t[i][j] = (x_t[i][j] - t_avg) / t_std
    y = data["y_icd9"][:, task]
    rows = list(zip(zip(x_s.astype(np.float32), x_t.astype(np.float32)), y))
    random.seed(10)
    random.shuffle(rows)
    n = len(rows)
    return {"train": rows[n // 5 :], "valid": rows[: n // 10], "test": rows[n // 10 : n // 5]}


@pytest.fixture
def im_pk(tmp_path):
    data = mimic_data()
    return write_pickle(tmp_path / "im.pk", data, protocol=2), data


def test_preparation_reproduces_the_authors_split_and_preprocessing(tmp_path, im_pk):
    path, data = im_pk
    manifest = mimic.prepare(path, tmp_path / "out", progress=False)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 30,
        "valid": 3,
        "test": 4,
    }
    assert manifest["non_finite_replaced"] == {"timeseries": 3, "tabular": 1}
    theirs = authors_split(data, mimic.DEFAULT_TASK)
    for split in mimic.SPLITS:
        ours = mimic.load_split(tmp_path / "out", split)
        assert ours["tabular"].dtype == np.float32 and ours["timeseries"].shape[1:] == (24, 12)
        np.testing.assert_allclose(ours["tabular"], [r[0][0] for r in theirs[split]], atol=1e-6)
        np.testing.assert_allclose(ours["timeseries"], [r[0][1] for r in theirs[split]], atol=1e-6)
        # their label is the raw count; ours is it binarised
        np.testing.assert_array_equal(ours["label"], [int(r[1] > 0) for r in theirs[split]])
        assert np.isfinite(ours["timeseries"]).all()
    every = np.concatenate([mimic.load_split(tmp_path / "out", s)["tabular"] for s in mimic.SPLITS])
    np.testing.assert_allclose(every.mean(0), 0, atol=1e-5)  # whole-file statistics
    np.testing.assert_allclose(every.std(0), 1, atol=1e-5)


def test_labels_icd9_task_and_mortality(tmp_path, im_pk):
    path, data = im_pk
    mimic.prepare(path, tmp_path / "out", task=3, progress=False)
    rows = mimic.split_rows(N)
    test = mimic.load_split(tmp_path / "out", "test")
    np.testing.assert_array_equal(test["icd9"], (data["y_icd9"][rows["test"]] > 0).astype(int))
    np.testing.assert_array_equal(test["label"], test["icd9"][:, 3])
    adm = data["adm_labels_all"]
    expected = [next((j for j in range(1, 6) if adm[i, j] > 0), 0) for i in range(N)]
    np.testing.assert_array_equal(mimic.mortality_class(adm), expected)
    assert mimic.mortality_class(adm)[4] == 2  # columns 2 and 4 set: the first counts


def test_train_only_statistics_are_an_option(tmp_path, im_pk):
    path, _ = im_pk
    manifest = mimic.prepare(path, tmp_path / "out", stats="train", progress=False)
    assert manifest["stats"] == "train" and "the train split" in manifest["preprocessing"]
    train = mimic.load_split(tmp_path / "out", "train")
    np.testing.assert_allclose(train["tabular"].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train["timeseries"].std(axis=(0, 1)), 1, atol=1e-5)
    whole = mimic.prepare(path, tmp_path / "whole", progress=False)
    assert whole["splits"]["train"]["sha256"] != manifest["splits"]["train"]["sha256"]
    with pytest.raises(DataError, match="stats"):
        mimic.prepare(path, tmp_path / "x", stats="test", progress=False)


def test_structure_checks_name_what_is_wrong(tmp_path):
    def constant_column(d):
        d["adm_features_all"][:, 1] = 4.0

    for change, message in [
        (lambda d: d.pop("y_icd9"), "y_icd9"),
        (lambda d: d.update(ep_tdata=d["ep_tdata"][:, :12]), r"'ep_tdata' has shape \(37, 12, 12"),
        (lambda d: d.update(adm_labels_all=d["adm_labels_all"][:5]), "5 samples"),
        (constant_column, r"static features \[1\]"),
    ]:
        data = mimic_data()
        change(data)
        path = write_pickle(tmp_path / "im.pk", data)
        with pytest.raises(DataError, match=message):
            mimic.prepare(path, tmp_path / "out", progress=False)


def test_the_command_line_prepares_a_given_file_and_refuses_the_rest(
    tmp_path, im_pk, monkeypatch, capsys
):
    path, _ = im_pk
    out = tmp_path / "prepared"
    args = ["prepare", "mimic", "--source", str(path), "--out", str(out), "--quiet"]
    assert main([*args, "--option", "stats=train", "--option", "task=5"]) == 0
    assert "train 30, valid 3, test 4" in capsys.readouterr().out
    assert mimic.load_split(out, "valid")["label"].shape == (3,)

    monkeypatch.setenv(download.RAW_DIR_ENV, str(tmp_path / "raw"))  # nothing there
    assert main(["prepare", "mimic", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PhysioNet" in err and "MultiBench" in err
    assert str(tmp_path / "raw" / "mimic" / "im.pk") in err and "datasets.<name>.source" in err

    (tmp_path / "raw" / "mimic").mkdir(parents=True)  # the default location
    (tmp_path / "raw" / "mimic" / "im.pk").write_bytes(path.read_bytes())
    assert main(["prepare", "mimic", "--out", str(out), "--quiet"]) == 0
    for bad in (["--download-to", str(tmp_path)], ["--option", "split_seed=3"]):
        assert main(["prepare", "mimic", "--out", str(out), "--quiet", *bad]) == 2
        assert "mimic" in capsys.readouterr().err

    hostile = write_pickle(tmp_path / "hostile.pk", {"ep_tdata": Payload(tmp_path / "ran")})
    assert main(["prepare", "mimic", "--source", str(hostile), "--out", str(out)]) == 2
    assert "refused" in capsys.readouterr().err and not (tmp_path / "ran").exists()


def test_the_family_serves_both_modalities_and_the_valid_split(tmp_path, im_pk):
    path, _ = im_pk
    mimic.prepare(path, tmp_path / "out", progress=False)
    dataset = {
        "name": "mimic",
        "modalities": [
            {"name": "tabular", "kind": "tabular"},
            {"name": "timeseries", "kind": "sequence"},
        ],
        "tasks": [{"name": "icd9_7", "kind": "binary", "labels": "label"}],
    }
    mimic_family = family("mimic")
    bank = mimic_family.pretrain_data(tmp_path / "out", dataset)
    assert len(bank) == 30 and bank.sample_shapes() == [(5,), (24, 12)]
    assert bank.masks == [None, None] and set(bank.labels) == {"label", "icd9", "mortality"}
    probe = mimic_family.probe_data(tmp_path / "out", dataset, {})
    assert len(probe.valid) == 3 and len(probe.test) == 4
    assert probe.train_labels["icd9_7"].shape == (30,)
    with pytest.raises(Exception, match="max_train_samples"):
        mimic_family.probe_data(tmp_path / "out", dataset, {"max_train_samples": 10})
    pickle.dumps(dataset)  # the dataset dict stays plain data
