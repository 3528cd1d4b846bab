"""One training loop for every method: the method's optimisers and step, an optional learning-rate
schedule, checkpoint each epoch, resume, NaN guard, CSV log.

Reading order: ``pretrain`` sets up (device, optimisers, resume), then loops over epochs; each epoch
draws its own permutation from (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted run would; the checkpoint holds every optimiser's state and every RNG state for
the augmentations. The learning-rate schedule is a function of the step alone, so it needs no state.

What a rerun does is decided by the run's *fingerprint*: a digest of every setting that changes
the trained weights (method, model, train but its device, augment, seed, resolved precision) and
of the training data itself. A checkpoint with the same fingerprint is resumed, or, when it is at
the last epoch, the run's outputs are written again from it without training. A checkpoint with
another fingerprint is kept as ``checkpoint.<its fingerprint>.pt`` (its snapshots as
``snapshots.<its fingerprint>/``) and training starts afresh; a later run with those settings
resumes from it, snapshots and all. A checkpoint that cannot be read as plain tensors
and data (truncated, or holding other Python objects) is never executed: it is moved aside as
``checkpoint.unreadable*.pt`` and training restarts.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import time
import warnings
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from comm_repro.atomic import atomic_path
from comm_repro.config import snapshot_epochs
from comm_repro.data.paired import PairedBank, hash_tensor
from comm_repro.errors import CheckpointError, TrainingInterrupted, UserError
from comm_repro.methods.base import NonFiniteLoss
from comm_repro.provenance import cpu_info

RUN_RECORD = "run.json"  # a run's resolved settings and compute, written before it trains
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOG = "train_log.csv"
SNAPSHOTS = "snapshots"  # the model every train.snapshot_every epochs, for probing in training


# Settings that say where and how fast a run computes, not what it learns.
RUNTIME_KEYS = ("device", "channels_last")


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or infinite; the message names epoch and step."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto", where: str = "train.device") -> torch.device:
    """The device ``name`` means here; ``where`` says where it was given, for the errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", str(name)):
        raise UserError(f"{where} is {name!r}, not one of auto, cpu, cuda, cuda:N")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{where} is {name!r} but CUDA is not available on this machine")
    return device


