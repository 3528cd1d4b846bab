"""Config checks: the one schema behind the workflow and the command line, bad values named."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_CONFIG, pretrain_args
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from comm_repro.cli import main
from comm_repro.config import (
    ConfigError,
    apply_overrides,
    check,
    check_run,
    check_study,
    data_id,
    experiment_results,
    experiment_runs,
    load_yaml,
    modality_tokens,
    pretrain_settings,
    run_config,
    schema,
    study_runs,
)
from comm_repro.models.encoders import AlexNetEncoder

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "src" / "comm_repro" / "schemas" / "config.schema.yaml"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def one_error_line(err: str, command: str) -> str:
    """The command's stderr: exactly one line, the error (no traceback)."""
    assert err.startswith(f"comm-repro {command}: error: "), err
    assert err.count("\n") == 1, err
    return err


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(workdir), "-n", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=workdir)


def workdir_for(tmp: Path, *, config: bool = True) -> Path:
    """A working directory that sees the repository's notebooks, profiles and (unless told
    otherwise) config folder."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("config", "notebooks", "profiles") if config else ("notebooks", "profiles"):
        (tmp / name).symlink_to(REPO / name)
    return tmp


# ---------------------------------------------------------------------------------------------
# The command line: bad values stop it before any data is read, naming the key

# (arguments, what the one error line must say: the key first, then the problem)
PRETRAIN_BAD = [
    (["--set", "train.epochs=0"], r"train\.epochs: 0 is less than the minimum of 1"),
    (["--set", "train.batch_size=1"], r"train\.batch_size: 1 is less than the minimum of 2"),
    (["--set", "train.lr=0"], r"train\.lr: 0 is less than or equal to the minimum of 0"),
    (["--set", "train.lr=-3e-4"], r"train\.lr: '-3e-4' is not of type 'number'"),
    (["--set", "train.device=gpu"], r"train\.device: 'gpu' does not match"),
    (["--set", "train.device=cuda:x"], r"train\.device: 'cuda:x' does not match"),
    (["--device", "tpu"], r"(train\.device|--device)\b.*'tpu'"),
    (["--set", "train.precision=fp16"], r"train\.precision: 'fp16' is not one of"),
    (["--set", "probe.max_iter=0"], r"probe\.max_iter: 0 is less than the minimum of 1"),
    (["--set", "probe.class_weight=weighted"], r"probe\.class_weight: 'weighted' is not one of"),
    (["--set", "probe.holdout_fraction=0"], r"probe\.holdout_fraction: 0 is less than or equal"),
    (["--set", "probe.holdout_fraction=1"], r"probe\.holdout_fraction: 1 is greater than or"),
    (["--set", "probe.C_grid=[]"], r"probe\.C_grid: \[\] should be non-empty"),
    (["--set", "train.epoch=3"], r"train\.epoch: unknown key; train takes batch_size"),  # typo
    (
        ["--set", "datasets.trifeatures.max_train_pairs=8"],  # < batch 16
        r"datasets\.trifeatures\.max_train_pairs: 8 is below train\.batch_size 16",
    ),
    (["--set", "train.epochs=[1"], r"override 'train\.epochs=\[1': the value is not valid YAML"),
    # The sections a dataset and a method override are checked where they are written.
    (
        ["--set", "datasets.trifeatures.train={batch_size: 1}"],
        r"datasets\.trifeatures\.train\.batch_size: 1 is less than the minimum of 2",
    ),
    (["--set", "methods.cross.train={lr: 0}"], r"methods\.cross\.train\.lr: 0 is less than"),
    (["--set", "encoders.sequence.dim=0"], r"encoders\.sequence\.dim: 0 is less than the minimum"),
    (["--set", "augment.image.strong.flip_p=2"], r"augment\.image\.strong\.flip_p: 2 is greater"),
    (["--set", "datasets.trifeatures.colour=1"], r"datasets\.trifeatures\.colour: unknown key"),
    (
        ["--set", "datasets.trifeatures.probe={max_train_samples: 3}"],
        r"datasets\.trifeatures\.probe\.max_train_samples: 3 is less than the minimum of 10",
    ),
    (
        ["--set", "datasets.trifeatures.tasks=[{name: share, kind: ranking}]"],
        r"datasets\.trifeatures\.tasks\[0\]\.kind: 'ranking' is not one of",
    ),
    (
        ["--set", "experiments={x: {table: fig4_trifeatures, methods: [comm]}}"],
        r"experiments\.x\.seeds: required, but missing",
    ),
    # A bad value of a key that only the dataset's family (or the method's kind) has.
    (
        ["--set", "datasets.trifeatures.resolution=62"],
        r"datasets\.trifeatures\.resolution: 62 is less than the minimum of 63",
    ),
]


@pytest.mark.parametrize("args, named", PRETRAIN_BAD, ids=[" ".join(a) for a, _ in PRETRAIN_BAD])
def test_pretrain_rejects_bad_values_naming_the_key(
    tiny_config, trifeature_dir, tmp_path, capsys, args, named
):
    _, config = tiny_config
    run = tmp_path / "run"
    cmd = pretrain_args(config, trifeature_dir, run, "--quiet", *args)
    assert main(cmd) == 2
    line = one_error_line(capsys.readouterr().err, "pretrain")
    assert re.search(rf"error: {named}", line), line
    assert not run.exists()


@pytest.fixture(scope="module")
def trained_run(trifeature_dir, tmp_path_factory) -> Path:
    """One run of the tiny config, pretrained for one epoch."""
    tmp = tmp_path_factory.mktemp("probe_checks")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    run = tmp / "run"
    cmd = pretrain_args(config, trifeature_dir, run, "--quiet", "--set", "train.epochs=1")
    assert main(cmd) == 0
    return run


PROBE_BAD = [
    (["--set", "probe.max_iter=0"], r"probe\.max_iter: 0 is less than the minimum of 1"),
    (["--set", "probe.C_grid=[]"], r"probe\.C_grid: \[\] should be non-empty"),
    (["--set", "probe.class_weight=weighted"], r"probe\.class_weight: 'weighted' is not one of"),
    (["--set", "probe.holdout_fraction=1.0"], r"probe\.holdout_fraction: 1\.0 is greater than"),
    (["--set", "probe.Cgrid=[1.0]"], r"probe\.Cgrid: unknown key"),
    (["--set", "probe={}"], r"probe\.C_grid: required, but missing"),  # what the probes need
    (["--set", "probe.max_train_samples=5"], r"probe\.max_train_samples: 5 is less than"),
    (["--set", "train.device=tpu"], r"train\.device: 'tpu' does not match"),
    (["--device", "tpu"], r"(train\.device|--device)\b.*'tpu'"),
    # The keys that moved: probe_tasks is the dataset's tasks, probe_train_pairs its probe.
    (["--set", "dataset.probe_tasks=[synergy]"], r"dataset\.probe_tasks: unknown key"),
    (["--set", "dataset.probe_train_pairs=300"], r"dataset\.probe_train_pairs: unknown key"),
    (["--set", "dataset.resolution=62"], r"dataset\.resolution: 62 is less than the minimum"),
    (["--set", "method.proj_dim=0"], r"method\.proj_dim: 0 is less than the minimum of 1"),
]


@pytest.mark.parametrize("args, named", PROBE_BAD, ids=[" ".join(a) for a, _ in PROBE_BAD])
def test_probe_rejects_bad_values_naming_the_key(trained_run, trifeature_dir, capsys, args, named):
    before = {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir()}
    out = trained_run / "probe.json"
    cmd = ["probe", "--run", str(trained_run), "--data", str(trifeature_dir), "--out", str(out)]
    assert main([*cmd, "--quiet", *args]) == 2
    line = one_error_line(capsys.readouterr().err, "probe")
    assert re.search(rf"error: {named}", line), line
    assert {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir()} == before


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, trifeature_dir, capsys):
    config = tmp_path / "study.yaml"
    config.write_text("train:\n  epochs: 2\n  lr: [3e-4\nprobe: {}\n")
    with pytest.raises(ConfigError, match=rf"^{config}:4:\d+: not valid YAML"):
        load_yaml(config)
    cmd = pretrain_args(config, trifeature_dir, tmp_path / "run")
    assert main(cmd) == 2
    assert f"{config}:4:" in one_error_line(capsys.readouterr().err, "pretrain")


# ---------------------------------------------------------------------------------------------
# The schema, and the encoder it must agree with


def _family_keys(family: str) -> dict:
    """The schema's keys of a dataset family (its `then` branch in dataset_common)."""
    for branch in schema()["definitions"]["dataset_common"]["allOf"]:
        if branch["if"]["properties"]["family"].get("const") == family:
            return branch["then"]["properties"]
    raise AssertionError(f"the schema has no branch for family {family!r}")


