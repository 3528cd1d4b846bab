"""Paper tables from probe results, their figures, training curves, the reproduction scorecard
and the report index. Reads the JSON/CSV files the runs wrote; trains nothing.

A paper table is data: its spec (``config/tables/<experiment>.yaml``, format in
config/README.md, "Paper tables") names the columns (dataset, probe task or tasks, metric,
chance level; or an average of other columns), the rows (a method at a stage, pretrained or
fine-tuned) and the paper's mean and std of each cell.
:func:`build_table` fills it from the probes, :func:`write_table` and :func:`plot_table` write
it out, and :func:`scorecard` collects every cell that has a paper value for the index page."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from comm_repro.atomic import atomic_path, write_text
from comm_repro.config import (
    ConfigError,
    load_yaml,
    row_datasets,
    row_stage,
    select_columns,
    table_rows,
)
from comm_repro.errors import UserError, describe


class ResultsError(UserError, ValueError):
    """Probe results or run files that a table or figure needs are missing or unusable; the
    message names the method, dataset, task or file."""


# ---------------------------------------------------------------------------------------------
# Table specs

SPEC_KEYS = (
    "title",
    "paper",
    "metric",
    "scale",
    "note",
    "columns",
    "rows",
    "figure",
    "curves",
    "claims",
)
COLUMN_KEYS = (
    "name",
    "dataset",
    "task",
    "tasks",
    "average",
    "metric",
    "scale",
    "chance",
    "lower_is_better",
)
ROW_KEYS = ("method", "label", "stage", "datasets", "paper", "one_seed", "x")
FIGURE_KEYS = ("columns", "labels", "ylabel", "ylim", "xlabel")


def _fail(source: str, key: str, problem: str) -> NoReturn:
    raise ConfigError(f"{source}: {key}: {problem}")


def _mapping(node: Any, known: Sequence[str], required: Sequence[str], source: str, where: str):
    """``node`` as a mapping with only ``known`` keys and every ``required`` one."""
    if not isinstance(node, dict):
        _fail(source, where or "top level", f"must be a mapping, got {type(node).__name__}")
    for key in node:
        if key not in known:
            _fail(source, _key(where, key), f"unknown key (known: {', '.join(known)})")
    for key in required:
        if key not in node:
            _fail(source, _key(where, key), "missing")
    return node


def _key(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _string(value: Any, source: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(source, key, f"must be a non-empty string, got {value!r}")
    return value


def _number(value: Any, source: str, key: str, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        _fail(source, key, f"must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _names(value: Any, source: str, key: str, allowed: Sequence[str] | None = None) -> list[str]:
    """A non-empty list of distinct strings (each one of ``allowed`` when given)."""
    if not isinstance(value, list) or not value:
        _fail(source, key, f"must be a non-empty list, got {value!r}")
    names = [_string(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    for i, name in enumerate(names):
        if name in names[:i]:
            _fail(source, f"{key}[{i}]", f"duplicate {name!r}")
        if allowed is not None and name not in allowed:
            _fail(
                source, f"{key}[{i}]", f"{name!r} is not a column (columns: {', '.join(allowed)})"
            )
    return names


def _paper_value(value: Any, source: str, key: str) -> tuple[float, float]:
    """A paper cell: ``mean``, ``[mean]`` or ``[mean, std]`` (std may be null) -> (mean, std)."""
    values = value if isinstance(value, list) else [value]
    if not 1 <= len(values) <= 2:
        _fail(source, key, f"must be a mean or [mean, std], got {value!r}")
    mean = _number(values[0], source, key)
    if len(values) == 1 or values[1] is None:
        return mean, math.nan
    return mean, _number(values[1], source, f"{key} std")


def _check_average(node: Any, where: str, earlier: list[dict], source: str) -> dict:
    """A column that shows, per row, the mean of earlier columns' means (the paper's average
    over the classification columns); they must share one metric."""
    node = _mapping(node, ("name", "average", "chance"), ("name", "average"), source, where)
    names = [c["name"] for c in earlier]
    averaged = _names(node["average"], source, f"{where}.average", names)
    picked = [c for c in earlier if c["name"] in averaged]
    if len({(c["metric"], c["scale"], c["lower_is_better"]) for c in picked}) > 1:
        _fail(source, f"{where}.average", "the averaged columns must share metric and scale")
    chance = node.get("chance")
    return {
        **{k: picked[0][k] for k in ("metric", "scale", "lower_is_better")},
        "name": _string(node["name"], source, f"{where}.name"),
        "average": averaged,
        "tasks": [],
        "chance": None if chance is None else _number(chance, source, f"{where}.chance"),
    }


def _check_column(node: Any, i: int, spec: dict, source: str, earlier: list[dict]) -> dict:
    where = f"columns[{i}]"
    if isinstance(node, dict) and "average" in node:
        return _check_average(node, where, earlier, source)
    node = _mapping(node, COLUMN_KEYS, ("name", "dataset"), source, where)
    if ("task" in node) == ("tasks" in node):
        _fail(source, where, "give either task (one probe task) or tasks (their mean per run)")
    tasks = (
        [_string(node["task"], source, f"{where}.task")]
        if "task" in node
        else _names(node["tasks"], source, f"{where}.tasks")
    )
    if "metric" not in node and "metric" not in spec:
        _fail(source, f"{where}.metric", "missing, and the spec has no default metric")
    lower = node.get("lower_is_better", False)
    if not isinstance(lower, bool):
        _fail(source, f"{where}.lower_is_better", f"must be true or false, got {lower!r}")
    chance = node.get("chance")
    return {
        "name": _string(node["name"], source, f"{where}.name"),
        "dataset": _string(node["dataset"], source, f"{where}.dataset"),
        "tasks": tasks,
        "metric": _string(node.get("metric", spec.get("metric")), source, f"{where}.metric"),
        "scale": _number(node.get("scale", spec["scale"]), source, f"{where}.scale", True),
        "chance": None if chance is None else _number(chance, source, f"{where}.chance"),
        "lower_is_better": lower,
    }


def _check_row(node: Any, i: int, names: list[str], source: str) -> dict:
    where = f"rows[{i}]"
    node = _mapping(node, ROW_KEYS, ("method",), source, where)
    method = _string(node["method"], source, f"{where}.method")
    paper = node.get("paper") or {}
    if not isinstance(paper, dict):
        _fail(source, f"{where}.paper", f"must be a mapping, got {type(paper).__name__}")
    datasets = node.get("datasets") or {}
    if not isinstance(datasets, dict):
        _fail(source, f"{where}.datasets", f"must be a mapping, got {type(datasets).__name__}")
    for part, mapping in (("paper", paper), ("datasets", datasets)):
        for key in mapping:
            if key not in names:
                _fail(
                    source, f"{where}.{part}.{key}", f"not a column (columns: {', '.join(names)})"
                )
    try:
        stage = row_stage(node)
    except ConfigError as err:
        _fail(source, f"{where}.stage", str(err))
    if not isinstance(node.get("one_seed", False), bool):
        _fail(source, f"{where}.one_seed", f"must be true or false, got {node['one_seed']!r}")
    return {
        "method": method,
        "label": _string(node.get("label", method), source, f"{where}.label"),
        "stage": stage,
        # null: the method does not apply to that column (a dash in the table)
        "datasets": {
            k: None if v is None else _string(v, source, f"{where}.datasets.{k}")
            for k, v in datasets.items()
        },
        "paper": {k: _paper_value(v, source, f"{where}.paper.{k}") for k, v in paper.items()},
        # A sweep's rows: where the row stands on the figure's x axis (figure.xlabel)
        "x": None if node.get("x") is None else _number(node["x"], source, f"{where}.x"),
    }


def _check_curves(node: Any, names: list[str], source: str) -> dict:
    """``curves``: the paper's points of a figure over training, {column: {method: [[step,
    value], ...]}} (read off the paper's figure; drawn beside the snapshot probes)."""
    if not isinstance(node, dict):
        _fail(source, "curves", f"must be a mapping of columns, got {type(node).__name__}")
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for column, methods in node.items():
        if column not in names:
            _fail(source, f"curves.{column}", f"not a column (columns: {', '.join(names)})")
        if not isinstance(methods, dict):
            _fail(source, f"curves.{column}", "must map methods to lists of [step, value]")
        curves[column] = {}
        for method, points in methods.items():
            where = f"curves.{column}.{method}"
            if not isinstance(points, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in points
            ):
                _fail(source, where, f"must be a list of [step, value], got {points!r}")
            curves[column][method] = [
                (_number(a, source, where), _number(b, source, where)) for a, b in points
            ]
    return curves


CLAIM_KEYS = ("text", "test", "row", "than", "column", "margin")
# test -> (the keys it needs beside text, test and column, its default margin in table units)
CLAIM_TESTS = {
    "near_chance": (("row",), 5.0),  # |row - chance| <= margin
    "above_chance": (("row",), 5.0),  # row - chance > margin
    "above": (("row", "than"), 0.0),  # row - than > margin
    "best": (("row",), 0.0),  # row has the column's highest mean
    "peak": ((), 0.0),  # a sweep: the highest mean is at neither end of x
}


def _check_claim(node: Any, i: int, spec: dict, columns: list[dict], rows: list[dict]) -> dict:
    """One of the paper's claims as a test on the table (``claims``): what it says, which test,
    the rows (by label) and column it reads, and the margin in the table's units."""
    source, where = spec["source"], f"claims[{i}]"
    node = _mapping(node, CLAIM_KEYS, ("text", "test", "column"), source, where)
    test = _string(node["test"], source, f"{where}.test")
    if test not in CLAIM_TESTS:
        _fail(source, f"{where}.test", f"must be one of {', '.join(CLAIM_TESTS)}, got {test!r}")
    needed, margin = CLAIM_TESTS[test]
    by_name = {c["name"]: c for c in columns}
    column = _string(node["column"], source, f"{where}.column")
    if column not in by_name:
        _fail(source, f"{where}.column", f"not a column (columns: {', '.join(by_name)})")
    if "chance" in test and by_name[column]["chance"] is None:
        _fail(source, f"{where}.column", f"column {column} gives no chance level")
    labels = [row["label"] for row in rows]
    claim = {"text": _string(node["text"], source, f"{where}.text"), "test": test}
    claim |= {"column": column, "margin": float(node.get("margin", margin))}
    for key in ("row", "than"):
        if key in needed:
            if key not in node:
                _fail(source, f"{where}.{key}", f"the test {test} needs it (a row's label)")
            if node[key] not in labels:
                _fail(source, f"{where}.{key}", f"not a row's label (labels: {', '.join(labels)})")
            claim[key] = node[key]
    if test == "peak" and any(row["x"] is None for row in rows):
        _fail(source, f"{where}.test", "peak needs a sweep (rows with x)")
    return claim


def _check_figure(node: Any, names: list[str], source: str) -> dict:
    node = _mapping(node or {}, FIGURE_KEYS, (), source, "figure")
    columns = _names(node.get("columns", names), source, "figure.columns", names)
    labels = _names(node.get("labels", columns), source, "figure.labels")
    if len(labels) != len(columns):
        _fail(source, "figure.labels", f"{len(labels)} labels for {len(columns)} columns")
    ylim = node.get("ylim")
    if ylim is not None:
        if not isinstance(ylim, list) or len(ylim) != 2:
            _fail(source, "figure.ylim", f"must be [low, high], got {ylim!r}")
        ylim = [_number(v, source, "figure.ylim") for v in ylim]
        if ylim[0] >= ylim[1]:
            _fail(source, "figure.ylim", f"low must be below high, got {ylim}")
    ylabel, xlabel = node.get("ylabel"), node.get("xlabel")
    return {
        "columns": columns,
        "labels": labels,
        "ylabel": None if ylabel is None else _string(ylabel, source, "figure.ylabel"),
        "ylim": ylim,
        "xlabel": None if xlabel is None else _string(xlabel, source, "figure.xlabel"),
    }


def check_spec(raw: Any, source: str) -> dict:
    """The spec ``raw`` (as read from ``source``) validated, with its defaults filled in: every
    column with ``tasks`` (a list), ``metric``, ``scale``, ``chance`` (None when not given) and
    ``lower_is_better``; every row with ``label`` and ``paper`` as {column: (mean, std)}, std NaN
    where the paper gives none; ``figure`` with ``columns`` (default all), ``labels``, ``ylabel``
    and ``ylim``. A problem raises a one-line ConfigError naming ``source`` and the key."""
    spec = _mapping(raw, SPEC_KEYS, ("title", "paper", "columns", "rows"), source, "")
    if "metric" in spec:
        _string(spec["metric"], source, "metric")
    spec = {**spec, "scale": _number(spec.get("scale", 1), source, "scale", positive=True)}
    if not isinstance(spec["columns"], list) or not spec["columns"]:
        _fail(source, "columns", f"must be a non-empty list, got {spec['columns']!r}")
    columns: list[dict] = []
    for i, node in enumerate(spec["columns"]):
        columns.append(_check_column(node, i, spec, source, columns))
    names = [c["name"] for c in columns]
    for i, name in enumerate(names):
        if name in names[:i]:
            _fail(source, f"columns[{i}].name", f"duplicate {name!r}")
    if not isinstance(spec["rows"], list):
        _fail(source, "rows", f"must be a list, got {spec['rows']!r}")
    rows = [_check_row(node, i, names, source) for i, node in enumerate(spec["rows"])]
    # A method may have several rows where each reads other datasets (two and three modalities).
    labels = [row["label"] for row in rows]
    runs = [(row["method"], row["stage"], sorted(row["datasets"].items())) for row in rows]
    for i, row in enumerate(rows):
        if runs[i] in runs[:i]:
            _fail(
                source,
                f"rows[{i}].method",
                f"duplicate {row['method']!r} (a method has several rows only where their "
                "stages or datasets differ)",
            )
        if row["label"] in labels[:i]:
            _fail(source, f"rows[{i}].label", f"duplicate {row['label']!r}")
    swept = [row["x"] is not None for row in rows]
    if any(swept) and not all(swept):
        _fail(source, "rows", "give x to every row (a sweep) or to none")
    note = spec.get("note", "")
    return {
        "source": source,
        "title": _string(spec["title"], source, "title"),
        "paper": _string(spec["paper"], source, "paper"),
        "note": " ".join(_string(note, source, "note").split()) if note else "",
        "columns": columns,
        "rows": rows,
        "figure": _check_figure(spec.get("figure"), names, source),
        "curves": _check_curves(spec.get("curves") or {}, names, source),
        "claims": [
            _check_claim(node, i, {"source": source}, columns, rows)
            for i, node in enumerate(_list(spec.get("claims") or [], source, "claims"))
        ],
    }


def _list(value: Any, source: str, key: str) -> list:
    if not isinstance(value, list):
        _fail(source, key, f"must be a list, got {type(value).__name__}")
    return value


def load_spec(path: str | Path, columns: list[str] | None = None) -> dict:
    """A table spec file, cut to ``columns`` when given (:func:`comm_repro.config.select_columns`)
    and validated (:func:`check_spec`)."""
    return check_spec(select_columns(load_yaml(path), columns), str(path))


# ---------------------------------------------------------------------------------------------
# Probe results -> long table

IDENTITY = ("dataset", "method", "kind", "stage", "seed", "task")


def load_probes(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, task): dataset, method (config key), kind, stage (pretrain, or
    finetune for a fine-tuned run), seed, task, every numeric
    metric of the task's probe as stored (``balanced_accuracy``, ``accuracy``, ``roc_auc``, ...;
    fractions, not %: a table spec's ``scale`` says how they are shown; NaN where a probe stored
    null), the probe's class weighting, and the precision and CPU the run was pretrained with."""
    rows = []
    for path in paths:
        try:
            result = json.loads(Path(path).read_text())
            cfg = result["config"]
            identity = {
                "dataset": cfg["dataset"]["name"],
                "method": cfg["method"]["name"],
                "kind": cfg["method"]["kind"],
                "stage": cfg.get("stage", "pretrain"),
                "seed": int(cfg["seed"]),
            }
            tasks = result["tasks"].items()
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ResultsError(
                f"{path} is not a probe result ({describe(err)}): write it again with "
                "`comm-repro probe`"
            ) from None
        pretrained = result.get("pretrained") or {}  # absent in probes of earlier versions
        cpu = pretrained.get("cpu") or {}
        for task, metrics in tasks:
            numbers = {
                key: math.nan if value is None else float(value)
                for key, value in metrics.items()
                if value is None
                or (isinstance(value, (int, float)) and not isinstance(value, bool))
            }
            rows.append(
                {
                    **numbers,
                    **identity,
                    "task": task,
                    # Probes written before the setting existed were unweighted.
                    "class_weight": metrics.get("class_weight", "none"),
                    "precision": pretrained.get("precision") or "unrecorded",
                    "cpu": cpu.get("model", "unrecorded"),
                }
            )
    if not rows:
        raise ResultsError("no probe results given")
    frame = pd.DataFrame(rows)
    return frame[[*IDENTITY, *(c for c in frame.columns if c not in IDENTITY)]]


