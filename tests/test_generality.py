"""The core is general: a dataset family and a table defined here, outside the project, run
through prepare -> pretrain -> probe -> table with no file of the project changed. The steps
are those of README.md, "Adding a dataset, a method or a table"."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import numpy as np
import yaml
from test_workflow import ENV, REPO, TINY, load, snakemake, workdir_for, write_config

# Step 1 of the README: a family, a class with prepare, pretrain_data and probe_data.
FAMILY = textwrap.dedent(
    '''
    """Two sequence modalities and a binary label, from one .npz file of split_name arrays."""

    import json

    import numpy as np

    from comm_repro.data.paired import PairedBank
    from comm_repro.data.registry import ProbeData, declared

    SPLITS = ("train", "test")


    class PairsOfSequences:
        def prepare(self, out_dir, options, source, download_to, progress):
            out_dir.mkdir(parents=True, exist_ok=True)
            with np.load(source, allow_pickle=False) as raw:
                for split in SPLITS:
                    arrays = {k.split("_", 1)[1]: raw[k] for k in raw.files if k.startswith(split)}
                    np.savez(out_dir / f"{split}.npz", **arrays)
            (out_dir / "manifest.json").write_text(json.dumps({"splits": list(SPLITS)}))
            return f"prepared {source} in {out_dir}"

        def _split(self, data_dir, split, dataset):
            declared(dataset, {"left": "sequence", "right": "sequence"})
            with np.load(data_dir / f"{split}.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            bank = PairedBank.aligned([arrays[m["name"]] for m in dataset["modalities"]])
            return bank, {t["name"]: arrays[t["labels"]] for t in dataset["tasks"]}

        def pretrain_data(self, data_dir, dataset):
            return self._split(data_dir, "train", dataset)[0]

        def probe_data(self, data_dir, dataset, probe):
            (train, train_y), (test, test_y) = (self._split(data_dir, s, dataset) for s in SPLITS)
            return ProbeData(train, test, train_y, test_y)
    '''
)

# Step 3: a table spec, one column read from the new dataset, the paper's value beside ours.
SPEC = {
    "title": "Pairs of sequences, linear-probe balanced accuracy (%)",
    "paper": "none (a test table)",
    "metric": "balanced_accuracy",
    "scale": 100,
    "columns": [{"name": "Sign", "dataset": "pairs", "task": "sign", "chance": 50}],
    "rows": [{"method": "comm", "label": "CoMM", "paper": {"Sign": [90.0, 5.0]}}],
}


def write_raw(path):
    """Data of the test: the label is the sign of the left sequence's mean."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("test", 32)):
        left = rng.standard_normal((n, 6, 3)).astype(np.float32)
        arrays[f"{split}_left"] = left
        arrays[f"{split}_right"] = rng.standard_normal((n, 4, 5)).astype(np.float32)
        arrays[f"{split}_sign"] = (left.mean(axis=(1, 2)) > 0).astype(np.int64)
    np.savez(path, **arrays)
    return path


def git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


# one tiny end-to-end run of its dataset family: in the quick suite (not slow)
def test_a_family_and_a_table_from_outside_run_end_to_end(tmp_path):
    before = git_status()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "pairs_family.py").write_text(FAMILY)
    spec = tmp_path / "pairs_table.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    # Step 2: the dataset in a study, its family named by module:attribute.
    cfg = load(TINY)
    cfg["datasets"] = {
        "pairs": {
            "family": "pairs_family:PairsOfSequences",
            "source": str(write_raw(tmp_path / "pairs.npz")),
            "modalities": [
                {"name": "left", "kind": "sequence"},
                {"name": "right", "kind": "sequence"},
            ],
            "tasks": [{"name": "sign", "kind": "binary"}],
            "model": {"embed_dim": 16},
        }
    }
    cfg["encoders"]["sequence"] = {
        "name": "transformer", "dim": 16, "layers": 1, "heads": 2, "dim_feedforward": 32,
        "dropout": 0.0,
    }  # fmt: skip
    cfg["train"].update(epochs=2, batch_size=16)
    # Step 4: an experiment, the table and the runs behind it.
    cfg["experiments"] = {"pairs": {"table": str(spec), "methods": ["comm"], "seeds": [0]}}
    config = write_config(tmp_path, cfg, "study.yaml")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}

    workdir = workdir_for(tmp_path / "wd")
    snakemake(workdir, "--cores", "2", "--configfile", config, "--replace-workflow-config", env=env)

    results = workdir / "results"
    probe = json.loads((results / "runs/pairs/comm/seed0/probe.json").read_text())
    assert probe["tasks"]["sign"]["kind"] == "binary" and probe["n_test"] == 32
    run = json.loads((results / "runs/pairs/comm/seed0/run.json").read_text())
    assert [m["encoder"]["dim"] for m in run["dataset"]["modalities"]] == [16, 16]
    table = (results / "tables/pairs.md").read_text()
    assert "CoMM" in table and "paper 90.0" in table
    index = (results / "reports/index.html").read_text()
    assert "Reproduction scorecard" in index and "Sign" in index
    assert git_status() == before  # no file of the project changed
