"""Paper tables from specs: building, files, figures, the scorecard and index, training curves,
the command line and the notebook templates."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.container import ErrorbarContainer

from comm_repro import report
from comm_repro.cli import main
from comm_repro.config import ConfigError

ROOT = Path(__file__).parents[1]
FIG4 = ROOT / "config" / "tables" / "fig4_trifeatures.yaml"
TABLE1 = ROOT / "config" / "tables" / "table1.yaml"
TABLE3 = ROOT / "config" / "tables" / "table3.yaml"
AFFECT = ["MOSI", "UR-FUNNY", "MUsTARD"]  # the columns of experiment table1_affect
TASKS = ("share", "unique1", "unique2", "synergy")
UNBIASED, BIASED = "trifeatures", "trifeatures_synergy"  # the datasets of the Fig. 4 spec


def write_probe(
    root: Path,
    dataset: str,
    method: str,
    seed: int,
    scores: dict,
    class_weight: str = "none",
    precision: str = "bf16",
    stage: str = "pretrain",
) -> Path:
    """A probe.json of one run (of its fine-tuned copy for ``stage`` finetune): ``scores``
    maps task -> balanced accuracy (a fraction)."""
    path = root / dataset / method / f"seed{seed}" / "probe.json"
    if stage == "finetune":
        path = path.parent / "finetune" / path.name
    path.parent.mkdir(parents=True)
    tasks = {
        t: {
            "balanced_accuracy": score,
            "accuracy": score + 0.01,
            "roc_auc": None,
            "class_weight": class_weight,
            "final_fit_converged": True,
        }
        for t, score in scores.items()
    }
    config = {"dataset": {"name": dataset}, "method": {"name": method, "kind": method}}
    pretrained = {"precision": precision, "cpu": {"model": "Test CPU", "features": []}}
    if stage == "finetune":
        config["stage"] = stage
    result = {"config": {**config, "seed": seed}, "tasks": tasks, "pretrained": pretrained}
    path.write_text(json.dumps(result))
    return path


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def fig4_runs(root: Path, method: str, seed: int, scores: dict) -> list[Path]:
    """One run on each pairing, each probed for its own tasks as the default study does."""
    unbiased = {t: scores[t] for t in ("share", "unique1", "unique2")}
    return [
        write_probe(root, UNBIASED, method, seed, unbiased),
        write_probe(root, BIASED, method, seed, {"synergy": scores["synergy"]}),
    ]


def fig4(paths, methods=("comm",)) -> tuple[pd.DataFrame, dict]:
    spec = report.load_spec(FIG4)
    return report.build_table(spec, report.load_probes(paths), list(methods)), spec


@pytest.fixture
def probes(tmp_path):
    """comm: seeds 0/1 on both pairings, with values chosen so each column has a known answer;
    the biased runs also probe share and unique1/2 with values that must not be used."""
    paths = []
    for seed, base in ((0, 0.8), (1, 0.6)):
        unbiased = {"share": base, "unique1": base - 0.2, "unique2": base - 0.4, "synergy": 0.1}
        biased = {"share": 0.0, "unique1": 0.0, "unique2": 0.0, "synergy": base - 0.1}
        paths.append(write_probe(tmp_path, UNBIASED, "comm", seed, unbiased))
        paths.append(write_probe(tmp_path, BIASED, "comm", seed, biased))
    return paths


# ---------------------------------------------------------------------------------------------
# Building a table from a spec


def test_fig4_columns_come_from_the_right_runs(probes):
    table, _ = fig4(probes)
    cells = table.set_index("column")
    assert list(cells.index) == ["R", "U1", "U2", "U", "S"]
    assert cells.loc["R", "mean"] == pytest.approx(70.0)  # shape, unbiased runs, in %
    assert cells.loc["R", "std"] == pytest.approx(14.1421, abs=1e-3)  # sample std of 80, 60
    assert cells.loc["U1", "mean"] == pytest.approx(50.0)
    assert cells.loc["U2", "mean"] == pytest.approx(30.0)
    assert cells.loc["U", "mean"] == pytest.approx(40.0)  # mean of U1 and U2 per run
    assert cells.loc["U", "task"] == "unique1+unique2"
    assert cells.loc["S", "mean"] == pytest.approx(60.0)  # synergy, biased runs only
    assert cells.loc["S", "dataset"] == BIASED and cells.loc["R", "dataset"] == UNBIASED
    assert cells.loc["S", "delta"] == pytest.approx(60.0 - 71.9)
    # The paper's one uniqueness value stands beside U1 and U, not U2.
    assert cells.loc["U1", "paper"] == cells.loc["U", "paper"] == 87.8
    assert pd.isna(cells.loc["U2", "paper"]) and pd.isna(cells.loc["U2", "within"])
    assert set(cells.label) == {"CoMM"} and set(cells.metric) == {"balanced_accuracy"}
    assert set(cells.n_seeds) == {2}


def test_u_is_the_mean_of_the_tasks_within_each_run_then_over_seeds(tmp_path):
    # Each run's U1/U2 mean is 50: U has no spread, although the four values pooled would.
    paths = fig4_runs(tmp_path, "comm", 0, dict(share=0.9, unique1=0.9, unique2=0.1, synergy=0.5))
    paths += fig4_runs(tmp_path, "comm", 1, dict(share=0.9, unique1=0.1, unique2=0.9, synergy=0.5))
    cells = fig4(paths)[0].set_index("column")
    assert cells.loc["U", "mean"] == pytest.approx(50.0)
    assert cells.loc["U", "std"] == pytest.approx(0.0)
    assert cells.loc["U1", "std"] == pytest.approx(56.5685, abs=1e-3)


def test_a_method_without_a_spec_row_gets_its_key_and_no_paper_values(probes, tmp_path):
    scores = dict(share=0.8, unique1=0.5, unique2=0.3, synergy=0.6)
    probes += fig4_runs(tmp_path / "more", "comm_full_only", 0, scores)
    probes += fig4_runs(tmp_path / "more", "cross", 0, scores)
    table, spec = fig4(probes, ["comm_full_only", "cross", "comm"])
    # The spec's rows in the paper's order, then the methods it has no row for
    assert list(dict.fromkeys(table.method)) == ["cross", "comm", "comm_full_only"]
    own = table[table.method == "comm_full_only"]
    assert set(own.label) == {"comm_full_only"}
    assert own.paper.isna().all() and own.delta.isna().all() and own.within.isna().all()
    _, md, tex = report.write_table(table, spec, tmp_path / "t")
    lines = md.read_text().splitlines()
    assert lines[4] == "| comm_full_only | 80.0 | 50.0 | 30.0 | 40.0 | 60.0 |"
    assert lines[3].startswith("| CoMM | 70.0 ± 14.1 (paper 99.9, Δ -29.9) |")
    assert r"comm\_full\_only & 80.0 & 50.0" in tex.read_text()  # escaped for LaTeX


@pytest.mark.parametrize(
    ("delta", "std", "paper_std", "expected"),
    [
        (1.0, 2.0, 0.5, True),  # within our std
        (-1.0, 0.5, 2.0, True),  # within the paper's, either sign
        (3.0, 2.0, 0.5, False),
        (0.05, math.nan, 0.1, True),  # one seed: the paper's std alone
        (0.3, math.nan, 0.1, False),
        (1.0, 2.0, math.nan, True),  # the paper gives no std: ours alone
        (1.0, math.nan, math.nan, math.nan),  # neither has a std: no verdict
        (math.nan, 1.0, 1.0, math.nan),  # no paper value
        (100.0 - 99.9, math.nan, 0.1, True),  # on the boundary, float rounding aside
    ],
)
def test_within_the_larger_std(delta, std, paper_std, expected):
    got = report._within(delta, std, paper_std)
    if isinstance(expected, bool):
        assert got is expected
    else:
        assert math.isnan(got)


def test_within_is_set_per_cell_by_the_table(tmp_path):
    # n = 1 (no std): R 99.95 lies within the paper's 99.9 ± 0.1, S 60 not within 71.9 ± 2.0.
    paths = fig4_runs(
        tmp_path, "comm", 0, dict(share=0.9995, unique1=0.5, unique2=0.3, synergy=0.6)
    )
    cells = fig4(paths)[0].set_index("column")
    assert cells.loc["R", "within"] is True and cells.loc["S", "within"] is False
    assert pd.isna(cells.loc["U2", "within"])  # no paper value


def test_missing_runs_are_named(probes):
    with pytest.raises(ValueError, match="'cross' on dataset 'trifeatures'"):
        fig4(probes, ["comm", "cross"])


def test_a_method_asked_for_twice_is_refused(probes):
    with pytest.raises(ValueError, match="methods given twice .*\\['comm'\\]"):
        fig4(probes, ["comm", "comm"])


def test_a_run_without_a_task_of_the_table_is_named(tmp_path):
    paths = [
        write_probe(tmp_path, UNBIASED, "comm", 0, {"share": 0.9, "unique1": 0.5}),
        write_probe(tmp_path, BIASED, "comm", 0, {"synergy": 0.6}),
    ]
    with pytest.raises(ValueError, match="seed 0, has no task 'unique2'") as err:
        fig4(paths)
    assert "datasets.trifeatures.probe_tasks" in str(err.value)


def test_a_column_may_set_its_own_metric_scale_and_direction(tmp_path):
    spec = {
        "title": "Plain accuracy",
        "paper": "Table 9",
        "metric": "balanced_accuracy",
        "scale": 100,
        "columns": [
            {"name": "R", "dataset": UNBIASED, "task": "share"},
            {
                "name": "err",
                "dataset": UNBIASED,
                "task": "share",
                "metric": "accuracy",
                "scale": 1,
                "lower_is_better": True,
            },
        ],
        "rows": [{"method": "comm", "label": "CoMM", "paper": {"err": [0.7, 0.25]}}],
    }
    spec = report.load_spec(write_spec(tmp_path / "spec.yaml", spec))
    probes = report.load_probes([write_probe(tmp_path, UNBIASED, "comm", 0, {"share": 0.8})])
    cells = report.build_table(spec, probes, ["comm"]).set_index("column")
    assert cells.loc["R", "mean"] == pytest.approx(80.0)
    assert cells.loc["err", "mean"] == pytest.approx(0.81)  # accuracy, unscaled
    assert cells.loc["err", "metric"] == "accuracy" and cells.loc["err", "within"] is True
    table = report.build_table(spec, probes, ["comm"])
    _, md, tex = report.write_table(table, spec, tmp_path / "t")
    assert md.read_text().startswith("| Method | R | err ↓ |")
    assert r"err $\downarrow$" in tex.read_text()


# ---------------------------------------------------------------------------------------------
# Specs


def test_every_spec_in_the_repository_loads():
    specs = sorted((ROOT / "config" / "tables").glob("*.yaml"))
    assert {p.name for p in specs} >= {FIG4.name, TABLE1.name, "table2.yaml", "table8.yaml"}
    for path in specs:
        if "columns" in yaml.safe_load(path.read_text()):
            spec = report.load_spec(path)
            assert spec["columns"] and spec["paper"], path
        else:  # a complexity table (Table 8)
            spec = report.load_complexity_spec(path)
            assert spec["rows"] and spec["paper"], path


def _measured(dataset, method, flops, params, latency_s):
    return {
        "dataset": dataset,
        "method": method,
        "flops": flops,
        "macs": flops // 2,
        "params": params,
        "latency_s": latency_s,
        "batch_size": 64,
        "device_name": "NVIDIA H200",
        "precision": "bf16",
    }


def test_the_complexity_table_shows_each_model_beside_the_paper(tmp_path):
    spec = report.load_complexity_spec(ROOT / "config" / "tables" / "table8.yaml")
    assert report.complexity_rows(spec) == [
        ("mmimdb", "clip_vl"),
        ("mmimdb", "comm"),
        ("mmimdb_blip2", "blip2_vl"),
        ("mmimdb_blip2", "comm"),
    ]
    results = [
        _measured(d, m, int(f), int(p), t)
        for (d, m), f, p, t in zip(
            report.complexity_rows(spec),
            (1.2e12, 1.3e12, 9.0e12, 9.1e12),
            (222e6, 229e6, 1.17e9, 1.18e9),
            (0.05, 0.06, 0.9, 1.0),
        )
    ]
    table = report.build_complexity_table(spec, results)
    assert table.label.tolist() == ["CLIP", "CoMM (w/ CLIP)", "BLIP-2", "CoMM (w/ BLIP-2)"]
    assert table.loc[1, "paper_flops"] == 281e9 and table.loc[3, "macs"] == 4.55e12
    paths = report.write_complexity_table(table, spec, tmp_path / "table8")
    md = paths[1].read_text()
    assert md.splitlines()[0] == (
        "| Model | FLOPs | FLOPs (paper) | MACs | MACs (paper) | #Params | #Params (paper) | "
        "Fwd latency | Fwd latency (paper) |"
    )
    assert "| CoMM (w/ CLIP) | 1,300.0 G | 281.0 G | 650.0 G | 140.0 G | 229.0 M | 229.0 M |" in md
    assert "60.0 ms | 493.0 ms |" in md and "batch 64 on NVIDIA H200 in bf16" in md
    assert pd.read_csv(paths[0]).params.tolist() == [222e6, 229e6, 1.17e9, 1.18e9]
    with pytest.raises(report.ResultsError, match="method 'blip2_vl' on 'mmimdb_blip2'"):
        report.build_complexity_table(spec, results[:2])


def test_table1_spec_holds_every_row_of_the_paper():
    spec = report.load_spec(TABLE1)
    columns = {c["name"]: c for c in spec["columns"]}
    assert {n: c.get("dataset") for n, c in columns.items()} == {
        "V&T EE": "vision_touch",
        "MIMIC": "mimic",
        "MOSI": "mosi",
        "UR-FUNNY": "humor",
        "MUsTARD": "sarcasm",
        "Avg": None,
    }
    ee = columns.pop("V&T EE")
    assert ee["metric"] == "mse" and ee["scale"] == 1e4 and ee["lower_is_better"]
    assert columns.pop("Avg")["average"] == ["MIMIC", *AFFECT]  # the classification columns
    for column in columns.values():
        assert column["metric"] == "balanced_accuracy" and not column["lower_is_better"]
        assert column["chance"] == 50 and column["scale"] == 100
    # Table 1 of the paper (reference/paper_numbers.md): mean, std over 5 runs; the average
    published = [
        (
            "cross",
            "Cross",
            [(33.09, 3.67), (66.7, 0.0), (47.8, 1.8), (50.1, 1.9), (53.5, 2.9)],
            54.52,
        ),
        (
            "cross_self",
            "Cross+Self",
            [(7.56, 0.31), (65.49, 0.0), (49.0, 1.1), (59.9, 0.9), (53.9, 4.0)],
            57.07,
        ),
        (
            "factorcl",
            "FactorCL",
            [(10.82, 0.56), (67.3, 0.0), (51.2, 1.6), (60.5, 0.8), (55.8, 0.9)],
            58.7,
        ),
        (
            "comm",
            "CoMM",
            [(4.55, 0.30), (66.4, 0.32), (67.5, 1.30), (63.1, 0.65), (63.9, 3.01)],
            65.22,
        ),
        ("supcon", "SupCon", [None, (67.4, 0.0), (47.2, 1.2), (50.1, 2.0), (52.7, 2.2)], 54.35),
        (
            "factorcl_sup",
            "FactorCL-SUP",
            [(1.72, 0.03), (76.8, 0.0), (69.1, 0.6), (63.5, 0.8), (69.9, 1.9)],
            69.82,
        ),
        (
            "comm",
            "CoMM fine-tuned",
            [(1.34, 0.01), (68.18, 0.23), (74.98, 0.43), (65.96, 0.44), (70.42, 0.15)],
            69.88,
        ),
    ]
    assert [(r["method"], r["label"]) for r in spec["rows"]] == [p[:2] for p in published]
    for row, (_, _, values, average) in zip(spec["rows"], published):
        assert [row["paper"].get(c) for c in ("V&T EE", "MIMIC", *AFFECT)] == values
        assert row["paper"]["Avg"][0] == average
    stages = [row["stage"] for row in spec["rows"]]
    assert stages == ["pretrain"] * 6 + ["finetune"]
    assert spec["rows"][4]["datasets"] == {"V&T EE": None}  # SupCon: a dash, no run
    assert spec["figure"]["columns"] == ["MIMIC", *AFFECT]  # one axis: the accuracies
    # The affect columns alone, as experiment table1_affect shows them
    affect = report.load_spec(TABLE1, AFFECT)
    assert [c["name"] for c in affect["columns"]] == AFFECT
    assert affect["figure"]["columns"] == AFFECT
    assert all(set(row["paper"]) == set(AFFECT) for row in affect["rows"])


def test_dashes_averages_and_fine_tuned_rows(tmp_path):
    spec = {**_minimal(), "scale": 100}
    spec["columns"] += [
        {"name": "B", "dataset": "e", "task": "t"},
        {"name": "Avg", "average": ["A", "B"]},
    ]
    spec["rows"] = [
        {"method": "m", "label": "m", "paper": {"A": 10.0, "Avg": 20.0}},
        {"method": "m", "label": "m tuned", "stage": "finetune", "paper": {"A": 30.0}},
        {"method": "s", "label": "s", "datasets": {"A": None}, "paper": {"A": 5.0}},
    ]
    spec = report.check_spec(spec, "spec.yaml")
    paths = [
        write_probe(tmp_path, "d", "m", 0, {"t": 0.1}),
        write_probe(tmp_path, "e", "m", 0, {"t": 0.3}),
        write_probe(tmp_path, "e", "s", 0, {"t": 0.5}),
    ]
    for dataset, value in (("d", 0.6), ("e", 0.8)):  # the fine-tuned copies
        paths.append(write_probe(tmp_path, dataset, "m", 0, {"t": value}, stage="finetune"))
    table = report.build_table(spec, report.load_probes(paths), ["m", "s"])
    cells = {(r.label, r.column): (r.mean, r.n_seeds) for r in table.itertuples()}
    assert cells[("m", "A")] == (pytest.approx(10.0), 1)
    assert cells[("m tuned", "A")] == (pytest.approx(60.0), 1)
    assert cells[("m", "Avg")] == (pytest.approx(20.0), 1)  # mean of 10 and 30
    assert cells[("m tuned", "Avg")] == (pytest.approx(70.0), 1)
    assert math.isnan(cells[("s", "A")][0]) and cells[("s", "A")][1] == 0
    assert math.isnan(cells[("s", "Avg")][0])  # an average over a dash is none
    md = report._wide(table, spec, tex=False).set_index("Method")
    assert md.loc["s", "A"] == "– (paper 5.0)"
    assert md.loc["m", "Avg"].startswith("20.0 (paper 20.0")
    note = report.table_note(table, spec)
    assert "Avg the mean of A, B" in note and "row s: no run for A" in note
    assert "n = 1 seeds" in note or "n = 1 seed" in note
    card = report.scorecard({"t": table})
    assert ("s", "A") not in set(zip(card.label, card.column))  # a dash is not compared


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda s: s["columns"].append({"name": "X", "average": ["nope"]}), "columns[1].average"),
        (lambda s: s["rows"][0].update(stage="later"), "rows[0].stage"),
    ],
)
def test_bad_averages_and_stages_are_named(edit, named):
    spec = _minimal()
    edit(spec)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        report.check_spec(spec, "spec.yaml")


def test_table3_spec_reads_the_three_modality_datasets_in_its_own_rows():
    spec = report.load_spec(TABLE3)
    rows = [(r["method"], r["label"], r["datasets"], r["paper"]) for r in spec["rows"]]
    tri = {"V&T contact": "vision_touch_tri", "UR-FUNNY": "humor_tri"}
    assert [r[:3] for r in rows] == [
        ("cross", "Cross (2 modalities)", {}),
        ("cross_self", "Cross+Self (2 modalities)", {}),
        ("comm", "CoMM (2 modalities)", {}),
        ("cmc", "CMC (3 modalities)", tri),
        ("comm", "CoMM (3 modalities)", tri),
    ]
    published = [(84.4, 50.1), (86.8, 59.9), (88.1, 63.1), (94.1, 59.2), (94.2, 64.6)]
    for (*_, paper), values in zip(rows, published):
        assert [paper[c][0] for c in ("V&T contact", "UR-FUNNY")] == list(values)
        assert all(math.isnan(std) for _, std in paper.values())  # no std published
    assert [c["dataset"] for c in spec["columns"]] == ["vision_touch_contact", "humor"]


def test_a_method_with_two_rows_fills_each_from_its_own_datasets(tmp_path):
    spec = _minimal()
    spec["columns"].append({"name": "B", "dataset": "e", "task": "t"})
    spec["rows"] = [
        {"method": "m", "label": "m on two", "paper": {"A": 1.0}},
        {"method": "m", "label": "m on three", "datasets": {"B": "e3"}, "paper": {"B": 3.0}},
    ]
    spec = report.check_spec(spec, "spec.yaml")
    paths = [
        write_probe(tmp_path, dataset, "m", 0, {"t": value})
        for dataset, value in (("d", 0.1), ("e", 0.2), ("e3", 0.3))
    ]
    table = report.build_table(spec, report.load_probes(paths), ["m"])
    cells = {(r.label, r.column): (r.dataset, r.mean) for r in table.itertuples()}
    assert cells == {
        ("m on two", "A"): ("d", pytest.approx(0.1)),
        ("m on two", "B"): ("e", pytest.approx(0.2)),
        ("m on three", "A"): ("d", pytest.approx(0.1)),
        ("m on three", "B"): ("e3", pytest.approx(0.3)),
    }
    md = report._wide(table, spec, tex=False)
    assert list(md.Method) == ["m on two", "m on three"]
    assert "row m on three: B from the runs on e3" in report.table_note(table, spec)


def test_fig4_spec_holds_the_papers_values():
    rows = {row["method"]: row["paper"] for row in report.load_spec(FIG4)["rows"]}
    assert rows["comm"] == {"R": (99.9, 0.1), "U1": (87.8, 1.6), "U": (87.8, 1.6), "S": (71.9, 2.0)}
    assert rows["factorcl"]["S"] == (46.5, 2.9) and rows["cross"]["U"] == (11.6, 0.9)


def _minimal() -> dict:
    return {
        "title": "T",
        "paper": "Fig. 1",
        "metric": "balanced_accuracy",
        "columns": [{"name": "A", "dataset": "d", "task": "t"}],
        "rows": [{"method": "m", "paper": {"A": [1.0, 0.1]}}],
    }


SPEC_ERRORS = {
    "unknown key": (lambda s: s.update(colour="red"), "colour: unknown key"),
    "missing title": (lambda s: s.pop("title"), "title: missing"),
    "unknown column key": (lambda s: s["columns"][0].update(taks="t"), "columns[0].taks"),
    "paper key not a column": (
        lambda s: s["rows"][0]["paper"].update(B=[1, 2]),
        "rows[0].paper.B: not a column",
    ),
    "neither task nor tasks": (lambda s: s["columns"][0].pop("task"), "columns[0]: give either"),
    "both task and tasks": (
        lambda s: s["columns"][0].update(tasks=["t", "u"]),
        "columns[0]: give either",
    ),
    "duplicate column": (lambda s: s["columns"].append(dict(s["columns"][0])), "columns[1].name"),
    "duplicate method": (lambda s: s["rows"].append({"method": "m"}), "rows[1].method"),
    "duplicate label": (
        lambda s: s["rows"].append({"method": "n", "label": "m"}),
        "rows[1].label: duplicate 'm'",
    ),
    "row dataset not a column": (
        lambda s: s["rows"][0].update(datasets={"B": "e"}),
        "rows[0].datasets.B: not a column",
    ),
    "duplicate task": (
        lambda s: s["columns"].__setitem__(0, {"name": "A", "dataset": "d", "tasks": ["t", "t"]}),
        "columns[0].tasks[1]: duplicate 't'",
    ),
    "no metric anywhere": (lambda s: s.pop("metric"), "columns[0].metric: missing"),
    "paper value not a number": (
        lambda s: s["rows"][0]["paper"].update(A="high"),
        "rows[0].paper.A: must be a number",
    ),
    "figure column not a column": (
        lambda s: s.update(figure={"columns": ["A", "Z"]}),
        "figure.columns[1]: 'Z' is not a column",
    ),
    "x on some rows only": (
        lambda s: s["rows"].extend([{"method": "n", "x": 0.5}]),
        "rows: give x to every row (a sweep) or to none",
    ),
    "curve of no column": (lambda s: s.update(curves={"Z": {"m": [[1, 2]]}}), "curves.Z"),
    "curve points not pairs": (
        lambda s: s.update(curves={"A": {"m": [[1, 2, 3]]}}),
        "curves.A.m: must be a list of [step, value]",
    ),
    "claim of an unknown test": (
        lambda s: s.update(claims=[{"text": "t", "test": "bigger", "column": "A"}]),
        "claims[0].test: must be one of",
    ),
    "claim of an unknown row": (
        lambda s: s.update(claims=[{"text": "t", "test": "best", "row": "z", "column": "A"}]),
        "claims[0].row: not a row's label",
    ),
    "chance claim without a chance": (
        lambda s: s.update(
            claims=[{"text": "t", "test": "near_chance", "row": "m", "column": "A"}]
        ),
        "claims[0].column: column A gives no chance level",
    ),
    "peak claim without a sweep": (
        lambda s: s.update(claims=[{"text": "t", "test": "peak", "column": "A"}]),
        "peak needs a sweep",
    ),
}


@pytest.mark.parametrize("case", SPEC_ERRORS)
def test_a_bad_spec_is_refused_in_one_line_naming_file_and_key(case, tmp_path):
    spoil, expected = SPEC_ERRORS[case]
    spec = _minimal()
    spoil(spec)
    path = write_spec(tmp_path / "bad.yaml", spec)
    with pytest.raises(ValueError) as err:
        report.load_spec(path)
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    assert len(message.splitlines()) == 1 and message.startswith(f"{path}: ")
    assert expected in message, message


def test_a_minimal_spec_fills_its_defaults(tmp_path):
    spec = report.load_spec(write_spec(tmp_path / "ok.yaml", _minimal()))
    (column,) = spec["columns"]
    assert column["tasks"] == ["t"] and column["scale"] == 1 and column["chance"] is None
    assert column["lower_is_better"] is False
    assert spec["rows"][0]["label"] == "m" and spec["rows"][0]["paper"] == {"A": (1.0, 0.1)}
    figure = {"columns": ["A"], "labels": ["A"], "ylabel": None, "ylim": None, "xlabel": None}
    assert spec["figure"] == figure
    assert spec["rows"][0]["x"] is None and spec["curves"] == {} and spec["claims"] == []


# ---------------------------------------------------------------------------------------------
# Table files and figures


def test_table_note_says_how_the_probes_were_weighted(tmp_path):
    scores = dict.fromkeys(TASKS, 0.5)
    for weight in ("none", "balanced"):
        root = tmp_path / weight
        paths = [write_probe(root, ds, "comm", 0, scores, weight) for ds in (UNBIASED, BIASED)]
        table, spec = fig4(paths)
        assert set(table.probe_class_weight) == {weight}
        (_, md, _) = report.write_table(table, spec, root / "fig4")
        note = md.read_text()
        expected = "with balanced class weights" if weight == "balanced" else "unweighted"
        assert f"probes fitted {expected}" in note


def test_table_note_says_which_precision_and_cpu_the_runs_were_pretrained_with(tmp_path):
    scores = dict.fromkeys(TASKS, 0.5)
    for precisions, said in ((("bf16", "bf16"), "bf16"), (("bf16", "fp32"), "bf16/fp32")):
        root = tmp_path / said.replace("/", "_")
        paths = [
            write_probe(root, ds, "comm", 0, scores, precision=p)
            for ds, p in zip((UNBIASED, BIASED), precisions)
        ]
        table, spec = fig4(paths)
        md = report.write_table(table, spec, root / "fig4")[1].read_text()
        assert f"Pretrained in {said} on Test CPU." in md


def test_table_note_holds_title_sources_spec_note_and_paper(probes, tmp_path):
    table, spec = fig4(probes)
    note = report.write_table(table, spec, tmp_path / "fig4")[1].read_text().splitlines()[-1]
    assert note.startswith(
        "Bimodal Trifeature, linear-probe balanced accuracy (%); mean ± std over n = 2 seeds. "
        "Columns: R, U1, U2, U from the runs on trifeatures; S from the runs on "
        "trifeatures_synergy. "
    )
    assert "U = their mean, S = texture-colour synergy (chance 50)." in note
    assert note.endswith("Paper: Fig. 4.")


def _figure(table: pd.DataFrame, spec: dict, tmp_path: Path, monkeypatch):
    """plot_table's axes (its figure kept rather than saved)."""
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, prefix: figures.append(fig) or [])
    report.plot_table(table, spec, tmp_path / "fig")
    (ax,) = figures[0].axes
    return ax


