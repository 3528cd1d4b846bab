"""`comm-repro` command line: the steps the workflow runs, usable on their own.

comm-repro prepare trifeatures --out DIR
comm-repro prepare mosi|humor|sarcasm [--source FILE | --download-to PATH] --out DIR
comm-repro pretrain --config CFG --dataset NAME --method NAME --seed S --data DIR --out RUN_DIR
comm-repro probe --run RUN_DIR --data DIR --out probe.json
comm-repro table --spec SPEC.yaml --probes P.json ... --methods M ... --out PREFIX
comm-repro figure table --spec SPEC.yaml --table PREFIX.csv --out PREFIX
comm-repro figure curves --runs RUN_DIR ... --out PREFIX
comm-repro index --reports R.html ... [--tables NAME=PATH.csv ...] --out index.html
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from comm_repro.atomic import write_json
from comm_repro.config import (
    ConfigError,
    apply_overrides,
    check_run,
    check_study,
    load_yaml,
    run_config,
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


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.dataset != "trifeatures":
        return _prepare_affect(args)
    for option, value in (("--source", args.source), ("--download-to", args.download_to)):
        if value is not None:
            raise UserError(f"{option} does not apply to trifeatures: the stimuli are generated")
    from comm_repro.data import trifeatures as tf

    t0 = time.perf_counter()
    splits = tf.generate(
        seed=args.seed, num_per_combination=args.num_per_combination, progress=not args.quiet
    )
    tf.save_splits(splits, args.out, seed=args.seed, num_per_combination=args.num_per_combination)
    counts = ", ".join(f"{k} {len(v.images)}" for k, v in splits.items())
    print(f"wrote {counts} images to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _prepare_affect(args: argparse.Namespace) -> int:
    """A MultiBench affect dataset: the raw pickle (given, found or downloaded), converted once;
    a raw file with another digest than the known one is prepared with a warning line."""
    from comm_repro.data import multibench

    if args.source is not None and args.download_to is not None:
        raise UserError("give --source (a file you have) or --download-to, not both")
    t0 = time.perf_counter()
    raw = multibench.obtain_raw(
        args.dataset, source=args.source, download_to=args.download_to, progress=not args.quiet
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", multibench.RawDigestWarning)
        try:
            manifest = multibench.prepare(args.dataset, raw, args.out, progress=not args.quiet)
        finally:
            for w in caught:
                if issubclass(w.category, multibench.RawDigestWarning):
                    print(f"comm-repro prepare: warning: {w.message}", file=sys.stderr)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    counts = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    print(
        f"wrote {counts} samples of {args.dataset} from {raw} to {args.out} in "
        f"{time.perf_counter() - t0:.1f} s (dropped {manifest['dropped_samples']} with all-zero "
        f"text, set {manifest['non_finite_replaced']} non-finite values to 0)"
    )
    return 0


def build_for_run(run_cfg: dict):
    """The method of a run, with its view transforms, built from the run's resolved settings."""
    from comm_repro.augment import image_view_transforms
    from comm_repro.data.registry import family
    from comm_repro.methods import build_method

    kinds = family(run_cfg["dataset"])["modalities"]
    size = int(run_cfg["dataset"]["resolution"])
    aug = run_cfg["augment"]
    if set(kinds) != {"image"}:
        raise ConfigError(f"only image modalities have view transforms so far, got {kinds}")
    transforms = [image_view_transforms(size, aug["strong"], aug["weak"]) for _ in kinds]
    method_cfg = {**run_cfg["model"], **run_cfg["method"]}
    return build_method(run_cfg["method"]["kind"], method_cfg, transforms)


def _source(config: object, overrides: list[str] | None) -> str:
    """Where a config came from, for error messages: the file, and whether --set changed it."""
    return f"{config}{' with --set' if overrides else ''}"