def resolve_compute(train: dict[str, Any], device: str | None = None) -> tuple[torch.device, str]:
    """Where and in which precision a job computes: ``device`` (the command line's, or the GPU
    the job claimed) else ``train.device``, and ``train.precision`` resolved for that device.
    The one place a run's device and precision are decided."""
    if device:
        resolved = resolve_device(device, "--device")
    else:
        resolved = resolve_device(train.get("device", "auto"))
    return resolved, resolve_precision(resolved, train.get("precision", "auto"))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 autocast is
    emulated and slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["features"]))


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """'bf16' or 'fp32'. 'auto' means bf16 on CUDA and on CPUs with native bf16, fp32 on other
    CPUs."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return "bf16" if native else "fp32"


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast where ``precision`` (resolved by ``resolve_precision``) asks for it."""
    if resolve_precision(device, precision) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def training_settings(run_cfg: dict[str, Any], precision: str) -> dict[str, Any]:
    """The settings that decide a run's weights, given the training data: of the dataset only
    its modalities' encoders and augmentations, since the data digest stands for the rest (and
    its probe-only keys do not matter)."""
    train = {k: v for k, v in run_cfg["train"].items() if k not in RUNTIME_KEYS}
    train["precision"] = precision
    sections = {k: run_cfg[k] for k in ("method", "model") if k in run_cfg}
    if run_cfg.get("stage") == "finetune":  # and what it starts from
        sections |= {k: run_cfg[k] for k in ("stage", "finetune", "finetune_of")}
    modalities = run_cfg.get("dataset", {}).get("modalities", [])
    return {**sections, "modalities": modalities, "train": train, "seed": int(run_cfg["seed"])}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, shapes, dtypes and values."""
    h = hashlib.sha256()
    for name in sorted(state):
        hash_tensor(h, state[name], name)
    return h.hexdigest()


def fingerprint(settings: dict[str, Any], data_digest: str) -> str:
    blob = json.dumps({"settings": settings, "data": data_digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'train.epochs 5 -> 10, ...' for the dotted keys whose values differ."""
    a, b = _flat(old), _flat(new)
    changed = [
        f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)
    ]
    return ", ".join(changed)


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain values, so that a checkpoint loads with
    ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_torch_file(path: Path) -> dict[str, Any]:
    """A checkpoint or model file, read with PyTorch's restricted unpickler: tensors and plain
    data only, so that nothing in the file is ever executed. Raises CheckpointError with a
    one-line reason."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable or refused files
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
        reason = reason[:200] or type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable file of tensors and plain data ({reason})"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping, found {type(data).__name__}")
    return data


def lr_factor(train: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """The learning rate of global ``step`` (from 0) relative to ``train.lr``: 1 throughout
    (``schedule: constant``, the default), or ``warmup_cosine``: linear warm-up over
    ``warmup_epochs``, then a cosine decay to 0 at the last step."""
    schedule = train.get("schedule", "constant")
    if schedule == "constant":
        return 1.0
    if schedule != "warmup_cosine":
        raise UserError(f"train.schedule is {schedule!r}, not constant or warmup_cosine")
    total = int(train["epochs"]) * steps_per_epoch
    warmup = min(int(train.get("warmup_epochs", 0)) * steps_per_epoch, total)
    if step < warmup:
        return (step + 1) / warmup
    decay = max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, decay) / decay))


def _set_lr(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> None:
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor


def _aside(path: Path, tag: str) -> Path:
    """``checkpoint.<tag>.pt`` beside ``path``, numbered when that name is taken."""
    target, n = path.with_name(f"{path.stem}.{tag}{path.suffix}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.stem}.{tag}-{n}{path.suffix}")
    return target


def _say(message: str) -> None:
    """A line on stderr that does not break the progress bars."""
    tqdm.write(message, file=sys.stderr)


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_log(rows: list[dict[str, Any]], path: Path) -> None:
    """The epochs' rows as CSV (a header of epoch and loss when nothing trained)."""
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["epoch", "loss"]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _load_checkpoint(
    path: Path, run_fingerprint: str, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start afresh (see the module docstring)."""
    if path.exists():
        try:
            ckpt = load_torch_file(path)
            if not {"model", "rng", "epoch", "history", "fingerprint"} <= set(ckpt) or not (
                {"optimizer", "optimizers"} & set(ckpt)
            ):
                raise CheckpointError(f"{path}: not a checkpoint of this program (missing keys)")
        except CheckpointError as err:
            aside = _aside(path, "unreadable")
            os.replace(path, aside)
            _say(f"{err}; nothing of it was run. Moved to {aside.name}; training restarts")
            ckpt = None
        if ckpt is not None and ckpt["fingerprint"] == run_fingerprint:
            return ckpt
        if ckpt is not None:
            kept = path.with_name(f"{path.stem}.{ckpt['fingerprint']}{path.suffix}")
            os.replace(path, kept)
            _move_snapshots(path.parent / SNAPSHOTS, _kept_snapshots(path, ckpt["fingerprint"]))
            changed = settings_diff(ckpt.get("settings", {}), settings) or "the training data"
            _say(f"{path.name} was trained with other settings ({changed}); kept as {kept.name}")
    earlier = path.with_name(f"{path.stem}.{run_fingerprint}{path.suffix}")
    if earlier.exists():
        os.replace(earlier, path)
        _move_snapshots(_kept_snapshots(path, run_fingerprint), path.parent / SNAPSHOTS)
        _say(f"{earlier.name} was trained with these settings and data: resuming from it")
        return _load_checkpoint(path, run_fingerprint, settings)
    return None


def _kept_snapshots(checkpoint: Path, run_fingerprint: str) -> Path:
    """Where the snapshots of a checkpoint kept aside wait with it: ``snapshots.<fingerprint>``."""
    return checkpoint.parent / f"{SNAPSHOTS}.{run_fingerprint}"


def _move_snapshots(source: Path, target: Path) -> None:
    """Snapshots go with their checkpoint, so a run resumed from a kept checkpoint has the
    snapshots of its epochs. What ``target`` held belongs to no checkpoint: it goes."""
    if target.exists():
        shutil.rmtree(target)
    if source.exists():
        os.replace(source, target)


def snapshot_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"epoch{int(epoch):04d}.pt"


def _drop_snapshots_after(run_dir: Path, epoch: int) -> None:
    """Snapshots past ``epoch`` belong to an earlier training (other settings, or a run the
    checkpoint no longer reaches): this one writes its own."""
    for path in sorted((run_dir / SNAPSHOTS).glob("epoch*.pt")):
        if path.stem[5:].isdigit() and int(path.stem[5:]) > epoch:
            path.unlink()


def _model_record(method: torch.nn.Module, run_cfg: dict[str, Any], precision: str) -> dict:
    """What model.pt and each snapshot hold: the probed weights and how they were made."""
    # A method may probe with part of what it trains (fine-tuning drops its loss head).
    probed = getattr(method, "probed_model", method)
    return {
        "model": probed.state_dict(),
        "config": run_cfg,
        "precision": precision,
        "cpu": cpu_info(),
    }


def pretrain(
    method: torch.nn.Module,
    data: PairedBank,
    run_cfg: dict[str, Any],
    out_dir: str | Path,
    device: torch.device,
    precision: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` on ``device`` in ``precision`` (see ``resolve_compute``);
    resumable. Writes ``checkpoint.pt`` each epoch (and ``snapshots/epochNNNN.pt`` after each
    epoch of :func:`comm_repro.config.snapshot_epochs`), then ``train_log.csv`` and ``model.pt``
    (also when the checkpoint was already at the last epoch). Returns a summary (epochs, wall
    time, last row, device, precision, fingerprint, snapshot epochs)."""
    train = run_cfg["train"]
    epochs, batch_size = int(train["epochs"]), int(train["batch_size"])
    # A method whose every parameter is frozen (public weights) has nothing to train.
    trainable = any(p.requires_grad for p in method.parameters())
    if not trainable:
        epochs = 0
    if len(data) < batch_size:
        raise UserError(
            f"train.batch_size={batch_size} exceeds the {len(data)} training samples of "
            f"dataset {run_cfg.get('dataset', {}).get('name', '?')}: lower it"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = training_settings(run_cfg, precision)
    run_fingerprint = fingerprint(settings, data.digest())
    # channels_last speeds up the convolutions on CUDA and on oneDNN CPUs alike.
    channels_last = bool(train.get("channels_last", True))
    method.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    data = data.to(device)
    optimizers = method.optimizers(train) if trainable else {}
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]  # what the schedule scales (kept in its state)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt_path = out_dir / CHECKPOINT
    ckpt = _load_checkpoint(ckpt_path, run_fingerprint, settings)
    if ckpt is not None:
        method.load_state_dict(ckpt["model"])
        # Checkpoints of one-optimiser versions hold it as "optimizer".
        saved_states = ckpt.get("optimizers") or {"main": ckpt["optimizer"]}
        if set(saved_states) != set(optimizers):
            raise CheckpointError(
                f"{ckpt_path}: holds optimisers {sorted(saved_states)}, the method has "
                f"{sorted(optimizers)}; delete it to train afresh"
            )
        for name, optimizer in optimizers.items():
            initial = [group["initial_lr"] for group in optimizer.param_groups]
            optimizer.load_state_dict(saved_states[name])
            for group, lr in zip(optimizer.param_groups, initial):
                group["initial_lr"] = lr
        _set_rng_state(ckpt["rng"])
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        if start_epoch >= epochs:
            _say(f"{out_dir}: already trained ({epochs} epochs); outputs written again")
        else:
            _say(f"resuming {out_dir} after epoch {start_epoch}/{epochs}")
    if not trainable:
        _say(f"{out_dir}: the method's parameters are all frozen; nothing to train")

    steps = len(data) // batch_size  # drop the ragged batch: BatchNorm and InfoNCE want B >= 2
    snapshots = snapshot_epochs(train) if trainable else []
    _drop_snapshots_after(out_dir, start_epoch)
    started = time.perf_counter()
    epoch, saved = start_epoch, start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            row = _train_epoch(
                method, optimizers, data, run_cfg, epoch, steps, device, precision, progress
            )
            history.append(row)
            if epoch + 1 in snapshots:  # before the checkpoint: a resumed run has it already
                snapshot = snapshot_path(out_dir, epoch + 1)
                snapshot.parent.mkdir(exist_ok=True)
                record = _model_record(method, run_cfg, precision)
                save_atomic({**record, "epoch": epoch + 1, "step": (epoch + 1) * steps}, snapshot)
            save_atomic(
                {
                    "model": method.state_dict(),
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "rng": _rng_state(),
                    "epoch": epoch + 1,
                    "history": history,
                    "fingerprint": run_fingerprint,
                    "settings": settings,
                },
                ckpt_path,
            )
            saved = epoch + 1
            write_log(history, out_dir / LOG)
            if progress:
                _say(
                    f"epoch {epoch + 1}/{epochs} loss {row['loss']:.4f} "
                    f"ssl_acc {row.get('ssl_acc', float('nan')):.3f} "
                    f"{row['samples_per_s']:.1f} samples/s"
                )
    except KeyboardInterrupt:
        where = f"resumes from epoch {saved + 1}" if saved else "starts from epoch 1"
        raise TrainingInterrupted(
            f"interrupted in epoch {epoch + 1}/{epochs}; {ckpt_path} holds {saved} finished "
            f"epoch(s): rerunning the same command {where}"
        ) from None

    write_log(history, out_dir / LOG)
    save_atomic(_model_record(method, run_cfg, precision), out_dir / MODEL)
    return {
        "epochs": epochs,
        "steps_per_epoch": steps,
        "resumed_from_epoch": start_epoch,
        "wall_s_this_call": round(time.perf_counter() - started, 2),
        "train_s_total": round(sum(r["epoch_s"] for r in history), 2),
        "last_epoch": history[-1] if history else None,
        "device": str(device),
        "precision": precision,
        "fingerprint": run_fingerprint,
        "snapshots": snapshots,
    }


def _train_epoch(method, optimizers, data, run_cfg, epoch, steps, device, precision, progress):
    """One pass over ``data`` in the epoch's own order; returns the epoch's log row."""
    train = run_cfg["train"]
    seed, epochs, batch_size = int(run_cfg["seed"]), int(train["epochs"]), int(train["batch_size"])
    method.train()
    order = torch.randperm(
        len(data), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    )
    sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
    for step in bar:
        batch = data.gather(order[step * batch_size : (step + 1) * batch_size])
        _set_lr(optimizers, lr_factor(train, epoch * steps + step, steps))
        try:
            terms = method.train_step(
                batch, optimizers, functools.partial(autocast_context, device, precision)
            )
        except NonFiniteLoss as err:
            raise NonFiniteLossError(
                f"loss is {err.value} at epoch {epoch + 1}, step {step + 1}; "
                "lower train.lr or check the inputs"
            ) from None
        for key, value in terms.items():
            sums[key] += value.detach().float()
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    row = {"epoch": epoch + 1, "steps": steps}
    row.update({k: round(v.item() / steps, 6) for k, v in sums.items()})
    if train.get("schedule", "constant") != "constant":
        row["lr"] = next(iter(optimizers.values())).param_groups[0]["lr"]
    row.update(samples_per_s=round(steps * batch_size / seconds, 2), epoch_s=round(seconds, 2))
    return row
