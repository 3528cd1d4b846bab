"""Trainer: resume after a kill equals an uninterrupted run; NaN guard; log and checkpoint."""

from __future__ import annotations

import copy
import csv
import io
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from comm_repro import train
from comm_repro.data.paired import PairedBank
from comm_repro.errors import UserError
from comm_repro.methods.base import Trainable
from comm_repro.train import CHECKPOINT, LOG, MODEL, NonFiniteLossError, pretrain

CPU = torch.device("cpu")

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


@pytest.mark.slow  # kills and resumes: the slow suite's
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


class _Toy(Trainable):
    """A one-parameter 'method' whose loss turns NaN at a chosen step."""

    def __init__(self, nan_at_step: int | None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls, self.nan_at_step = 0, nan_at_step

    def param_groups(self, weight_decay):
        return [{"params": [self.w], "weight_decay": weight_decay}]

    def loss(self, batch):
        self.calls += 1
        value = ((self.w * batch.inputs[0].float().mean()) ** 2).squeeze()
        if self.calls == self.nan_at_step:
            value = value * float("nan")
        return {"loss": value, "ssl_acc": torch.tensor(0.5)}

    def after_step(self):
        pass


def _toy_run(tmp_path, nan_at_step, epochs=2):
    data = PairedBank(
        [torch.arange(40, dtype=torch.uint8).view(40, 1)], torch.arange(40).view(40, 1)
    )
    train = {"epochs": epochs, "batch_size": 8, "lr": 0.01, "weight_decay": 0.0, "device": "cpu"}
    cfg = {"seed": 0, "train": train}
    return pretrain(_Toy(nan_at_step), data, cfg, tmp_path, CPU, "fp32", progress=False)


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
    assert ckpt["epoch"] == 2 and {"model", "optimizers", "rng"} <= set(ckpt)
    assert set(ckpt["optimizers"]) == {"main"}
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


@pytest.mark.parametrize("native", [True, False])
def test_resolve_compute_takes_the_given_device_else_train_device(monkeypatch, native):
    monkeypatch.setattr(train, "cpu_has_native_bf16", lambda: native)
    auto = "bf16" if native else "fp32"
    assert train.resolve_compute({"device": "cpu"}) == (CPU, auto)
    assert train.resolve_compute({"device": "cpu", "precision": "fp32"}) == (CPU, "fp32")
    assert train.resolve_compute({"precision": "bf16"}, "cpu") == (CPU, "bf16")
    # The job's device (--device, or the GPU it claimed) wins over the settings' device.
    assert train.resolve_compute({"device": "cuda:3", "precision": "auto"}, "cpu") == (CPU, auto)
    with pytest.raises(ValueError, match="train.precision"):
        train.resolve_compute({"device": "cpu", "precision": "fp16"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_compute_names_the_device_cuda_lacks():
    with pytest.raises(UserError, match="train.device is 'cuda:1'"):
        train.resolve_compute({"device": "cuda:1"})
    with pytest.raises(UserError, match="CUDA is not available"):
        train.resolve_compute({"device": "cpu"}, "cuda")


class _Recorder(_Toy):
    """Checks that each batch holds rows as the bank pairs them: inputs, masks and labels."""

    def __init__(self):
        super().__init__(nan_at_step=None)
        self.seen: list[int] = []

    def loss(self, batch):
        rows = batch.labels["row"]
        assert torch.equal(batch.inputs[0][:, 0].long(), rows)  # bank 0: sample p at row p
        assert torch.equal(batch.inputs[1][:, 0].long(), 39 - rows)  # bank 1: reversed
        assert torch.equal(batch.masks[0], batch.inputs[0] % 2 == 0)
        assert batch.masks[1] is None and len(batch) == 8
        self.seen += rows.tolist()
        return super().loss(batch)


def test_each_epoch_trains_on_batches_of_inputs_masks_and_labels_by_row(tmp_path):
    values = torch.arange(40).view(40, 1).repeat(1, 3) + torch.tensor([0, 1, 2])
    index = torch.stack([torch.arange(40), 39 - torch.arange(40)], dim=1)
    rows = torch.arange(42) % 40  # 42 rows: the ragged last batch is dropped
    data = PairedBank(
        [values, values.float()],
        index[rows],
        [values % 2 == 0, None],
        {"row": rows},
    )
    method = _Recorder()
    summary = pretrain(method, data, _toy_cfg(), tmp_path, CPU, "fp32", progress=False)
    assert summary["steps_per_epoch"] == 5 and method.calls == 10
    epoch1, epoch2 = method.seen[:40], method.seen[40:]
    assert epoch1 != epoch2  # each epoch its own order
    assert len(set(epoch1)) >= 38 and len(set(epoch2)) >= 38  # 40 of the 42 rows per epoch


# ---------------------------------------------------------------------------------------------
# Reruns: what the fingerprint of settings and data decides


def _toy_data(n: int = 40, offset: int = 0) -> PairedBank:
    values = (torch.arange(n) + offset).to(torch.uint8).view(n, 1)
    return PairedBank([values], torch.arange(n).view(n, 1))


MODALITIES = [
    {
        "name": "vision",
        "kind": "sequence",
        "encoder": {"name": "transformer", "dim": 16},
        "augment": {"strong": {"noise_std": 0.1}, "weak": {"noise_p": 0.0}},
    }
]


def _toy_cfg(**train) -> dict:
    base = {"epochs": 2, "batch_size": 8, "lr": 0.01, "weight_decay": 0.0, "device": "cpu"}
    base["precision"] = "fp32"
    dataset = {"name": "toy", "family": "toy", "modalities": copy.deepcopy(MODALITIES)}
    dataset["tasks"] = [{"name": "label", "kind": "binary"}]
    probe = {"C_grid": [1.0], "max_iter": 100}
    return {"seed": 0, "dataset": dataset, "train": {**base, **train}, "probe": probe}


def _steps_run(tmp_path, cfg=None, data=None) -> int:
    method = _Toy(nan_at_step=None)
    cfg = cfg or _toy_cfg()
    device, precision = train.resolve_compute(cfg["train"])
    pretrain(method, data or _toy_data(), cfg, tmp_path, device, precision, progress=False)
    return method.calls


def test_rerun_of_a_finished_run_writes_its_outputs_again_without_training(tmp_path):
    assert _steps_run(tmp_path) == 10
    log, model = (tmp_path / LOG).read_text(), (tmp_path / MODEL).read_bytes()
    (tmp_path / LOG).unlink()
    (tmp_path / MODEL).unlink()  # as Snakemake does before it reruns a job
    assert _steps_run(tmp_path) == 0
    assert (tmp_path / LOG).read_text() == log
    saved = torch.load(tmp_path / MODEL, weights_only=True)
    assert saved["model"].keys() == torch.load(io.BytesIO(model), weights_only=True)["model"].keys()
    assert saved["precision"] == "fp32" and "features" in saved["cpu"]


def test_device_is_not_part_of_a_runs_identity(tmp_path):
    _steps_run(tmp_path)
    assert _steps_run(tmp_path, _toy_cfg(device="cpu", channels_last=False)) == 0


def test_precision_is_part_of_a_runs_identity(tmp_path):
    _steps_run(tmp_path)
    assert _steps_run(tmp_path, _toy_cfg(precision="bf16")) == 10
    assert torch.load(tmp_path / MODEL, weights_only=True)["precision"] == "bf16"
    assert _steps_run(tmp_path, _toy_cfg(precision="fp32")) == 0  # the fp32 run, kept


def test_the_modalities_settings_are_part_of_a_runs_identity_the_probe_keys_not(tmp_path):
    _steps_run(tmp_path)
    probe_only = _toy_cfg()
    probe_only["probe"]["C_grid"] = [0.1, 10.0]
    probe_only["dataset"]["tasks"].append({"name": "score", "kind": "regression"})
    assert _steps_run(tmp_path, probe_only) == 0
    for section, key, value in (("augment", "strong", {"noise_std": 0.2}), ("encoder", "dim", 8)):
        cfg = _toy_cfg()
        cfg["dataset"]["modalities"][0][section][key] = value
        assert _steps_run(tmp_path, cfg) == 10, section
        kept = torch.load(tmp_path / CHECKPOINT, weights_only=True)["settings"]["modalities"]
        assert kept[0][section][key] == value
    assert _steps_run(tmp_path, _toy_cfg()) == 0  # the first settings again: their checkpoint


@pytest.mark.filterwarnings("ignore::comm_repro.data.multibench.RawDigestWarning")
def test_a_probe_task_added_to_an_affect_dataset_does_not_retrain_it(tmp_path, capsys):
    """Tasks are read by the probes only; the affect family's training bank carries the labels
    of the declared tasks, so they must not make its data another."""
    from test_multibench import affect_data, write_pickle

    from comm_repro.data.registry import family

    raw = write_pickle(tmp_path / "mosi.pkl", affect_data("mosi")[0])
    prepared = tmp_path / "mosi"
    family("mosi").prepare(prepared, {}, raw, None, False)
    capsys.readouterr()
    cfg = _toy_cfg(batch_size=4)
    cfg["dataset"] = {
        "name": "mosi",
        "family": "mosi",
        "modalities": [{**MODALITIES[0], "name": name} for name in ("vision", "text")],
        "tasks": [
            {"name": "label", "kind": "binary", "metric": "balanced_accuracy", "labels": "label"}
        ],  # fmt: skip
    }
    data = family("mosi").pretrain_data(prepared, cfg["dataset"])
    assert _steps_run(tmp_path / "run", cfg, data) == 4
    more = copy.deepcopy(cfg)
    more["dataset"]["tasks"].append(
        {"name": "sentiment", "kind": "regression", "metric": "mse", "labels": "label_raw"}
    )
    data = family("mosi").pretrain_data(prepared, more["dataset"])
    assert _steps_run(tmp_path / "run", more, data) == 0


def test_changed_data_retrains_and_keeps_the_old_checkpoint(tmp_path):
    _steps_run(tmp_path)
    assert _steps_run(tmp_path, data=_toy_data(offset=1)) == 10
    assert len(list(tmp_path.glob("checkpoint.*.pt"))) == 1


def test_every_superseded_checkpoint_is_kept_and_resumed_when_its_settings_return(tmp_path):
    for lr in (0.01, 0.02, 0.03):
        assert _steps_run(tmp_path, _toy_cfg(lr=lr)) == 10
    kept = sorted(p.name for p in tmp_path.glob("checkpoint.*.pt"))
    assert len(kept) == 2, kept  # the runs at lr 0.01 and 0.02, each under its own name
    for name in kept:
        assert torch.load(tmp_path / name, weights_only=True)["epoch"] == 2
    assert _steps_run(tmp_path, _toy_cfg(lr=0.01)) == 0  # back to the first settings
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["settings"]["train"]["lr"] == 0.01
    assert len(list(tmp_path.glob("checkpoint.*.pt"))) == 2


class _Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_hostile_checkpoint_is_never_executed(tmp_path, capsys, writer):
    marker = tmp_path / "payload-ran"
    blob = {"model": {}, "epoch": 1, "x": _Payload(marker)}
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(live)))  # noqa: S301 - proves the payload is real
    assert live.exists()
    run = tmp_path / "run"
    run.mkdir()
    if writer == "torch.save":
        torch.save(blob, run / CHECKPOINT)
    else:
        (run / CHECKPOINT).write_bytes(pickle.dumps(blob))
    assert _steps_run(run) == 10  # trained from epoch 1
    assert not marker.exists()
    assert (run / "checkpoint.unreadable.pt").exists()
    assert "nothing of it was run" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_unreadable_checkpoint_is_moved_aside_and_training_restarts(tmp_path, capsys, damage):
    _steps_run(tmp_path, _toy_cfg(epochs=1))
    blob = (tmp_path / CHECKPOINT).read_bytes()
    broken = {"truncate": blob[: len(blob) // 2], "empty": b"", "garbage": os.urandom(500)}
    (tmp_path / CHECKPOINT).write_bytes(broken[damage])
    assert _steps_run(tmp_path) == 10
    err = capsys.readouterr().err
    assert f"{tmp_path / CHECKPOINT}: not a readable file" in err
    assert "checkpoint.unreadable.pt; training restarts" in err
    assert (tmp_path / "checkpoint.unreadable.pt").read_bytes() == broken[damage]


def test_no_unrestricted_unpickling_in_the_library():
    src = Path(train.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        for pattern in ("weights_only=False", "pickle.load", "allow_pickle=True"):
            assert pattern not in text, f"{path}: {pattern}"


def test_ctrl_c_says_where_training_stopped_and_how_to_resume(
    tiny_config, trifeature_dir, tmp_path
):
    _, config = tiny_config
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _pretrain_cmd(config, trifeature_dir, out), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not _log_rows(out / LOG) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    done = torch.load(out / CHECKPOINT, weights_only=True)["epoch"]
    assert f"rerunning the same command resumes from epoch {done + 1}" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (out / MODEL).exists()


def test_a_checkpoint_of_the_one_optimiser_format_still_resumes(tmp_path):
    """Checkpoints written before methods owned several optimisers hold one, as "optimizer"."""
    _toy_run(tmp_path / "full", nan_at_step=None)  # 2 epochs
    # The state after epoch 1, from a 1-epoch run (the same batches, constant learning rate),
    # in the old format under the 2-epoch run's fingerprint
    _toy_run(tmp_path / "one", nan_at_step=None, epochs=1)
    first = torch.load(tmp_path / "one" / CHECKPOINT, weights_only=True)
    final = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=True)
    first["optimizer"] = first.pop("optimizers")["main"]
    first["fingerprint"] = final["fingerprint"]
    (tmp_path / "old").mkdir()
    torch.save(first, tmp_path / "old" / CHECKPOINT)
    resumed = _toy_run(tmp_path / "old", nan_at_step=None)
    assert resumed["resumed_from_epoch"] == 1
    a = torch.load(tmp_path / "full" / MODEL, weights_only=True)["model"]
    b = torch.load(tmp_path / "old" / MODEL, weights_only=True)["model"]
    assert torch.equal(a["w"], b["w"])


# ---------------------------------------------------------------------------------------------
# Snapshots for probing during training (train.snapshot_every)


def test_snapshots_are_the_model_after_every_kth_epoch_and_stale_ones_go(tmp_path):
    from comm_repro.train import snapshot_path

    cfg = _toy_cfg(epochs=5, snapshot_every=2)
    assert _steps_run(tmp_path, cfg) == 25
    kept = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert kept == ["epoch0002.pt", "epoch0004.pt"]
    second = train.load_torch_file(snapshot_path(tmp_path, 2))
    fourth = train.load_torch_file(snapshot_path(tmp_path, 4))
    assert (second["epoch"], second["step"]) == (2, 10) and fourth["step"] == 20
    assert second["config"] == cfg and second["precision"] == "fp32"
    final = train.load_torch_file(tmp_path / MODEL)["model"]
    assert second["model"].keys() == final.keys()
    # each snapshot is the model of its epoch: the weights moved between them
    assert any(not torch.equal(second["model"][k], fourth["model"][k]) for k in final)
    # and the last epoch moved them again
    assert any(not torch.equal(fourth["model"][k], final[k]) for k in final)
    # other settings retrain from scratch: the old snapshots are not this run's
    assert _steps_run(tmp_path, _toy_cfg(epochs=3, snapshot_every=3, lr=0.02)) == 15
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["epoch0003.pt"]


def test_a_kept_checkpoint_keeps_its_snapshots_and_gets_them_back(tmp_path):
    from comm_repro.train import snapshot_path

    first, other = _toy_cfg(epochs=4, snapshot_every=2), _toy_cfg(epochs=3, snapshot_every=1)
    _steps_run(tmp_path, first)
    second = (tmp_path / "snapshots" / "epoch0002.pt").read_bytes()
    assert _steps_run(tmp_path, other) == 15
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "epoch0001.pt",
        "epoch0002.pt",
        "epoch0003.pt",
    ]
    assert (tmp_path / "snapshots" / "epoch0002.pt").read_bytes() != second
    # the first settings again: their checkpoint is at the last epoch, and their snapshots
    # are back in place of the other run's (which wait beside the other's checkpoint)
    assert _steps_run(tmp_path, first) == 0
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "epoch0002.pt",
        "epoch0004.pt",
    ]
    assert snapshot_path(tmp_path, 2).read_bytes() == second
    kept = [p for p in tmp_path.glob("snapshots.*") if p.is_dir()]
    assert len(kept) == 1 and len(list(kept[0].iterdir())) == 3
    assert _steps_run(tmp_path, other) == 0
    assert len(list((tmp_path / "snapshots").iterdir())) == 3


def test_a_run_without_snapshot_every_keeps_none():
    from comm_repro.config import snapshot_epochs

    assert snapshot_epochs({"epochs": 100}) == []
    assert snapshot_epochs({"epochs": 100, "snapshot_every": 5})[:3] == [5, 10, 15]
    assert snapshot_epochs({"epochs": 100, "snapshot_every": 5})[-1] == 100
    assert snapshot_epochs({"epochs": 7, "snapshot_every": 3}) == [3, 6]
