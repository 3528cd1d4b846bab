"""`comm-repro` command line: the steps the workflow runs, usable on their own.

comm-repro prepare trifeatures --out DIR
comm-repro prepare mosi|humor|sarcasm [--source FILE | --download-to PATH] --out DIR
comm-repro prepare mimic --source im.pk --out DIR
comm-repro prepare vision_touch [--source FOLDER|ZIP | --download-to PATH] --out DIR
comm-repro prepare mmimdb [--source FOLDER|TARBALL | --download-to PATH] --out DIR
comm-repro pretrain --config CFG --dataset NAME --method NAME --seed S --data DIR --out RUN_DIR
comm-repro finetune --run RUN_DIR --data DIR --out RUN_DIR/finetune [--settings FT.yaml]
comm-repro features --settings FEATURES.yaml --data DIR --out FEATURES_DIR
comm-repro probe --run RUN_DIR --data DIR --out probe.json [--features FEATURES_DIR ...]
comm-repro complexity --settings RUN_DIR/settings.yaml --data DIR --out C.json [--batch-size 64]
comm-repro complexity-table --spec SPEC.yaml --results C.json ... --out PREFIX
comm-repro subsets --probes P.json ... --out PREFIX [--figure PREFIX]
comm-repro table --spec SPEC.yaml --probes P.json ... --methods M ... [--columns C ...] --out PREFIX
comm-repro figure table --spec SPEC.yaml --table PREFIX.csv [--columns C ...] --out PREFIX
comm-repro figure curves --runs RUN_DIR ... --out PREFIX
comm-repro index --reports R.html ... [--tables NAME=PATH.csv ...] --out index.html
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from comm_repro.atomic import write_json
from comm_repro.config import (
    ConfigError,
    apply_overrides,
    check,
    check_run,
    check_study,
    load_json,
    load_yaml,
    run_config,
    with_task_defaults,
)
from comm_repro.errors import CheckpointError, TrainingInterrupted, UserError


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _exit_with_parent(parent: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), so
    that a job whose shell wrapper is killed stops instead of writing outputs on its own.
    ``parent``: the parent's pid when the command started (it may have died since)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: nothing to ask for
    if os.getppid() != parent:  # the parent died before the request took effect
        raise KeyboardInterrupt


def _setup_compute(n_threads: int | None) -> None:
    """Torch threads, and freed memory kept for reuse (see comm_repro.memory)."""
    import torch

    from comm_repro.memory import reuse_freed_memory

    reuse_freed_memory()
    if n_threads:
        torch.set_num_threads(n_threads)


def _device(args: argparse.Namespace) -> str | None:
    """--device, or with --gpu-lock-dir the CUDA device this job claims for itself."""
    if args.gpu_lock_dir is None:
        return args.device
    from comm_repro.gpu import claim_gpu

    device = f"cuda:{claim_gpu(args.gpu_lock_dir)}"
    print(f"claimed {device}", file=sys.stderr)
    return device


def _options(items: list[str] | None) -> dict:
    """``--option KEY=VALUE`` pairs as a mapping (values parsed as YAML)."""
    import yaml

    options = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {item!r} must look like key=value")
        options[key] = yaml.safe_load(raw)
    return options


def cmd_prepare(args: argparse.Namespace) -> int:
    from comm_repro.data.registry import family

    options = _options(args.option)
    for key, value in (
        ("generator_seed", args.seed),
        ("num_per_combination", args.num_per_combination),
    ):
        if value is not None:
            options[key] = value
    summary = family(args.dataset).prepare(
        Path(args.out), options, args.source, args.download_to, not args.quiet
    )
    print(summary)
    return 0


def _source(config: object, overrides: list[str] | None) -> str:
    """Where settings came from, for error messages: the file, and whether --set changed them."""
    return f"{config}{' with --set' if overrides else ''}"


def _pretrain_settings(args: argparse.Namespace) -> tuple[dict, str]:
    """A run's resolved settings: the file the workflow wrote (--settings), or the run that
    --dataset, --method and --seed pick out of a study config (--config)."""
    study_args = (args.config, args.dataset, args.method, args.seed)
    if args.settings is not None:
        if any(a is not None for a in study_args):
            raise ConfigError("give --settings, or --config with --dataset --method --seed")
        source = _source(args.settings, args.set)
        run_cfg = apply_overrides(load_yaml(args.settings), args.set or [])
        return run_cfg, source
    if any(a is None for a in study_args):
        raise ConfigError("give --settings, or --config with --dataset, --method and --seed")
    source = _source(args.config, args.set)
    cfg = apply_overrides(load_yaml(args.config), args.set or [])
    check_study(cfg, source)
    return run_config(cfg, args.dataset, args.method, args.seed), source


def _train(args: argparse.Namespace, run_cfg: dict, t0: float, summary_file: str, wrap=None):
    """Train a run with checked settings ``run_cfg`` into ``--out``: its record (run.json)
    first, then the trainer's files and ``summary_file``. ``wrap(method)`` makes what trains
    from the built method (fine-tuning: the pretrained weights and the loss) and returns it
    with extra summary fields."""
    from comm_repro.data.registry import family
    from comm_repro.methods import build_method
    from comm_repro.provenance import provenance
    from comm_repro.train import RUN_RECORD, pretrain, resolve_compute, seed_everything

    device, precision = resolve_compute(run_cfg["train"], _device(args))
    data = family(run_cfg["dataset"]["family"]).pretrain_data(Path(args.data), run_cfg["dataset"])
    seed_everything(run_cfg["seed"])
    method = build_method(run_cfg, data.sample_shapes(), _label_shapes(data))
    model, extra = wrap(method) if wrap else (method, {})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    compute = {"device": str(device), "precision": precision}
    write_json(out / RUN_RECORD, {**run_cfg, "compute": compute})  # before training
    summary = pretrain(model, data, run_cfg, out, device, precision, progress=not args.quiet)
    write_json(
        out / summary_file,
        {
            "seed": run_cfg["seed"],
            "config": run_cfg,
            **extra,
            "summary": summary,
            "n_train_samples": len(data),
            "wall_s": round(time.perf_counter() - t0, 2),
            **provenance(device),
        },
    )


def cmd_pretrain(args: argparse.Namespace) -> int:
    _setup_compute(args.threads)
    t0 = time.perf_counter()
    run_cfg, source = _pretrain_settings(args)
    check_run(run_cfg, source=source)
    _train(args, with_task_defaults(run_cfg), t0, "pretrain.json")
    return 0


def _label_shapes(data) -> dict[str, tuple[int, ...]]:
    """Each label array's sample shape in a training bank (methods that train with labels are
    sized by them)."""
    return {name: tuple(labels.shape[1:]) for name, labels in data.labels.items()}


def _run_files(run: Path, snapshot: int | None = None) -> tuple[dict, dict, dict]:
    """A trained run's record (run.json, without its compute), compute, and model weights
    with what model.pt (or the snapshot after epoch ``snapshot``) says of them; errors say how
    to make or rewrite them (with `pretrain`, or `finetune` for a fine-tuned run)."""
    from comm_repro.train import MODEL, RUN_RECORD, load_torch_file, snapshot_path

    model_path, record_path = run / MODEL, run / RUN_RECORD
    if snapshot is not None:
        model_path = snapshot_path(run, snapshot)
        if record_path.exists() and not model_path.exists():
            every = load_json(record_path).get("train", {}).get("snapshot_every")
            raise ConfigError(
                f"{model_path} not found: the run keeps snapshots "
                + (f"every {every} epochs" if every else "only with train.snapshot_every set")
                + f"; pretrain it with the snapshots wanted (`comm-repro pretrain ... --out {run}`)"
            )
    step = "finetune" if run.name == "finetune" else "pretrain"
    for path in (record_path, model_path):
        if not path.exists():
            raise ConfigError(f"{path} not found: run `comm-repro {step} ... --out {run}` first")
    record = load_json(record_path)
    step = "finetune" if record.get("stage") == "finetune" else "pretrain"
    compute = record.pop("compute", {})
    try:
        saved = load_torch_file(model_path)
        weights = saved["model"]
    except (CheckpointError, KeyError) as err:
        raise CheckpointError(
            f"{model_path} is unusable ({err}): write it again from the run's checkpoint with "
            f"`snakemake {model_path} --forcerun {step}` or the run's `comm-repro {step}` command"
        ) from None
    return record, compute, {"weights": weights, **saved}


def cmd_finetune(args: argparse.Namespace) -> int:
    from comm_repro.config import finetune_run
    from comm_repro.finetune import DEFAULT_TEMPERATURE, FineTune, fine_tune_task
    from comm_repro.train import RUN_RECORD, state_digest

    _setup_compute(args.threads)
    t0 = time.perf_counter()
    run = Path(args.run)
    record, _, saved = _run_files(run)
    if record.get("stage") == "finetune":
        raise ConfigError(f"{run} is a fine-tuned run: give the pretrained run it started from")
    finetune = record.get("finetune") or {}
    source = str(run / RUN_RECORD)
    if args.settings is not None:
        settings = load_yaml(args.settings)
        check(settings, "finetune_settings", str(args.settings))
        finetune, source = settings["finetune"], f"{source} and {args.settings}"
    run_cfg = finetune_run(record, finetune)
    run_cfg["finetune_of"] = {"model": state_digest(saved["weights"])}
    run_cfg = apply_overrides(run_cfg, args.set or [])
    check_run(run_cfg, source=_source(source, args.set))
    run_cfg = with_task_defaults(run_cfg)

    def wrap(method):
        method.load_state_dict(saved["weights"])
        task = fine_tune_task(method.targets, run_cfg["finetune"].get("task"))
        temperature = run_cfg["finetune"].get("temperature", DEFAULT_TEMPERATURE)
        return FineTune(method, task, temperature), {"task": task["name"]}

    _train(args, run_cfg, t0, "finetune.json", wrap)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from comm_repro.data.registry import family
    from comm_repro.evaluate import probe_all
    from comm_repro.methods import build_method
    from comm_repro.provenance import provenance
    from comm_repro.train import RUN_RECORD, resolve_compute

    _setup_compute(args.threads)
    t0 = time.perf_counter()
    run = Path(args.run)
    record, compute, saved = _run_files(run, args.snapshot)
    run_cfg, source = record, str(run / RUN_RECORD)
    if args.settings is not None:
        probe_settings = load_yaml(args.settings)
        check(probe_settings, "probe_settings", str(args.settings))
        run_cfg = {**run_cfg, "probe": probe_settings["probe"]}
        source += f" and {args.settings}"
    run_cfg = apply_overrides(run_cfg, args.set or [])
    check_run(run_cfg, probe=True, source=_source(source, args.set))
    run_cfg = with_task_defaults(run_cfg)
    weights = saved["weights"]
    pretrained = {"precision": saved.get("precision"), "cpu": saved.get("cpu")}
    # Features in the run's precision setting, resolved for the device this job has.
    device, precision = resolve_compute(run_cfg["train"], _device(args))
    dataset = run_cfg["dataset"]
    data = family(dataset["family"]).probe_data(Path(args.data), dataset, run_cfg["probe"])
    shapes, built_from = data.train.sample_shapes(), run_cfg
    if args.features:
        from comm_repro.features import use_features, with_given_encoders

        for folder in args.features:
            use_features(data, run_cfg, Path(folder), Path(args.data))
        built_from = with_given_encoders(run_cfg, data)
    label_shapes = {
        t["labels"]: tuple(data.train_labels[t["name"]].shape[1:]) for t in dataset["tasks"]
    }
    method = build_method(built_from, shapes, label_shapes)
    method.load_state_dict(weights)
    method.to(device)
    result = probe_all(
        method,
        data,
        run_cfg["probe"],
        dataset["tasks"],
        device,
        seed=int(run_cfg["seed"]),
        precision=precision,
        progress=not args.quiet,
        modalities=[m["name"] for m in dataset["modalities"]],
    )
    result.update(
        seed=run_cfg["seed"],
        config=run_cfg,
        precision=precision,
        pretrained={**pretrained, "compute": compute},
        **(
            {"snapshot": {k: saved[k] for k in ("epoch", "step")}}
            if args.snapshot is not None
            else {}
        ),
        wall_s=round(time.perf_counter() - t0, 2),
        **provenance(device),
    )
    write_json(args.out, result)
    summary = ", ".join(
        f"{t} {m['metric']} {m[m['metric']]:.3f}" for t, m in result["tasks"].items()
    )
    print(f"{summary} -> {args.out}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from comm_repro.features import compute
    from comm_repro.train import resolve_compute

    _setup_compute(args.threads)
    t0 = time.perf_counter()
    settings = load_yaml(args.settings)
    check(settings, "feature_settings", str(args.settings))
    device, precision = resolve_compute(settings["train"], _device(args))
    manifest = compute(
        settings,
        Path(args.data),
        Path(args.out),
        device,
        precision,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    print(
        f"{settings['modality']} features of {counts} samples ({precision}, {device}) -> "
        f"{args.out} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def cmd_complexity(args: argparse.Namespace) -> int:
    from comm_repro.complexity import run_complexity
    from comm_repro.provenance import provenance
    from comm_repro.train import resolve_compute

    _setup_compute(args.threads)
    run_cfg, source = _pretrain_settings(args)
    check_run(run_cfg, source=source)
    run_cfg = with_task_defaults(run_cfg)
    device, precision = resolve_compute(run_cfg["train"], _device(args))
    measured = run_complexity(
        run_cfg, Path(args.data), device, precision, args.batch_size, args.repeats
    )
    result = {
        "dataset": run_cfg["dataset"]["name"],
        "method": run_cfg["method"]["name"],
        **measured,
        **provenance(device),
    }
    write_json(args.out, result)
    print(
        f"{result['dataset']} {result['method']}: {measured['flops'] / 1e9:.1f} GFLOPs, "
        f"{measured['params'] / 1e6:.1f} M parameters, {measured['latency_s'] * 1e3:.0f} ms per "
        f"batch of {measured['batch_size']} ({precision}, {device}) -> {args.out}"
    )
    return 0


def cmd_complexity_table(args: argparse.Namespace) -> int:
    from comm_repro import report

    spec = report.load_complexity_spec(args.spec)
    table = report.build_complexity_table(spec, [load_json(p) for p in args.results])
    paths = report.write_complexity_table(table, spec, args.out)
    print(" ".join(map(str, paths)))
    return 0


def cmd_subsets(args: argparse.Namespace) -> int:
    from comm_repro import report

    table = report.subset_table(report.load_subset_probes(args.probes))
    figure = args.figure or args.out
    paths = report.write_subset_table(table, args.out) + report.plot_subsets(table, figure)
    print(" ".join(map(str, paths)))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from comm_repro import report

    spec = report.load_spec(args.spec, args.columns)
    table = report.build_table(spec, report.load_probes(args.probes), args.methods)
    paths = report.write_table(table, spec, args.out)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    from comm_repro import report

    spec = report.load_spec(args.spec, args.columns)
    table = report.snapshot_table(spec, args.probes, args.methods)
    paths = report.write_snapshot_table(table, spec, args.out)
    paths += report.plot_snapshots(table, spec, args.figure or args.out)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    import pandas as pd

    from comm_repro import report

    needed = {
        "table": (("--spec", args.spec), ("--table", args.table)),
        "curves": (("--runs", args.runs),),
    }[args.figure]
    missing = [option for option, value in needed if not value]
    if missing:
        raise ConfigError(f"comm-repro figure {args.figure} needs {' and '.join(missing)}")
    if args.figure == "table":
        spec = report.load_spec(args.spec, args.columns)
        paths = report.plot_table(pd.read_csv(args.table), spec, args.out)
    else:
        paths = report.plot_curves(report.load_logs(args.runs), args.out)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from comm_repro import report

    tables: dict[str, Path] = {}
    for item in args.tables or []:
        name, sep, path = item.partition("=")
        if not (sep and name and path):
            raise ConfigError(f"--tables {item!r}: give NAME=PATH.csv (an experiment's table)")
        if name in tables:
            raise ConfigError(f"--tables: {name!r} is given twice")
        tables[name] = Path(path)
    print(f"wrote {report.write_index(args.reports, args.out, tables)}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comm-repro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="generate or download and prepare a dataset")
    p.add_argument(
        "dataset",
        help="a dataset family: trifeatures (generated), mosi, humor, sarcasm (a raw pickle, "
        "converted), mimic (im.pk, which you supply), vision_touch (the triangle_real_data "
        "folder or zip), mmimdb (the mmimdb folder or tarball), or package.module:attribute "
        "of one of your own",
    )
    p.add_argument("--out", required=True, type=Path, help="directory for the prepared files")
    p.add_argument(
        "--option",
        nargs="*",
        metavar="KEY=VALUE",
        help="preparation options (a dataset's prepare: section), e.g. generator_seed=42",
    )
    p.add_argument("--seed", type=int, help="trifeatures: generator seed (default and paper: 42)")
    p.add_argument(
        "--num-per-combination", type=int, help="trifeatures: train images per combo (default 3)"
    )
    p.add_argument(
        "--source",
        type=Path,
        help="the raw file, one you already have (read in place; datasets.<name>.source); "
        "vision_touch: the unzipped triangle_real_data folder, or the zip; mmimdb: the "
        "unpacked mmimdb folder, or mmimdb.tar.gz",
    )
    p.add_argument(
        "--download-to",
        type=str,
        help="affect, vision_touch, mmimdb: where the raw file is looked for, and downloaded to if "
        "absent (a file, or a directory for the authors' file name; default "
        "data/raw/<dataset>/<file> in the repository, or $COMM_REPRO_RAW_DIR/<dataset>/<file>)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining of one (dataset, method, seed)"
    )
    _add_run_selection(p)
    p.add_argument("--out", required=True, type=Path, help="run directory (resumes if present)")
    _add_runtime_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "finetune", help="supervised fine-tuning of a pretrained CoMM run (a copy beside it)"
    )
    p.add_argument("--run", required=True, type=Path, help="the pretrained run directory")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset directory")
    p.add_argument(
        "--out", required=True, type=Path, help="its own run directory (resumes if present)"
    )
    p.add_argument(
        "--settings",
        type=Path,
        help="fine-tuning settings replacing the run's finetune section (the workflow's "
        "finetune_settings.yaml)",
    )
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. train.epochs=5")
    _add_runtime_options(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("probe", help="linear probes on frozen features of a pretrained run")
    p.add_argument("--run", required=True, type=Path, help="run directory (run.json, model.pt)")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset directory")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    p.add_argument(
        "--settings",
        type=Path,
        help="probe settings replacing the run's probe section (the workflow's "
        "probe_settings.yaml)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        metavar="KEY=VALUE",
        help="override the run's settings, e.g. probe.max_iter=100 probe.max_train_samples=1000",
    )
    p.add_argument(
        "--features",
        nargs="+",
        type=Path,
        help="folders of frozen encoders' probe features (of `comm-repro features`), used in "
        "place of running those encoders",
    )
    p.add_argument(
        "--snapshot",
        type=int,
        metavar="EPOCH",
        help="probe the run's snapshot after this epoch (train.snapshot_every) instead of model.pt",
    )
    _add_runtime_options(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "features", help="a frozen encoder's probe-time outputs, once for every run's probes"
    )
    p.add_argument(
        "--settings",
        required=True,
        type=Path,
        help="the modality's feature settings (the workflow's features settings.yaml)",
    )
    p.add_argument("--data", required=True, type=Path, help="prepared dataset directory")
    p.add_argument("--out", required=True, type=Path, help="folder for the features")
    p.add_argument("--batch-size", type=int, default=64, help="samples per encoder pass")
    _add_runtime_options(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser(
        "complexity", help="FLOPs, parameters and forward latency of a run's model (Table 8)"
    )
    _add_run_selection(p)
    p.add_argument("--out", required=True, type=Path, help="JSON to write")
    p.add_argument("--batch-size", type=int, default=64, help="samples per timed forward pass")
    p.add_argument("--repeats", type=int, default=5, help="timed passes after one warm-up")
    _add_runtime_options(p)
    p.set_defaults(func=cmd_complexity)

    p = sub.add_parser("complexity-table", help="a complexity table from measurements")
    p.add_argument("--spec", required=True, type=Path, help="e.g. config/tables/table8.yaml")
    p.add_argument("--results", required=True, nargs="+", type=Path, help="complexity JSONs")
    p.add_argument("--out", required=True, type=Path, help="output prefix (.csv, .md)")
    p.set_defaults(func=cmd_complexity_table)

    p = sub.add_parser("subsets", help="what each modality's features know: a table and a heat map")
    p.add_argument(
        "--probes", required=True, nargs="+", type=Path, help="probe.json files (probe.subsets)"
    )
    p.add_argument("--out", required=True, type=Path, help="output prefix (.csv, .md)")
    p.add_argument("--figure", type=Path, help="the heat map's prefix (.png, .pdf; default --out)")
    p.set_defaults(func=cmd_subsets)

    p = sub.add_parser("table", help="aggregate probe results into a paper table")
    p.add_argument(
        "--spec", required=True, type=Path, help="the table's spec, e.g. config/tables/*.yaml"
    )
    p.add_argument("--probes", required=True, nargs="+", type=Path, help="probe.json files")
    p.add_argument(
        "--methods", required=True, nargs="+", help="method keys (their rows in the spec's order)"
    )
    p.add_argument("--columns", nargs="+", help="the spec's columns to show (default all)")
    p.add_argument("--out", required=True, type=Path, help="output prefix (.csv, .md, .tex)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser(
        "snapshots", help="a table's columns during training: its runs' snapshot probes"
    )
    p.add_argument("--spec", required=True, type=Path, help="the table's spec")
    p.add_argument(
        "--probes", required=True, nargs="+", type=Path, help="probes of `probe --snapshot`"
    )
    p.add_argument("--methods", required=True, nargs="+", help="method keys")
    p.add_argument("--columns", nargs="+", help="the spec's columns to show (default all)")
    p.add_argument("--out", required=True, type=Path, help="output prefix (.csv, .md)")
    p.add_argument("--figure", type=Path, help="the figure's prefix (.png, .pdf; default --out)")
    p.set_defaults(func=cmd_snapshots)

    p = sub.add_parser("figure", help="draw a figure from a table or from training logs")
    p.add_argument("figure", choices=["table", "curves"], help="which figure")
    p.add_argument("--spec", type=Path, help="table: the table's spec")
    p.add_argument("--table", type=Path, help="table: the table's .csv (of `comm-repro table`)")
    p.add_argument("--columns", nargs="+", help="table: the spec's columns shown (default all)")
    p.add_argument("--runs", nargs="+", type=Path, help="curves: run directories")
    p.add_argument("--out", required=True, type=Path, help="output prefix (.png, .pdf)")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("index", help="an HTML page: the reproduction scorecard, report links")
    p.add_argument("--reports", nargs="*", default=[], type=Path, help="report .html files")
    p.add_argument(
        "--tables",
        nargs="+",
        metavar="NAME=PATH.csv",
        help="experiments' tables (of `comm-repro table`) for the scorecard",
    )
    p.add_argument("--out", required=True, type=Path, help="index .html to write")
    p.set_defaults(func=cmd_index)
    return parser


def _add_run_selection(p: argparse.ArgumentParser) -> None:
    """Which run (its settings file, or a study config and its dataset, method and seed; see
    ``_pretrain_settings``), overrides, and its prepared data."""
    p.add_argument(
        "--settings", type=Path, help="the run's resolved settings (the workflow's settings.yaml)"
    )
    p.add_argument("--config", type=Path, help="or: a study config YAML, with the three below")
    p.add_argument("--dataset", help="a key of datasets: in the study config")
    p.add_argument("--method", help="a key of methods: in the study config")
    p.add_argument("--seed", type=int)
    p.add_argument("--data", required=True, type=Path, help="prepared dataset directory")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. train.epochs=5")


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: the config's train.device)")
    p.add_argument(
        "--gpu-lock-dir",
        type=Path,
        help="claim a free GPU through lock files in this directory (one device per job)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop (as on Ctrl-C) when the parent process dies; the workflow's jobs use it",
    )


def main(argv: list[str] | None = None) -> int:
    """Expected failures print one line on stderr and exit with 2; an interrupt (Ctrl-C,
    SIGTERM) prints where it stopped and exits with 130. Tracebacks are left to real bugs."""
    parent = os.getppid()  # before the slow imports (torch) that the commands do
    args = make_parser().parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if getattr(args, "exit_with_parent", False):
            _exit_with_parent(parent)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # scancel, kill, parent death
        return args.func(args)
    except TrainingInterrupted as err:
        print(f"comm-repro {args.command}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"comm-repro {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError) as err:
        print(f"comm-repro {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
