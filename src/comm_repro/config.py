"""Study configuration: YAML files, command-line overrides, and the per-run view of them.

A study config (``config/config.yaml``) names datasets, methods, seeds and the shared training,
augmentation and probe settings. A *run* needs only one dataset and one method: ``run_config``
cuts that slice out and fills method settings from their defaults, and the result is stored
beside the run's outputs so a run can be probed or resumed without the study file.

Both are checked against the one schema the workflow validates study configs with,
``comm_repro/schemas/config.schema.yaml`` (``check``): a bad value stops the command before any
data is loaded, with a one-line message naming the key.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from comm_repro.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the key."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            place, what = _yaml_problem(err)
            raise ConfigError(f"{path}:{place} not valid YAML: {what}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_json(path: str | Path) -> dict[str, Any]:
    """A JSON record the project wrote (run.json); ConfigError naming it when unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is unreadable ({err}); write it again with its step") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, found {type(data).__name__}")
    return data


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``cfg`` with ``dotted.key=value`` overrides applied (values parsed as YAML)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            what = _yaml_problem(err)[1]
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {what}") from None
    return cfg


def _yaml_problem(err: yaml.YAMLError) -> tuple[str, str]:
    """``("LINE:COLUMN:", what)`` of a YAML syntax error, ``what`` on one line; positions count
    from 1, as editors do, and the place is empty when PyYAML gives none."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = [getattr(err, "context", None), getattr(err, "problem", None)]
    text = "; ".join(str(w) for w in what if w) or str(err)
    place = f"{mark.line + 1}:{mark.column + 1}:" if mark is not None else ""
    return place, " ".join(text.split())


@functools.cache
def schema() -> dict[str, Any]:
    """The config schema, shipped with the package; workflow/Snakefile validates with it too."""
    text = resources.files("comm_repro").joinpath("schemas").joinpath("config.schema.yaml")
    return yaml.safe_load(text.read_text())


@functools.cache
def _validator(definition: str):
    from jsonschema import Draft202012Validator

    full = schema()
    if definition not in full["definitions"]:
        raise KeyError(f"the config schema has no definition {definition!r}")
    return Draft202012Validator(
        {
            "$schema": full["$schema"],
            "definitions": full["definitions"],
            "$ref": f"#/definitions/{definition}",
        }
    )


def check(cfg: Any, definition: str, source: str = "") -> None:
    """Validate ``cfg`` against the schema's ``definitions.<definition>`` (``study``, ``run``,
    ``probe_run``); the first problem becomes a one-line ConfigError naming its dotted key."""
    from jsonschema.exceptions import best_match

    errors = list(_validator(definition).iter_errors(cfg))
    # A bad value inside a family's or a method kind's branch of the schema leaves the keys of
    # that branch unevaluated, so an "unknown keys" error at the section comes too: the deeper
    # error is the real one.
    kept = [e for e in errors if not (_unknown_keys(e) and any(_below(o, e) for o in errors))]
    error = best_match(kept or errors)
    if error is not None:
        raise ConfigError(describe(error) + (f" ({source})" if source else ""))


def _unknown_keys(error) -> bool:
    return error.validator in ("additionalProperties", "unevaluatedProperties")


def _below(other, error) -> bool:
    """Whether ``other`` is a problem of a key inside the section ``error`` is about."""
    here, there = list(error.absolute_path), list(other.absolute_path)
    return not _unknown_keys(other) and len(there) > len(here) and there[: len(here)] == here


def key_path(parts) -> str:
    """``train.epochs``, ``probe.C_grid[0]``: a schema error's location as the user writes it."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_UNEXPECTED = re.compile(r"\((.+) (?:was|were) unexpected\)")


