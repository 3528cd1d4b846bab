"""Supervised fine-tuning of a pretrained CoMM: the paper's "CoMM fine-tuned" rows.

The whole model (encoders, latent converters, fusion) is trained further with the labels of one
task, by the task's kind, as the authors do: classification with the supervised contrastive
loss on the multimodal embeddings of two augmented views of each sample (no added parameters),
regression with a linear head and the mean squared error, multilabel classification with a
linear head and a binary cross-entropy per label (one augmented view each). The projection
head of pretraining is not used. The same trainer as pretraining runs it (checkpoints, resume,
fingerprint), and the linear probe then reads the fine-tuned model as it reads a pretrained
one. Unlike the authors, the number of epochs is fixed: they stop early on their validation
accuracy, which for Vision&Touch is their test split.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comm_repro.config import CLASSIFICATION, ConfigError
from comm_repro.data.paired import Batch
from comm_repro.losses import supcon_loss
from comm_repro.methods.base import Trainable
from comm_repro.methods.comm import CoMM

DEFAULT_TEMPERATURE = 0.07  # the authors' SupCon fine-tuning


class FineTune(Trainable):
    """A pretrained CoMM ``model`` trained on the labels of ``task`` (one of
    :func:`comm_repro.methods.task_targets`'s entries); ``probed_model`` is what the probes
    read afterwards (the CoMM alone, without the regression or multilabel head)."""

    def __init__(self, model: CoMM, task: dict[str, Any], temperature: float) -> None:
        super().__init__()
        if not isinstance(model, CoMM):
            raise ConfigError(
                f"fine-tuning trains a CoMM model; this run's method is "
                f"{type(model).__name__} (methods.<name>.kind must be comm)"
            )
        self.model, self.task = model, task
        self.temperature = float(temperature)
        self.head = None
        if task["kind"] not in CLASSIFICATION:
            if not task.get("dim"):
                raise ConfigError(
                    f"fine-tuning on task {task['name']!r}: the number of its outputs is unknown"
                )
            self.head = nn.Linear(int(model.setting("embed_dim")), int(task["dim"]))

    @property
    def probed_model(self) -> CoMM:
        return self.model

    def _labels(self, batch: Batch) -> torch.Tensor:
        if self.task["labels"] not in batch.labels:
            raise ConfigError(
                f"the training data has no labels {self.task['labels']!r} for task "
                f"{self.task['name']!r}: fine-tuning needs them"
            )
        labels = batch.labels[self.task["labels"]]
        return labels.reshape(len(labels), -1)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        model, labels = self.model, self._labels(batch)
        if self.head is None:
            # Both views through the model as one batch (no batch statistics before the head).
            masks = [None if k is None else torch.cat([k, k]) for k in batch.masks]
            views = model.views("strong", [torch.cat([x, x]) for x in batch.inputs], masks)
            z1, z2 = model.fused(views, masks).chunk(2)
            views_z = torch.stack(
                [F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)], 1
            )
            loss = supcon_loss(views_z, labels[:, 0].long(), self.temperature, self.temperature)
            return {"loss": loss}
        views = model.views("strong", batch.inputs, batch.masks)
        out = self.head(model.fused(views, batch.masks)).float()
        if self.task["kind"] == "regression":
            return {"loss": F.mse_loss(out, labels.float())}
        return {"loss": F.binary_cross_entropy_with_logits(out, labels.float())}

    def after_step(self) -> None:
        self.model.after_step()


def fine_tune_task(targets: dict[str, dict[str, Any]], name: str | None) -> dict[str, Any]:
    """The task a fine-tuning trains on: ``finetune.task``, else the dataset's first task."""
    chosen = name or next(iter(targets), None)
    if chosen not in targets:
        raise ConfigError(
            f"finetune.task is {chosen!r}, not a task of the dataset ({', '.join(targets)})"
        )
    return targets[chosen]