def _joined(values: Iterable[str]) -> str:
    """The distinct values, sorted, as 'a/b' (one value when all agree); empty ones (cells
    without runs) left out."""
    return "/".join(sorted({str(v) for v in values if isinstance(v, str) and v}))


def _within(delta: float, std: float, paper_std: float) -> bool | float:
    """Whether |ours - paper| is at most the larger of the two stds (a missing std counts as 0);
    NaN when there is no paper value or neither side has a std."""
    if math.isnan(delta) or (math.isnan(std) and math.isnan(paper_std)):
        return math.nan
    bound = max(0.0 if math.isnan(s) else s for s in (std, paper_std))
    # A relative margin for float rounding: 100.0 - 99.9 is a hair above 0.1.
    return bool(abs(delta) <= bound * (1 + 1e-9) + 1e-12)


def _per_run(
    probes: pd.DataFrame, method: str, stage: str, column: dict, source: str
) -> pd.DataFrame:
    """The runs of ``method`` at ``stage`` on the column's dataset: one row per seed with the
    column's value (the metric of its task, or the mean over its tasks, times the scale) and
    the runs' probe rows' class weighting, precision and CPU."""
    dataset, tasks, metric = column["dataset"], column["tasks"], column["metric"]
    what = f"method {method!r} on dataset {dataset!r}" + (
        f" ({stage})" if stage != "pretrain" else ""
    )
    stages = probes.stage if "stage" in probes else pd.Series("pretrain", index=probes.index)
    mine = probes[(probes.method == method) & (probes.dataset == dataset) & (stages == stage)]
    if mine.empty:
        raise ResultsError(f"no probe results for {what} (column {column['name']} of {source})")
    if metric not in probes.columns:
        raise ResultsError(
            f"no probe result has the metric {metric!r} (column {column['name']} of {source})"
        )
    twice = mine[mine.duplicated(["seed", "task"])]
    if not twice.empty:
        seed, task = twice.seed.iloc[0], twice.task.iloc[0]
        raise ResultsError(f"two probe results for {what}, seed {seed}, task {task!r}")
    for seed, run in mine.groupby("seed"):
        values = run.set_index("task")[metric]
        for task in tasks:
            if task not in values.index or pd.isna(values[task]):
                has = f"task {task!r}" if task not in values.index else f"{metric} for {task!r}"
                raise ResultsError(
                    f"the probe of {what}, seed {seed}, has no {has} (column "
                    f"{column['name']} of {source}; datasets.{dataset}.probe_tasks says which "
                    "tasks are probed)"
                )
    cells = mine[mine.task.isin(tasks)]
    per_run = cells.pivot(index="seed", columns="task", values=metric)
    info = cells.groupby("seed")[["class_weight", "precision", "cpu"]].agg(_joined)
    return info.assign(value=per_run[tasks].mean(axis=1) * column["scale"]).sort_index()


