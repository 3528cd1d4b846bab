"""The `comm` command line: prepare -> pretrain -> probe round trip, help texts, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import pretrain_args

from comm_repro.cli import main
from comm_repro.train import CHECKPOINT, LOG, MODEL


@pytest.mark.parametrize("command", ["prepare", "pretrain", "probe"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_round_trip(tiny_config, trifeature_dir, tmp_path, capsys):
    _, config = tiny_config
    run = tmp_path / "runs" / "trifeatures" / "cross_self" / "seed0"
    args = pretrain_args(
        config, trifeature_dir, run, "--quiet", "--set", "train.epochs=1", method="cross_self"
    )
    assert main(args) == 0
    for name in (CHECKPOINT, LOG, MODEL, "pretrain.json"):
        assert (run / name).exists(), name
    meta = json.loads((run / "pretrain.json").read_text())
    assert meta["config"]["train"]["epochs"] == 1  # the override reached the run
    assert meta["seed"] == 0 and meta["git_commit"] and "torch" in meta["packages"]
    # The precision `auto` resolved to, and the CPU features that decided it, are recorded.
    assert meta["summary"]["precision"] == "fp32"  # the tiny config pins fp32
    assert {"model", "features", "logical_cores"} <= set(meta["cpu"])

    out = run / "probe.json"
    probe = ["probe", "--run", str(run), "--data", str(trifeature_dir), "--out", str(out)]
    assert main([*probe, "--quiet", "--set", "probe.max_iter=50"]) == 0
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == {"share", "unique1", "unique2", "synergy"}
    assert result["n_test"] == 4094
    for metrics in result["tasks"].values():
        assert 0.0 <= metrics["balanced_accuracy"] <= 1.0
    assert result["config"]["method"]["kind"] == "cross_self"
    assert result["config"]["probe"]["max_iter"] == 50  # the probe's override was applied
    assert {"git_commit", "packages", "device", "cpu", "wall_s", "seed"} <= set(result)
    assert result["precision"] == result["pretrained"]["precision"] == "fp32"
    assert result["pretrained"]["cpu"] == meta["cpu"]

    # datasets.<name>.probe_tasks restricts the probes; an unknown task is named
    only = ["--set", "dataset.probe_tasks=[synergy]"]
    assert main([*probe, "--quiet", *only]) == 0
    assert set(json.loads(out.read_text())["tasks"]) == {"synergy"}
    assert main([*probe, "--quiet", "--set", "dataset.probe_tasks=[colour]"]) == 2
    assert "probe_tasks" in capsys.readouterr().err


def test_unknown_method_names_the_key(tiny_config, trifeature_dir, tmp_path, capsys):
    _, config = tiny_config
    args = pretrain_args(config, trifeature_dir, tmp_path / "run", method="simclr")
    assert main(args) == 2
    assert "methods.simclr" in capsys.readouterr().err


def test_probe_without_model_says_what_to_run(tmp_path, capsys):
    code = main(
        [
            "probe",
            "--run",
            str(tmp_path),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "p.json"),
        ]
    )
    assert code == 2
    assert "comm-repro pretrain" in capsys.readouterr().err


def _flip_middle_byte(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


DAMAGES = {
    "truncated train.npz": ("train.npz", lambda p: p.write_bytes(p.read_bytes()[:1000])),
    "empty train.npz": ("train.npz", lambda p: p.write_bytes(b"")),
    "byte-flipped train.npz": ("train.npz", _flip_middle_byte),
    "garbage manifest.json": ("manifest.json", lambda p: p.write_text("{not json")),
    "manifest.json without the split": ("manifest.json", lambda p: p.write_text('{"splits": {}}')),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_corrupt_data_is_refused_in_one_line_naming_the_file(
    damage, tiny_config, trifeature_dir, tmp_path, capsys
):
    _, config = tiny_config
    data = tmp_path / "data"
    shutil.copytree(trifeature_dir, data)
    name, spoil = DAMAGES[damage]
    spoil(data / name)
    run = tmp_path / "run"
    args = pretrain_args(config, data, run, "--quiet")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(data / name) in err and f"comm-repro prepare trifeatures --out {data}" in err
    assert not (run / CHECKPOINT).exists()


def test_unreadable_model_is_refused_in_one_line_saying_how_to_rebuild_it(
    trifeature_dir, tmp_path, capsys
):
    (tmp_path / MODEL).write_bytes(b"PK\x03\x04 truncated")
    args = ["probe", "--run", str(tmp_path), "--data", str(trifeature_dir), "--out", "p.json"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{tmp_path / MODEL} is unusable" in err and "--forcerun pretrain" in err
