"""The `comm` command line: prepare -> pretrain -> probe round trip, help texts, clear errors,
run.json, the workflow's settings files, and a dataset family defined outside the project."""

from __future__ import annotations

import copy
import json
import shutil
import textwrap

import pandas as pd
import pytest
import yaml
from conftest import TINY_CONFIG, pretrain_args, tiny_run

from comm_repro import train
from comm_repro.cli import main
from comm_repro.config import pretrain_settings, run_config
from comm_repro.errors import UserError
from comm_repro.train import CHECKPOINT, LOG, MODEL, RUN_RECORD


@pytest.mark.parametrize("command", ["prepare", "pretrain", "probe"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


@pytest.fixture(scope="module")
def round_trip_run(trifeature_dir, tmp_path_factory):
    """A cross_self run of the tiny study, pretrained for one epoch, and its pretrain.json."""
    tmp = tmp_path_factory.mktemp("round_trip")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    run = tmp / "runs" / "trifeatures" / "cross_self" / "seed0"
    args = pretrain_args(
        config, trifeature_dir, run, "--quiet", "--set", "train.epochs=1", method="cross_self"
    )
    assert main(args) == 0
    return run


def _probe_args(run, data, out):
    return ["probe", "--run", str(run), "--data", str(data), "--out", str(out), "--quiet"]


def test_round_trip(round_trip_run, trifeature_dir):
    run = round_trip_run
    for name in (CHECKPOINT, LOG, MODEL, "pretrain.json", RUN_RECORD):
        assert (run / name).exists(), name
    meta = json.loads((run / "pretrain.json").read_text())
    assert meta["config"]["train"]["epochs"] == 1  # the override reached the run
    # run.json: the run's resolved settings, and where and how it computed
    expected = tiny_run("trifeatures", "cross_self", 0)
    expected["train"]["epochs"] = 1
    record = json.loads((run / RUN_RECORD).read_text())
    assert record == {**expected, "compute": {"device": "cpu", "precision": "fp32"}}
    assert meta["config"] == expected
    assert meta["seed"] == 0 and meta["git_commit"] and "torch" in meta["packages"]
    # The precision `auto` resolved to, and the CPU features that decided it, are recorded.
    assert meta["summary"]["precision"] == "fp32"  # the tiny config pins fp32
    assert {"model", "features", "logical_cores"} <= set(meta["cpu"])

    out = run / "probe.json"
    probe = _probe_args(run, trifeature_dir, out)
    assert main([*probe, "--set", "probe.max_iter=50"]) == 0
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == {"share", "unique1", "unique2", "synergy"}
    assert result["n_test"] == 4094
    assert result["n_train"] == 300  # the dataset's probe: max_train_samples
    assert result["n_valid"] == 0
    for metrics in result["tasks"].values():
        assert 0.0 <= metrics["balanced_accuracy"] <= 1.0
        assert metrics["C_chosen_on"] == "holdout"  # Trifeature has no valid split
    assert result["config"]["method"]["kind"] == "cross_self"
    assert result["config"]["probe"]["max_iter"] == 50  # the probe's override was applied
    assert {"git_commit", "packages", "device", "cpu", "wall_s", "seed"} <= set(result)
    assert result["precision"] == result["pretrained"]["precision"] == "fp32"
    assert result["pretrained"]["cpu"] == meta["cpu"]
    assert result["pretrained"]["compute"] == {"device": "cpu", "precision": "fp32"}


RESOLVED_TASKS = (
    "dataset.tasks=[{name: synergy, kind: binary, metric: balanced_accuracy, labels: synergy},"
    " {name: share, kind: regression, metric: mse, labels: share}]"
)


def _check_tasks_probed(out, printed):
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == {"synergy", "share"}
    share, synergy = result["tasks"]["share"], result["tasks"]["synergy"]
    assert share["kind"] == "regression" and share["metric"] == "mse" and "r2" in share
    assert "best_C" in synergy and "best_alpha" not in synergy
    assert f"synergy balanced_accuracy {synergy['balanced_accuracy']:.3f}" in printed
    assert f"share mse {share['mse']:.3f}" in printed


def test_the_datasets_tasks_say_what_is_probed_and_how(
    round_trip_run, trifeature_dir, tmp_path, capsys
):
    """By kind (a regression task gets the ridge probe), scored and printed by its metric."""
    out = tmp_path / "probe.json"
    probe = _probe_args(round_trip_run, trifeature_dir, out)
    assert main([*probe, "--set", RESOLVED_TASKS]) == 0
    _check_tasks_probed(out, capsys.readouterr().out)
    # A task reading labels the dataset does not have is named.
    colour = "dataset.tasks=[{name: synergy, kind: binary, labels: colour}]"
    assert main([*probe, "--set", colour]) == 2
    err = capsys.readouterr().err
    assert "datasets.trifeatures.tasks[0]: 'colour' is not in this dataset" in err


def test_tasks_given_to_the_probe_take_the_defaults_of_their_kind(
    round_trip_run, trifeature_dir, tmp_path, capsys
):
    """As in the study: a task's metric defaults by its kind, its labels to its name."""
    out = tmp_path / "probe.json"
    tasks = "dataset.tasks=[{name: synergy, kind: binary}, {name: share, kind: regression}]"
    code = main([*_probe_args(round_trip_run, trifeature_dir, out), "--set", tasks])
    assert code == 0, capsys.readouterr().err
    _check_tasks_probed(out, capsys.readouterr().out)


def test_unknown_method_names_the_key(tiny_config, trifeature_dir, tmp_path, capsys):
    _, config = tiny_config
    args = pretrain_args(config, trifeature_dir, tmp_path / "run", method="simclr")
    assert main(args) == 2
    assert "methods.simclr" in capsys.readouterr().err


def test_probe_without_model_says_what_to_run(tmp_path, capsys):
    args = ["probe", "--run", str(tmp_path), "--data", str(tmp_path), "--out", "p.json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / RUN_RECORD} not found" in err and "comm-repro pretrain" in err
    (tmp_path / RUN_RECORD).write_text(json.dumps(tiny_run()))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / MODEL} not found" in err and "comm-repro pretrain" in err
    (tmp_path / RUN_RECORD).write_text("{not json")
    (tmp_path / MODEL).write_bytes(b"")
    assert main(args) == 2
    assert f"{tmp_path / RUN_RECORD} is unreadable" in capsys.readouterr().err


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
    record = {**tiny_run(method="cross"), "compute": {"device": "cpu", "precision": "fp32"}}
    (tmp_path / RUN_RECORD).write_text(json.dumps(record))
    (tmp_path / MODEL).write_bytes(b"PK\x03\x04 truncated")
    args = ["probe", "--run", str(tmp_path), "--data", str(trifeature_dir), "--out", "p.json"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{tmp_path / MODEL} is unusable" in err and "--forcerun pretrain" in err


def test_run_json_is_written_before_training(
    tiny_config, trifeature_dir, tmp_path, monkeypatch, capsys
):
    _, config = tiny_config
    run = tmp_path / "run"
    seen = {}

    def stop(method, data, run_cfg, out_dir, device, precision, progress):
        seen["record"] = json.loads((out_dir / RUN_RECORD).read_text())
        seen["shapes"] = data.sample_shapes()
        raise UserError("stopped before training")

    monkeypatch.setattr(train, "pretrain", stop)
    args = pretrain_args(config, trifeature_dir, run, "--quiet", "--set", "train.lr=0.001", seed=4)
    assert main(args) == 2
    assert "stopped before training" in capsys.readouterr().err
    expected = tiny_run("trifeatures", "cross", 4)
    expected["train"]["lr"] = 0.001
    assert seen["record"] == {**expected, "compute": {"device": "cpu", "precision": "fp32"}}
    assert seen["shapes"] == [(64, 64, 3), (64, 64, 3)]  # the dataset's resolution
    assert not (run / MODEL).exists()


def test_pretrain_takes_settings_or_a_study_run_not_both(tiny_config, tmp_path, capsys):
    _, config = tiny_config
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(pretrain_settings(tiny_run())))
    common = ["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    both = [*common, "--settings", str(settings), "--config", str(config)]
    assert main(both) == 2
    assert "give --settings, or --config" in capsys.readouterr().err
    partial = [*common, "--config", str(config), "--dataset", "trifeatures"]
    assert main(partial) == 2
    assert "--config with --dataset, --method and --seed" in capsys.readouterr().err
    settings.write_text(yaml.safe_dump({**pretrain_settings(tiny_run()), "seeds": [0]}))
    assert main([*common, "--settings", str(settings)]) == 2
    err = capsys.readouterr().err
    assert "error: seeds: unknown key" in err and str(settings) in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# A dataset family defined outside the project: padded sequences with a valid split, through
# the workflow's files (settings.yaml, probe_settings.yaml)

FAMILY = textwrap.dedent(
    """
    import json

    import numpy as np

    from comm_repro.data.paired import PairedBank
    from comm_repro.data.registry import ProbeData


    class Toy:
        def prepare(self, out_dir, options, source, download_to, progress):
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "manifest.json").write_text(json.dumps(options))
            return f"prepared with {sorted(options)}"

        def _split(self, data_dir, dataset, n, seed):
            seed += json.loads((data_dir / "manifest.json").read_text())["seed"]
            rng = np.random.default_rng(seed)
            steps = dataset["steps"]  # a key of this family's own
            lengths = rng.integers(1, steps + 1, n)
            mask = np.arange(steps)[None, :] < lengths[:, None]
            label = rng.integers(0, 2, n)
            score = rng.normal(size=n)
            a = rng.normal(size=(n, steps, 3)) + 2 * label[:, None, None]
            b = rng.normal(size=(n, steps, 4)) + score[:, None, None]
            a[~mask], b[~mask] = 0, 0
            every = {"label": label, "score": score}
            labels = {t["name"]: every[t["labels"]] for t in dataset["tasks"]}
            banks = {"a": a.astype(np.float32), "b": b.astype(np.float32)}
            modalities = [banks[m["name"]] for m in dataset["modalities"]]
            return PairedBank.aligned(modalities, [mask] * len(modalities), labels), labels

        def pretrain_data(self, data_dir, dataset):
            return self._split(data_dir, dataset, 48, 0)[0]

        def probe_data(self, data_dir, dataset, probe):
            (train, y), (valid, yv), (test, yt) = (
                self._split(data_dir, dataset, n, s) for n, s in ((80, 1), (40, 2), (60, 3))
            )
            return ProbeData(train, test, y, yt, valid, yv)
    """
)


@pytest.fixture
def toy_study(tmp_path, monkeypatch):
    """A study whose dataset `toy` is of the family toy_family:Toy (two sequence modalities, a
    binary and a regression task), prepared."""
    (tmp_path / "toy_family.py").write_text(FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["toy"] = {
        "family": "toy_family:Toy",
        "steps": 5,
        "prepare": {"seed": 7},
        "modalities": [{"name": "a", "kind": "sequence"}, {"name": "b", "kind": "sequence"}],
        "tasks": [
            {"name": "label", "kind": "binary"},
            {"name": "sentiment", "kind": "regression", "labels": "score"},
        ],
        "train": {"batch_size": 8, "epochs": 2},
    }
    data = tmp_path / "data"
    prepare = ["prepare", "toy_family:Toy", "--out", str(data), "--quiet", "--option", "seed=7"]
    assert main(prepare) == 0
    return cfg, data


def test_prepare_passes_options_to_a_family_defined_elsewhere(toy_study, capsys):
    _, data = toy_study
    assert json.loads((data / "manifest.json").read_text()) == {"seed": 7}  # parsed as YAML
    out = data.parent / "again"
    args = ["prepare", "toy_family:Toy", "--out", str(out), "--option", "a=[1, 2]", "b=x"]
    assert main([*args, "--seed", "3", "--quiet"]) == 0
    assert "prepared with ['a', 'b', 'generator_seed']" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text()) == {
        "a": [1, 2],
        "b": "x",
        "generator_seed": 3,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["trifeatures", "--option", "colour=red"], "not ['colour']"),
        (["mosi", "--option", "window=5"], "mosi takes no preparation options"),
        (["trifeatures", "--option", "seed"], "--option 'seed' must look like key=value"),
        (["imagenet"], "dataset family 'imagenet' is unknown"),
        (["no_such_module:Family"], "'no_such_module:Family' cannot be imported"),
    ],
)
def test_prepare_refuses_options_and_families_it_cannot_use(tmp_path, capsys, args, message):
    out = tmp_path / "data"
    assert main(["prepare", *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["comm", "cross_self"])
def test_the_workflows_settings_files_pretrain_and_probe_a_sequence_dataset(
    toy_study, tmp_path, capsys, kind
):
    cfg, data = toy_study
    run_cfg = run_config(cfg, "toy", kind, 1)
    settings, probe_settings = tmp_path / "settings.yaml", tmp_path / "probe_settings.yaml"
    settings.write_text(yaml.safe_dump(pretrain_settings(run_cfg), sort_keys=False))
    probe_settings.write_text(yaml.safe_dump({"probe": run_cfg["probe"]}))
    run = tmp_path / "run"
    pretrain = ["pretrain", "--settings", str(settings), "--data", str(data), "--out", str(run)]
    assert main([*pretrain, "--quiet"]) == 0
    summary = json.loads((run / "pretrain.json").read_text())
    assert summary["n_train_samples"] == 48 and summary["summary"]["steps_per_epoch"] == 6
    record = json.loads((run / RUN_RECORD).read_text())
    assert "probe" not in record and record["dataset"]["steps"] == 5
    encoders = [m["encoder"] for m in record["dataset"]["modalities"]]
    assert encoders == [TINY_CONFIG["encoders"]["sequence"]] * 2

    out = tmp_path / "probe.json"
    probe = ["probe", "--run", str(run), "--data", str(data), "--out", str(out), "--quiet"]
    assert main(probe) == 2  # run.json holds no probe settings: the workflow passes them
    assert "error: probe: required, but missing" in capsys.readouterr().err
    assert main([*probe, "--settings", str(probe_settings)]) == 0
    result = json.loads(out.read_text())
    assert (result["n_train"], result["n_valid"], result["n_test"]) == (80, 40, 60)
    label, sentiment = result["tasks"]["label"], result["tasks"]["sentiment"]
    assert label["kind"] == "binary" and label["C_chosen_on"] == "valid"
    assert label["balanced_accuracy"] > 0.8  # the class shifts modality a: even 2 epochs see it
    assert sentiment["kind"] == "regression" and sentiment["metric"] == "mse"
    assert sentiment["alpha_chosen_on"] == "valid" and "r2" in sentiment
    assert result["config"]["probe"] == run_cfg["probe"]


@pytest.mark.slow
def test_each_snapshot_is_probed_as_the_final_model_and_drawn_over_training(
    trifeature_dir, tmp_path, capsys
):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    run = tmp_path / "run"
    extra = ("--quiet", "--set", "train.epochs=2", "train.snapshot_every=1")
    assert main(pretrain_args(config, trifeature_dir, run, *extra, method="comm")) == 0
    results = {}
    snapshots = {"final": [], "epoch1": ["--snapshot", "1"], "epoch2": ["--snapshot", "2"]}
    for name, snapshot in snapshots.items():
        out = tmp_path / f"{name}.json"
        args = ["probe", "--run", str(run), "--data", str(trifeature_dir), "--out", str(out)]
        assert main([*args, *snapshot, "--quiet", "--set", "probe.max_iter=50"]) == 0
        results[name] = json.loads(out.read_text())
    steps = 96 // 16  # the tiny study's pairs over its batch size
    assert results["epoch1"]["snapshot"] == {"epoch": 1, "step": steps}
    assert results["epoch2"]["snapshot"] == {"epoch": 2, "step": 2 * steps}
    assert "snapshot" not in results["final"]
    # the last epoch's snapshot is the final model: the same probe scores
    assert results["epoch2"]["tasks"] == results["final"]["tasks"]
    assert results["epoch1"]["tasks"] != results["epoch2"]["tasks"]
    # an epoch the run kept no snapshot of is named with the setting that keeps them
    bad = ["probe", "--run", str(run), "--data", str(trifeature_dir), "--out", "x.json"]
    assert main([*bad, "--snapshot", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "epoch0003.pt not found" in err and "every 1 epochs" in err

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "title": "Over training",
                "paper": "Fig. 5",
                "metric": "balanced_accuracy",
                "scale": 100,
                "columns": [
                    {"name": "R", "dataset": "trifeatures", "task": "share", "chance": 10},
                    {"name": "S", "dataset": "trifeatures", "task": "synergy", "chance": 50},
                ],
                "rows": [{"method": "comm", "label": "CoMM"}],
                "curves": {"S": {"comm": [[6, 55.0], [12, 60.0]]}},
            }
        )
    )
    snapshots = [str(tmp_path / f"epoch{e}.json") for e in (2, 1)]
    out = tmp_path / "tables" / "curve"
    args = ["snapshots", "--spec", str(spec), "--probes", *snapshots, "--methods", "comm"]
    assert main([*args, "--out", str(out)]) == 0
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table.epoch) == [1, 1, 2, 2]
    assert list(table.step) == [steps, steps, 2 * steps, 2 * steps]
    s_at_2 = table[(table.epoch == 2) & (table.column == "S")]["mean"].item()
    # the CSV holds 3 decimals
    s_2 = 100 * results["epoch2"]["tasks"]["synergy"]["balanced_accuracy"]
    assert s_at_2 == pytest.approx(round(s_2, 3))
    md = out.with_suffix(".md").read_text()
    assert "| CoMM | 1 | 6 |" in md and "| CoMM | 2 | 12 |" in md
    for ext in (".png", ".pdf"):
        assert out.with_suffix(ext).stat().st_size > 0
    # a final model's probe is not a snapshot's
    final = str(tmp_path / "final.json")
    assert main([*args[:3], "--probes", final, "--methods", "comm", "--out", str(out)]) == 2
    assert "not the probe of a snapshot" in capsys.readouterr().err
