"""Aggregation of probe results into the paper's Fig. 4 table, its figure, training curves and
the report index. Reads the JSON/CSV files the runs wrote; trains nothing."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from comm_repro.atomic import atomic_path, write_text

# Paper Fig. 4 (reference/paper_numbers.md): mean and std over 5 runs, read off the figure.
# "Uniqueness" is one number in the paper; it is shown beside U1 and beside mean U.
PAPER_FIG4 = {
    "cross": {"R": (100.0, 0.1), "U": (11.6, 0.9), "S": (50.0, 0.1)},
    "factorcl": {"R": (99.8, 0.2), "U": (62.5, 2.6), "S": (46.5, 2.9)},
    "cross_self": {"R": (99.7, 0.2), "U": (86.9, 0.8), "S": (50.0, 0.1)},
    "comm": {"R": (99.9, 0.1), "U": (87.8, 1.6), "S": (71.9, 2.0)},
}
METHOD_LABELS = {
    "cross": "Cross",
    "cross_self": "Cross+Self",
    "comm": "CoMM",
    "factorcl": "FactorCL",
}
# Columns of the table: (column, probe task, pretraining role, paper key).
FIG4_COLUMNS = (
    ("R", "share", "unbiased", "R"),
    ("U1", "unique1", "unbiased", "U"),
    ("U2", "unique2", "unbiased", None),
    ("U", None, "unbiased", "U"),  # mean of U1 and U2 within each run
    ("S", "synergy", "biased", "S"),
)
CHANCE = {"R": 10.0, "U": 10.0, "S": 50.0}


def load_probes(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, task): dataset, method (config key), kind, seed, task, balanced
    accuracy in %, plain accuracy in %, the probe's class weighting, and the precision and CPU
    the run was pretrained with."""
    rows = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        cfg = result["config"]
        pretrained = result.get("pretrained") or {}  # absent in probes of earlier versions
        cpu = pretrained.get("cpu") or {}
        for task, metrics in result["tasks"].items():
            rows.append(
                {
                    "dataset": cfg["dataset"]["name"],
                    "method": cfg["method"]["name"],
                    "kind": cfg["method"]["kind"],
                    "seed": int(cfg["seed"]),
                    "task": task,
                    "balanced_accuracy": 100.0 * metrics["balanced_accuracy"],
                    "accuracy": 100.0 * metrics["accuracy"],
                    # Probes written before the setting existed were unweighted.
                    "class_weight": metrics.get("class_weight", "none"),
                    "precision": pretrained.get("precision") or "unrecorded",
                    "cpu": cpu.get("model", "unrecorded"),
                }
            )
    if not rows:
        raise ValueError("no probe results given")
    return pd.DataFrame(rows)


def _joined(values: Iterable[str]) -> str:
    """The distinct values, sorted, as 'a/b' (one value when all agree)."""
    return "/".join(sorted(set(values)))


def fig4_table(
    probes: pd.DataFrame, unbiased: str, biased: str, methods: Sequence[str]
) -> pd.DataFrame:
    """Long table: one row per (method, column) with mean, std over seeds, seeds, the paper's
    value and std, and our delta to it. R and U come from the runs on ``unbiased`` pairs, S
    from the runs on ``biased`` pairs."""
    datasets = {"unbiased": unbiased, "biased": biased}
    # A run's probe.json has one class weighting, precision and CPU for all its tasks: index
    # levels, not values.
    per_run = probes.pivot_table(
        index=["dataset", "method", "kind", "seed", "class_weight", "precision", "cpu"],
        columns="task",
        values="balanced_accuracy",
    ).reset_index()
    per_run["U"] = per_run[["unique1", "unique2"]].mean(axis=1)
    rows = []
    for method in methods:
        for column, task, role, paper_key in FIG4_COLUMNS:
            runs = per_run[(per_run.method == method) & (per_run.dataset == datasets[role])]
            if runs.empty:
                raise ValueError(f"no probe results for method {method!r} on {datasets[role]!r}")
            values = runs[task or column].to_numpy(dtype=float)
            kind = runs.kind.iloc[0]
            paper, paper_std = PAPER_FIG4.get(kind, {}).get(paper_key, (np.nan, np.nan))
            mean = float(values.mean())
            rows.append(
                {
                    "method": method,
                    "label": METHOD_LABELS.get(kind, method),
                    "column": column,
                    "pretrained_on": datasets[role],
                    "mean": mean,
                    "std": float(values.std(ddof=1)) if len(values) > 1 else np.nan,
                    "n_seeds": len(values),
                    "paper": paper,
                    "paper_std": paper_std,
                    "delta": mean - paper,
                    "probe_class_weight": _joined(runs.class_weight),
                    "precision": _joined(runs.precision),
                    "cpu": _joined(runs.cpu),
                }
            )
    return pd.DataFrame(rows)


def _cell(row: pd.Series, pm: str) -> str:
    ours = f"{row['mean']:.1f}" + ("" if np.isnan(row["std"]) else f" {pm} {row['std']:.1f}")
    if np.isnan(row["paper"]):
        return ours
    return f"{ours} (paper {row['paper']:.1f}, Δ {row['delta']:+.1f})"