def _error_bars(ax) -> int:
    return sum(isinstance(c, ErrorbarContainer) for c in ax.containers)


def test_one_seed_shows_no_std_anywhere_and_says_n(tmp_path, monkeypatch):
    scores = {"share": 0.8, "unique1": 0.5, "unique2": 0.3, "synergy": 0.6}
    table, spec = fig4(fig4_runs(tmp_path, "comm", 0, scores))
    csv, md, tex = report.write_table(table, spec, tmp_path / "fig4")
    for path in (md, tex):
        text = path.read_text()
        # Neither "± 0.0" in a cell nor "mean ± std" in the note: one value has no std.
        assert "±" not in text and r"\pm" not in text, text
        assert "n = 1 seed" in text
    assert "| CoMM | 80.0 (paper 99.9, Δ -19.9) |" in md.read_text()
    assert pd.read_csv(csv)["std"].isna().all()
    ax = _figure(table, spec, tmp_path, monkeypatch)
    assert _error_bars(ax) == 0  # a zero-length error bar would read as "± 0"
    assert "n = 1 seed" in ax.get_title()


def test_several_seeds_show_mean_and_std_and_say_n(probes, tmp_path, monkeypatch):
    table, spec = fig4(probes)
    (_, md, tex) = report.write_table(table, spec, tmp_path / "fig4")
    assert "mean ± std over n = 2 seeds." in md.read_text()
    assert "mean ± std over n = 2 seeds." in tex.read_text()
    ax = _figure(table, spec, tmp_path, monkeypatch)
    assert _error_bars(ax) == 1  # one method: one set of bars with error bars
    assert "mean ± std over n = 2 seeds" in ax.get_title()