def test_resolution_minimum_is_the_smallest_input_the_encoder_takes():
    minimum = _family_keys("trifeatures")["resolution"]["minimum"]
    assert minimum == AlexNetEncoder.min_input_size == 63
    cfg = load(REPO / "config" / "config.yaml")
    cfg["datasets"]["trifeatures"]["resolution"] = 63
    validate(copy.deepcopy(cfg), str(SCHEMA))
    check_study(cfg)
    cfg["datasets"]["trifeatures"]["resolution"] = 62
    with pytest.raises(WorkflowError, match="62 is less than the minimum of 63"):
        validate(copy.deepcopy(cfg), str(SCHEMA))
    with pytest.raises(ConfigError, match=r"^datasets\.trifeatures\.resolution: 62 is less"):
        check_study(cfg)


def test_encoder_takes_63_px_and_names_the_setting_below():
    encoder = AlexNetEncoder().eval()
    with torch.no_grad():
        out = encoder(torch.zeros(1, 3, 63, 63))
        assert out.tokens.shape == (1, 1, 256) and out.grid == (1, 1)
        with pytest.raises(RuntimeError):  # the bare trunk: its last max-pool gets 2 x 2
            encoder.features(torch.zeros(1, 3, 62, 62))
        with pytest.raises(ConfigError, match=r"datasets\.<name>\.resolution to 63 or more"):
            encoder(torch.zeros(1, 3, 62, 62))


