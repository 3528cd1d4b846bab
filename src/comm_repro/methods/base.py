"""What every method shares: one encoder per modality, the batch's views, its optimisers and
its training step."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from comm_repro.config import ConfigError
from comm_repro.data.paired import Batch
from comm_repro.models import Encoded, build_encoder
from comm_repro.views import Views

NO_DECAY_NAMES = ("cls", "logit_scale")

Encoding = tuple[torch.Tensor, "torch.Tensor | None"]  # features, and their mask (or None)
Autocast = Callable[[], AbstractContextManager]  # a fresh autocast context (or a null one)


class NonFiniteLoss(FloatingPointError):
    """A loss to be minimised is NaN or infinite (the trainer says at which epoch and step)."""

    def __init__(self, value: float) -> None:
        super().__init__(f"loss is {value}")
        self.value = value


def minimise(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """One gradient step of ``optimizer`` on ``loss``; refuses a non-finite loss before any
    parameter changes. Gradients reaching parameters of other optimisers are left for those
    to clear (each optimiser zeroes its own before its step)."""
    if not torch.isfinite(loss):
        raise NonFiniteLoss(loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class Trainable(nn.Module):
    """What the trainer needs of a module: its optimisers and its step (by default one AdamW,
    without decay on biases, norm weights, the CLS token and the logit scale, minimising
    ``loss(batch)["loss"]``)."""

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each training step."""

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: no decay on biases, norm weights, the CLS token and the logit scale."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES
            (no_decay if skip else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def optimizers(self, train: dict[str, Any]) -> dict[str, torch.optim.Optimizer]:
        """The optimisers of a run with the ``train`` settings, by name."""
        groups = self.param_groups(float(train["weight_decay"]))
        return {"main": torch.optim.AdamW(groups, lr=float(train["lr"]))}

    def train_step(
        self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer], autocast: Autocast
    ) -> dict[str, torch.Tensor]:
        """One step on ``batch``: minimise ``loss`` with the main optimiser. Returns the loss
        terms to log (``loss`` among them)."""
        with autocast():
            terms = self.loss(batch)
        minimise(terms["loss"], optimizers["main"])
        self.after_step()
        return terms


class Method(Trainable):
    """Base class. Subclasses define ``loss``, ``encode`` and ``fuse``.

    ``modalities``: the run's resolved modalities (name, kind, encoder, augment); ``shapes``:
    each modality's sample shape (without the batch axis), which sizes the encoders and views.
    ``loss(batch)`` takes a :class:`Batch` of raw inputs (uint8 images, float sequences with
    their masks, labels) and makes its own views; ``features(batch) = fuse([encode(m, x_m,
    mask_m)])`` is the frozen representation for probing, split in two so that a bank of
    samples can be encoded once and fused per row; ``encode`` is ``from_encoded`` of the
    encoder's output, so that the outputs of a frozen encoder can be computed once and reused.
    ``targets``: the dataset's tasks by name (with ``dim``, see
    :func:`comm_repro.methods.task_targets`), for methods that train with labels.

    Training: ``optimizers(train)`` gives the method's optimisers by name and ``train_step``
    one step with them; by default one AdamW on ``loss``. A method with more optimisers (e.g.
    critics trained on their own objective) overrides both; the trainer checkpoints them all.
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        modalities: Sequence[dict[str, Any]],
        shapes: Sequence[Sequence[int]],
        targets: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"a multimodal method needs >= 2 modalities, got {len(modalities)}")
        self.cfg = cfg
        self.targets = dict(targets or {})
        self.kinds = [m["kind"] for m in modalities]
        self.n_modalities = len(modalities)
        self.views = Views(modalities, shapes)
        self.encoders = nn.ModuleList(
            build_encoder(m["encoder"], shape) for m, shape in zip(modalities, shapes)
        )

    def setting(self, key: str) -> Any:
        if key not in self.cfg:
            raise ConfigError(f"method {self.cfg.get('name', '?')!r} needs the setting {key!r}")
        return self.cfg[key]

    def encoder_output(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        """Modality m's encoder on its plain view of ``x``: for a frozen encoder, what a cache
        of probe features holds (:mod:`comm_repro.features`)."""
        return self.encoders[m](self.views.plain(m, x), mask)

    def from_encoded(self, m: int, encoded: Encoded) -> Encoding:
        """Modality m's probe encoding from its encoder's output."""
        raise NotImplementedError

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoding:
        return self.from_encoded(m, self.encoder_output(m, x, mask))

    def fuse_subset(self, encoded: list[Encoding], subset: Sequence[int]) -> torch.Tensor:
        """The probe features of the modalities ``subset`` alone (by default their encodings
        concatenated; CoMM: its fused embedding with only those modalities visible)."""
        return torch.cat([encoded[m][0] for m in subset], dim=1)

    def fuse(self, encoded: list[Encoding]) -> torch.Tensor:
        """The probe features of every modality."""
        return self.fuse_subset(encoded, range(self.n_modalities))

    def features(self, batch: Batch) -> torch.Tensor:
        return self.fuse(
            [self.encode(m, x, k) for m, (x, k) in enumerate(zip(batch.inputs, batch.masks))]
        )

    def task(self) -> dict[str, Any]:
        """The task whose labels a supervised method trains with: the method's ``task``
        setting, else the dataset's first task."""
        name = self.cfg.get("task") or next(iter(self.targets), None)
        if name is None or name not in self.targets:
            known = ", ".join(self.targets) or "none"
            raise ConfigError(
                f"method {self.cfg.get('name', '?')!r} trains with labels: its task "
                f"{name!r} is not a task of the dataset (tasks: {known})"
            )
        return self.targets[name]

    def task_labels(self, batch: Batch) -> torch.Tensor:
        """The labels of :meth:`task` in ``batch``."""
        task = self.task()
        if task["labels"] not in batch.labels:
            raise ConfigError(
                f"the training data has no labels {task['labels']!r} for task {task['name']!r}"
            )
        return batch.labels[task["labels"]]


class PooledFeatures(Method):
    """A method whose probe features are the concatenated pooled encoder outputs (sequence
    tokens pooled by their mean over the real steps, feature maps over their locations)."""

    def from_encoded(self, m, encoded):
        return encoded.pooled(), None
