"""Config checks: the one schema behind the workflow and the command line, bad values named."""

from __future__ import annotations

import copy
import os
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
from comm_repro.config import ConfigError, check_study, load_yaml, schema
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

PRETRAIN_BAD = [
    (["--set", "train.epochs=0"], "train.epochs"),
    (["--set", "train.batch_size=1"], "train.batch_size"),
    (["--set", "train.lr=0"], "train.lr"),
    (["--set", "train.lr=-3e-4"], "train.lr"),
    (["--set", "train.device=gpu"], "train.device"),
    (["--set", "train.device=cuda:x"], "train.device"),
    (["--device", "tpu"], "train.device"),
    (["--set", "train.precision=fp16"], "train.precision"),
    (["--set", "probe.max_iter=0"], "probe.max_iter"),
    (["--set", "probe.class_weight=weighted"], "probe.class_weight"),
    (["--set", "probe.holdout_fraction=0"], "probe.holdout_fraction"),
    (["--set", "probe.holdout_fraction=1"], "probe.holdout_fraction"),
    (["--set", "probe.C_grid=[]"], "probe.C_grid"),
    (["--set", "datasets.trifeatures.resolution=62"], "datasets.trifeatures.resolution"),
    (["--set", "train.epoch=3"], "train.epoch"),  # unknown key: a typo of epochs
    (["--set", "datasets.trifeatures.max_train_pairs=8"], "max_train_pairs"),  # < batch 16
    (["--set", "train.epochs=[1"], "train.epochs"),  # not YAML
]


@pytest.mark.parametrize(
    "args, named", PRETRAIN_BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_pretrain_rejects_bad_values_naming_the_key(
    tiny_config, trifeature_dir, tmp_path, capsys, args, named
):
    _, config = tiny_config
    run = tmp_path / "run"
    cmd = pretrain_args(config, trifeature_dir, run, "--quiet", *args)
    assert main(cmd) == 2
    assert named in one_error_line(capsys.readouterr().err, "pretrain")
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
    ("probe.max_iter=0", "probe.max_iter"),
    ("probe.C_grid=[]", "probe.C_grid"),
    ("probe.class_weight=weighted", "probe.class_weight"),
    ("probe.holdout_fraction=1.0", "probe.holdout_fraction"),
    ("probe.Cgrid=[1.0]", "probe.Cgrid"),  # unknown key
    ("probe={}", "probe.C_grid"),  # what the probes need is missing
    ("dataset.resolution=62", "dataset.resolution"),
    ("train.device=tpu", "train.device"),
]


@pytest.mark.parametrize("override, named", PROBE_BAD)
def test_probe_rejects_bad_values_naming_the_key(
    trained_run, trifeature_dir, capsys, override, named
):
    before = {p.name: p.stat().st_mtime_ns for p in trained_run.iterdir()}
    out = trained_run / "probe.json"
    cmd = ["probe", "--run", str(trained_run), "--data", str(trifeature_dir), "--out", str(out)]
    assert main([*cmd, "--quiet", "--set", override]) == 2
    assert named in one_error_line(capsys.readouterr().err, "probe")
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


def test_resolution_minimum_is_the_smallest_input_the_encoder_takes():
    minimum = schema()["definitions"]["dataset"]["properties"]["resolution"]["minimum"]
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
        assert encoder(torch.zeros(1, 3, 63, 63)).shape == (1, 256, 1, 1)
        with pytest.raises(RuntimeError):  # the bare trunk: its last max-pool gets 2 x 2
            encoder.features(torch.zeros(1, 3, 62, 62))
        with pytest.raises(ConfigError, match=r"datasets\.<name>\.resolution to 63 or more"):
            encoder(torch.zeros(1, 3, 62, 62))


def test_the_cli_checks_accept_shipped_configs_and_a_workflow_jobs_slice():
    for path in ("config/config.yaml", "config/paper.yaml", ".test/config.yaml"):
        check_study(load(REPO / path))
    # What the workflow's run_settings rule writes: one dataset without its probe keys, no probe
    # settings (the probe job passes them with --set), no fig4 or resources.
    cfg = load(REPO / "config" / "config.yaml")
    dataset = cfg["datasets"]["trifeatures"]
    for key in ("probe_train_pairs", "probe_tasks"):
        dataset.pop(key)
    check_study(
        {
            "seeds": [0],
            "datasets": {"trifeatures": dataset},
            "methods": {"comm": cfg["methods"]["comm"]},
            **{key: cfg[key] for key in ("model", "train", "augment")},
            "probe": {},
        }
    )


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
    assert "datasets.trifeatures_synergy.max_train_pairs is 32, below train.batch_size 64" in (
        result.stdout + result.stderr
    )


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