def describe(error) -> str:
    """One line for a jsonschema ValidationError: ``KEY: problem``."""
    path = list(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        found = _UNEXPECTED.search(error.message)
        try:
            unknown = ast.literal_eval(f"({found.group(1)},)") if found else ()
        except (ValueError, SyntaxError):
            unknown = ()
        if unknown:
            keys = ", ".join(key_path([*path, key]) for key in unknown)
            message = f"{keys}: unknown key" + ("s" if len(unknown) > 1 else "")
            known = (
                error.schema.get("properties")
                if error.validator == "additionalProperties"
                else None
            )
            if known:
                message += f"; {key_path(path) or 'the top level'} takes {', '.join(sorted(known))}"
            return message
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [key for key in error.validator_value if key not in error.instance]
        if missing:
            return f"{key_path([*path, missing[0]])}: required, but missing"
    return f"{key_path(path) or 'config'}: {' '.join(error.message.split())}"


def _section(cfg: dict[str, Any], key: str) -> dict[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"config key {key!r} is missing or is not a mapping")
    return value


# Sections holding defaults that a dataset and then a method may override, key by key.
OVERRIDABLE = ("model", "encoders", "augment", "train", "finetune", "probe")
# Task kinds with one class label per sample (multilabel: a 0/1 row; regression: values).
CLASSIFICATION = ("binary", "multiclass")
# Per modality kind: which `encoders:` / `augment:` entry a modality takes by default.
DEFAULT_METRIC = {
    "binary": "balanced_accuracy",
    "multiclass": "balanced_accuracy",
    "multilabel": "f1_weighted",
    "regression": "mse",
}


def merged(base: Any, *overrides: Any) -> Any:
    """``base`` with each override laid over it: mappings merge key by key (recursively), any
    other value replaces. The inputs are not modified."""
    out = copy.deepcopy(base)
    for over in overrides:
        if isinstance(out, dict) and isinstance(over, dict):
            out = {
                **out,
                **{k: merged(out[k], v) if k in out else copy.deepcopy(v) for k, v in over.items()},
            }
        else:
            out = copy.deepcopy(over)
    return out


def merged_encoder(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Encoder settings laid over each other as :func:`merged` does, except that a layer naming
    another encoder replaces everything below it (one encoder's options mean nothing to
    another: a GRU takes no transformer layers)."""
    out: dict[str, Any] = {}
    for layer in layers:
        layer = layer or {}
        same = layer.get("name", out.get("name")) == out.get("name")
        out = merged(out, layer) if same else copy.deepcopy(layer)
    return out


def _modality(m: dict[str, Any], where: str, encoders: dict, augment: dict) -> dict[str, Any]:
    """A declared modality with its encoder and augmentation resolved from the defaults of its
    kind and its own overrides."""
    kind = m["kind"]
    for section, defaults in (("encoders", encoders), ("augment", augment)):
        if kind not in defaults:
            raise ConfigError(
                f"{where}: a modality of kind {kind!r} needs {section}.{kind} (defaults, or the "
                f"dataset's own {section}: section)"
            )
    resolved = {k: v for k, v in m.items() if k not in ("encoder", "augment")}
    resolved["encoder"] = merged_encoder(encoders[kind], m.get("encoder"))
    resolved["augment"] = merged(augment[kind], m.get("augment") or {})
    return resolved


# How CoMM turns a modality's encoder output into tokens when the modality sets no `tokens`.
DEFAULT_TOKENS = {"image": "patch", "sequence": "step", "tabular": "feature", "text": "step"}


def modality_tokens(m: dict[str, Any]) -> str:
    """A modality's ``tokens`` (patch, step or feature), else its kind's default. The default
    is not written into the resolved settings, so runs that set none keep the settings (and
    the workflow's outputs) they had before the key existed."""
    return m.get("tokens") or DEFAULT_TOKENS[m["kind"]]


def resolve_task(t: dict[str, Any]) -> dict[str, Any]:
    """A task with its defaults: the metric of its kind, the label array of its name."""
    return {
        **t,
        "metric": t.get("metric", DEFAULT_METRIC[t["kind"]]),
        "labels": t.get("labels", t["name"]),
    }


def run_config(cfg: dict[str, Any], dataset: str, method: str, seed: int) -> dict[str, Any]:
    """The resolved settings of one (dataset, method, seed) run: the study's defaults, then the
    dataset's overrides, then the method's; each modality with its own encoder and augmentation,
    each task with its metric and label source. Everything a run's steps read comes from here."""
    datasets = _section(cfg, "datasets")
    methods = _section(cfg, "methods")
    if dataset not in datasets:
        raise ConfigError(f"datasets.{dataset}: unknown dataset; configured: {sorted(datasets)}")
    if method not in methods:
        raise ConfigError(f"methods.{method}: unknown method; configured: {sorted(methods)}")
    ds, me = datasets[dataset] or {}, methods[method] or {}
    layers = [cfg, ds, me]
    sections = {key: merged(*(layer.get(key) or {} for layer in layers)) for key in OVERRIDABLE}
    kinds = dict.fromkeys(kind for layer in layers for kind in layer.get("encoders") or {})
    sections["encoders"] = {
        kind: merged_encoder(*((layer.get("encoders") or {}).get(kind) for layer in layers))
        for kind in kinds
    }
    params = {k: v for k, v in me.items() if k not in OVERRIDABLE}
    kind = params.pop("kind", method)
    own = {k: v for k, v in ds.items() if k not in OVERRIDABLE}
    own["modalities"] = [
        _modality(
            m, f"datasets.{dataset}.modalities[{i}]", sections["encoders"], sections["augment"]
        )
        for i, m in enumerate(ds.get("modalities") or [])
    ]
    own["tasks"] = [resolve_task(t) for t in ds.get("tasks") or []]
    every = _experiment_snapshots(cfg, dataset, method, int(seed))
    if every is not None:
        sections["train"] = {**sections["train"], "snapshot_every": every}
    return {
        "dataset": {"name": dataset, **copy.deepcopy(own)},
        "method": {"name": method, "kind": kind, **copy.deepcopy(params)},
        "model": sections["model"],
        "train": sections["train"],
        "finetune": sections["finetune"],
        "probe": sections["probe"],
        "seed": int(seed),
    }


def _experiment_snapshots(cfg: dict[str, Any], dataset: str, method: str, seed: int) -> int | None:
    """``snapshot_every`` of the experiments whose pretrained cells include this run (they
    must agree); None where none asks for snapshots."""
    asked = {
        name: int(exp["snapshot_every"])
        for name, exp in (cfg.get("experiments") or {}).items()
        if exp.get("snapshot_every")
        and (dataset, method, seed, "pretrain") in experiment_results(cfg, name)
    }
    if len(set(asked.values())) > 1:
        raise ConfigError(
            f"experiments {', '.join(sorted(asked))} ask the run {dataset}/{method}/seed{seed} "
            f"for snapshots every {' and '.join(map(str, sorted(set(asked.values()))))} epochs: "
            "give them one snapshot_every"
        )
    return next(iter(asked.values()), None)


def with_task_defaults(run_cfg: dict[str, Any]) -> dict[str, Any]:
    """A checked run's settings with every task's defaults filled in (tasks a --set gave may
    lack them)."""
    dataset = {
        **run_cfg["dataset"],
        "tasks": [resolve_task(t) for t in run_cfg["dataset"]["tasks"]],
    }
    return {**run_cfg, "dataset": dataset}


def pretrain_settings(run_cfg: dict[str, Any]) -> dict[str, Any]:
    """What the pretraining of a run reads: its settings without the probe and fine-tuning
    sections (so that a probe setting reruns the probes only, a fine-tuning setting the
    fine-tuning and what follows)."""
    return {k: v for k, v in run_cfg.items() if k not in ("probe", "finetune")}


def finetune_settings(run_cfg: dict[str, Any]) -> dict[str, Any]:
    """What the fine-tuning of a run reads beside the pretrained run's record."""
    return {"finetune": run_cfg.get("finetune") or {}}


FINETUNE_KEYS = ("temperature", "task")  # fine-tuning settings of its loss, not of training


def finetune_run(record: dict[str, Any], finetune: dict[str, Any]) -> dict[str, Any]:
    """The settings a fine-tuning trains with: the pretrained run's (``record``, its run.json),
    its train section overlaid with the fine-tuning's own training keys, ``stage: finetune``
    and the fine-tuning settings themselves."""
    own = {k: v for k, v in finetune.items() if k not in FINETUNE_KEYS}
    run = {k: v for k, v in record.items() if k not in ("compute", "probe")}
    return {**run, "train": merged(run["train"], own), "finetune": finetune, "stage": "finetune"}


def check_study(cfg: dict[str, Any], source: str = "") -> None:
    """A study config (``comm-repro pretrain --config``, the workflow's config), after its
    overrides, and every run it can make."""
    check(cfg, "study", source)
    for dataset in cfg["datasets"]:
        for method in cfg["methods"]:
            check_run(run_config(cfg, dataset, method, 0), source=source)


def check_run(run_cfg: dict[str, Any], *, probe: bool = False, source: str = "") -> None:
    """One run's settings: before pretraining, or (``probe``) as the probes use them."""
    check(run_cfg, "probe_run" if probe else "run", source)
    if not probe:
        dataset, batch = run_cfg["dataset"], run_cfg["train"]["batch_size"]
        pairs = dataset.get("max_train_pairs")
        if pairs is not None and pairs < batch:
            raise ConfigError(
                f"datasets.{dataset['name']}.max_train_pairs: {pairs} is below "
                f"train.batch_size {batch}; a run needs at least one full batch"
                + (f" ({source})" if source else "")
            )


def data_id(dataset_cfg: dict[str, Any]) -> str:
    """Where a dataset's prepared files live under the data folder: its family, then each
    preparation option (``prepare:``) as ``key-value``; datasets that differ only in how they
    are trained or probed share one prepared copy. A value that is not a plain word is
    replaced by a digest of it."""
    parts = [_path_word(str(dataset_cfg["family"]))]
    for key, value in sorted((dataset_cfg.get("prepare") or {}).items()):
        parts.append(f"{key}-{_path_word(value if isinstance(value, str) else json.dumps(value))}")
    return "/".join(parts)


# Encoders whose weights are pretrained and stay frozen (comm_repro.models.frozen): their probe
# features are computed once per prepared copy (comm_repro.features).
FROZEN_ENCODERS = ("clip_vit", "blip2_image", "sentence_transformer", "blip2_text")


def frozen_modalities(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """The modalities of a resolved dataset whose encoder is frozen (their probe features can
    be computed once)."""
    return [m for m in dataset["modalities"] if m["encoder"].get("name") in FROZEN_ENCODERS]


def feature_settings(run_cfg: dict[str, Any], modality: str) -> dict[str, Any]:
    """What a modality's probe features depend on, from a run's resolved settings: the dataset
    without its other modalities, and the run's device and precision settings."""
    dataset = copy.deepcopy(run_cfg["dataset"])
    dataset["modalities"] = [m for m in dataset["modalities"] if m["name"] == modality]
    if not dataset["modalities"]:
        raise ConfigError(f"dataset {dataset['name']!r} has no modality {modality!r}")
    train = {k: run_cfg["train"][k] for k in ("device", "precision")}
    return {"dataset": dataset, "modality": modality, "train": train}


# Encoder settings that act in training only (a frozen text encoder masks tokens of training
# views; probes see every token): the probe features do not depend on them.
TRAINING_ONLY_KEYS = ("mask_prob",)


def feature_dir(run_cfg: dict[str, Any], modality: str) -> str:
    """The features' folder under the features root: ``<data id>/<modality>-<digest>``, the
    digest of what the features depend on: the prepared copy, the modality's kind and encoder,
    the device and precision settings (datasets that share a prepared copy and the encoder
    share the features; a run's augmentation, tokens, tasks and training-only encoder settings
    do not matter). ``run_cfg``: a
    run's settings, or :func:`feature_settings`."""
    settings = feature_settings(run_cfg, modality)
    dataset = settings["dataset"]
    own = {k: dataset["modalities"][0][k] for k in ("name", "kind", "encoder")}
    own["encoder"] = {k: v for k, v in own["encoder"].items() if k not in TRAINING_ONLY_KEYS}
    key = {"data": data_id(dataset), "modality": own, **settings["train"]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{data_id(dataset)}/{modality}-{digest}"


def _path_word(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", text) and text not in (".", ".."):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def table_spec_path(name: str) -> Path:
    """An experiment's `table:`: a spec name in config/tables/, or a path to a spec file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return Path("config") / "tables" / f"{name}.yaml"


def table_rows(spec: dict[str, Any], methods: list[str]) -> list[dict[str, Any]]:
    """The rows a table of ``methods`` has: the spec's rows of those methods in the spec's
    (the paper's) order, then a plain row (``{"method": m}``) for each method the spec has
    none of, in the order of ``methods``. A spec may give one method several rows that read
    other datasets (``datasets:``) or another stage (``stage: finetune``), e.g. CoMM on two
    and on three modalities, or pretrained and fine-tuned."""
    rows = spec.get("rows") or []
    known = {r.get("method") for r in rows}
    return [r for r in rows if r.get("method") in methods] + [
        {"method": m} for m in methods if m not in known
    ]


STAGES = ("pretrain", "finetune")


def row_stage(row: dict[str, Any]) -> str:
    """Which results a table row shows: the probes of the pretrained runs (default) or of their
    fine-tuned copies (``stage: finetune``)."""
    stage = row.get("stage", "pretrain")
    if stage not in STAGES:
        raise ConfigError(f"a table row's stage is {stage!r}, not one of {', '.join(STAGES)}")
    return stage


def row_datasets(spec: dict[str, Any], row: dict[str, Any]) -> dict[str, str | None]:
    """Column name -> the dataset whose runs fill that column in ``row``: the column's own
    dataset unless the row names another (``datasets: {column: dataset}``), None where the row
    names none (``datasets: {column: null}``: the method does not apply there, the cell shows
    a dash). Columns that average other columns (``average:``) read no dataset."""
    own = row.get("datasets") or {}
    return {
        col["name"]: own.get(col["name"], col["dataset"])
        for col in spec.get("columns") or []
        if "dataset" in col
    }


def select_columns(spec: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """A table spec (as read, or checked) cut to the columns ``names`` (all when None), its
    rows' paper values and datasets, its figure's columns, its paper curves and the claims it
    tests with them: an experiment may show part of a paper table
    (``experiments.<name>.columns``), e.g. the datasets a user has; a claim on a column left out
    cannot be tested on that part."""
    if names is None:
        return spec
    known = [c["name"] for c in spec.get("columns") or []]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"columns {unknown} are not in the table spec; its columns: {known}")

    def kept(mapping: dict | None) -> dict:
        return {k: v for k, v in (mapping or {}).items() if k in names}

    out = {
        **spec,
        "columns": [c for c in spec["columns"] if c["name"] in names],
        "rows": [
            {**row, "paper": kept(row.get("paper")), "datasets": kept(row.get("datasets"))}
            for row in spec.get("rows") or []
        ],
    }
    if "curves" in spec:
        out["curves"] = kept(spec["curves"])
    if "claims" in spec:
        cut = set(known) - set(names)
        out["claims"] = [
            c for c in spec["claims"] or [] if not (isinstance(c, dict) and c.get("column") in cut)
        ]
    figure = spec.get("figure") or {}
    if figure.get("columns") or figure.get("labels"):
        shown = figure.get("columns") or known
        pairs = [(c, label) for c, label in zip(shown, figure.get("labels") or shown) if c in names]
        if not pairs:
            raise ConfigError(f"the spec's figure shows none of the columns {names}")
        out["figure"] = {
            **figure,
            "columns": [c for c, _ in pairs],
            "labels": [x for _, x in pairs],
        }
    return out


@functools.lru_cache(maxsize=64)
def _spec_file(path: Path, mtime_ns: int) -> dict[str, Any]:
    return load_yaml(path)


def experiment_spec(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The table spec of experiment ``name`` as read, cut to its ``columns`` when it names some
    (read once per version of the file: every run's settings look experiments up)."""
    exp = cfg["experiments"][name]
    path = table_spec_path(exp["table"])
    try:
        spec = _spec_file(path, path.stat().st_mtime_ns)
    except FileNotFoundError:
        spec = load_yaml(path)  # its own message
    return select_columns(copy.deepcopy(spec), exp.get("columns"))


def experiment_results(cfg: dict[str, Any], name: str) -> list[tuple[str, str, int, str]]:
    """The (dataset, method, seed, stage) probe results of experiment ``name``: for each row of
    its table (see :func:`table_rows`), the dataset of each column (:func:`row_datasets`, none
    where the row has a dash) at the row's stage (:func:`row_stage`), times its seeds (the
    first alone for a row with ``one_seed: true``: nothing in its runs depends on the seed)."""
    exp = cfg["experiments"][name]
    spec = experiment_spec(cfg, name)
    seeds = [int(s) for s in exp["seeds"]]
    cells = [
        (dataset, row["method"], row_stage(row), tuple(seeds[:1] if row.get("one_seed") else seeds))
        for row in table_rows(spec, list(exp["methods"]))
        for dataset in row_datasets(spec, row).values()
        if dataset is not None
    ]
    order = list(dict.fromkeys(cell[0] for cell in cells))  # by dataset first, as columns go
    cells = sorted(dict.fromkeys(cells), key=lambda cell: order.index(cell[0]))
    results = [(d, m, s, stage) for d, m, stage, row_seeds in cells for s in row_seeds]
    return list(dict.fromkeys(results))


def experiment_runs(cfg: dict[str, Any], name: str) -> list[tuple[str, str, int]]:
    """The (dataset, method, seed) runs experiment ``name`` pretrains (a fine-tuned result
    needs its pretrained run)."""
    runs = [(d, m, s) for d, m, s, _ in experiment_results(cfg, name)]
    return list(dict.fromkeys(runs))


def snapshot_epochs(train: dict[str, Any]) -> list[int]:
    """The epochs after which a run keeps a snapshot of its model (``train.snapshot_every``;
    none without it)."""
    every = train.get("snapshot_every")
    return list(range(int(every), int(train["epochs"]) + 1, int(every))) if every else []


def study_runs(cfg: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Every run of the study's experiments, once."""
    runs = [run for name in cfg.get("experiments") or {} for run in experiment_runs(cfg, name)]
    return list(dict.fromkeys(runs))


def require(section: dict[str, Any], key: str, where: str) -> Any:
    """A mandatory setting; the error names ``where.key`` so the user can find it."""
    if key not in section:
        raise ConfigError(f"config key {where}.{key} is required")
    return section[key]
