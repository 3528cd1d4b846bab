"""The Snakemake workflow: schema, job plans, the tiny study end to end, rerun semantics."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from comm_repro.config import merged, run_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "src" / "comm_repro" / "schemas" / "config.schema.yaml"
TINY = REPO / ".test" / "config.yaml"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    cmd += ["--directory", str(workdir), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(output: str) -> Counter:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    counts: Counter = Counter()
    if "Job stats:" not in output:
        return counts
    table = output.split("Job stats:", 1)[1].splitlines()[3:]
    for line in table:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def workdir_for(tmp: Path) -> Path:
    """A working directory that sees the repository's config and notebooks."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("config", "notebooks", "profiles"):
        (tmp / name).symlink_to(REPO / name)
    return tmp


def write_config(tmp: Path, cfg: dict, name: str) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Schema


@pytest.mark.parametrize("path", ["config/config.yaml", "config/paper.yaml", ".test/config.yaml"])
def test_shipped_configs_are_valid(path):
    validate(load(REPO / path), str(SCHEMA))


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: c["train"].update(epoch=3), "epoch"),  # unknown key (typo of epochs)
        (lambda c: c["train"].update(epochs=0), "epochs"),
        (lambda c: c["train"].update(lr="fast"), "lr"),
        (lambda c: c["datasets"]["trifeatures"].update(resolution=32), "resolution"),
        (lambda c: c["datasets"]["trifeatures"].update(pairing="random"), "pairing"),
        (lambda c: c["methods"]["comm"].update(terms="all"), "terms"),
        (lambda c: c["methods"]["cross"].update(temperature=0.1), "temperature"),
        (lambda c: c["methods"]["comm"].update(kind="simclr"), "kind"),
        (lambda c: c["probe"].update(holdout_fraction=1.0), "holdout_fraction"),
        (lambda c: c["experiments"]["fig4_trifeatures"].update(seeds=[]), "seeds"),
        (lambda c: c["datasets"]["trifeatures"]["modalities"][0].update(kind="audio"), "kind"),
        (lambda c: c["datasets"]["trifeatures"].update(probe_tasks=["share"]), "probe_tasks"),
        (lambda c: c["resources"]["pretrain"].pop("gpu"), "gpu"),
        (lambda c: c.update(extras={}), "extras"),
    ],
)
def test_schema_rejects_bad_configs_naming_the_key(edit, named):
    cfg = copy.deepcopy(load(REPO / "config/config.yaml"))
    edit(cfg)
    with pytest.raises(WorkflowError) as err:
        validate(cfg, str(SCHEMA))
    assert named in str(err.value)


def _rename_model_key(cfg):
    cfg["model"]["embed_dimension"] = cfg["model"].pop("embed_dim")


def _experiment_names_an_unknown_method(cfg):
    cfg["experiments"]["fig4_trifeatures"]["methods"] = ["cross", "simclr"]


def _experiment_names_a_missing_table(cfg):
    cfg["experiments"]["fig4_trifeatures"]["table"] = "fig9"


@pytest.mark.parametrize(
    "edit, named",
    [
        (_rename_model_key, "embed_dimension"),
        (_experiment_names_an_unknown_method, "experiments.fig4_trifeatures.methods"),
        (_experiment_names_a_missing_table, "config/tables/fig9.yaml"),
    ],
)
def test_snakemake_stops_at_start_up_naming_the_bad_key(tmp_path, edit, named):
    cfg = load(TINY)
    edit(cfg)
    config = write_config(tmp_path, cfg, "bad.yaml")
    result = snakemake(workdir_for(tmp_path), "-n", "--configfile", config, check=False)
    assert result.returncode != 0
    assert named in result.stdout + result.stderr