def _wide(table: pd.DataFrame, pm: str) -> pd.DataFrame:
    cells = table.assign(cell=[_cell(r, pm) for _, r in table.iterrows()])
    order = list(dict.fromkeys(table.label))
    wide = cells.pivot(index="label", columns="column", values="cell")
    return wide.loc[order, [c[0] for c in FIG4_COLUMNS]].rename_axis(None, axis=1)


def seeds_summary(n_seeds: Iterable[int]) -> str:
    """What a cell holds, with n: the mean and std over n > 1 seeds, the one run's value for n = 1
    (a std of one value is not 0: it is undefined, so none is shown)."""
    counts = sorted({int(n) for n in n_seeds})
    if counts == [1]:
        return "one run per method and pairing (n = 1 seed, no std)"
    summary = f"mean ± std over n = {'/'.join(map(str, counts))} seeds"
    return summary + " (the value alone where n = 1)" if counts[0] == 1 else summary


def write_fig4_table(table: pd.DataFrame, prefix: str | Path) -> list[Path]:
    """``prefix``.csv (long, numeric), .md and .tex (one row per method)."""
    prefix = Path(prefix)
    unbiased = table[table.column == "R"].pretrained_on.iloc[0]
    biased = table[table.column == "S"].pretrained_on.iloc[0]
    weights = _joined(table.probe_class_weight)
    weighting = {
        "balanced": "with balanced class weights (the authors' probe is unweighted)",
        "none": "unweighted, as the authors' probe",
    }.get(weights, f"with class weights {weights}")
    note = (
        f"Linear-probe balanced accuracy (%), {seeds_summary(table.n_seeds)}; "
        "R = shape (chance 10), U1/U2 = texture of image 1/2 (chance 10), U = their mean, "
        f"S = texture-colour synergy (chance 50). R and U from runs on {unbiased}, S from runs "
        f"on {biased}. Pretrained in {_joined(table.precision)} on {_joined(table.cpu)}. "
        f"Logistic-regression probes fitted {weighting}. Paper: Fig. 4 (its uniqueness is shown "
        "beside U1 and U)."
    )
    paths = [prefix.with_suffix(".csv"), prefix.with_suffix(".md"), prefix.with_suffix(".tex")]
    write_text(paths[0], table.to_csv(index=False, float_format="%.3f"))
    md = _wide(table, "±").rename_axis("Method").reset_index()
    write_text(paths[1], markdown(md) + f"\n\n{note}\n")
    tex = _wide(table, r"$\pm$").rename_axis("Method").reset_index()
    tex = tex.replace({"Δ": r"$\\Delta$", "%": r"\\%"}, regex=True)
    write_text(paths[2], f"% {note}\n" + tex.to_latex(index=False, escape=False))
    return paths


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-style Markdown table of ``frame``'s columns and cells."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


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


def plot_fig4(table: pd.DataFrame, prefix: str | Path) -> list[Path]:
    """Grouped bars (R, U, S per method) with std error bars (none where n = 1), the paper's
    values as markers and each task's chance level as a dashed line; the title gives n."""
    plt = _pyplot()
    columns = ["R", "U", "S"]
    labels = list(dict.fromkeys(table.label))
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(columns))
    for i, label in enumerate(labels):
        rows = table[table.label == label].set_index("column").loc[columns]
        offset = x - 0.4 + width * (i + 0.5)
        # No error bar where n = 1 (std NaN): a zero-length bar would read as "± 0".
        std = rows["std"].to_numpy(dtype=float)
        yerr = None if np.isnan(std).all() else std
        ax.bar(offset, rows["mean"], width, yerr=yerr, capsize=3, label=label)
        ax.scatter(offset, rows["paper"], marker="_", s=300, color="black", zorder=3)
    for j, column in enumerate(columns):
        ax.hlines(CHANCE[column], j - 0.45, j + 0.45, colors="grey", linestyles="dashed")
    ax.set_xticks(x, ["Redundancy", "Uniqueness", "Synergy"])
    ax.set_ylabel("linear-probe balanced accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(
        "Bimodal Trifeature (black: paper Fig. 4; dashed: chance)\n"
        f"bars: {seeds_summary(table.n_seeds)}",
        fontsize=10,
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(labels), frameon=False)
    paths = _save(fig, Path(prefix))
    plt.close(fig)
    return paths


def load_logs(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Every run's train_log.csv with its dataset, method and seed (from the path
    ``.../{dataset}/{method}/seed{seed}``)."""
    frames = []
    for run in map(Path, run_dirs):
        log = pd.read_csv(run / "train_log.csv")
        log["dataset"], log["method"] = run.parent.parent.name, run.parent.name
        log["seed"] = int(run.name.removeprefix("seed"))
        frames.append(log)
    if not frames:
        raise ValueError("no runs given")
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


def write_index(reports: Sequence[str | Path], out: str | Path) -> Path:
    """An HTML page linking every report (paths relative to the index)."""
    out = Path(out)
    items = "\n".join(
        f'<li><a href="{html.escape(Path(r).relative_to(out.parent).as_posix())}">'
        f"{html.escape(Path(r).stem)}</a></li>"
        for r in map(Path, reports)
    )
    page = (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>CoMM reproduction reports"
        "</title></head>\n<body><h1>CoMM reproduction: reports</h1>\n<ul>\n"
        f"{items}\n</ul>\n</body></html>\n"
    )
    write_text(out, page)
    return out
