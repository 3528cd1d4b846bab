"""One training loop for every method: AdamW, checkpoint each epoch, resume, NaN guard, CSV log.

Reading order: ``pretrain`` sets up (device, optimiser, resume), then loops over epochs; each epoch
draws its own permutation from (seed, epoch), so a resumed run sees exactly the batches an
uninterrupted run would; the checkpoint holds every RNG state for the augmentations.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import random
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from comm_repro.atomic import atomic_path
from comm_repro.data.paired import PairedBank

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
LOG = "train_log.csv"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names epoch and step."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but CUDA is not available on this machine")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 autocast is
    emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast where asked. 'auto' means bf16 on CUDA and on CPUs with native bf16, fp32 on
    other CPUs."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    use_bf16 = precision == "bf16" or (precision == "auto" and native)
    if not use_bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def config_fingerprint(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_log(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    # weights_only=False: the checkpoint holds RNG states (numpy tuples) written by this module.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("fingerprint") != fingerprint:
        stale = path.with_suffix(".stale.pt")
        os.replace(path, stale)
        tqdm.write(f"{path}: written for other settings; moved to {stale.name}, starting afresh")
        return None
    return ckpt


def pretrain(
    method: torch.nn.Module,
    data: PairedBank,
    run_cfg: dict[str, Any],
    out_dir: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``method`` on ``data``; resumable. Returns a summary (epochs, wall time, last row)."""
    train = run_cfg["train"]
    seed = int(run_cfg["seed"])
    epochs, batch_size = int(train["epochs"]), int(train["batch_size"])
    if len(data) < batch_size:
        raise ValueError(f"train.batch_size={batch_size} exceeds the {len(data)} training samples")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(train.get("device", "auto"))
    # channels_last speeds up the convolutions on CUDA and on oneDNN CPUs alike.
    channels_last = bool(train.get("channels_last", True))
    method.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    data = data.to(device)
    optimizer = torch.optim.AdamW(
        method.param_groups(float(train["weight_decay"])), lr=float(train["lr"])
    )
    fingerprint = config_fingerprint(run_cfg)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt = _load_checkpoint(out_dir / CHECKPOINT, fingerprint)
    if ckpt is not None:
        method.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        tqdm.write(f"resuming {out_dir} after epoch {start_epoch}/{epochs}")

    steps = len(data) // batch_size  # drop the ragged batch: BatchNorm and InfoNCE want B >= 2
    started = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        method.train()
        order = torch.randperm(
            len(data), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        )
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        t0 = time.perf_counter()
        bar = tqdm(
            range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False
        )
        for step in bar:
            batch = data.gather(order[step * batch_size : (step + 1) * batch_size])
            with autocast_context(device, train.get("precision", "auto")):
                terms = method.loss(batch)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                    "lower train.lr or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_step()
            for key, value in terms.items():
                sums[key] += value.detach().float()
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "steps": steps}
        row.update({k: round(v.item() / steps, 6) for k, v in sums.items()})
        row.update(samples_per_s=round(steps * batch_size / seconds, 2), epoch_s=round(seconds, 2))
        history.append(row)
        save_atomic(
            {
                "model": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": _rng_state(),
                "epoch": epoch + 1,
                "history": history,
                "fingerprint": fingerprint,
            },
            out_dir / CHECKPOINT,
        )
        write_log(history, out_dir / LOG)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{epochs} loss {row['loss']:.4f} "
                f"ssl_acc {row.get('ssl_acc', float('nan')):.3f} "
                f"{row['samples_per_s']:.1f} samples/s"
            )

    save_atomic({"model": method.state_dict(), "config": run_cfg}, out_dir / MODEL)
    return {
        "epochs": epochs,
        "steps_per_epoch": steps,
        "resumed_from_epoch": start_epoch,
        "wall_s_this_call": round(time.perf_counter() - started, 2),
        "train_s_total": round(sum(r["epoch_s"] for r in history), 2),
        "last_epoch": history[-1] if history else None,
        "device": str(device),
    }
