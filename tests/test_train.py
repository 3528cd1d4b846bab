"""Trainer: resume after a kill equals an uninterrupted run; NaN guard; log and checkpoint."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from comm_repro import train
from comm_repro.data.paired import PairedBank
from comm_repro.train import CHECKPOINT, LOG, MODEL, NonFiniteLossError, pretrain

EPOCHS = 6


def _pretrain_cmd(config: Path, data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "comm_repro.cli", "pretrain", "--config", str(config),
        "--dataset", "trifeatures", "--method", "comm", "--seed", "3", "--data", str(data),
        "--out", str(out), "--threads", "1", "--quiet", "--set", f"train.epochs={EPOCHS}",
    ]  # fmt: skip


def _log_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def test_killed_run_resumes_to_the_uninterrupted_result(tiny_config, trifeature_dir, tmp_path):
    _, config = tiny_config
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_pretrain_cmd(config, trifeature_dir, full), check=True, env=env)

    proc = subprocess.Popen(_pretrain_cmd(config, trifeature_dir, killed), env=env)
    deadline = time.monotonic() + 120
    while not _log_rows(killed / LOG) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    stopped_at = torch.load(killed / CHECKPOINT, weights_only=True)["epoch"]
    assert 1 <= stopped_at < EPOCHS, "the kill must land mid-run for this test to mean anything"
    assert not (killed / MODEL).exists()

    subprocess.run(_pretrain_cmd(config, trifeature_dir, killed), check=True, env=env)
    a = torch.load(full / MODEL, weights_only=True)["model"]
    b = torch.load(killed / MODEL, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drop = {"samples_per_s", "epoch_s"}
    rows_full = [{k: v for k, v in r.items() if k not in drop} for r in _log_rows(full / LOG)]
    rows_killed = [{k: v for k, v in r.items() if k not in drop} for r in _log_rows(killed / LOG)]
    assert len(rows_full) == EPOCHS
    assert rows_full == rows_killed


class _Toy(torch.nn.Module):
    """A one-parameter 'method' whose loss turns NaN at a chosen step."""

    def __init__(self, nan_at_step: int | None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls, self.nan_at_step = 0, nan_at_step

    def param_groups(self, weight_decay):
        return [{"params": [self.w], "weight_decay": weight_decay}]

    def loss(self, batch):
        self.calls += 1
        value = ((self.w * batch[0].float().mean()) ** 2).squeeze()
        if self.calls == self.nan_at_step:
            value = value * float("nan")
        return {"loss": value, "ssl_acc": torch.tensor(0.5)}

    def after_step(self):
        pass


def _toy_run(tmp_path, nan_at_step):
    data = PairedBank(
        [torch.arange(40, dtype=torch.uint8).view(40, 1)], torch.arange(40).view(40, 1)
    )
    cfg = {
        "seed": 0,
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "weight_decay": 0.0, "device": "cpu"},
    }
    return pretrain(_Toy(nan_at_step), data, cfg, tmp_path, progress=False)


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2"):
        _toy_run(tmp_path, nan_at_step=7)  # 5 steps per epoch: call 7 is epoch 2, step 2


def test_log_and_checkpoint_contents(tmp_path):
    summary = _toy_run(tmp_path, nan_at_step=None)
    rows = _log_rows(tmp_path / LOG)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "ssl_acc", "samples_per_s"} <= set(rows[0])
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 2 and {"model", "optimizer", "rng"} <= set(ckpt)
    assert summary["steps_per_epoch"] == 5
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files may be left behind"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_uses_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    with train.autocast_context(cpu, "auto"):
        assert torch.is_autocast_enabled("cpu") is native
    with train.autocast_context(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with train.autocast_context(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
