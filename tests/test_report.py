"""Fig. 4 aggregation, its files and figures, the report index and the notebook template."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from comm_repro import report
from comm_repro.cli import main

TASKS = ("share", "unique1", "unique2", "synergy")


def write_probe(
    root: Path,
    dataset: str,
    method: str,
    seed: int,
    scores: dict,
    class_weight: str = "none",
    precision: str = "bf16",
) -> Path:
    path = root / dataset / method / f"seed{seed}" / "probe.json"
    path.parent.mkdir(parents=True)
    tasks = {
        t: {
            "balanced_accuracy": scores[t],
            "accuracy": scores[t] + 0.01,
            "class_weight": class_weight,
        }
        for t in TASKS
    }
    config = {"dataset": {"name": dataset}, "method": {"name": method, "kind": method}}
    pretrained = {"precision": precision, "cpu": {"model": "Test CPU", "features": []}}
    result = {"config": {**config, "seed": seed}, "tasks": tasks, "pretrained": pretrained}
    path.write_text(json.dumps(result))
    return path


@pytest.fixture
def probes(tmp_path):
    """comm: seeds 0/1 on both pairings, with values chosen so each column has a known answer."""
    paths = []
    for seed, base in ((0, 0.8), (1, 0.6)):
        unbiased = {"share": base, "unique1": base - 0.2, "unique2": base - 0.4, "synergy": 0.1}
        biased = {"share": 0.0, "unique1": 0.0, "unique2": 0.0, "synergy": base - 0.1}
        paths.append(write_probe(tmp_path, "tri", "comm", seed, unbiased))
        paths.append(write_probe(tmp_path, "tri_syn", "comm", seed, biased))
    return paths


def test_fig4_columns_come_from_the_right_runs(probes):
    table = report.fig4_table(report.load_probes(probes), "tri", "tri_syn", ["comm"])
    cells = table.set_index("column")
    assert cells.loc["R", "mean"] == pytest.approx(70.0)  # shape, unbiased runs
    assert cells.loc["R", "std"] == pytest.approx(14.1421, abs=1e-3)  # sample std of 80, 60
    assert cells.loc["U1", "mean"] == pytest.approx(50.0)
    assert cells.loc["U2", "mean"] == pytest.approx(30.0)
    assert cells.loc["U", "mean"] == pytest.approx(40.0)  # mean of U1 and U2 per run
    assert cells.loc["S", "mean"] == pytest.approx(60.0)  # synergy, biased runs only
    assert cells.loc["S", "pretrained_on"] == "tri_syn"
    assert cells.loc["S", "delta"] == pytest.approx(60.0 - 71.9)
    assert pd.isna(cells.loc["U2", "paper"])
    assert set(cells.n_seeds) == {2}


def test_table_note_says_how_the_probes_were_weighted(tmp_path):
    scores = dict.fromkeys(TASKS, 0.5)
    for weight in ("none", "balanced"):
        root = tmp_path / weight
        paths = [write_probe(root, ds, "comm", 0, scores, weight) for ds in ("tri", "tri_syn")]
        table = report.fig4_table(report.load_probes(paths), "tri", "tri_syn", ["comm"])
        assert set(table.probe_class_weight) == {weight}
        (_, md, _) = report.write_fig4_table(table, root / "fig4")
        note = md.read_text()
        expected = "with balanced class weights" if weight == "balanced" else "unweighted"
        assert f"probes fitted {expected}" in note


def _figure(table: pd.DataFrame, tmp_path: Path, monkeypatch):
    """plot_fig4's axes (its figure kept rather than saved)."""
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, prefix: figures.append(fig) or [])
    report.plot_fig4(table, tmp_path / "fig")
    (ax,) = figures[0].axes
    return ax


def _error_bars(ax) -> int:
    return sum(isinstance(c, ErrorbarContainer) for c in ax.containers)


def test_one_seed_shows_no_std_anywhere_and_says_n(tmp_path, monkeypatch):
    scores = {"share": 0.8, "unique1": 0.5, "unique2": 0.3, "synergy": 0.6}
    paths = [write_probe(tmp_path, ds, "comm", 0, scores) for ds in ("tri", "tri_syn")]
    table = report.fig4_table(report.load_probes(paths), "tri", "tri_syn", ["comm"])
    csv, md, tex = report.write_fig4_table(table, tmp_path / "fig4")
    for path in (md, tex):
        text = path.read_text()
        # Neither "± 0.0" in a cell nor "mean ± std" in the note: one value has no std.
        assert "±" not in text and r"\pm" not in text, text
        assert "n = 1 seed" in text
    assert "| CoMM | 80.0 (paper 99.9, Δ -19.9) |" in md.read_text()
    assert pd.read_csv(csv)["std"].isna().all()
    ax = _figure(table, tmp_path, monkeypatch)
    assert _error_bars(ax) == 0  # a zero-length error bar would read as "± 0"
    assert "n = 1 seed" in ax.get_title()