def build_table(spec: dict, probes: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Long table: one row per (table row, column), the rows of ``methods`` as
    :func:`comm_repro.config.table_rows` orders them, columns in the spec's order: method,
    label (the spec row's; the method key for a method without one), stage, column, dataset
    (the column's, or the row's own; empty for a dash or an average), task (``a+b`` for a mean
    over tasks), metric, mean and std (ddof 1; NaN for one seed) over the seeds, n_seeds (0 for
    a dash), the paper's value and std, delta (ours - paper), within (|delta| at most the
    larger std: True/False, NaN when undefined, see :func:`_within`), and the runs' probe class
    weighting, precision and CPU. An average column holds the mean of its columns' means (NaN
    where one of them is a dash) and no std."""
    twice = sorted({m for m in methods if list(methods).count(m) > 1})
    if twice:
        raise ResultsError(f"methods given twice for the table of {spec['source']}: {twice}")
    rows = []
    for spec_row in table_rows(spec, list(methods)):
        method, paper_values = spec_row["method"], spec_row.get("paper") or {}
        stage = row_stage(spec_row)
        datasets = row_datasets(spec, spec_row)
        cells: dict[str, dict] = {}
        for column in spec["columns"]:
            if "average" in column:
                parts = [cells[name] for name in column["average"]]
                mean = float(np.mean([c["mean"] for c in parts]))
                std, n_seeds, runs = math.nan, min(c["n_seeds"] for c in parts), None
            elif datasets[column["name"]] is None:  # a dash: the method does not apply
                mean, std, n_seeds, runs = math.nan, math.nan, 0, None
            else:
                column = {**column, "dataset": datasets[column["name"]]}
                runs = _per_run(probes, method, stage, column, spec["source"])
                values = runs.value.to_numpy(dtype=float)
                mean, n_seeds = float(values.mean()), len(values)
                std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            paper, paper_std = paper_values.get(column["name"], (math.nan, math.nan))
            delta = mean - paper
            cells[column["name"]] = {
                "method": method,
                "label": spec_row.get("label", method),
                **({} if spec_row.get("x") is None else {"x": spec_row["x"]}),
                "stage": stage,
                "column": column["name"],
                "dataset": column.get("dataset") or "",
                "task": "+".join(column["tasks"]),
                "metric": column["metric"],
                "mean": mean,
                "std": std,
                "n_seeds": n_seeds,
                "paper": paper,
                "paper_std": paper_std,
                "delta": delta,
                "within": _within(delta, std, paper_std),
                "probe_class_weight": "" if runs is None else _joined(runs.class_weight),
                "precision": "" if runs is None else _joined(runs.precision),
                "cpu": "" if runs is None else _joined(runs.cpu),
            }
        rows += cells.values()
    if not rows:
        raise ResultsError(f"no methods given for the table of {spec['source']}")
    return pd.DataFrame(rows)


def _row_mean(means: pd.Series, label: str) -> float:
    """A table row's mean (by label) in one column; NaN where the row is not in the table."""
    return float(means.get(label, math.nan))