SHIPPED = [
    "config/config.yaml",
    "config/paper.yaml",
    ".test/config.yaml",
]


@pytest.mark.parametrize("path", SHIPPED)
def test_the_cli_checks_accept_shipped_configs_and_every_runs_settings(path):
    """The study, and each run's files as the workflow writes them: settings.yaml (the run's
    settings without the probe section) for pretrain --settings, probe_settings.yaml for
    probe --settings, and the run as the probe reads it back (run.json with the probe)."""
    cfg = load(REPO / path)
    check_study(cfg)
    for dataset in cfg["datasets"]:
        for method in cfg["methods"]:
            run = run_config(cfg, dataset, method, 3)
            written = yaml.safe_load(yaml.safe_dump(pretrain_settings(run), sort_keys=False))
            assert "probe" not in written and written["seed"] == 3
            check_run(written)
            check({"probe": run["probe"]}, "probe_settings")
            check_run({**written, "probe": run["probe"]}, probe=True)
            with pytest.raises(ConfigError, match=r"^probe: required, but missing"):
                check_run(written, probe=True)


# ---------------------------------------------------------------------------------------------
# One run's settings: defaults, then the dataset's overrides, then the method's


def _sequence_dataset(**extra) -> dict:
    return {
        "family": "mypkg.affect:Family",
        "modalities": [
            {"name": "vision", "kind": "sequence"},
            {"name": "text", "kind": "sequence", "encoder": {"dim": 40}},
        ],
        "tasks": [{"name": "label", "kind": "binary"}],
        **extra,
    }