def cmd_pretrain(args: argparse.Namespace) -> int:
    from comm_repro.data.registry import family
    from comm_repro.provenance import provenance
    from comm_repro.train import pretrain, resolve_device, seed_everything

    _setup_compute(args.threads)
    cfg = apply_overrides(load_yaml(args.config), args.set or [])
    source = _source(args.config, args.set)
    check_study(cfg, source)
    run_cfg = run_config(cfg, args.dataset, args.method, args.seed)
    if args.device:
        run_cfg["train"]["device"] = args.device
    check_run(run_cfg, source=source + (", --device" if args.device else ""))
    device = _device(args)
    if device:
        run_cfg["train"]["device"] = device
    t0 = time.perf_counter()
    data = family(run_cfg["dataset"])["pretrain"](Path(args.data), run_cfg["dataset"])
    seed_everything(args.seed)
    method = build_for_run(run_cfg)
    summary = pretrain(method, data, run_cfg, args.out, progress=not args.quiet)
    device = resolve_device(run_cfg["train"].get("device", "auto"))
    write_json(
        Path(args.out) / "pretrain.json",
        {
            "seed": args.seed,
            "config": run_cfg,
            "summary": summary,
            "n_train_samples": len(data),
            "wall_s": round(time.perf_counter() - t0, 2),
            **provenance(device),
        },
    )
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from comm_repro.data.registry import family
    from comm_repro.evaluate import probe_all
    from comm_repro.provenance import provenance
    from comm_repro.train import MODEL, load_torch_file, resolve_device, resolve_precision

    _setup_compute(args.threads)
    t0 = time.perf_counter()
    model_path = Path(args.run) / MODEL
    if not model_path.exists():
        raise ConfigError(
            f"{model_path} not found: run `comm-repro pretrain ... --out {args.run}` first"
        )
    try:
        saved = load_torch_file(model_path)
        run_cfg = saved["config"]
        pretrained = {"precision": saved.get("precision"), "cpu": saved.get("cpu")}
    except (CheckpointError, KeyError) as err:
        raise CheckpointError(
            f"{model_path} is unusable ({err}): write it again from the run's checkpoint with "
            f"`snakemake {model_path} --forcerun pretrain` or the run's `comm-repro pretrain` "
            "command"
        ) from None
    run_cfg = apply_overrides(run_cfg, args.set or [])
    checked = run_cfg
    if args.device:  # checked, not stored: probe.json keeps the run's settings
        checked = {**run_cfg, "train": {**run_cfg["train"], "device": args.device}}
    source = _source(f"the settings in {model_path}", args.set) + (
        ", --device" if args.device else ""
    )
    check_run(checked, probe=True, source=source)
    device = resolve_device(_device(args) or run_cfg["train"].get("device", "auto"))
    method = build_for_run(run_cfg)
    method.load_state_dict(saved["model"])
    method.to(device)
    data = family(run_cfg["dataset"])["probe"](Path(args.data), run_cfg["dataset"])
    result = probe_all(
        method,
        data,
        run_cfg["probe"],
        device,
        seed=int(run_cfg["seed"]),
        precision=run_cfg["train"].get("precision", "auto"),
        progress=not args.quiet,
    )
    result.update(
        seed=run_cfg["seed"],
        config=run_cfg,
        precision=resolve_precision(device, run_cfg["train"].get("precision", "auto")),
        pretrained=pretrained,
        wall_s=round(time.perf_counter() - t0, 2),
        **provenance(device),
    )
    write_json(args.out, result)
    summary = ", ".join(f"{t} {m['balanced_accuracy']:.3f}" for t, m in result["tasks"].items())
    print(f"balanced accuracy: {summary} -> {args.out}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from comm_repro import report

    spec = report.load_spec(args.spec)
    table = report.build_table(spec, report.load_probes(args.probes), args.methods)
    paths = report.write_table(table, spec, args.out)
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
        spec = report.load_spec(args.spec)
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
        choices=["trifeatures", "mosi", "humor", "sarcasm"],
        help="trifeatures (generated) or a MultiBench affect dataset (a raw pickle, converted)",
    )
    p.add_argument("--out", required=True, type=Path, help="directory for the prepared files")
    p.add_argument("--seed", type=int, default=42, help="trifeatures: generator seed (paper: 42)")
    p.add_argument(
        "--num-per-combination", type=int, default=3, help="trifeatures: train images per combo"
    )
    p.add_argument(
        "--source",
        type=Path,
        help="affect: the authors' pickle, a file you already have (read in place)",
    )
    p.add_argument(
        "--download-to",
        type=str,
        help="affect: where the raw pickle is looked for, and downloaded to if absent (a file, "
        "or a directory for the authors' file name; default data/raw/<dataset>/<file> in the "
        "repository, or $COMM_REPRO_RAW_DIR/<dataset>/<file>)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining of one (dataset, method, seed)"
    )
    p.add_argument("--config", required=True, type=Path, help="study config YAML")
    p.add_argument("--dataset", required=True, help="a key of datasets: in the config")
    p.add_argument("--method", required=True, help="a key of methods: in the config")
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--data", required=True, type=Path, help="prepared dataset directory")
    p.add_argument("--out", required=True, type=Path, help="run directory (resumes if present)")
    p.add_argument(
        "--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=5"
    )
    _add_runtime_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("probe", help="linear probes on frozen features of a pretrained run")
    p.add_argument("--run", required=True, type=Path, help="run directory holding model.pt")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset directory")
    p.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    p.add_argument(
        "--set",
        nargs="*",
        metavar="KEY=VALUE",
        help="override the run's settings, e.g. probe.max_iter=100 dataset.probe_train_pairs=10000",
    )
    _add_runtime_options(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("table", help="aggregate probe results into a paper table")
    p.add_argument(
        "--spec", required=True, type=Path, help="the table's spec, e.g. config/tables/*.yaml"
    )
    p.add_argument("--probes", required=True, nargs="+", type=Path, help="probe.json files")
    p.add_argument("--methods", required=True, nargs="+", help="method keys, in table order")
    p.add_argument("--out", required=True, type=Path, help="output prefix (.csv, .md, .tex)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("figure", help="draw a figure from a table or from training logs")
    p.add_argument("figure", choices=["table", "curves"], help="which figure")
    p.add_argument("--spec", type=Path, help="table: the table's spec")
    p.add_argument("--table", type=Path, help="table: the table's .csv (of `comm-repro table`)")
    p.add_argument("--runs", nargs="+", type=Path, help="curves: run directories")
    p.add_argument("--out", required=True, type=Path, help="output prefix (.png, .pdf)")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("index", help="an HTML page: the reproduction scorecard, report links")
    p.add_argument("--reports", required=True, nargs="+", type=Path, help="report .html files")
    p.add_argument(
        "--tables",
        nargs="+",
        metavar="NAME=PATH.csv",
        help="experiments' tables (of `comm-repro table`) for the scorecard",
    )
    p.add_argument("--out", required=True, type=Path, help="index .html to write")
    p.set_defaults(func=cmd_index)
    return parser


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