def check_claims(table: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Each of the spec's claims tested on ``table`` (of :func:`build_table`): claim, test,
    evidence (the means it compared, the chance level and margin) and holds (True/False; NaN
    where a row it reads has no runs)."""
    chance = {c["name"]: c["chance"] for c in spec["columns"]}
    out = []
    for claim in spec["claims"]:
        cells = table[table.column == claim["column"]].set_index("label")
        means = cells["mean"].astype(float)
        col, margin, test = claim["column"], claim["margin"], claim["test"]

        holds: bool | float
        if test in ("near_chance", "above_chance"):
            value, level = _row_mean(means, claim["row"]), chance[col]
            gap = value - level
            holds = bool(abs(gap) <= margin if test == "near_chance" else gap > margin)
            evidence = f"{claim['row']}: {col} {value:.1f}, chance {level:g} (margin {margin:g})"
        elif test == "above":
            a, b = _row_mean(means, claim["row"]), _row_mean(means, claim["than"])
            holds = bool(a - b > margin)
            evidence = f"{col}: {claim['row']} {a:.1f} vs {claim['than']} {b:.1f}"
            evidence += f" (margin {margin:g})" if margin else ""
        elif test == "best":
            best = means.idxmax() if means.notna().any() else None
            holds = bool(best == claim["row"])
            own = _row_mean(means, claim["row"])
            evidence = f"{col}: highest {best} {means.max():.1f}; {claim['row']} {own:.1f}"
        else:  # peak: the best x is inside the sweep
            xs = cells["x"].astype(float)
            best = float(xs[means.idxmax()]) if means.notna().any() else math.nan
            holds = bool(xs.min() < best < xs.max())
            shown = ", ".join(f"{x:g}: {m:.1f}" for x, m in sorted(zip(xs, means)))
            evidence = f"{col} against x ({shown}); highest at x = {best:g}"
        read = [_row_mean(means, claim[k]) for k in ("row", "than") if k in claim]
        if any(math.isnan(v) for v in read) or means.isna().all():
            holds = math.nan  # a row it reads has no runs
        out.append({"claim": claim["text"], "test": test, "evidence": evidence, "holds": holds})
    return pd.DataFrame(out, columns=["claim", "test", "evidence", "holds"])


# ---------------------------------------------------------------------------------------------
# Table files

TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(TEX_SPECIAL.get(ch, ch) for ch in str(text))


def _cell(row: pd.Series, pm: str, delta: str) -> str:
    if row["n_seeds"] == 0:  # a dash: not run
        return "–" if pd.isna(row["paper"]) else f"– (paper {row['paper']:.1f})"
    ours = f"{row['mean']:.1f}" + ("" if pd.isna(row["std"]) else f" {pm} {row['std']:.1f}")
    if pd.isna(row["paper"]):
        return ours
    return f"{ours} (paper {row['paper']:.1f}, {delta} {row['delta']:+.1f})"


def _check_columns(table: pd.DataFrame, names: Sequence[str], spec: dict) -> None:
    missing = [name for name in names if name not in set(table.column)]
    if missing:
        raise ResultsError(
            f"the table has no column {', '.join(missing)} of {spec['source']} (its columns: "
            f"{', '.join(dict.fromkeys(table.column))}): was it built from another spec?"
        )


def _wide(table: pd.DataFrame, spec: dict, tex: bool) -> pd.DataFrame:
    """One row per method (label first), one cell per spec column: ours (± std) and the paper's
    value with our delta."""
    pm, delta, down = (r"$\pm$", r"$\Delta$", r" $\downarrow$") if tex else ("±", "Δ", " ↓")
    escape = _tex if tex else str
    names = [c["name"] for c in spec["columns"]]
    _check_columns(table, names, spec)
    cells = table.assign(cell=[_cell(r, pm, delta) for _, r in table.iterrows()])
    wide = cells.pivot(index="label", columns="column", values="cell")
    labels = list(dict.fromkeys(table.label))  # one per table row
    wide = wide.loc[labels, names]
    wide.columns = [
        escape(c["name"]) + (down if c["lower_is_better"] else "") for c in spec["columns"]
    ]
    wide.insert(0, "Method", [escape(label) for label in labels])
    return wide.reset_index(drop=True)


def _sources(spec: dict, labels: Sequence[str]) -> str:
    """Which runs each column comes from: 'R, U from the runs on a; S from the runs on b', then
    the rows among ``labels`` that read other datasets: '; row X: S from the runs on c'."""

    def by_dataset(columns: dict[str, str]) -> str:
        grouped: dict[str, list[str]] = {}
        for name, dataset in columns.items():
            grouped.setdefault(dataset, []).append(name)
        return "; ".join(f"{', '.join(n)} from the runs on {d}" for d, n in grouped.items())

    parts = [by_dataset({c["name"]: c["dataset"] for c in spec["columns"] if "dataset" in c})]
    parts += [
        f"{c['name']} the mean of {', '.join(c['average'])}"
        for c in spec["columns"]
        if "average" in c
    ]
    for row in spec["rows"]:
        if row["label"] in labels and row["datasets"]:
            own = {k: v for k, v in row["datasets"].items() if v is not None}
            dashes = [k for k, v in row["datasets"].items() if v is None]
            said = [by_dataset(own)] if own else []
            said += [f"no run for {', '.join(dashes)}"] if dashes else []
            parts.append(f"row {row['label']}: {'; '.join(said)}")
    return "; ".join(parts)


def table_note(table: pd.DataFrame, spec: dict) -> str:
    """What the table holds: title, n, where each column comes from, precision and CPU, the
    probes' class weighting, the spec's note and where the paper's values are."""
    weights = _joined(table.probe_class_weight)
    weighting = {
        "balanced": "with balanced class weights (the authors' probe is unweighted)",
        "none": "unweighted, as the authors' probe",
    }.get(weights, f"with class weights {weights}")
    parts = [
        f"{spec['title'].rstrip('.')}; {seeds_summary(table.n_seeds[table.n_seeds > 0])}.",
        f"Columns: {_sources(spec, list(table.label))}.",
        f"Pretrained in {_joined(table.precision)} on {_joined(table.cpu)}.",
        f"Logistic-regression probes fitted {weighting}.",
        spec["note"],
        f"Paper: {spec['paper'].rstrip('.')}.",
    ]
    return " ".join(part for part in parts if part)


def seeds_summary(n_seeds: Iterable[int]) -> str:
    """What a cell holds, with n: the mean and std over n > 1 seeds, the one run's value for n = 1
    (a std of one value is not 0: it is undefined, so none is shown)."""
    counts = sorted({int(n) for n in n_seeds})
    if counts == [1]:
        return "one run per method and dataset (n = 1 seed, no std)"
    summary = f"mean ± std over n = {'/'.join(map(str, counts))} seeds"
    return summary + " (the value alone where n = 1)" if counts[0] == 1 else summary


def write_table(table: pd.DataFrame, spec: dict, prefix: str | Path) -> list[Path]:
    """``prefix``.csv (the long table, numeric), .md and .tex (one row per method, one cell per
    spec column), each with the note of :func:`table_note`."""
    prefix = Path(prefix)
    note = table_note(table, spec)
    paths = [prefix.with_suffix(".csv"), prefix.with_suffix(".md"), prefix.with_suffix(".tex")]
    md, tex = _wide(table, spec, tex=False), _wide(table, spec, tex=True)
    write_text(paths[0], table.to_csv(index=False, float_format="%.3f"))
    write_text(paths[1], markdown(md) + f"\n\n{note}\n" + claims_markdown(table, spec))
    write_text(paths[2], f"% {note}\n" + tex.to_latex(index=False, escape=False))
    return paths


HOLDS = {True: "yes", False: "no"}


def claims_markdown(table: pd.DataFrame, spec: dict) -> str:
    """The spec's claims tested on ``table`` (:func:`check_claims`) as a Markdown section; empty
    for a spec without claims."""
    if not spec["claims"]:
        return ""
    checked = check_claims(table, spec)
    shown = pd.DataFrame(
        {
            "The paper's claim": checked.claim,
            "Our numbers": checked.evidence,
            "Shown here": [HOLDS.get(h, "undecided (no runs)") for h in checked.holds],
        }
    )
    intro = f"The paper's claims ({spec['paper']}), tested on the numbers above:"
    return f"\n{intro}\n\n{markdown(shown)}\n"


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style Markdown table of ``frame``'s columns and cells ('|' in a cell escaped)."""

    def line(cells: Iterable[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", r"\|") for c in cells) + " |"

    lines = [line(frame.columns), "|" + "---|" * frame.shape[1]]
    return "\n".join([*lines, *(line(row) for row in frame.itertuples(index=False))])


# ---------------------------------------------------------------------------------------------
# What each modality subset knows (probe.subsets)

ALL_MODALITIES = "all"  # the subset label of the full features


def load_subset_probes(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, subset, task): dataset, method, stage, seed, subset (a modality's name,
    or ``all`` for the full features), task, metric (the task's own) and value, from probe
    results written with ``probe.subsets: true``."""
    rows = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        cfg = result.get("config") or {}
        if "subsets" not in result:
            raise ResultsError(
                f"{path} has no subset probes: set probe.subsets: true for its dataset and run "
                "the probe again"
            )
        identity = {
            "dataset": cfg["dataset"]["name"],
            "method": cfg["method"]["name"],
            "stage": cfg.get("stage", "pretrain"),
            "seed": int(cfg["seed"]),
        }
        for subset, tasks in [(ALL_MODALITIES, result["tasks"]), *result["subsets"].items()]:
            for task, metrics in tasks.items():
                value = metrics.get(metrics["metric"])
                rows.append(
                    {
                        **identity,
                        "subset": subset,
                        "task": task,
                        "metric": metrics["metric"],
                        "value": math.nan if value is None else float(value),
                    }
                )
    if not rows:
        raise ResultsError("no probe results given")
    return pd.DataFrame(rows)


def subset_table(probes: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds (and n) of each (method, stage, subset, dataset, task) cell."""
    keys = ["method", "stage", "subset", "dataset", "task", "metric"]
    grouped = probes.groupby(keys, sort=False)["value"]
    table = grouped.agg(mean="mean", std="std", n_seeds="count").reset_index()
    table["std"] = table["std"].where(table.n_seeds > 1)
    return table


def _subset_wide(table: pd.DataFrame, scale: float) -> pd.DataFrame:
    """Rows (method, subset), columns dataset: task, cells the mean x ``scale``."""
    frame = table.assign(
        row=table.method
        + np.where(table.stage == "finetune", " (fine-tuned)", "")
        + " / "
        + table.subset,
        column=table.dataset + ": " + table.task,
        shown=table["mean"] * scale,
    )
    order = list(dict.fromkeys(frame.row))
    columns = list(dict.fromkeys(frame.column))
    return frame.pivot(index="row", columns="column", values="shown").reindex(order)[columns]


def write_subset_table(table: pd.DataFrame, prefix: str | Path, scale: float = 100) -> list[Path]:
    """``prefix``.csv (long, as measured) and .md (method / subset x dataset: task)."""
    prefix = Path(prefix)
    wide = _subset_wide(table, scale)
    shown = wide.reset_index().rename(columns={"row": "Method / features"})
    shown = shown.map(lambda v: f"{v:.1f}" if isinstance(v, float) else v)
    metrics = _joined(table.metric.unique())
    note = (
        f"Each task probed on each modality's features alone and on all of them ({metrics} x "
        f"{scale:g}, {seeds_summary(table.n_seeds)}): for CoMM a modality's features are its "
        "fused embedding with only that modality visible (Z_i), for the other methods their own "
        "embedding of it. Information that needs both modalities (synergy) can show only in "
        "'all'."
    )
    paths = [prefix.with_suffix(".csv"), prefix.with_suffix(".md")]
    write_text(paths[0], table.to_csv(index=False, float_format="%.4f"))
    write_text(paths[1], markdown(shown) + f"\n\n{note}\n")
    return paths


def plot_subsets(table: pd.DataFrame, prefix: str | Path, scale: float = 100) -> list[Path]:
    """A heat map: one row per (method, subset), one column per (dataset, task)."""
    plt = _pyplot()
    wide = _subset_wide(table, scale)
    fig, ax = plt.subplots(figsize=(1.3 * wide.shape[1] + 3, 0.45 * len(wide) + 1.5))
    image = ax.imshow(wide.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=scale, aspect="auto")
    ax.set_xticks(range(wide.shape[1]), wide.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(wide)), wide.index, fontsize=8)
    for (r, c), v in np.ndenumerate(wide.to_numpy(dtype=float)):
        if np.isfinite(v):
            colour = "w" if v < 0.6 * scale else "k"
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, label=f"{_joined(table.metric.unique())} x {scale:g}")
    ax.set_title(f"What each modality's features know ({seeds_summary(table.n_seeds)})", fontsize=9)
    paths = _save(fig, Path(prefix))
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------
# Probes during training (train.snapshot_every, experiments.<name>.snapshots)

PAPER_ONLY = ("paper", "paper_std", "delta", "within")  # the paper's end-of-training values


def snapshot_table(spec: dict, paths: Iterable[str | Path], methods: Sequence[str]) -> pd.DataFrame:
    """The table of :func:`build_table` at every snapshot epoch of the probes in ``paths``
    (written by ``comm-repro probe --snapshot``), with its ``epoch`` and training ``step``
    (the mean over the epoch's runs, which differ only where their datasets have other sizes);
    without the paper's columns, which are its end-of-training values (``curves`` holds its
    points over training)."""
    by_epoch: dict[int, list[Path]] = {}
    steps: dict[int, list[int]] = {}
    for path in map(Path, paths):
        try:
            snapshot = json.loads(path.read_text()).get("snapshot")
        except json.JSONDecodeError as err:
            raise ResultsError(f"{path} is not a probe result ({err})") from None
        if not snapshot:
            raise ResultsError(
                f"{path} is not the probe of a snapshot: write it with `comm-repro probe "
                "--snapshot EPOCH`"
            )
        by_epoch.setdefault(int(snapshot["epoch"]), []).append(path)
        steps.setdefault(int(snapshot["epoch"]), []).append(int(snapshot["step"]))
    if not by_epoch:
        raise ResultsError("no snapshot probes given")
    frames = [
        build_table(spec, load_probes(by_epoch[epoch]), methods)
        .drop(columns=list(PAPER_ONLY))
        .assign(epoch=epoch, step=round(float(np.mean(steps[epoch]))))
        for epoch in sorted(by_epoch)
    ]
    return pd.concat(frames, ignore_index=True)


def write_snapshot_table(table: pd.DataFrame, spec: dict, prefix: str | Path) -> list[Path]:
    """``prefix``.csv (long, numeric) and .md (one row per method and snapshot, one cell per
    spec column)."""
    prefix = Path(prefix)
    names = [c["name"] for c in spec["columns"]]
    _check_columns(table, names, spec)
    cells = table.assign(
        cell=[
            f"{r['mean']:.1f}" + ("" if pd.isna(r["std"]) else f" ± {r['std']:.1f}")
            for _, r in table.iterrows()
        ]
    )
    wide = cells.pivot(index=["label", "epoch", "step"], columns="column", values="cell")
    labels = list(dict.fromkeys(table.label))
    wide = wide.reset_index()
    wide["label"] = pd.Categorical(wide["label"], labels, ordered=True)
    wide = wide.sort_values(["label", "epoch"])[["label", "epoch", "step", *names]]
    wide.columns = ["Method", "Epoch", "Step", *names]
    note = (
        f"{spec['title'].rstrip('.')} during training: each run's snapshots probed as its "
        f"final model is; {seeds_summary(table.n_seeds[table.n_seeds > 0])}. "
        f"Paper: {spec['paper'].rstrip('.')} (its points over training are in the figure)."
    )
    paths = [prefix.with_suffix(".csv"), prefix.with_suffix(".md")]
    write_text(paths[0], table.to_csv(index=False, float_format="%.3f"))
    write_text(paths[1], markdown(wide.astype(str)) + f"\n\n{note}\n")
    return paths


def plot_snapshots(table: pd.DataFrame, spec: dict, prefix: str | Path) -> list[Path]:
    """One panel per figure column: each method's probe value against training steps (± std
    over seeds) and the paper's points read off its figure (``curves``), as crosses of the
    same colour."""
    figure = spec["figure"]
    by_name = {c["name"]: c for c in spec["columns"]}
    labels = {row["method"]: row["label"] for row in spec["rows"]}
    plt, fig, axes = _panels(len(figure["columns"]))
    for ax, name, label in zip(axes, figure["columns"], figure["labels"]):
        for method, rows in table[table.column == name].groupby("method", sort=False):
            colour = _lines(ax, rows, "step", labels.get(method, method))
            points = spec["curves"].get(name, {}).get(method)
            if points:
                xs, ys = zip(*points)
                ax.scatter(xs, ys, marker="x", s=18, color=colour, zorder=3)
        ax.set_xscale("log")  # the paper's 100 epochs and a short CPU run on one axis
        _decorate(ax, by_name[name], label, figure, "training step")
    axes[0].set_ylabel(figure["ylabel"] or _joined(table.metric))
    axes[-1].legend(fontsize=8, frameon=False)
    paper = f"; crosses: paper {spec['paper']}" if spec["curves"] else ""
    shown = table[table.column.isin(figure["columns"])]
    fig.suptitle(
        f"{spec['title']}\nlines: {seeds_summary(shown.n_seeds[shown.n_seeds > 0])}{paper}",
        fontsize=10,
    )
    paths = _save(fig, Path(prefix))
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------
# Complexity tables (Table 8)

COMPLEXITY_KEYS = ("title", "paper", "note", "rows")
COMPLEXITY_ROW_KEYS = ("label", "dataset", "method", "paper")
# Measured quantity -> its column in the tables and the unit it is shown in.
MEASURES = {
    "flops": ("FLOPs", "G", 1e9),
    "macs": ("MACs", "G", 1e9),
    "params": ("#Params", "M", 1e6),
    "latency_s": ("Fwd latency", "ms", 1e-3),
}


def load_complexity_spec(path: str | Path) -> dict:
    """A complexity table's spec: ``title``, ``paper``, ``note`` and ``rows`` of ``label``,
    ``dataset``, ``method`` and the paper's values (``paper: {flops, macs, params, latency_s}``,
    any of them)."""
    source = str(path)
    spec = _mapping(load_yaml(path), COMPLEXITY_KEYS, ("title", "paper", "rows"), source, "")
    if not isinstance(spec["rows"], list) or not spec["rows"]:
        _fail(source, "rows", "must be a non-empty list")
    rows = []
    for i, node in enumerate(spec["rows"]):
        where = f"rows[{i}]"
        row = _mapping(node, COMPLEXITY_ROW_KEYS, ("label", "dataset", "method"), source, where)
        paper = _mapping(row.get("paper") or {}, tuple(MEASURES), (), source, f"{where}.paper")
        rows.append(
            {
                **{
                    k: _string(row[k], source, f"{where}.{k}")
                    for k in ("label", "dataset", "method")
                },
                "paper": {k: _number(v, source, f"{where}.paper.{k}") for k, v in paper.items()},
            }
        )
    return {**spec, "rows": rows, "note": spec.get("note", ""), "source": source}


def complexity_rows(spec: dict) -> list[tuple[str, str]]:
    """The (dataset, method) pairs a complexity table measures, once each."""
    return list(dict.fromkeys((r["dataset"], r["method"]) for r in spec["rows"]))


def build_complexity_table(spec: dict, results: Iterable[dict]) -> pd.DataFrame:
    """One row per spec row: label, dataset, method, each measure and the paper's, and how it
    was measured (batch, device, precision). ``results``: `comm-repro complexity` outputs."""
    by_run = {(r["dataset"], r["method"]): r for r in results}
    out = []
    for row in spec["rows"]:
        key = (row["dataset"], row["method"])
        if key not in by_run:
            raise ResultsError(
                f"no complexity measurement of method {row['method']!r} on {row['dataset']!r} "
                f"for {spec['source']}: run `comm-repro complexity` for it"
            )
        found = by_run[key]
        cells = {m: found[m] for m in MEASURES}
        paper = {f"paper_{m}": row["paper"].get(m, math.nan) for m in MEASURES}
        how = {k: found[k] for k in ("batch_size", "device_name", "precision")}
        out.append(
            {
                "label": row["label"],
                **dict(zip(("dataset", "method"), key)),
                **cells,
                **paper,
                **how,
            }
        )
    return pd.DataFrame(out)


def _in_unit(value: float, measure: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    _, unit, scale = MEASURES[measure]
    return f"{value / scale:,.1f} {unit}"


def write_complexity_table(table: pd.DataFrame, spec: dict, prefix: str | Path) -> list[Path]:
    """``prefix``.csv (numbers as measured) and .md (ours beside the paper's, in G, M and ms),
    with a note on how it was measured."""
    prefix = Path(prefix)
    wide = pd.DataFrame({"Model": table["label"]})
    for measure, (name, _, _) in MEASURES.items():
        wide[name] = [_in_unit(v, measure) for v in table[measure]]
        wide[f"{name} (paper)"] = [_in_unit(v, measure) for v in table[f"paper_{measure}"]]
    how = ", ".join(
        dict.fromkeys(
            f"batch {int(r.batch_size)} on {r.device_name} in {r.precision}"
            for r in table.itertuples()
        )
    )
    note = (
        f"{spec['title'].rstrip('.')}: one forward pass (every encoder, then the fusion) of a "
        f"batch, {how}; FLOPs by PyTorch's counter (MACs = FLOPs / 2), latency the median of "
        f"timed passes. Paper: {spec['paper'].rstrip('.')} (its batch and GPU are not stated). "
        + spec["note"]
    ).strip()
    paths = [prefix.with_suffix(".csv"), prefix.with_suffix(".md")]
    write_text(paths[0], table.to_csv(index=False))
    write_text(paths[1], markdown(wide) + f"\n\n{note}\n")
    return paths


# ---------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, prefix: Path) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = prefix.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_table(table: pd.DataFrame, spec: dict, prefix: str | Path) -> list[Path]:
    """Grouped bars (the spec's figure columns, one bar per table row) with std error bars (none
    where n = 1), the paper's values as black markers and each column's chance level, where the
    spec gives one, as a dashed line; the title gives n."""
    figure = spec["figure"]
    columns = figure["columns"]
    _check_columns(table, columns, spec)
    if "x" in table:
        return plot_sweep(table, spec, prefix)
    plt = _pyplot()
    by_name = {c["name"]: c for c in spec["columns"]}
    shown = table[table.column.isin(columns)]
    bars = list(dict.fromkeys(shown.label))  # one per table row
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(7.0, 2.0 + 0.3 * len(columns) * len(bars)), 3.8))
    x = np.arange(len(columns))
    for i, label in enumerate(bars):
        rows = shown[shown.label == label].set_index("column").loc[columns]
        offset = x - 0.4 + width * (i + 0.5)
        # No error bar where n = 1 (std NaN): a zero-length bar would read as "± 0".
        std = rows["std"].to_numpy(dtype=float)
        yerr = None if np.isnan(std).all() else std
        ax.bar(offset, rows["mean"], width, yerr=yerr, capsize=3, label=label)
        ax.scatter(offset, rows["paper"], marker="_", s=300, color="black", zorder=3)
    chance = [by_name[c]["chance"] for c in columns]
    for j, level in enumerate(chance):
        if level is not None:
            ax.hlines(level, j - 0.45, j + 0.45, colors="grey", linestyles="dashed")
    ticks = [
        label + (" ↓" if by_name[c]["lower_is_better"] else "")
        for c, label in zip(columns, figure["labels"])
    ]
    ax.set_xticks(x, ticks)
    metrics = _joined(by_name[c]["metric"] for c in columns)
    ax.set_ylabel(figure["ylabel"] or metrics)
    if figure["ylim"]:
        ax.set_ylim(*figure["ylim"])
    keys = f"black: paper {spec['paper']}" + (
        "; dashed: chance" if any(c is not None for c in chance) else ""
    )
    n_seeds = shown.n_seeds[shown.n_seeds > 0]
    ax.set_title(f"{spec['title']}\nbars: {seeds_summary(n_seeds)}; {keys}", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(bars), frameon=False)
    paths = _save(fig, Path(prefix))
    plt.close(fig)
    return paths


def _lines(ax, frame: pd.DataFrame, x: str, label: str) -> str:
    """One line of ``frame``'s means against ``x`` with a ± std band (none where n = 1); its
    colour."""
    frame = frame.sort_values(x)
    (line,) = ax.plot(frame[x], frame["mean"], marker="o", markersize=3, label=label)
    std = frame["std"].to_numpy(dtype=float)
    if not np.isnan(std).all():
        low, high = frame["mean"] - np.nan_to_num(std), frame["mean"] + np.nan_to_num(std)
        ax.fill_between(frame[x], low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line.get_color()


def _panels(n: int):
    plt = _pyplot()
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    return plt, fig, axes[0]


def _decorate(ax, column: dict, label: str, figure: dict, xlabel: str) -> None:
    if column.get("chance") is not None:
        ax.axhline(column["chance"], color="grey", linestyle="dashed", linewidth=1)
    ax.set_title(label + (" ↓" if column.get("lower_is_better") else ""), fontsize=10)
    ax.set_xlabel(xlabel)
    if figure["ylim"]:
        ax.set_ylim(*figure["ylim"])


def plot_sweep(table: pd.DataFrame, spec: dict, prefix: str | Path) -> list[Path]:
    """A sweep (rows with ``x``): one panel per figure column, the value against x, one line
    per method; ± std bands, chance dashed."""
    figure = spec["figure"]
    by_name = {c["name"]: c for c in spec["columns"]}
    plt, fig, axes = _panels(len(figure["columns"]))
    for ax, name, label in zip(axes, figure["columns"], figure["labels"]):
        for method, rows in table[table.column == name].groupby("method", sort=False):
            _lines(ax, rows, "x", method)
        _decorate(ax, by_name[name], label, figure, figure["xlabel"] or "x")
    axes[0].set_ylabel(figure["ylabel"] or _joined(table.metric))
    axes[-1].legend(fontsize=8, frameon=False)
    shown = table[table.column.isin(figure["columns"])]
    fig.suptitle(f"{spec['title']}\n{seeds_summary(shown.n_seeds[shown.n_seeds > 0])}", fontsize=10)
    paths = _save(fig, Path(prefix))
    plt.close(fig)
    return paths


def load_logs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Every run's train_log.csv with its dataset, method and seed, read from the run's record
    ``run.json`` (its resolved settings, written before it trained)."""
    frames = []
    for run in map(Path, run_dirs):
        meta = run / "run.json"
        if not meta.is_file():
            raise ResultsError(
                f"{meta} not found: the run has not been pretrained (its dataset, method and "
                "seed are read from that file)"
            )
        try:
            cfg = json.loads(meta.read_text())
            identity = (cfg["dataset"]["name"], cfg["method"]["name"], int(cfg["seed"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ResultsError(
                f"{meta} does not say which run it is ({describe(err)}): write it again with "
                "`comm-repro pretrain`"
            ) from None
        log = pd.read_csv(run / "train_log.csv")
        log["dataset"], log["method"], log["seed"] = identity
        frames.append(log)
    if not frames:
        raise ResultsError("no runs given")
    return pd.concat(frames, ignore_index=True)


def plot_curves(logs: pd.DataFrame, prefix: str | Path) -> list[Path]:
    """One panel per dataset for the training loss, one for SSL accuracy; a line per run."""
    plt = _pyplot()
    datasets = sorted(logs.dataset.unique())
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 6), squeeze=False)
    for col, dataset in enumerate(datasets):
        for (method, seed), run in logs[logs.dataset == dataset].groupby(["method", "seed"]):
            for row, metric in enumerate(("loss", "ssl_acc")):
                if metric in run:
                    axes[row, col].plot(
                        run.epoch, run[metric], marker=".", label=f"{method} s{seed}"
                    )
        axes[0, col].set_title(dataset)
        axes[0, col].set_ylabel("training loss")
        axes[1, col].set_ylabel("SSL accuracy (positive ranked first)")
        axes[1, col].set_xlabel("epoch")
        axes[0, col].legend(fontsize=7)
    paths = _save(fig, Path(prefix))
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------
# Scorecard and index

SCORECARD_COLUMNS = (
    "table",
    "label",
    "column",
    "mean",
    "std",
    "n_seeds",
    "paper",
    "paper_std",
    "delta",
    "within",
)


def _verdict(value: Any) -> bool | float:
    """A table's ``within`` as True/False/NaN, also as read back from its CSV."""
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower(), math.nan)
    return math.nan if pd.isna(value) else bool(value)


def scorecard(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every cell of the long ``tables`` (by experiment name) that has a paper value: table,
    label, column, mean, std, n_seeds, paper, paper_std, delta and within (True/False/NaN)."""
    frames = []
    for name, table in tables.items():
        cells = table[table.paper.notna() & (table.n_seeds > 0)]
        frames.append(cells.assign(table=name, within=[_verdict(v) for v in cells.within]))
    if not frames:
        return pd.DataFrame(columns=list(SCORECARD_COLUMNS))
    card = pd.concat(frames, ignore_index=True)
    return card[list(SCORECARD_COLUMNS)]


def _value(mean: float, std: float) -> str:
    return f"{mean:.1f}" + ("" if pd.isna(std) else f" ± {std:.1f}")


def scorecard_summary(card: pd.DataFrame) -> str:
    """'k of m cells within the larger of the two stds', m counting the cells with a verdict."""
    verdicts = [v for v in card.within if not pd.isna(v)]
    summary = (
        f"{sum(verdicts)} of {len(verdicts)} cells within the larger of the two stds (ours over "
        "the seeds, the paper's)"
    )
    undecided = len(card) - len(verdicts)
    if undecided:
        summary += f"; {undecided} without a std on either side, so without a verdict"
    return summary + "."


def _scorecard_html(card: pd.DataFrame, links: Mapping[str, str]) -> str:
    if card.empty:
        return "<p>No cell of these tables has a paper value.</p>"
    head = ("table", "method", "column", "ours (mean ± std, n)", "paper (± std)", "difference")
    rows = []
    for r in card.itertuples(index=False):
        verdict = "–" if pd.isna(r.within) else ("yes" if r.within else "no")
        table = html.escape(r.table)
        if r.table in links:
            table = f'<a href="{html.escape(links[r.table])}">{table}</a>'
        cells = [
            table,
            html.escape(str(r.label)),
            html.escape(str(r.column)),
            html.escape(f"{_value(r.mean, r.std)} (n = {int(r.n_seeds)})"),
            html.escape(_value(r.paper, r.paper_std)),
            html.escape(f"{r.delta:+.1f}"),
            verdict,
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in (*head, "within"))
    return (
        f"<p>{html.escape(scorecard_summary(card))}</p>\n<table>\n<thead><tr>{header}</tr>"
        "</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
    )


STYLE = (
    "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:left}</style>"
)


def write_index(
    reports: Sequence[str | Path],
    out: str | Path,
    tables: Mapping[str, str | Path] | None = None,
) -> Path:
    """An HTML page: with ``tables`` (experiment name -> long-table CSV), first the reproduction
    scorecard of their cells that have a paper value, then links to every report (paths
    relative to the index)."""
    out = Path(out)
    tables = dict(tables or {})
    parts = []
    if tables:
        card = scorecard({name: pd.read_csv(path) for name, path in tables.items()})
        links = {
            name: Path(os.path.relpath(path, out.parent)).as_posix()
            for name, path in tables.items()
        }
        parts.append(f"<h2>Reproduction scorecard</h2>\n{_scorecard_html(card, links)}")
    items = "\n".join(
        f'<li><a href="{html.escape(Path(r).relative_to(out.parent).as_posix())}">'
        f"{html.escape(Path(r).stem)}</a></li>"
        for r in map(Path, reports)
    )
    parts.append(f"<h2>Reports</h2>\n<ul>\n{items}\n</ul>")
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>CoMM reproduction</title>"
        f"{STYLE}</head>\n<body><h1>CoMM reproduction</h1>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    write_text(out, page)
    return out