def test_run_config_precedence_defaults_then_dataset_then_method():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["trifeatures"]["train"] = {"lr": 1e-3}
    cfg["methods"]["comm"]["train"] = {"lr": 5e-3}
    cfg["methods"]["comm"]["model"] = {"embed_dim": 64}
    cfg["datasets"]["affect"] = _sequence_dataset(encoders={"sequence": {"dim": 24}})
    cfg["methods"]["cross"]["encoders"] = {"sequence": {"dim": 32}}
    before = copy.deepcopy(cfg)

    def lr(dataset, method):
        return run_config(cfg, dataset, method, 0)["train"]["lr"]

    assert lr("trifeatures_synergy", "cross") == 3e-4  # the default
    assert lr("trifeatures", "cross") == 1e-3  # the dataset's
    assert lr("trifeatures", "comm") == lr("trifeatures_synergy", "comm") == 5e-3  # the method's
    run = run_config(cfg, "trifeatures", "comm", 0)
    assert run["train"] == {**TINY_CONFIG["train"], "lr": 5e-3}  # merged key by key
    assert run["model"] == {**TINY_CONFIG["model"], "embed_dim": 64}
    assert run["method"] == {"name": "comm", **TINY_CONFIG["methods"]["comm"]}  # no sections
    assert run["probe"] == {**TINY_CONFIG["probe"], "max_train_samples": 300}
    assert "train" not in run["dataset"] and "probe" not in run["dataset"]

    def dims(method):
        modalities = run_config(cfg, "affect", method, 0)["dataset"]["modalities"]
        return [m["encoder"]["dim"] for m in modalities]

    assert dims("comm") == [24, 40]  # the dataset's default; text's own encoder wins
    assert dims("cross") == [32, 40]  # the method's over the dataset's
    encoder = run_config(cfg, "affect", "cross", 0)["dataset"]["modalities"][0]["encoder"]
    assert encoder == {**TINY_CONFIG["encoders"]["sequence"], "dim": 32}
    assert cfg == before  # the study is not modified


def test_each_modality_takes_the_encoder_and_augment_of_its_kind():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["mixed"] = {
        "family": "mypkg.mixed:Family",
        "modalities": [
            {"name": "frame", "kind": "image"},
            {"name": "audio", "kind": "sequence", "augment": {"strong": {"noise_std": 0.3}}},
        ],
        "tasks": [{"name": "label", "kind": "binary"}],
    }
    frame, audio = run_config(cfg, "mixed", "comm", 0)["dataset"]["modalities"]
    assert frame == {
        "name": "frame",
        "kind": "image",
        "encoder": TINY_CONFIG["encoders"]["image"],
        "augment": TINY_CONFIG["augment"]["image"],
    }
    assert audio["encoder"] == TINY_CONFIG["encoders"]["sequence"]
    sequence = TINY_CONFIG["augment"]["sequence"]
    assert audio["augment"] == {
        "strong": {**sequence["strong"], "noise_std": 0.3},
        "weak": sequence["weak"],
    }
    del cfg["encoders"]["sequence"]
    with pytest.raises(ConfigError, match=r"datasets\.mixed\.modalities\[1\].*encoders\.sequence"):
        run_config(cfg, "mixed", "comm", 0)


def test_tasks_default_to_the_metric_of_their_kind_and_the_labels_of_their_name():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["affect"] = _sequence_dataset(
        tasks=[
            {"name": "label", "kind": "binary"},
            {"name": "emotion", "kind": "multiclass"},
            {"name": "sentiment", "kind": "regression", "labels": "label_raw"},
            {"name": "score", "kind": "regression", "metric": "mae"},
        ]
    )
    tasks = run_config(cfg, "affect", "cross", 0)["dataset"]["tasks"]
    assert [(t["name"], t["metric"], t["labels"]) for t in tasks] == [
        ("label", "balanced_accuracy", "label"),
        ("emotion", "balanced_accuracy", "emotion"),
        ("sentiment", "mse", "label_raw"),
        ("score", "mae", "score"),
    ]


def test_run_config_names_an_unknown_dataset_or_method():
    with pytest.raises(ConfigError, match=r"^datasets\.mnist: unknown dataset"):
        run_config(TINY_CONFIG, "mnist", "comm", 0)
    with pytest.raises(ConfigError, match=r"^methods\.simclr: unknown method"):
        run_config(TINY_CONFIG, "trifeatures", "simclr", 0)


