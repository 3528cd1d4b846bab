"""The workflow on the MultiBench datasets: fixture files of MOSI, UR-FUNNY, MUsTARD, MIMIC and
Vision&Touch in the authors' formats, through prepare, pretraining, fine-tuning, probes, Table 1
(all five columns with CoMM pretrained and fine-tuned; every row on two columns; its affect
columns alone), Table 3 (two and three modalities) and their reports."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from test_mimic import mimic_data
from test_multibench import affect_data, write_pickle
from test_workflow import REPO, TINY, load, planned_jobs, snakemake, workdir_for, write_config
from vt_fixture import write_vision_touch_fixture

SIZES = {"train": 40, "valid": 16, "test": 16}
MIMIC_SAMPLES = 100  # valid 10, test 10, train 80
VT_FILES = 5  # the fewest the authors' split takes: train 4 files (196 samples), test 1 (49)
# CoMM alone (and CMC for Table 3's three-modality row) keeps the test short: every job start
# costs seconds; the baselines' paths on these modalities are tested in test_methods.py.
METHODS = ("comm",)
# Every row of Table 1, on its V&T EE (regression) and MOSI (classification) columns
TABLE1_METHODS = ("cross", "cross_self", "factorcl", "comm", "supcon", "factorcl_sup")
TABLE1_COLUMNS = ["V&T EE", "MOSI"]
VISION_TOUCH = ("vision_touch", "vision_touch_contact", "vision_touch_tri")
CORPORA = {"mosi": "mosi_data.pkl", "humor": "humor.pkl", "sarcasm": "sarcasm.pkl"}


def affect_study(raw_dir) -> dict:
    """The tiny study (Trifeature datasets replaced by the MultiBench datasets, read from their
    fixture files by datasets.<name>.source), with Table 1 (whole, and its affect part) and
    Table 3 as its experiments."""
    cfg = load(TINY)
    paper = load(REPO / "config/paper.yaml")
    cfg["datasets"] = {}
    for seed, (name, file) in enumerate(CORPORA.items()):
        data, _ = affect_data(name, seed=seed, sizes=SIZES)
        path = write_pickle(raw_dir / file, data)
        cfg["datasets"][name] = {**paper["datasets"][name], "source": str(path)}
        cfg["datasets"][name]["model"] = {"embed_dim": 16}
    cfg["encoders"]["sequence"] = {
        "name": "transformer", "dim": 16, "layers": 1, "heads": 2, "dim_feedforward": 32,
        "dropout": 0.1,
    }  # fmt: skip
    im_pk = write_pickle(raw_dir / "im.pk", mimic_data(MIMIC_SAMPLES), protocol=2)
    cfg["datasets"]["mimic"] = {**paper["datasets"]["mimic"], "source": str(im_pk)}
    cfg["datasets"]["mimic"]["modalities"][1]["encoder"] = {"name": "gru", "dim": 16}
    cfg["datasets"]["mimic"]["model"] = {"embed_dim": 16}
    for section in ("encoders", "augment"):
        cfg[section]["tabular"] = paper[section]["tabular"]
    # UR-FUNNY with its audio, and Vision&Touch: the paper's datasets with narrow widths
    cfg["datasets"]["humor_tri"] = {
        **cfg["datasets"]["humor"],
        "modalities": paper["datasets"]["humor_tri"]["modalities"],
    }
    write_vision_touch_fixture(raw_dir / "triangle_real_data", n_files=VT_FILES)
    for name in VISION_TOUCH:
        dataset = {**paper["datasets"][name], "source": str(raw_dir / "triangle_real_data")}
        for modality in dataset["modalities"]:
            if modality["name"] != "image":
                modality["encoder"] = {**modality["encoder"], "dim": 16}
            else:  # a third of the ResNet-18's work at 128 px (tested in test_methods.py)
                modality["encoder"] = {"name": "alexnet"}
        cfg["datasets"][name] = {**dataset, "model": {"embed_dim": 16}}
    cfg["train"].update(epochs=1, batch_size=8)
    cfg["methods"]["cmc"] = {"kind": "cmc", "proj_dim": 16, "temperature": 0.1}
    for name in ("factorcl", "factorcl_sup", "supcon"):
        cfg["methods"][name] = {**paper["methods"][name], "train": {"lr": 1.0e-3}}
    cfg["methods"]["supcon"]["proj_dim"] = 8
    for name in ("factorcl", "factorcl_sup"):
        cfg["methods"][name]["critic_hidden"] = 16
    cfg["finetune"] = {**paper["finetune"], "epochs": 1}
    cfg["experiments"] = {
        name: {"table": table, "methods": methods, "seeds": [0], "report": "multibench"}
        for name, table, methods in (
            ("table1", "table1", list(METHODS)),
            ("table3", "table3", [*METHODS, "cmc"]),
        )
    }
    cfg["experiments"]["table1_affect"] = {  # no report of its own: the others test that
        "table": "table1",
        "columns": ["MOSI", "UR-FUNNY", "MUsTARD"],
        "methods": list(METHODS),
        "seeds": [0],
    }
    return cfg


# one tiny end-to-end run of its dataset family: in the quick suite (not slow)
@pytest.mark.filterwarnings("ignore")
def test_multibench_study_produces_table1_table3_and_their_reports(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    config = write_config(tmp_path, affect_study(raw), "affect.yaml")
    workdir = workdir_for(tmp_path / "wd")
    t0 = time.perf_counter()
    snakemake(workdir, "--cores", "2", "--configfile", config, "--replace-workflow-config")
    seconds = time.perf_counter() - t0
    results = workdir / "results"
    for name in CORPORA:
        manifest = json.loads((results / "data" / name / "manifest.json").read_text())
        assert manifest["splits"]["train"]["count"] == SIZES["train"] - 1  # all-zero text
        for method in METHODS:
            probe = json.loads(
                (results / "runs" / name / method / "seed0" / "probe.json").read_text()
            )
            label = probe["tasks"]["label"]
            assert label["C_chosen_on"] == "valid" and 0.0 <= label["balanced_accuracy"] <= 1.0
            assert probe["n_valid"] == SIZES["valid"] and probe["n_test"] == SIZES["test"]
            run = json.loads((results / "runs" / name / method / "seed0" / "run.json").read_text())
            assert run["model"]["embed_dim"] == 16 and run["train"]["lr"] == 1.0e-3
            assert [m["name"] for m in run["dataset"]["modalities"]] == ["vision", "text"]
    affect = (results / "tables" / "table1_affect.md").read_text()
    for label in ("CoMM", "MOSI", "UR-FUNNY", "MUsTARD", "paper 67.5"):
        assert label in affect
    assert "MIMIC" not in affect.splitlines()[0]
    assert (results / "figures" / "table1_affect.png").stat().st_size > 0
    for name in ("table1", "table3"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
        html = (results / "reports" / f"{name}.html").read_text()
        assert "data:image/png;base64" in html
    index = (results / "reports" / "index.html").read_text()
    assert "table3.html" in index and "Reproduction scorecard" in index
    assert "table1_affect" in index  # in the scorecard
    for method in METHODS:
        run_dir = next((results / "runs" / "mimic").glob(f"{method}/seed0"))
        icd9 = json.loads((run_dir / "probe.json").read_text())["tasks"]["icd9_7"]
        assert icd9["C_chosen_on"] == "valid" and 0.0 <= icd9["balanced_accuracy"] <= 1.0
        modalities = json.loads((run_dir / "run.json").read_text())["dataset"]["modalities"]
        assert [m["encoder"]["name"] for m in modalities] == ["mlp", "gru"]
    # Vision&Touch: one prepared copy for its three datasets, valid = test (the authors')
    manifest = json.loads((results / "data" / "vision_touch" / "manifest.json").read_text())
    assert [manifest["splits"][s]["count"] for s in ("train", "test")] == [4 * 49, 49]
    for name, methods, task in (
        ("vision_touch", METHODS, "ee_yaw"),
        ("vision_touch_contact", METHODS, "contact"),
        ("vision_touch_tri", ("cmc", "comm"), "contact"),
    ):
        for method in methods:
            run_dir = results / "runs" / name / method / "seed0"
            probe = json.loads((run_dir / "probe.json").read_text())
            assert probe["n_train"] == 196 and probe["n_valid"] == probe["n_test"] == 49
            scores = probe["tasks"][task]
            if task == "ee_yaw":  # ridge probe: MSE, R² and r of the 4 outputs
                assert scores["alpha_chosen_on"] == "valid" and scores["mse"] > 0
                assert {"r2", "pearson"} <= set(scores)
            else:
                assert 0.0 <= scores["balanced_accuracy"] <= 1.0
            run = json.loads((run_dir / "run.json").read_text())
            encoders = [m["encoder"]["name"] for m in run["dataset"]["modalities"]]
            assert encoders[0] == "alexnet" and len(encoders) == (3 if "tri" in name else 2)
    log = (results / "runs" / "vision_touch_tri" / "comm" / "seed0" / "train_log.csv").read_text()
    assert "loss" in log.splitlines()[0]
    table1 = (results / "tables" / "table1.md").read_text()
    assert table1.splitlines()[0].startswith("| Method | V&T EE ↓ | MIMIC | MOSI |")
    assert "paper 4.5" in table1 and "paper 66.4" in table1  # V&T EE x 1e-4, MIMIC
    table3 = (results / "tables" / "table3.md").read_text()
    lines = [line for line in table3.splitlines()[2:] if line.startswith("|")]
    rows = [line.split(" | ")[0].strip("| ") for line in lines]
    assert rows == ["CoMM (2 modalities)", "CMC (3 modalities)", "CoMM (3 modalities)"]
    assert "paper 94.2" in table3 and "row CoMM (3 modalities)" in table3
    settings = yaml.safe_load(
        (results / "runs" / "mosi" / "comm" / "seed0" / "settings.yaml").read_text()
    )
    assert "probe" not in settings  # the probe settings live in probe_settings.yaml
    # CoMM fine-tuned: a copy of each run trained with the labels, probed the same way
    for name in CORPORA | {"mimic": None, "vision_touch": None}:
        tuned = results / "runs" / name / "comm" / "seed0" / "finetune"
        record = json.loads((tuned / "run.json").read_text())
        assert record["stage"] == "finetune" and record["train"]["epochs"] == 1
        assert set(json.loads((tuned / "probe.json").read_text())["tasks"])
    assert "CoMM fine-tuned" in table1 and "paper 75.0" in table1  # MOSI, fine-tuned
    # Rerunning the fine-tuning reruns it and what reads it, never the pretraining
    again = snakemake(
        workdir, "-n", "--forcerun", "finetune", "--configfile", config, "--replace-workflow-config"
    )
    jobs = planned_jobs(again.stdout)
    assert jobs["finetune"] == jobs["probe_finetuned"] == 5, jobs
    assert "pretrain" not in jobs and jobs["probe"] == 0, jobs
    print(f"MultiBench fixture workflow: {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_every_row_of_table1_runs_on_fixture_data(tmp_path):
    """Table 1's seven rows (FactorCL, SupCon, FactorCL-SUP and CoMM fine-tuned among them) on
    its V&T EE (regression) and MOSI (classification) columns."""
    raw = tmp_path / "raw"
    raw.mkdir()
    cfg = affect_study(raw)
    cfg["datasets"] = {name: cfg["datasets"][name] for name in ("mosi", "vision_touch")}
    cfg["experiments"] = {
        "table1_rows": {
            "table": "table1",
            "columns": TABLE1_COLUMNS,
            "methods": list(TABLE1_METHODS),
            "seeds": [0],
        }
    }
    config = write_config(tmp_path, cfg, "rows.yaml")
    workdir = workdir_for(tmp_path / "wd")
    snakemake(workdir, "--cores", "2", "--configfile", config, "--replace-workflow-config")
    results = workdir / "results"
    rows = (results / "tables" / "table1_rows.md").read_text().splitlines()
    labels = [line.split(" | ")[0].strip("| ") for line in rows[2:] if line.startswith("| ")]
    assert labels == [
        "Cross", "Cross+Self", "FactorCL", "CoMM", "SupCon", "FactorCL-SUP", "CoMM fine-tuned",
    ]  # fmt: skip
    supcon = next(line for line in rows if line.startswith("| SupCon "))
    assert supcon.split(" | ")[1] == "–"  # no regression cell, as in the paper
    assert not (results / "runs" / "vision_touch" / "supcon").exists()
    for method in ("factorcl", "factorcl_sup"):
        run = results / "runs" / "vision_touch" / method / "seed0"
        probe = json.loads((run / "probe.json").read_text())
        assert probe["tasks"]["ee_yaw"]["mse"] > 0
        log = (run / "train_log.csv").read_text().splitlines()
        assert "club_learning_loss" in log[0]  # the critics' own step ran
    probe = json.loads((results / "runs" / "mosi" / "supcon" / "seed0" / "probe.json").read_text())
    assert 0.0 <= probe["tasks"]["label"]["balanced_accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_fig6_runs_every_time_series_augmentation_on_fixture_data(tmp_path):
    """Fig. 6 on fixture files: three of its rows on all four columns (MIMIC: one time series
    beside static features; the affect datasets: two time-aligned ones), to the table with the
    paper's claim and the ablations report; every row on MOSI (an experiment of its column)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    cfg = affect_study(raw)
    paper = load(REPO / "config/paper.yaml")
    cfg["datasets"] = {name: cfg["datasets"][name] for name in ("mimic", *CORPORA)}
    fig6 = {**paper["experiments"]["fig6_timeseries"], "seeds": [0]}
    cfg["methods"].update({m: paper["methods"][m] for m in fig6["methods"]})
    cfg["experiments"] = {
        "fig6_timeseries": {**fig6, "methods": ["comm_ts_noise", "comm_ts_multi_crop", "comm"]},
        "fig6_mosi": {**fig6, "columns": ["MOSI"]},
    }
    config = write_config(tmp_path, cfg, "fig6.yaml")
    workdir = workdir_for(tmp_path / "wd")
    snakemake(workdir, "--cores", "2", "--configfile", config, "--replace-workflow-config")
    results = workdir / "results"
    table = (results / "tables" / "fig6_timeseries.md").read_text()
    lines = table.split("\n\n")[0].splitlines()  # the table, before its note and claims
    assert lines[0].startswith("| Method | MIMIC | MOSI | UR-FUNNY | MUsTARD | Avg |")
    labels = [line.split(" | ")[0].strip("| ") for line in lines[2:]]
    assert labels == ["noise", "multi-crop", "drop + noise (CoMM)"]
    claim = "noise + drop is the best time-series augmentation overall"
    assert claim in table
    html = (results / "reports" / "fig6_timeseries.html").read_text()
    assert "data:image/png;base64" in html and claim in html
    mosi = (results / "tables" / "fig6_mosi.md").read_text()
    labels = [line.split(" | ")[0].strip("| ") for line in mosi.split("\n\n")[0].splitlines()[2:]]
    assert len(labels) == 10 and labels[3:5] == ["multi-drop", "multi-crop"]
    assert claim not in mosi  # no average without the other columns
    for dataset in ("mimic", "mosi", "sarcasm"):
        run = json.loads(
            (results / "runs" / dataset / "comm_ts_multi_crop" / "seed0" / "run.json").read_text()
        )
        modalities = run["dataset"]["modalities"]
        views = [m["augment"]["strong"] for m in modalities if m["kind"] == "sequence"]
        assert views and all(v["crop_aligned"] and v["crop_p"] == 0.5 for v in views)
        assert all(v["drop_p"] == 0.0 == v["noise_p"] for v in views)
    mimic = results / "runs" / "mimic" / "comm_ts_multi_crop" / "seed0" / "run.json"
    static = json.loads(mimic.read_text())["dataset"]["modalities"][0]
    assert static["kind"] == "tabular" and static["augment"]["strong"]["noise_p"] == 0.5
