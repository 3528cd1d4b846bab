"""The workflow on the MultiBench datasets: fixture pickles of MOSI, UR-FUNNY, MUsTARD and MIMIC
in the authors' formats, through prepare, pretraining, probes, Table 1 (affect and MIMIC
columns) and the affect report."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from test_mimic import mimic_data
from test_multibench import affect_data, write_pickle
from test_workflow import REPO, TINY, load, snakemake, workdir_for, write_config

SIZES = {"train": 40, "valid": 16, "test": 16}
MIMIC_SAMPLES = 100  # valid 10, test 10, train 80
# Two methods keep the test short; Cross+Self's sequence path is tested in test_methods.py.
METHODS = ("cross", "comm")
CORPORA = {"mosi": "mosi_data.pkl", "humor": "humor.pkl", "sarcasm": "sarcasm.pkl"}


def affect_study(raw_dir) -> dict:
    """The tiny study (Trifeature datasets replaced by the three affect datasets, read from
    their fixture files by datasets.<name>.source), with Table 1 as its one experiment."""
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
    cfg["train"].update(epochs=1, batch_size=8)
    cfg["experiments"] = {
        "table1_affect": {
            "table": "table1_affect",
            "methods": list(METHODS),
            "seeds": [0],
            "report": "multibench",
        },
        "table1_mimic": {"table": "table1_mimic", "methods": list(METHODS), "seeds": [0]},
    }
    return cfg


# one tiny end-to-end run of its dataset family: in the quick suite (not slow)
@pytest.mark.filterwarnings("ignore")
def test_multibench_study_produces_table1_and_its_report(tmp_path):
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
    table = (results / "tables" / "table1_affect.md").read_text()
    for label in ("Cross", "CoMM", "MOSI", "UR-FUNNY", "MUsTARD", "paper 67.5"):
        assert label in table
    assert (results / "figures" / "table1_affect.png").stat().st_size > 0
    html = (results / "reports" / "table1_affect.html").read_text()
    assert "data:image/png;base64" in html
    index = (results / "reports" / "index.html").read_text()
    assert "table1_affect.html" in index and "Reproduction scorecard" in index
    for method in METHODS:
        run_dir = next((results / "runs" / "mimic").glob(f"{method}/seed0"))
        icd9 = json.loads((run_dir / "probe.json").read_text())["tasks"]["icd9_7"]
        assert icd9["C_chosen_on"] == "valid" and 0.0 <= icd9["balanced_accuracy"] <= 1.0
        modalities = json.loads((run_dir / "run.json").read_text())["dataset"]["modalities"]
        assert [m["encoder"]["name"] for m in modalities] == ["mlp", "gru"]
    mimic_table = (results / "tables" / "table1_mimic.md").read_text()
    assert "MIMIC" in mimic_table and "paper 66.4" in mimic_table
    assert "table1_mimic" in index
    settings = yaml.safe_load(
        (results / "runs" / "mosi" / "comm" / "seed0" / "settings.yaml").read_text()
    )
    assert "probe" not in settings  # the probe settings live in probe_settings.yaml
    print(f"MultiBench fixture workflow: {seconds:.0f} s")