def test_data_id_is_the_family_and_the_preparation_options():
    datasets = TINY_CONFIG["datasets"]
    # Datasets that differ in pairing (how they are trained) share one prepared copy.
    assert data_id(datasets["trifeatures"]) == "trifeatures/generator_seed-42"
    assert data_id(datasets["trifeatures_synergy"]) == data_id(datasets["trifeatures"])
    other = {"family": "trifeatures", "prepare": {"num_per_combination": 3, "generator_seed": 7}}
    assert data_id(other) == "trifeatures/generator_seed-7/num_per_combination-3"  # sorted
    assert data_id({"family": "mosi"}) == "mosi"
    # Anything that is not a plain word becomes a digest: no separators, no '..'.
    custom = data_id({"family": "mypkg.data:Family", "prepare": {"split": "../x", "up": ".."}})
    family, split, up = custom.split("/")
    assert re.fullmatch(r"[0-9a-f]{12}", family)
    assert re.fullmatch(r"split-[0-9a-f]{12}", split) and re.fullmatch(r"up-[0-9a-f]{12}", up)
    assert data_id({"family": "mosi", "prepare": {"split": "a"}}) != data_id(
        {"family": "mosi", "prepare": {"split": "b"}}
    )


def _spec(path: Path, *datasets: str) -> Path:
    columns = [{"name": f"c{i}", "dataset": d, "task": "share"} for i, d in enumerate(datasets)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"columns": columns}))
    return path


def test_experiment_runs_are_the_specs_datasets_by_methods_by_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _spec(tmp_path / "config" / "tables" / "fig.yaml", "trifeatures", "trifeatures_synergy",
          "trifeatures")  # fmt: skip
    other = _spec(tmp_path / "elsewhere" / "unbiased.yaml", "trifeatures")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["experiments"] = {
        "fig": {"table": "fig", "methods": ["comm", "cross"], "seeds": [0, 1]},
        "again": {"table": str(other), "methods": ["cross", "cross_self"], "seeds": [1, 2]},
    }
    check_study(cfg)
    fig = experiment_runs(cfg, "fig")
    assert fig == [
        (d, m, s)
        for d in ("trifeatures", "trifeatures_synergy")  # once each, in the spec's order
        for m in ("comm", "cross")
        for s in (0, 1)
    ]
    again = experiment_runs(cfg, "again")
    assert again == [("trifeatures", m, s) for m in ("cross", "cross_self") for s in (1, 2)]
    runs = study_runs(cfg)
    assert runs == list(dict.fromkeys(fig + again))
    assert len(runs) == len(fig) + len(again) - 1  # (trifeatures, cross, 1) is in both
    assert study_runs({k: v for k, v in cfg.items() if k != "experiments"}) == []


def test_rows_with_their_own_datasets_and_chosen_columns_decide_the_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {
        "columns": [
            {"name": "A", "dataset": "a", "task": "t"},
            {"name": "B", "dataset": "b", "task": "t"},
        ],
        "rows": [
            {"method": "two", "label": "two"},
            {"method": "three", "label": "three", "datasets": {"B": "b3"}},
            {"method": "two", "label": "two on b3", "datasets": {"B": "b3"}},
            {"method": "two", "label": "two tuned", "stage": "finetune", "datasets": {"A": None}},
        ],
    }
    path = tmp_path / "config" / "tables" / "t.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(spec))
    cfg = {
        "experiments": {
            "all": {"table": "t", "methods": ["two", "three", "plain"], "seeds": [0]},
            "only_b": {"table": "t", "methods": ["three"], "columns": ["B"], "seeds": [0, 1]},
            "wrong": {"table": "t", "methods": ["two"], "columns": ["C"], "seeds": [0]},
        }
    }
    # the rows in the spec's order, the columns' datasets unless a row names its own (none for
    # a dash); a method without a row reads the columns' datasets
    assert [(d, m) for d, m, _ in experiment_runs(cfg, "all")] == [
        ("a", "two"),
        ("a", "three"),
        ("a", "plain"),
        ("b", "two"),
        ("b", "plain"),
        ("b3", "three"),
        ("b3", "two"),
    ]
    # a fine-tuned row's results: its runs' fine-tuned copies, where it has no dash
    tuned = [(d, m) for d, m, _, stage in experiment_results(cfg, "all") if stage == "finetune"]
    assert tuned == [("b", "two")]
    assert experiment_runs(cfg, "only_b") == [("b3", "three", 0), ("b3", "three", 1)]
    with pytest.raises(ConfigError, match=r"columns \['C'\] are not in the table spec"):
        experiment_runs(cfg, "wrong")
    # a row whose runs do not depend on the seed (nothing trained) runs the first seed alone
    spec["rows"].append({"method": "public", "label": "public", "one_seed": True})
    path.write_text(yaml.safe_dump(spec))
    cfg["experiments"]["seeded"] = {"table": "t", "methods": ["public", "three"], "seeds": [3, 4]}
    assert experiment_runs(cfg, "seeded") == [
        ("a", "three", 3),
        ("a", "three", 4),
        ("a", "public", 3),
        ("b3", "three", 3),
        ("b3", "three", 4),
        ("b", "public", 3),
    ]