def test_a_method_with_one_seed_beside_one_with_two(probes, tmp_path, monkeypatch):
    scores = {"share": 0.8, "unique1": 0.5, "unique2": 0.3, "synergy": 0.6}
    probes += fig4_runs(tmp_path / "cross", "cross", 0, scores)
    table, spec = fig4(probes, ["comm", "cross"])
    (_, md, _) = report.write_table(table, spec, tmp_path / "fig4")
    text = md.read_text()
    assert "| Cross | 80.0 (paper 100.0, Δ -20.0) |" in text
    assert "| CoMM | 70.0 ± 14.1 (paper 99.9, Δ -29.9) |" in text
    assert "mean ± std over n = 1/2 seeds (the value alone where n = 1)" in text
    assert _error_bars(_figure(table, spec, tmp_path, monkeypatch)) == 1  # CoMM's only


def test_the_figure_draws_the_spec_columns_paper_values_and_chance(probes, tmp_path, monkeypatch):
    table, spec = fig4(probes)
    ax = _figure(table, spec, tmp_path, monkeypatch)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Redundancy", "Uniqueness", "Synergy"]
    (bars,) = [c for c in ax.containers if not isinstance(c, ErrorbarContainer)]
    assert [b.get_height() for b in bars] == pytest.approx([70.0, 40.0, 60.0])  # R, U, S
    (paper,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert list(paper.get_offsets()[:, 1]) == pytest.approx([99.9, 87.8, 71.9])
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    chance = [c for c in lines if c.get_linestyle()[0][1] is not None]  # dashed
    levels = sorted(seg[0][1] for c in chance for seg in c.get_segments())
    assert levels == [10.0, 10.0, 50.0]
    assert ax.get_ylim() == (0.0, 105.0) and "Fig. 4" in ax.get_title()


def test_a_table_from_another_spec_is_refused(probes, tmp_path):
    table, _ = fig4(probes)
    with pytest.raises(ValueError, match="no column MIMIC, MOSI, UR-FUNNY, MUsTARD"):
        report.plot_table(table, report.load_spec(TABLE1), tmp_path / "fig")


# ---------------------------------------------------------------------------------------------
# Scorecard and index


def affect_probes(root: Path) -> list[Path]:
    """CoMM on the three affect datasets, two seeds: MOSI 66/68 (paper 67.5 ± 1.30: within),
    UR-FUNNY 50/52 (paper 63.1 ± 0.65: not), MUsTARD 64/64 (paper 63.9 ± 3.01: within); and
    fine-tuned: MOSI 74/76 (paper 74.98 ± 0.43: within), UR-FUNNY 60/60 (paper 65.96 ± 0.44:
    not), MUsTARD 70/71 (paper 70.42 ± 0.15: within)."""
    values = {
        "pretrain": {"mosi": (0.66, 0.68), "humor": (0.50, 0.52), "sarcasm": (0.64, 0.64)},
        "finetune": {"mosi": (0.74, 0.76), "humor": (0.60, 0.60), "sarcasm": (0.70, 0.71)},
    }
    return [
        write_probe(root, dataset, "comm", seed, {"label": pair[seed]}, stage=stage)
        for stage, by_dataset in values.items()
        for dataset, pair in by_dataset.items()
        for seed in (0, 1)
    ]


def test_scorecard_lists_every_cell_with_a_paper_value(probes, tmp_path):
    fig4_table, _ = fig4(probes)
    spec = report.load_spec(TABLE1, AFFECT)
    affect = report.build_table(spec, report.load_probes(affect_probes(tmp_path / "a")), ["comm"])
    card = report.scorecard({"fig4_trifeatures": fig4_table, "table1_affect": affect})
    assert list(card.columns) == list(report.SCORECARD_COLUMNS)
    # Fig. 4: R, U1, U, S (U2 has no paper value); Table 1: three columns.
    assert list(zip(card.table, card.column)) == [
        ("fig4_trifeatures", "R"),
        ("fig4_trifeatures", "U1"),
        ("fig4_trifeatures", "U"),
        ("fig4_trifeatures", "S"),
        *[("table1_affect", column) for column in AFFECT * 2],  # CoMM, CoMM fine-tuned
    ]
    # S: 60 ± 14.1 against 71.9 ± 2.0 lies within our std.
    assert list(card.within) == [False, False, False, True, True, False, True, True, False, True]
    mosi = card.iloc[4]
    assert (mosi.label, mosi.n_seeds, mosi.paper, mosi.paper_std) == ("CoMM", 2, 67.5, 1.3)
    assert mosi["mean"] == pytest.approx(67.0) and mosi.delta == pytest.approx(-0.5)
    assert report.scorecard_summary(card).startswith("5 of 10 cells within")


def test_index_opens_with_the_scorecard_read_from_the_table_csvs(probes, tmp_path):
    table, spec = fig4(probes)
    fig4_csv = report.write_table(table, spec, tmp_path / "tables" / "fig4")[0]
    # A one-seed table whose paper cell has no std: no verdict for that cell.
    spec = _minimal() | {
        "scale": 100,
        "columns": [{"name": "A<1>", "dataset": UNBIASED, "task": "share"}],
    }
    spec["rows"] = [{"method": "comm", "label": "Co & MM", "paper": {"A<1>": 80.0}}]
    spec = report.load_spec(write_spec(tmp_path / "s.yaml", spec))
    one = report.build_table(
        spec,
        report.load_probes([write_probe(tmp_path / "o", UNBIASED, "comm", 0, {"share": 0.8})]),
        ["comm"],
    )
    one_csv = report.write_table(one, spec, tmp_path / "tables" / "one")[0]
    page = tmp_path / "reports" / "index.html"
    report.write_index(
        [tmp_path / "reports" / "trifeatures.html"],
        page,
        {"fig4_trifeatures": fig4_csv, "one": one_csv},
    )
    text = page.read_text()
    body = text.split("<body>", 1)[1]
    assert body.index("Reproduction scorecard") < body.index('href="trifeatures.html"')
    assert (
        html.escape(
            "1 of 4 cells within the larger of the two stds (ours over the seeds, the paper's); "
            "1 without a std on either side, so without a verdict."
        )
        in text
    )
    assert "<td>CoMM</td><td>R</td><td>70.0 ± 14.1 (n = 2)</td><td>99.9 ± 0.1</td>" in text
    assert "<td>-29.9</td><td>no</td>" in text
    assert "<td>Co &amp; MM</td><td>A&lt;1&gt;</td><td>80.0 (n = 1)</td><td>80.0</td>" in text
    assert "<td>+0.0</td><td>–</td>" in text
    assert 'href="../tables/fig4.csv"' in text  # the table name links its CSV


def test_index_without_tables_links_the_reports_only(tmp_path):
    page = report.write_index([tmp_path / "a.html", tmp_path / "b&c.html"], tmp_path / "i.html")
    text = page.read_text()
    assert "scorecard" not in text
    assert 'href="a.html"' in text and 'href="b&amp;c.html">b&amp;c<' in text


# ---------------------------------------------------------------------------------------------
# Training curves


def write_run(run: Path, dataset: str, method: str, seed: int) -> Path:
    run.mkdir(parents=True)
    (run / "train_log.csv").write_text("epoch,loss,ssl_acc\n1,4.0,0.1\n2,3.0,0.3\n")
    config = {"dataset": {"name": dataset}, "method": {"name": method}, "seed": seed}
    (run / "run.json").write_text(json.dumps(config))
    return run


def test_training_curves_read_each_runs_identity_from_its_run_record(tmp_path):
    # Folder names that say nothing (or the wrong thing): the identity comes from the file.
    runs = [
        write_run(tmp_path / "a", "mosi", "cross", 3),
        write_run(tmp_path / "trifeatures" / "comm" / "seed0", "humor", "comm", 4),
    ]
    logs = report.load_logs(runs)
    assert list(
        logs.drop_duplicates("method")[["dataset", "method", "seed"]].itertuples(
            index=False, name=None
        )
    ) == [("mosi", "cross", 3), ("humor", "comm", 4)]
    assert len(logs) == 4
    paths = report.plot_curves(logs, tmp_path / "curves")
    assert all(p.stat().st_size > 0 for p in paths)


def test_a_run_without_its_record_is_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.csv").write_text("epoch,loss\n1,4.0\n")
    with pytest.raises(ValueError, match=f"{run / 'run.json'} not found"):
        report.load_logs([run])


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_writes_table_figures_and_index(probes, tmp_path, capsys):
    out = tmp_path / "tables" / "fig4_trifeatures"
    args = ["table", "--spec", str(FIG4), "--probes", *map(str, probes), "--methods", "comm"]
    assert main([*args, "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert "| CoMM | 70.0 ± 14.1 (paper 99.9, Δ -29.9) |" in md
    assert r"70.0 $\pm$ 14.1 (paper 99.9, $\Delta$ -29.9)" in out.with_suffix(".tex").read_text()
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert len(csv) == 5 and list(csv.within.isna()) == [False, False, True, False, False]
    fig = tmp_path / "figures" / "fig4_trifeatures"
    figure = ["figure", "table", "--spec", str(FIG4), "--table", str(out.with_suffix(".csv"))]
    assert main([*figure, "--out", str(fig)]) == 0
    assert fig.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert fig.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    capsys.readouterr()
    assert main(["figure", "table", "--table", str(out) + ".csv", "--out", str(fig)]) == 2
    assert "needs --spec" in capsys.readouterr().err
    assert main(["figure", "curves", "--out", str(fig)]) == 2  # --runs is required for curves
    page = tmp_path / "reports" / "index.html"
    index = ["index", "--reports", str(tmp_path / "reports" / "a.html"), "--out", str(page)]
    assert main([*index, "--tables", f"fig4_trifeatures={out}.csv"]) == 0
    text = page.read_text()
    assert 'href="a.html"' in text and "Reproduction scorecard" in text
    assert "1 of 4 cells within" in text
    capsys.readouterr()
    assert main([*index, "--tables", f"{out}.csv"]) == 2
    assert "give NAME=PATH.csv" in capsys.readouterr().err


def test_cli_refuses_a_bad_spec_and_missing_runs_in_one_line(probes, tmp_path, capsys):
    bad = _minimal()
    bad["columns"][0].pop("task")
    spec = write_spec(tmp_path / "bad.yaml", bad)
    args = ["table", "--probes", *map(str, probes), "--out", str(tmp_path / "t")]
    assert main([*args, "--spec", str(spec), "--methods", "comm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{spec}: columns[0]" in err
    assert main([*args, "--spec", str(FIG4), "--methods", "comm", "cross"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'cross' on dataset 'trifeatures'" in err
    assert not (tmp_path / "t.csv").exists()


# ---------------------------------------------------------------------------------------------
# Notebook templates


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("trifeatures", ("results_dir", "data_dir")),
        ("multibench", ("results_dir", "experiment")),
        ("ablations", ("results_dir", "experiment")),
    ],
)
def test_notebook_template_has_a_parameters_cell(name, parameters):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert all(p in tagged[0].source for p in parameters)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    if name == "multibench":
        assert 'experiment = "table1_affect"' in tagged[0].source


def test_multibench_notebook_runs_on_a_results_folder(tmp_path):
    """The notebook executed by papermill on a results folder the command line writes."""
    papermill = pytest.importorskip("papermill")
    results = tmp_path / "results"
    probes = affect_probes(results / "runs")
    for probe in probes:  # a run's pretrain.json beside its probe
        write_run_meta = probe.parent / "pretrain.json"
        write_run_meta.write_text(json.dumps({"wall_s": 60.0, "device": "cpu"}))
    prefix = results / "tables" / "table1_affect"
    args = ["table", "--spec", str(TABLE1), "--probes", *map(str, probes), "--methods", "comm"]
    assert main([*args, "--columns", *AFFECT, "--out", str(prefix)]) == 0
    figure = ["figure", "table", "--spec", str(TABLE1), "--table", f"{prefix}.csv"]
    figure += ["--columns", *AFFECT, "--out"]
    assert main([*figure, str(results / "figures" / "table1_affect")]) == 0
    runs = [write_run(tmp_path / "logs" / str(i), "mosi", "comm", i) for i in (0, 1)]
    curves = str(results / "figures" / "training_curves_table1_affect")
    assert main(["figure", "curves", "--runs", *map(str, runs), "--out", curves]) == 0
    out = tmp_path / "multibench.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "multibench.ipynb"),
        str(out),
        parameters={"results_dir": str(results)},
        progress_bar=False,
        cwd=str(tmp_path),
    )
    text = "\n".join(
        str(o.get("data", {}).get("text/plain", o.get("text", "")))
        for c in nbformat.read(out, as_version=4).cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "columns: MOSI (mosi), UR-FUNNY (humor), MUsTARD (sarcasm)" in text
    assert "66.0" in text and "68.0" in text  # the per-seed MOSI values


def _subset_probe(root, method, seed, scores):
    """A probe.json with subset probes: ``scores`` maps a subset (``all`` or a modality) to
    each task's balanced accuracy."""
    path = root / f"{method}{seed}.json"
    probe = {
        "config": {"dataset": {"name": "trifeatures"}, "method": {"name": method}, "seed": seed},
        "tasks": {},
        "subsets": {},
    }
    for subset, tasks in scores.items():
        block = {
            t: {"metric": "balanced_accuracy", "balanced_accuracy": v} for t, v in tasks.items()
        }
        if subset == "all":
            probe["tasks"] = block
        else:
            probe["subsets"][subset] = block
    path.write_text(json.dumps(probe))
    return path


def test_the_subset_table_and_heat_map_show_what_each_modality_knows(tmp_path):
    paths = [
        _subset_probe(
            tmp_path,
            "comm",
            seed,
            {
                "all": {"share": 0.9, "synergy": 0.7 + 0.02 * seed},
                "image1": {"share": 0.8, "synergy": 0.5},
                "image2": {"share": 0.85, "synergy": 0.52},
            },
        )
        for seed in (0, 1)
    ]
    table = report.subset_table(report.load_subset_probes(paths))
    cell = table[(table.subset == "all") & (table.task == "synergy")].iloc[0]
    assert cell["mean"] == pytest.approx(0.71) and cell.n_seeds == 2 and cell["std"] > 0
    out = report.write_subset_table(table, tmp_path / "subsets")
    out += report.plot_subsets(table, tmp_path / "subsets")
    md = out[1].read_text()
    assert md.splitlines()[0] == "| Method / features | trifeatures: share | trifeatures: synergy |"
    assert "| comm / all | 90.0 | 71.0 |" in md and "| comm / image1 | 80.0 | 50.0 |" in md
    assert all(p.stat().st_size > 0 for p in out)
    # the workflow's command: the table under tables/, the heat map under figures/
    args = ["subsets", "--probes", *map(str, paths), "--out", str(tmp_path / "t" / "x")]
    assert main([*args, "--figure", str(tmp_path / "f" / "x")]) == 0
    assert (tmp_path / "t" / "x.md").read_text() == md
    assert (tmp_path / "f" / "x.png").stat().st_size > 0
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"config": {}, "tasks": {}}))
    with pytest.raises(report.ResultsError, match="probe.subsets: true"):
        report.load_subset_probes([plain])


# ---------------------------------------------------------------------------------------------
# Ablations: the paper's claims as tests, sweeps, probes during training


def _ablation_spec(tmp_path: Path, rows: list, claims: list, **extra) -> dict:
    spec = {
        "title": "Ablation",
        "paper": "Table 4",
        "metric": "balanced_accuracy",
        "scale": 100,
        "columns": [
            {"name": "R", "dataset": UNBIASED, "task": "share", "chance": 10},
            {"name": "S", "dataset": BIASED, "task": "synergy", "chance": 50},
            {"name": "Average", "average": ["R", "S"]},
        ],
        "rows": rows,
        "claims": claims,
        **extra,
    }
    return report.load_spec(write_spec(tmp_path / "spec.yaml", spec))


def _runs(root: Path, method: str, share: float, synergy: float, seeds=(0,)) -> list[Path]:
    return [
        path
        for seed in seeds
        for path in fig4_runs(
            root, method, seed, {"share": share, "unique1": 0, "unique2": 0, "synergy": synergy}
        )
    ]


def test_the_papers_claims_are_tested_on_the_table(tmp_path):
    rows = [{"method": "linear", "label": "Concat + Linear"}, {"method": "comm", "label": "CoMM"}]
    claims = [
        {
            "text": "linear: no synergy",
            "test": "near_chance",
            "row": "Concat + Linear",
            "column": "S",
            "margin": 3,
        },
        {
            "text": "attention: more synergy",
            "test": "above",
            "row": "CoMM",
            "than": "Concat + Linear",
            "column": "S",
        },
        {"text": "CoMM learns synergy", "test": "above_chance", "row": "CoMM", "column": "S"},
        {"text": "CoMM is best", "test": "best", "row": "CoMM", "column": "Average"},
        {
            "text": "linear learns synergy",
            "test": "above_chance",
            "row": "Concat + Linear",
            "column": "S",
        },
    ]
    spec = _ablation_spec(tmp_path, rows, claims)
    probes = _runs(tmp_path, "linear", 0.9, 0.52) + _runs(tmp_path, "comm", 0.85, 0.62)
    table = report.build_table(spec, report.load_probes(probes), ["linear", "comm"])
    checked = report.check_claims(table, spec)
    assert list(checked.holds) == [True, True, True, True, False]
    assert checked.evidence[0] == "Concat + Linear: S 52.0, chance 50 (margin 3)"
    assert checked.evidence[1] == "S: CoMM 62.0 vs Concat + Linear 52.0"
    assert "highest CoMM 73.5" in checked.evidence[3]  # (85 + 62) / 2 against (90 + 52) / 2
    # the margin decides: 52 is not within 1 point of chance
    claims[0]["margin"] = 1
    spec = _ablation_spec(tmp_path, rows, claims[:1])
    assert list(report.check_claims(table, spec).holds) == [False]
    # a row without runs (a dash) decides nothing
    rows[0]["datasets"] = {"S": None}
    spec = _ablation_spec(tmp_path, rows, claims[:2])
    table = report.build_table(spec, report.load_probes(probes), ["linear", "comm"])
    assert report.check_claims(table, spec).holds.isna().all()


def test_a_part_of_a_table_keeps_the_claims_on_its_columns():
    fig6 = ROOT / "config" / "tables" / "fig6_timeseries.yaml"
    claim = "noise + drop is the best time-series augmentation overall"
    assert [c["text"] for c in report.load_spec(fig6)["claims"]] == [claim]
    # without MIMIC there is no average of the four columns to test it on
    part = report.load_spec(fig6, AFFECT)
    assert [c["name"] for c in part["columns"]] == AFFECT and part["claims"] == []
    # a part of a spec with paper curves keeps its columns' curves
    fig5 = report.load_spec(ROOT / "config" / "tables" / "fig5_loss.yaml", ["S"])
    assert set(fig5["curves"]) == {"S"}
    assert [c["column"] for c in fig5["claims"]] == ["S", "S"]


def test_a_sweep_is_drawn_against_x_and_its_peak_tested(tmp_path, monkeypatch):
    rows, probes = [], []
    for x, synergy in ((0.2, 0.55), (0.5, 0.70), (0.8, 0.60)):
        dataset = f"sweep{int(x * 10)}"
        rows.append(
            {
                "method": "comm",
                "x": x,
                "label": f"x = {x}",
                "datasets": {"R": dataset, "S": dataset},
            }
        )
        probes.append(write_probe(tmp_path, dataset, "comm", 0, {"share": 0.9, "synergy": synergy}))
    claims = [{"text": "a sweet spot", "test": "peak", "column": "S"}]
    spec = _ablation_spec(
        tmp_path, rows, claims, figure={"columns": ["R", "S"], "xlabel": "crop x"}
    )
    table = report.build_table(spec, report.load_probes(probes), ["comm"])
    assert list(table[table.column == "S"].x) == [0.2, 0.5, 0.8]
    checked = report.check_claims(table, spec)
    assert checked.holds.item() is True
    assert (
        checked.evidence.item()
        == "S against x (0.2: 55.0, 0.5: 70.0, 0.8: 60.0); highest at x = 0.5"
    )
    drawn = {}
    monkeypatch.setattr(report, "_save", lambda fig, prefix: drawn.setdefault("fig", fig) and [])
    report.plot_table(table, spec, tmp_path / "sweep")
    axes = drawn["fig"].axes
    assert [ax.get_xlabel() for ax in axes] == ["crop x", "crop x"]
    line = axes[1].get_lines()[0]
    assert list(line.get_xdata()) == [0.2, 0.5, 0.8]
    assert list(line.get_ydata()) == pytest.approx([55.0, 70.0, 60.0])
    # at the end of the sweep, no sweet spot
    probes[2].write_text(
        probes[2].read_text().replace('"balanced_accuracy": 0.6,', '"balanced_accuracy": 0.9,')
    )
    table = report.build_table(spec, report.load_probes(probes), ["comm"])
    assert report.check_claims(table, spec).holds.item() is False


def _snapshot_probe(root: Path, dataset: str, method: str, epoch: int, scores: dict) -> Path:
    path = write_probe(root / f"epoch{epoch}", dataset, method, 0, scores)
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "snapshot": {"epoch": epoch, "step": 156 * epoch}}))
    return path