def test_a_missing_command_line_stops_the_workflow_with_a_hint(tmp_path):
    # PATH without the project's environment: coreutils' `comm` is there, `comm-repro` is not.
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    python = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow/Snakefile")]
    result = subprocess.run(
        [*python, "--directory", str(workdir_for(tmp_path / "wd")), "-n"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode != 0
    assert "`comm-repro` command is not on PATH" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Plans


def test_paper_protocol_plans_every_table_with_five_seeds(tmp_path):
    result = snakemake(workdir_for(tmp_path), "-n", "-p", "--configfile", "config/paper.yaml")
    jobs = planned_jobs(result.stdout)
    fig4 = 5 * 2 * 4  # seeds x datasets (unbiased, biased pairs) x methods (with FactorCL)
    # seeds x (5 datasets (V&T EE, MIMIC, MOSI, UR-FUNNY, MUsTARD) x Cross, Cross+Self,
    # FactorCL, CoMM, FactorCL-SUP + 4 datasets x SupCon, which has no V&T EE cell)
    table1 = 5 * (5 * 5 + 4)
    # Table 3 beyond Table 1's runs: V&T contact on two modalities x 3 methods, and V&T contact
    # and UR-FUNNY on three x (CMC, CoMM); UR-FUNNY on two is Table 1's
    table3 = 5 * (3 + 2 * 2)
    # Table 2: seeds x (SimCLR, SLIP, CLIP further trained, CoMM on CLIP and on BLIP-2), and
    # one run of each public-weights row (CLIP V, L, V+L; BLIP-2): nothing of theirs trains
    table2 = 5 * 5 + 4
    # The ablations beyond Fig. 4's runs, each on unbiased and biased pairs: Table 4, the linear
    # fusion; Table 5, CoMM with crop-only views on modality 1, 2 or both; Table 7, Cross,
    # Cross+Self and CoMM on a ResNet-50
    # Fig. 5, L alone and the L_i alone beside CoMM's; Fig. 7, CoMM at four crop strengths
    ablations = 5 * 2 * (1 + 3 + 3 + 2 + 4)
    # Fig. 7 on MM-IMDb: CoMM at five poster crop and five plot mask strengths
    sweeps = 5 * (5 + 5)
    # Fig. 6: CoMM with 9 other time-series views than its own on MIMIC and the affect datasets
    fig6 = 5 * 9 * 4
    runs = fig4 + table1 + table3 + table2 + ablations + sweeps + fig6
    finetuned = 5 * (5 + 2)  # CoMM fine-tuned: seeds x (Table 1's datasets, Table 2's two)
    for rule in ("pretrain", "probe", "run_settings", "probe_settings"):
        assert jobs[rule] == runs, rule
    for rule in ("finetune", "finetune_settings", "probe_finetuned"):
        assert jobs[rule] == finetuned, rule
    # Trifeature (generated), the affect files, MIMIC's, V&T's, MM-IMDb's (one for both backbones)
    assert jobs["prepare"] == 7
    # the frozen encoders' probe features: (CLIP, multilingual text, BLIP-2 image, BLIP-2 text)
    assert jobs["features"] == jobs["feature_settings"] == 4
    # Table 8: the four models measured once each, then the table
    assert jobs["complexity"] == 4 and jobs["complexity_table"] == 1
    ablation_tables = ("table4_fusion", "table5_augment", "table7_encoder", "fig5_loss")
    ablation_tables += ("fig6_timeseries", "fig7_crop", "fig7_mmimdb_crop", "fig7_mmimdb_mask")
    reported = ("fig4_trifeatures", "table1", "table1_affect", "table3", "table2", *ablation_tables)
    tables = reported
    for rule in ("table", "figure_table", "figure_training_curves"):
        assert jobs[rule] == len(tables), rule
    assert jobs["report_notebook"] == jobs["report_html"] == len(reported)
    # table, its figure, training curves (report notebook and its html); the index, all
    assert jobs["subsets"] == 1  # Fig. 4's: what each modality's features know
    # Fig. 5: every 5th of the 100 epochs of each of its runs probed, and the curves drawn
    snapshots = 5 * 2 * 3 * 20
    assert jobs["probe_snapshot"] == snapshots and jobs["snapshots"] == 1
    assert "comm-repro probe --run results/runs/trifeatures/comm_full_only/seed4 " in result.stdout
    assert "--snapshot 100 " in result.stdout and "--snapshot 5 " in result.stdout
    assert "results/runs/trifeatures/cross/seed0/snapshot_probes/" not in result.stdout
    assert sum(jobs.values()) == (
        4 * runs
        + 3 * finetuned
        + 7
        + 2 * 4
        + 4
        + 1
        + 3 * len(tables)
        + 2 * len(reported)
        + 1
        + 2
        + snapshots
        + 1
    )
    for seed in range(5):
        for dataset in ("trifeatures", "trifeatures_synergy"):
            assert f"results/runs/{dataset}/comm_linear/seed{seed}/probe.json" in result.stdout
        for dataset, method in (
            ("trifeatures_synergy_crop12", "comm"),
            ("trifeatures_crop1", "comm"),
            ("trifeatures_resnet50", "cross_self"),
            ("trifeatures_synergy_resnet50", "comm"),
        ):
            assert f"results/runs/{dataset}/{method}/seed{seed}/probe.json" in result.stdout
    assert "results/runs/trifeatures_crop1/cross/" not in result.stdout  # CoMM's rows only
    for seed in range(5):
        for dataset in ("mmimdb", "mmimdb_blip2"):
            assert f"results/runs/{dataset}/comm/seed{seed}/finetune/probe.json" in result.stdout
        assert f"results/runs/mmimdb/simclr/seed{seed}/probe.json" in result.stdout
    assert "results/runs/mmimdb/clip_vl/seed0/probe.json" in result.stdout
    assert "results/runs/mmimdb/clip_vl/seed1/" not in result.stdout  # one run: nothing trains
    assert "results/runs/mmimdb_blip2/blip2_vl/seed0/probe.json" in result.stdout
    assert "results/tables/table8.md" in result.stdout
    assert "comm-repro prepare mmimdb " in result.stdout
    for seed in range(5):
        for dataset, method in (
            ("mosi", "comm"),
            ("mimic", "comm"),
            ("vision_touch", "cross_self"),
            ("vision_touch_contact", "cross"),
            ("vision_touch_tri", "cmc"),
            ("humor_tri", "comm"),
            ("trifeatures_synergy", "factorcl"),
            ("vision_touch", "factorcl_sup"),
            ("sarcasm", "supcon"),
            ("mimic", "comm_ts_crop"),
            ("humor", "comm_ts_multi_drop_noise"),
        ):
            assert f"results/runs/{dataset}/{method}/seed{seed}/probe.json" in result.stdout
        for dataset in ("vision_touch", "mimic", "mosi", "humor", "sarcasm"):
            assert f"results/runs/{dataset}/comm/seed{seed}/finetune/probe.json" in result.stdout
    assert "results/runs/vision_touch_tri/cross/" not in result.stdout  # no such row
    assert "results/runs/humor_tri/comm_ts_noise/" not in result.stdout  # Fig. 6: bimodal
    assert "results/runs/vision_touch/supcon/" not in result.stdout  # a dash in Table 1
    assert "comm-repro prepare sarcasm" in result.stdout
    assert "comm-repro prepare mimic --option stats=all task=7" in result.stdout
    assert "comm-repro prepare vision_touch " in result.stdout
    assert "--columns MOSI UR-FUNNY MUsTARD" in result.stdout  # table1_affect's part of Table 1


def test_the_factorcl_study_adds_fig4s_fourth_row_at_its_authors_lr(tmp_path):
    study = "config/studies/fig4_factorcl.yaml"
    cfg = merged(load(REPO / "config/config.yaml"), load(REPO / study))
    validate(cfg, str(SCHEMA))
    assert cfg["experiments"]["fig4_trifeatures"]["methods"] == [
        "cross",
        "factorcl",
        "cross_self",
        "comm",
    ]
    factorcl = run_config(cfg, "trifeatures", "factorcl", 0)
    assert factorcl["train"]["lr"] == 1e-4 and factorcl["method"]["mode"] == "ssl"
    assert run_config(cfg, "trifeatures", "comm", 0)["train"]["lr"] == cfg["train"]["lr"]
    jobs = planned_jobs(snakemake(workdir_for(tmp_path), "-n", "--configfile", study).stdout)
    assert jobs["pretrain"] == jobs["probe"] == 2 * 2 * 4  # seeds x pairings x methods


ABLATIONS = "config/ablations.yaml"
ABLATION_TARGETS = ("fig5_loss", "table4_fusion", "fig7_crop", "table7_encoder")


def test_the_ablation_study_runs_each_ablation_at_the_default_size(tmp_path):
    cfg = merged(load(REPO / "config/config.yaml"), load(REPO / ABLATIONS))
    validate(cfg, str(SCHEMA))
    for name in ABLATION_TARGETS:
        assert cfg["experiments"][name]["seeds"] == [0]
    default = run_config(cfg, "trifeatures", "comm", 1)
    for dataset in ("trifeatures_crop_x02", "trifeatures_synergy_crop_x08"):
        run = run_config(cfg, dataset, "comm", 0)
        assert run["train"] == default["train"]  # Fig. 7's runs keep no snapshots
        assert run["dataset"]["resolution"] == 64 and run["dataset"]["max_train_pairs"] == 10000
    swept = run_config(cfg, "trifeatures_crop_x04", "comm", 0)["dataset"]["modalities"]
    assert [m["augment"]["strong"]["crop_scale"] for m in swept] == [[0.01, 0.4], [0.4, 1.0]]
    assert swept[0]["augment"]["strong"]["jitter_p"] == 0.8  # the rest of the views kept
    # Fig. 5's runs keep a snapshot after each epoch; the default study's other seed does not
    assert run_config(cfg, "trifeatures", "comm", 0)["train"]["snapshot_every"] == 1
    assert "snapshot_every" not in default["train"]
    assert run_config(cfg, "trifeatures", "comm", 0)["probe"]["subsets"] is True
    resnet = run_config(cfg, "trifeatures_resnet50", "cross", 0)
    assert resnet["dataset"]["modalities"][0]["encoder"]["name"] == "resnet50"
    workdir = workdir_for(tmp_path)
    result = snakemake(workdir, "-n", "-p", "--configfile", ABLATIONS)
    jobs = planned_jobs(result.stdout)
    # Fig. 4's 12 runs; Fig. 5's L only and L_i only, Table 4's linear fusion, Fig. 7's four
    # strengths, Table 7's three ResNet-50 methods: each on unbiased and biased pairs
    assert jobs["pretrain"] == jobs["probe"] == 12 + 2 * (2 + 1 + 4 + 3)
    assert jobs["probe_snapshot"] == 3 * 2 * 5 and jobs["snapshots"] == jobs["subsets"] == 1
    assert jobs["report_notebook"] == 1 + len(ABLATION_TARGETS)
    # each ablation is a target of its own: Table 4 needs its two methods' runs alone
    target = "results/tables/table4_fusion.md"
    one = planned_jobs(snakemake(workdir, "-n", target, "--configfile", ABLATIONS).stdout)
    assert one["pretrain"] == 2 * 2 and one["table"] == 1 and one["report_notebook"] == 0


@pytest.mark.slow
def test_a_tiny_ablation_study_makes_every_ablations_table_curves_and_report(tmp_path):
    """config/ablations.yaml laid over the tiny study, its datasets cut to 64 pairs and its
    tables to CoMM's rows (Table 7's ResNet-50 runs probe 8,188 test images): every ablation
    target runs end to end."""
    study = merged(load(TINY), load(REPO / ABLATIONS))
    for name, dataset in study["datasets"].items():
        if name.startswith("trifeatures_"):
            dataset["max_train_pairs"] = 64
            dataset.setdefault("probe", {})["max_train_samples"] = 300
    for name in ("fig4_trifeatures", "table7_encoder"):
        study["experiments"][name]["methods"] = ["comm"]
    workdir = workdir_for(tmp_path)
    path = write_config(workdir, study, "ablations_tiny.yaml")
    snakemake(workdir, "--cores", "2", "--configfile", path)
    results = workdir / "results"
    for name in ABLATION_TARGETS:
        html = (results / "reports" / f"{name}.html").read_text()
        assert "The paper&#39;s claims" in html or "The paper's claims" in html, name
        assert "data:image/png;base64" in html
    # two snapshots of each Fig. 5 run, each probed, the curves drawn
    for method in ("comm_full_only", "comm_unimodal_only", "comm"):
        run = results / "runs" / "trifeatures_synergy" / method / "seed0"
        assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
            "epoch0001.pt",
            "epoch0002.pt",
        ]
        assert len(list((run / "snapshot_probes").glob("epoch*.json"))) == 2
    curves = pd.read_csv(results / "tables" / "fig5_loss_snapshots.csv")
    assert sorted(set(curves.epoch)) == [1, 2] and set(curves.method) == {
        "comm_full_only",
        "comm_unimodal_only",
        "comm",
    }
    assert (results / "figures" / "fig5_loss_snapshots.png").stat().st_size > 0
    sweep = pd.read_csv(results / "tables" / "fig7_crop.csv")
    assert sorted(set(sweep.x)) == [0.2, 0.4, 0.6, 0.8]
    table4 = (results / "tables" / "table4_fusion.md").read_text()
    assert "a concat + linear fusion learns no synergy" in table4
    subsets = pd.read_csv(results / "tables" / "fig4_trifeatures_subsets.csv")
    assert {"image1", "image2", "all"} <= set(subsets.subset)
    encoder = pd.read_csv(results / "tables" / "table7_encoder.csv")
    assert set(encoder.label) == {"CoMM (ResNet-50)", "CoMM (AlexNet)"}


def test_an_affect_dataset_without_its_raw_file_fails_at_prepare(tmp_path):
    """Drive is out of reach here (as on many GPU nodes) and no copy is at hand: the prepare
    job fails, saying which file to fetch and where to put it; nothing later runs."""
    workdir = workdir_for(tmp_path / "wd")
    cfg = load(REPO / "config/paper.yaml")
    cfg["experiments"]["table1_affect"]["seeds"] = [0]
    config = write_config(tmp_path, cfg, "paper.yaml")
    # An unreachable proxy: the download fails at once, as without a route to Drive.
    env = {**ENV, "COMM_REPRO_RAW_DIR": str(tmp_path / "raw"), "HTTPS_PROXY": "http://127.0.0.1:9"}
    target = "results/runs/mosi/comm/seed0/probe.json"
    result = snakemake(
        workdir, target, "--cores", "1", "--configfile", config, check=False, env=env
    )
    assert result.returncode != 0
    log = (workdir / "results/logs/prepare/mosi.log").read_text()
    assert "https://drive.google.com/uc?id=1_XdzdW8UNG1TTS6QcX10uhoS6N11OBit" in log
    assert f"put it at {tmp_path / 'raw' / 'mosi' / 'mosi_data.pkl'}" in log
    assert "datasets.<name>.source" in log and "Traceback" not in log
    assert not (workdir / "results/logs/pretrain").exists()


def test_mimic_without_its_file_fails_at_prepare_saying_how_to_get_it(tmp_path):
    workdir = workdir_for(tmp_path / "wd")
    env = {**ENV, "COMM_REPRO_RAW_DIR": str(tmp_path / "raw")}
    target = "results/runs/mimic/comm/seed0/probe.json"
    args = [target, "--cores", "1", "--configfile", "config/paper.yaml"]
    result = snakemake(workdir, *args, check=False, env=env)
    assert result.returncode != 0
    log = next((workdir / "results/logs/prepare/mimic").rglob("*.log")).read_text()
    assert "PhysioNet" in log and "MultiBench" in log and "Traceback" not in log
    assert str(tmp_path / "raw" / "mimic" / "im.pk") in log and "datasets.<name>.source" in log
    assert not (workdir / "results/logs/pretrain").exists()


def test_the_report_waits_for_the_table_and_figures_it_shows(tmp_path):
    plan = snakemake(workdir_for(tmp_path), "-n", "results/reports/fig4_trifeatures.ipynb").stdout
    jobs = planned_jobs(plan)
    for rule in ("table", "figure_table", "figure_training_curves"):
        assert jobs[rule] == 1, rule


def test_gpu_jobs_claim_a_device_and_cpu_jobs_do_not(tmp_path):
    workdir = workdir_for(tmp_path)
    paper = snakemake(workdir, "-n", "-p", "--configfile", "config/paper.yaml").stdout
    default = snakemake(workdir, "-n", "-p").stdout
    assert re.search(r"comm-repro pretrain .*--gpu-lock-dir", paper)
    assert re.search(r"comm-repro probe .*--gpu-lock-dir", paper)
    assert "--gpu-lock-dir" not in default


# ---------------------------------------------------------------------------------------------
# The tiny study end to end, then what reruns after an edit


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    workdir = workdir_for(tmp_path_factory.mktemp("study"))
    t0 = time.perf_counter()
    snakemake(workdir, "--cores", "2", "--configfile", str(TINY))
    return workdir, time.perf_counter() - t0


# one tiny end-to-end run of its dataset family: in the quick suite (not slow)
def test_tiny_study_produces_the_report(finished_study):
    workdir, seconds = finished_study
    results = workdir / "results"
    html = (results / "reports" / "fig4_trifeatures.html").read_text()
    assert "data:image/png;base64" in html
    index = (results / "reports" / "index.html").read_text()
    assert "fig4_trifeatures.html" in index
    assert index.index("Reproduction scorecard") < index.index("fig4_trifeatures.html")
    table = (results / "tables" / "fig4_trifeatures.md").read_text()
    for name in ("cross", "cross_self", "comm"):
        assert (results / "runs" / "trifeatures_synergy" / name / "seed0" / "probe.json").exists()
    assert table.count("\n") >= 4
    for stem in ("fig4_trifeatures", "training_curves_fig4_trifeatures"):
        assert (results / "figures" / f"{stem}.png").stat().st_size > 0
    for stage in ("pretrain", "probe"):
        assert (results / "benchmarks" / stage / "trifeatures" / "comm" / "seed0.tsv").exists()
    print(f"tiny study: {seconds:.0f} s")
    nothing = snakemake(workdir, "-n", "--configfile", str(TINY))
    assert planned_jobs(nothing.stdout) == Counter()


def _planned_commands(output: str, step: str) -> list[str]:
    return (
        re.findall(rf"comm-repro {step} --settings \S+/(\w+)/seed\d+/settings.yaml", output)
        if step == "pretrain"
        else re.findall(rf"comm-repro {step} --run \S+/(\w+)/seed\d+ ", output)
    )


@pytest.mark.slow
def test_editing_one_method_reruns_only_its_jobs(finished_study, tmp_path):
    workdir, _ = finished_study
    cfg = load(TINY)
    cfg["methods"]["cross"]["proj_dim"] = 32
    plan = snakemake(
        workdir, "-n", "-p", "--configfile", write_config(tmp_path, cfg, "edited.yaml")
    ).stdout
    jobs = planned_jobs(plan)
    assert jobs["pretrain"] == jobs["probe"] == 2  # cross on both datasets, one seed
    assert set(_planned_commands(plan, "pretrain")) == {"cross"}
    assert set(_planned_commands(plan, "probe")) == {"cross"}
    assert jobs["table"] == 1 and jobs["report_notebook"] == 1


@pytest.mark.slow
def test_editing_a_dataset_probe_key_reruns_only_probes(finished_study, tmp_path):
    workdir, _ = finished_study
    cfg = load(TINY)
    cfg["datasets"]["trifeatures_synergy"]["probe"] = {"max_train_samples": 400}
    plan = snakemake(
        workdir, "-n", "-p", "--configfile", write_config(tmp_path, cfg, "edited.yaml")
    ).stdout
    jobs = planned_jobs(plan)
    assert "pretrain" not in jobs and "run_settings" not in jobs
    assert jobs["probe_settings"] == jobs["probe"] == 3  # the methods on trifeatures_synergy
    assert "--settings results/runs/trifeatures_synergy/comm/seed0/probe_settings.yaml" in plan


@pytest.mark.slow
def test_forcerun_probe_reruns_probes_and_reports_not_pretraining(finished_study):
    workdir, _ = finished_study
    plan = snakemake(workdir, "-n", "--configfile", str(TINY), "--forcerun", "probe").stdout
    jobs = planned_jobs(plan)
    assert jobs["probe"] == 6
    assert "pretrain" not in jobs and "run_settings" not in jobs
    assert jobs["table"] == 1 and jobs["report_index"] == 1


def _longer_run(workdir: Path, tmp_path: Path, seed: int, epochs: int):
    """A CoMM run of the tiny study on 1,024 pairs: its config file, run directory, model.pt
    target and the Snakemake command that trains it."""
    cfg = load(TINY)
    cfg["experiments"]["fig4_trifeatures"]["seeds"] = [seed]
    cfg["datasets"]["trifeatures"]["max_train_pairs"] = 1024
    cfg["train"]["epochs"] = epochs
    config = write_config(tmp_path, cfg, "long.yaml")
    run = workdir / "results" / "runs" / "trifeatures" / "comm" / f"seed{seed}"
    target = str(run.relative_to(workdir) / "model.pt")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
    # The target goes before --configfile, which would read it as one more config file.
    cmd += ["--directory", str(workdir), target, "--cores", "1", "--configfile", config]
    return config, run, target, cmd


@pytest.mark.slow
def test_killed_pretraining_resumes_from_its_checkpoint(finished_study, tmp_path):
    workdir, _ = finished_study
    config, run, target, cmd = _longer_run(workdir, tmp_path, seed=1, epochs=3)
    job = subprocess.Popen(
        cmd,
        env=ENV,
        cwd=workdir,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():
        assert job.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # as a crash or a node failure would
    job.wait()
    assert not (run / "model.pt").exists()

    snakemake(workdir, "--unlock", "--configfile", config)
    snakemake(workdir, target, "--cores", "1", "--rerun-incomplete", "--configfile", config)
    log = (workdir / "results/logs/pretrain/trifeatures/comm/seed1.log").read_text()
    assert re.search(r"resuming .* after epoch [12]/3", log), log[-2000:]
    epochs = (run / "train_log.csv").read_text().strip().splitlines()[1:]
    assert [row.split(",")[0] for row in epochs] == ["1", "2", "3"]


# ---------------------------------------------------------------------------------------------
# Reruns of finished runs, corrupt data, killed wrappers: nothing lost, nothing left running

RUN0 = "results/runs/trifeatures/comm/seed0"


@pytest.fixture
def study_copy(finished_study, tmp_path):
    """A copy of the finished tiny study (results and Snakemake's records) to damage."""
    workdir, _ = finished_study
    copy = tmp_path / "study"
    shutil.copytree(workdir, copy, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    return copy


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("trigger", ["forcerun", "re-prepared data"])
def test_rerun_of_a_finished_run_writes_its_outputs_from_the_checkpoint(study_copy, trigger):
    before = _weights(study_copy / RUN0 / "model.pt")
    args = [f"{RUN0}/model.pt", "--cores", "1", "--configfile", str(TINY)]
    if trigger == "forcerun":
        args += ["--forcerun", "pretrain"]
    else:  # the same data written again: the pretraining job reruns, and trains nothing
        args += ["--forcerun", "prepare"]
    snakemake(study_copy, *args)
    log = (study_copy / "results/logs/pretrain/trifeatures/comm/seed0.log").read_text()
    assert "already trained (2 epochs); outputs written again" in log, log[-2000:]
    _assert_same_weights(before, _weights(study_copy / RUN0 / "model.pt"))
    rows = (study_copy / RUN0 / "train_log.csv").read_text().strip().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2"]
    summary = json.loads((study_copy / RUN0 / "pretrain.json").read_text())["summary"]
    assert summary["resumed_from_epoch"] == 2


@pytest.mark.slow
def test_corrupt_data_fails_in_one_line_and_costs_no_finished_run(study_copy):
    before = _weights(study_copy / RUN0 / "model.pt")
    data = study_copy / "results/data/trifeatures/generator_seed-42"
    npz = data / "train.npz"
    intact = npz.read_bytes()
    npz.write_bytes(intact[:4096])  # a truncated copy, as an interrupted transfer
    target = [f"{RUN0}/model.pt", "--cores", "1", "--configfile", str(TINY)]
    # The workflow tracks a prepared set by its manifest: a file damaged behind its back is
    # found by the job that reads it (each array is checked against the manifest's sha256).
    failed = snakemake(study_copy, *target, "--forcerun", "pretrain", check=False)
    assert failed.returncode != 0
    log = (study_copy / "results/logs/pretrain/trifeatures/comm/seed0.log").read_text()
    errors = [line for line in log.splitlines() if "error" in line]
    assert errors == [
        f"comm-repro pretrain: error: {npz.relative_to(study_copy)} is unreadable "
        f"(BadZipFile: File is not a zip file); prepare it again: `comm-repro "
        f"prepare trifeatures --out {data.relative_to(study_copy)}`"
    ], log
    assert "Traceback" not in log
    assert (study_copy / RUN0 / "checkpoint.pt").exists()

    # The file repaired (copied again; `comm-repro prepare` would write the same bytes): the
    # run is rebuilt from its checkpoint.
    npz.write_bytes(intact)
    snakemake(study_copy, *target)
    log = (study_copy / "results/logs/pretrain/trifeatures/comm/seed0.log").read_text()
    assert "already trained" in log
    _assert_same_weights(before, _weights(study_copy / RUN0 / "model.pt"))


def _pretrain_processes(marker: str) -> dict[int, int]:
    """pid -> parent pid of the `comm-repro pretrain` processes whose command line contains
    ``marker`` and that have started (they catch SIGTERM once their parent-death request is in
    place)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = dict(
                line.split(":\t", 1) for line in (proc / "status").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        sigterm_caught = int(status.get("SigCgt", "0"), 16) >> (signal.SIGTERM - 1) & 1
        if "comm-repro pretrain" in cmdline and marker in cmdline and "bash" not in cmdline:
            if sigterm_caught:
                found[int(proc.name)] = int(status["PPid"])
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_killing_a_jobs_shell_wrapper_stops_its_training(finished_study, tmp_path):
    workdir, _ = finished_study
    # 6 epochs: a minute or more, far longer than the test waits below.
    _, run, _, cmd = _longer_run(workdir, tmp_path, seed=2, epochs=6)
    job = subprocess.Popen(
        cmd, env=ENV, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not (found := _pretrain_processes("seed2")):
            assert job.poll() is None and time.monotonic() < deadline, "no pretraining job seen"
            time.sleep(0.1)
        ((child, wrapper),) = found.items()
        assert wrapper != job.pid, "the job runs under a shell wrapper"
        os.kill(wrapper, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the training process outlived its wrapper"
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert not (run / "model.pt").exists()
    log = (workdir / "results/logs/pretrain/trifeatures/comm/seed2.log").read_text()
    assert "comm-repro pretrain: interrupted" in log, log[-2000:]