def test_the_default_study_runs_fig4_on_both_trifeature_datasets(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load(REPO / "config" / "config.yaml")
    exp = cfg["experiments"]["fig4_trifeatures"]
    runs = study_runs(cfg)
    assert {d for d, _, _ in runs} == {"trifeatures", "trifeatures_synergy"}
    assert len(runs) == 2 * len(exp["methods"]) * len(exp["seeds"])


# ---------------------------------------------------------------------------------------------
# Schema refusals inside datasets, modalities, tasks and experiments


def _refused(change) -> str:
    cfg = copy.deepcopy(TINY_CONFIG)
    change(cfg)
    with pytest.raises(ConfigError) as err:
        check_study(cfg)
    return str(err.value)


def test_schema_refusals_name_the_key():
    trifeatures = lambda c: c["datasets"]["trifeatures"]  # noqa: E731
    assert re.match(
        r"datasets\.trifeatures\.colour: unknown key",
        _refused(lambda c: trifeatures(c).update(colour="red")),
    )
    assert re.match(
        r"datasets\.trifeatures\.tasks\[3\]\.kind: 'ranking' is not one of \['binary', "
        r"'multiclass', 'multilabel', 'regression'\]",
        _refused(lambda c: trifeatures(c)["tasks"][3].update(kind="ranking")),
    )
    assert re.match(
        r"datasets\.trifeatures\.tasks\[0\]\.metric: 'f1' is not one of",
        _refused(lambda c: trifeatures(c)["tasks"][0].update(metric="f1")),
    )
    assert re.match(
        r"experiments\.fig4\.seeds: required, but missing",
        _refused(lambda c: c.update(experiments={"fig4": {"table": "t", "methods": ["comm"]}})),
    )
    assert re.match(
        r"experiments\.fig4\.seeds: \[\] should be non-empty",
        _refused(
            lambda c: c.update(
                experiments={"fig4": {"table": "t", "methods": ["comm"], "seeds": []}}
            )
        ),
    )
    assert re.match(
        r"datasets\.trifeatures\.tasks: required, but missing",
        _refused(lambda c: trifeatures(c).pop("tasks")),
    )
    assert re.match(
        r"datasets\.trifeatures\.modalities: .* is too short",
        _refused(lambda c: trifeatures(c)["modalities"].pop()),
    )
    # A family of the project checks its own keys: MOSI has no window.
    mosi = _sequence_dataset(family="mosi", window=5)
    mosi["modalities"][1].pop("encoder")
    assert re.match(
        r"datasets\.mosi\.window: unknown key",
        _refused(lambda c: c["datasets"].update(mosi=mosi)),
    )


def test_a_modality_kind_is_image_sequence_tabular_or_text():
    custom = _sequence_dataset()
    custom["modalities"][0]["kind"] = "graph"
    assert re.match(
        r"datasets\.affect\.modalities\[0\]\.kind: 'graph' is not one of "
        r"\['image', 'sequence', 'tabular', 'text'\]",
        _refused(lambda c: c["datasets"].update(affect=custom)),
    )


def test_a_dataset_of_a_family_defined_elsewhere_may_carry_its_own_keys():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["affect"] = _sequence_dataset(window=5, source="raw/affect.pkl")
    check_study(cfg)
    run = run_config(cfg, "affect", "cross", 0)
    assert run["dataset"]["window"] == 5
    check_run(run)
    check_run(run, probe=True)
    # ... but not in what the project defines: its modalities, tasks and sections.
    cfg["datasets"]["affect"]["modalities"][0]["colour"] = "red"
    with pytest.raises(ConfigError, match=r"^datasets\.affect\.modalities\[0\]\.colour: unknown"):
        check_study(cfg)


# A value that breaks what one family (or one method kind) allows: the error is that value's,
# not "unknown key" for every key of the family.
FAMILY_VALUES = [
    ("datasets.trifeatures.resolution=62", r"datasets\.trifeatures\.resolution: 62 is less"),
    ("datasets.trifeatures.pairing=random", r"datasets\.trifeatures\.pairing: 'random' is not"),
    (
        "datasets.trifeatures.prepare.generator_seed=-1",
        r"datasets\.trifeatures\.prepare\.generator_seed: -1 is less",
    ),
    (
        "datasets.trifeatures.modalities=[{name: a, kind: audio}, {name: b, kind: image}]",
        r"datasets\.trifeatures\.modalities\[0\]\.kind: 'audio' is not one of",
    ),
    (
        "datasets.trifeatures.tasks=[{name: colour, kind: binary}]",
        r"datasets\.trifeatures\.tasks\[0\]\.name: 'colour' is not one of",
    ),
    ("methods.cross.proj_dim=0", r"methods\.cross\.proj_dim: 0 is less than the minimum of 1"),
    ("methods.comm.terms=all", r"methods\.comm\.terms: 'all' is not one of"),
]


@pytest.mark.parametrize("override, named", FAMILY_VALUES, ids=[o for o, _ in FAMILY_VALUES])
def test_a_bad_value_of_a_familys_or_kinds_own_key_is_named(override, named):
    with pytest.raises(ConfigError) as err:
        check_study(apply_overrides(TINY_CONFIG, [override]))
    assert re.match(named, str(err.value)), str(err.value)


# ---------------------------------------------------------------------------------------------
# The workflow at start-up


@pytest.mark.parametrize("key", ["methods", "datasets"])
def test_an_empty_mapping_in_a_configfile_stops_the_workflow(tmp_path, key):
    study = tmp_path / "fewer.yaml"
    study.write_text(f"{key}: {{}}\n")
    result = dry_run(workdir_for(tmp_path / "wd"), "--configfile", str(study))
    assert result.returncode != 0
    assert f"{study}: {key} is an empty mapping" in result.stdout + result.stderr


def test_too_few_training_pairs_for_a_batch_stop_the_workflow(tmp_path):
    study = tmp_path / "small.yaml"
    study.write_text("datasets:\n  trifeatures_synergy: {max_train_pairs: 32}\n")
    result = dry_run(workdir_for(tmp_path / "wd"), "--configfile", str(study))
    assert result.returncode != 0
    assert (
        "datasets.trifeatures_synergy.max_train_pairs: 32 is below train.batch_size 64; a run "
        "needs at least one full batch (the workflow's config)"
    ) in (result.stdout + result.stderr)


def test_a_yaml_syntax_error_stops_the_workflow(tmp_path):
    # The workflow's own config file: named, with the line.
    workdir = workdir_for(tmp_path / "wd", config=False)
    (workdir / "config").mkdir()
    text = (REPO / "config" / "config.yaml").read_text()
    assert "  epochs: 5\n" in text
    (workdir / "config" / "config.yaml").write_text(text.replace("  epochs: 5\n", "  epochs: [5\n"))
    line = text[: text.index("  epochs: 5\n")].count("\n") + 2  # where the parser gives up
    result = dry_run(workdir)
    assert result.returncode != 0
    assert f"config/config.yaml:{line}:" in result.stdout + result.stderr
    # A --configfile is read by Snakemake before the workflow starts: it stops there, with its own
    # message (which names neither the file nor the line).
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  epochs: [5\n")
    result = dry_run(workdir_for(tmp_path / "wd2"), "--configfile", str(broken))
    assert result.returncode != 0
    assert "not valid JSON or YAML" in result.stdout + result.stderr


def test_an_encoder_naming_another_encoder_does_not_inherit_the_defaults_options():
    cfg = load_yaml(REPO / "config" / "paper.yaml")
    mimic = run_config(cfg, "mimic", "comm", 0)["dataset"]["modalities"]
    assert mimic[1]["encoder"] == {"name": "gru", "dim": 512}  # no transformer layers or heads
    assert mimic[0]["encoder"] == {"name": "mlp", "hidden": 10, "out": 10}
    cfg["datasets"]["mosi"]["encoders"] = {"sequence": {"dim": 16}}  # same encoder: merged
    mosi = run_config(cfg, "mosi", "comm", 0)["dataset"]["modalities"][0]["encoder"]
    assert mosi["name"] == "transformer" and mosi["dim"] == 16 and mosi["layers"] == 5
    cfg["methods"]["comm"]["encoders"] = {"sequence": {"name": "gru", "dim": 8}}
    mosi = run_config(cfg, "mosi", "comm", 0)["dataset"]["modalities"][0]["encoder"]
    assert mosi == {"name": "gru", "dim": 8}


def _vt_dataset(*modalities) -> dict:
    return {
        "family": "pkg.vt:Family",
        "modalities": list(modalities),
        "tasks": [{"name": "contact", "kind": "binary"}],
    }


VT_TABULAR = {"tabular": {"name": "mlp"}}
VT_AUGMENT = {"tabular": {"strong": {"noise_p": 0.5, "noise_std": 0.1}, "weak": {}}}


def _with_vt(*modalities) -> dict:
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["datasets"]["vt"] = _vt_dataset(*modalities)
    cfg["encoders"].update(VT_TABULAR)
    cfg["augment"].update(VT_AUGMENT)
    return cfg


def test_tokens_default_by_kind_and_stay_out_of_the_settings_unless_set():
    image = {"name": "image", "kind": "image", "encoder": {"name": "resnet18"}}
    force = {"name": "force", "kind": "sequence", "encoder": {"name": "causal_conv", "dim": 128}}
    proprio = {"name": "proprio", "kind": "tabular", "encoder": {"name": "proprio", "dim": 512}}
    cfg = _with_vt(image, {**force, "tokens": "feature"}, {**proprio, "tokens": "step"})
    check_study(cfg)
    resolved = run_config(cfg, "vt", "comm", 0)["dataset"]["modalities"]
    assert [modality_tokens(m) for m in resolved] == ["patch", "feature", "step"]
    assert resolved[1]["encoder"] == {"name": "causal_conv", "dim": 128}  # not the transformer's
    # unset: each kind's default, and no key in the run's settings (those of existing runs
    # stay as they were)
    cfg = _with_vt(image, force, proprio)
    resolved = run_config(cfg, "vt", "comm", 0)["dataset"]["modalities"]
    assert [modality_tokens(m) for m in resolved] == ["patch", "step", "feature"]
    assert all("tokens" not in m for m in resolved)
    for path in ("config/config.yaml", "config/paper.yaml"):
        study = load_yaml(REPO / path)
        for dataset in ("trifeatures", "mimic", "mosi"):
            if dataset in study["datasets"]:
                for m in run_config(study, dataset, "comm", 0)["dataset"]["modalities"]:
                    assert "tokens" not in m


@pytest.mark.parametrize(
    "modality, named",
    [
        (
            {"name": "f", "kind": "sequence", "tokens": "patch"},
            r"datasets\.vt\.modalities\[1\]\.tokens: 'patch' is not one of \['step', 'feature'\]",
        ),
        (
            {"name": "f", "kind": "sequence", "tokens": "grid"},
            r"datasets\.vt\.modalities\[1\]\.tokens: 'grid' is not one of",
        ),
        (
            {"name": "f", "kind": "sequence", "encoder": {"name": "causal_conv", "layers": 5}},
            r"datasets\.vt\.modalities\[1\]\.encoder",
        ),
        (
            {"name": "p", "kind": "tabular", "encoder": {"name": "proprio", "hidden": 5}},
            r"datasets\.vt\.modalities\[1\]\.encoder",
        ),
        (
            {"name": "p", "kind": "tabular", "encoder": {"name": "causal_conv"}},
            r"datasets\.vt\.modalities\[1\]\.encoder\.name: 'causal_conv' is not one of",
        ),
    ],
)
def test_the_schema_names_a_bad_tokens_or_vision_and_touch_encoder(modality, named):
    cfg = _with_vt({"name": "image", "kind": "image", "encoder": {"name": "resnet18"}}, modality)
    with pytest.raises(ConfigError) as err:
        check_study(cfg)
    assert re.match(named, str(err.value)), str(err.value)