def test_snapshot_curves_show_each_epoch_beside_the_papers_points(tmp_path, monkeypatch):
    rows = [{"method": "comm", "label": "L_CoMM", "paper": {"S": 71.8}}]
    curves = {"S": {"comm": [[800, 57.7], [15700, 71.8]]}}
    spec = _ablation_spec(tmp_path, rows, [], curves=curves, figure={"columns": ["R", "S"]})
    probes = []
    for epoch, synergy in ((1, 0.5), (2, 0.6), (3, 0.65)):
        probes.append(_snapshot_probe(tmp_path, UNBIASED, "comm", epoch, {"share": 0.3 * epoch}))
        probes.append(_snapshot_probe(tmp_path, BIASED, "comm", epoch, {"synergy": synergy}))
    table = report.snapshot_table(spec, probes, ["comm"])
    s = table[table.column == "S"]
    assert list(s.epoch) == [1, 2, 3] and list(s.step) == [156, 312, 468]
    assert list(s["mean"]) == pytest.approx([50.0, 60.0, 65.0])
    assert "paper" not in table  # the paper's values are its curve's end, not these epochs'
    paths = report.write_snapshot_table(table, spec, tmp_path / "out")
    md = paths[1].read_text()
    assert "| L_CoMM | 2 | 312 | 60.0 | 60.0 | 60.0 |" in md
    drawn = {}
    monkeypatch.setattr(report, "_save", lambda fig, prefix: drawn.setdefault("fig", fig) and [])
    report.plot_snapshots(table, spec, tmp_path / "out")
    panel = drawn["fig"].axes[1]
    assert list(panel.get_lines()[0].get_xdata()) == [156, 312, 468]
    crosses = [c for c in panel.collections if isinstance(c, PathCollection)]
    assert crosses[0].get_offsets().tolist() == [[800, 57.7], [15700, 71.8]]
    assert panel.get_xscale() == "log"