def test_several_seeds_show_mean_and_std_and_say_n(probes, tmp_path, monkeypatch):
    table = report.fig4_table(report.load_probes(probes), "tri", "tri_syn", ["comm"])
    (_, md, tex) = report.write_fig4_table(table, tmp_path / "fig4")
    assert "mean ± std over n = 2 seeds;" in md.read_text()
    assert "mean ± std over n = 2 seeds;" in tex.read_text()
    ax = _figure(table, tmp_path, monkeypatch)
    assert _error_bars(ax) == 1  # one method: one set of bars with error bars
    assert "mean ± std over n = 2 seeds" in ax.get_title()


def test_a_method_with_one_seed_beside_one_with_two(probes, tmp_path, monkeypatch):
    scores = {"share": 0.8, "unique1": 0.5, "unique2": 0.3, "synergy": 0.6}
    probes += [write_probe(tmp_path, ds, "cross", 0, scores) for ds in ("tri", "tri_syn")]
    table = report.fig4_table(report.load_probes(probes), "tri", "tri_syn", ["comm", "cross"])
    (_, md, _) = report.write_fig4_table(table, tmp_path / "fig4")
    text = md.read_text()
    assert "| Cross | 80.0 (paper 100.0, Δ -20.0) |" in text
    assert "| CoMM | 70.0 ± 14.1 (paper 99.9, Δ -29.9) |" in text
    assert "mean ± std over n = 1/2 seeds (the value alone where n = 1)" in text
    assert _error_bars(_figure(table, tmp_path, monkeypatch)) == 1  # CoMM's only


def test_missing_runs_are_named(probes):
    with pytest.raises(ValueError, match="'cross'"):
        report.fig4_table(report.load_probes(probes), "tri", "tri_syn", ["comm", "cross"])


def test_cli_writes_table_figures_and_index(probes, tmp_path):
    out = tmp_path / "tables" / "fig4"
    args = ["table", "fig4", "--probes", *map(str, probes), "--unbiased", "tri"]
    assert main([*args, "--biased", "tri_syn", "--methods", "comm", "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert "| CoMM | 70.0 ± 14.1 (paper 99.9, Δ -29.9) |" in md
    assert r"70.0 $\pm$ 14.1 (paper 99.9, $\Delta$ -29.9)" in out.with_suffix(".tex").read_text()
    assert len(pd.read_csv(out.with_suffix(".csv"))) == 5
    fig = tmp_path / "figures" / "fig4"
    assert main(["figure", "fig4", "--table", str(out.with_suffix(".csv")), "--out", str(fig)]) == 0
    assert fig.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert fig.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert main(["figure", "curves", "--out", str(fig)]) == 2  # --runs is required for curves
    page = tmp_path / "reports" / "index.html"
    assert (
        main(["index", "--reports", str(tmp_path / "reports" / "a.html"), "--out", str(page)]) == 0
    )
    assert 'href="a.html"' in page.read_text()


def test_training_curves_read_run_folders(tmp_path):
    runs = []
    for method in ("cross", "comm"):
        run = tmp_path / "tri" / method / "seed3"
        run.mkdir(parents=True)
        (run / "train_log.csv").write_text("epoch,loss,ssl_acc\n1,4.0,0.1\n2,3.0,0.3\n")
        runs.append(run)
    logs = report.load_logs(runs)
    assert set(logs.method) == {"cross", "comm"} and set(logs.seed) == {3}
    paths = report.plot_curves(logs, tmp_path / "curves")
    assert all(p.stat().st_size > 0 for p in paths)


def test_notebook_template_has_a_parameters_cell():
    nb = nbformat.read(Path(__file__).parents[1] / "notebooks" / "trifeatures.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "results_dir" in tagged[0].source and "data_dir" in tagged[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_table_note_says_which_precision_and_cpu_the_runs_were_pretrained_with(tmp_path):
    scores = dict.fromkeys(TASKS, 0.5)
    for precisions, said in ((("bf16", "bf16"), "bf16"), (("bf16", "fp32"), "bf16/fp32")):
        root = tmp_path / said.replace("/", "_")
        paths = [
            write_probe(root, ds, "comm", 0, scores, precision=p)
            for ds, p in zip(("tri", "tri_syn"), precisions)
        ]
        table = report.fig4_table(report.load_probes(paths), "tri", "tri_syn", ["comm"])
        md = report.write_fig4_table(table, root / "fig4")[1].read_text()
        assert f"Pretrained in {said} on Test CPU." in md
