"""Supervised fine-tuning of a pretrained CoMM, the learning-rate schedule, and what the trainer
keeps for methods with several optimisers."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_run

from comm_repro.config import ConfigError, finetune_run
from comm_repro.data.paired import PairedBank
from comm_repro.finetune import FineTune, fine_tune_task
from comm_repro.losses import supcon_loss
from comm_repro.methods import build_method, task_targets
from comm_repro.train import CHECKPOINT, MODEL, lr_factor, pretrain, training_settings

CPU = torch.device("cpu")
SIZE, N = 64, 24


def _data(seed: int = 0) -> PairedBank:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (N, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)
    labels = {
        "share": torch.arange(N) % 3,
        "target": torch.randn(N, 4, generator=g),
        "genres": (torch.rand(N, 5, generator=g) > 0.5).float(),
    }
    index = torch.stack([torch.arange(N), torch.arange(N).flip(0)], dim=1)
    return PairedBank([images, images], index, labels=labels)


def _comm(tasks=None):
    run = tiny_run(method="comm")
    if tasks is not None:
        run["dataset"]["tasks"] = tasks
    torch.manual_seed(0)
    shapes = {"share": (), "target": (4,), "genres": (5,)}
    return run, build_method(run, [(SIZE, SIZE, 3)] * 2, shapes)


def test_warmup_cosine_schedule_rises_linearly_then_decays_to_zero():
    train = {"epochs": 4, "schedule": "warmup_cosine", "warmup_epochs": 1}
    factors = [lr_factor(train, step, steps_per_epoch=2) for step in range(8)]
    assert factors[:2] == [0.5, 1.0]  # warm-up over the first epoch's two steps
    assert factors[2] == 1.0  # the cosine starts at its top
    assert factors[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
    assert lr_factor({"epochs": 4}, 5, 2) == 1.0  # constant by default


def test_fine_tuning_a_classification_task_minimises_supcon_on_two_views():
    _, comm = _comm()
    model = FineTune(comm, task_targets(tiny_run()["dataset"]["tasks"])["share"], 0.07)
    assert model.head is None  # no added parameters, as the authors
    batch = _data().gather(torch.arange(8))
    torch.manual_seed(1)
    loss = model.loss(batch)["loss"]
    # The same two views by hand: the SupCon of the two fused embeddings with the labels
    torch.manual_seed(1)
    views = comm.views("strong", [torch.cat([x, x]) for x in batch.inputs], [None, None])
    z1, z2 = comm.fused(views, [None, None]).chunk(2)
    z = torch.stack([torch.nn.functional.normalize(v, dim=1) for v in (z1, z2)], dim=1)
    assert torch.allclose(loss, supcon_loss(z, batch.labels["share"], 0.07, 0.07))


@pytest.mark.parametrize(
    ("kind", "labels", "outputs"), [("regression", "target", 4), ("multilabel", "genres", 5)]
)
def test_fine_tuning_regression_and_multilabel_tasks_train_a_linear_head(kind, labels, outputs):
    tasks = [{"name": "task", "kind": kind, "labels": labels}]
    _, comm = _comm(tasks)
    model = FineTune(comm, comm.targets["task"], 0.07)
    assert model.head.out_features == outputs
    optimizers = model.optimizers({"lr": 1e-3, "weight_decay": 0.0})
    batch = _data().gather(torch.arange(8))
    before = comm.fusion.cls.detach().clone()
    terms = model.train_step(batch, optimizers, lambda: torch.autocast("cpu", enabled=False))
    assert torch.isfinite(terms["loss"]) and terms["loss"] > 0
    assert not torch.equal(before, comm.fusion.cls), "the whole model is fine-tuned"


def test_fine_tuning_needs_comm_and_a_known_task():
    run = tiny_run(method="cross")
    cross = build_method(run, [(SIZE, SIZE, 3)] * 2)
    with pytest.raises(ConfigError, match="kind must be comm"):
        FineTune(cross, cross.targets["share"], 0.07)
    with pytest.raises(ConfigError, match="finetune.task is 'nope'"):
        fine_tune_task(cross.targets, "nope")
    assert fine_tune_task(cross.targets, None)["name"] == "share"  # the dataset's first


def _finetune_cfg(record, epochs=2):
    cfg = finetune_run(record, {"epochs": epochs, "lr": 1e-3, "batch_size": 8})
    cfg["finetune_of"] = {"model": "digest"}
    return cfg


def test_fine_tuning_has_its_own_fingerprint_and_keeps_the_pretraining_settings():
    record = tiny_run(method="comm")
    cfg = _finetune_cfg(record)
    assert cfg["stage"] == "finetune" and cfg["train"]["epochs"] == 2
    assert cfg["train"]["weight_decay"] == record["train"]["weight_decay"]  # the run's
    assert cfg["model"] == record["model"] and cfg["method"] == record["method"]
    settings = training_settings(cfg, "fp32")
    assert settings["finetune_of"] == {"model": "digest"}
    # A pretraining's settings carry none of it, whatever its record holds.
    assert "finetune" not in training_settings(record, "fp32")


def test_resumed_fine_tuning_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    record, comm = _comm()
    pretrained = {k: v.clone() for k, v in comm.state_dict().items()}
    cfg = _finetune_cfg(record)
    task = comm.targets["share"]

    def fresh():
        _, method = _comm()
        method.load_state_dict(pretrained)
        return FineTune(method, task, 0.07)

    pretrain(fresh(), _data(), cfg, tmp_path / "full", CPU, "fp32", progress=False)
    # Interrupted at the first step of epoch 2, then run again
    calls = {"n": 0}
    original = FineTune.train_step

    def interrupting(self, *args):
        calls["n"] += 1
        if calls["n"] == N // 8 + 1:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(FineTune, "train_step", interrupting)
    with pytest.raises(Exception, match="interrupted in epoch 2/2"):
        pretrain(fresh(), _data(), cfg, tmp_path / "resumed", CPU, "fp32", progress=False)
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(FineTune, "train_step", original)
    summary = pretrain(fresh(), _data(), cfg, tmp_path / "resumed", CPU, "fp32", progress=False)
    assert summary["resumed_from_epoch"] == 1
    a = torch.load(tmp_path / "full" / MODEL, weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / MODEL, weights_only=True)["model"]
    assert a.keys() == pretrained.keys(), "model.pt holds the CoMM the probes read"
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not all(torch.equal(a[k], pretrained[k]) for k in a), "fine-tuning changed it"
