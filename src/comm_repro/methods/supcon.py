"""SupCon: the supervised contrastive loss with the modalities as the views of a sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from comm_repro.config import CLASSIFICATION, ConfigError
from comm_repro.losses import supcon_loss
from comm_repro.methods.base import PooledFeatures


class SupCon(PooledFeatures):
    """The FactorCL authors' SupCon baseline: per modality a head Linear(d, d) - ReLU -
    Linear(d, ``proj_dim``) on the pooled encoder output of the weak view; the L2-normalised
    head outputs of the modalities are the views of each sample in :func:`supcon_loss` with the
    classes of ``task`` (default the dataset's first task), at ``temperature`` (the authors
    0.5) and ``base_temperature`` (default: ``temperature``). Probe features: the concatenated
    pooled encoder outputs."""

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(cfg, modalities, shapes, targets)
        task = self.task()
        if task["kind"] not in CLASSIFICATION:
            raise ConfigError(
                f"SupCon needs class labels: task {task['name']!r} is {task['kind']} (set the "
                "method's task to a binary or multiclass task)"
            )
        dim = int(self.setting("proj_dim"))
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(e.out_channels, e.out_channels),
                nn.ReLU(),
                nn.Linear(e.out_channels, dim),
            )
            for e in self.encoders
        )
        self.temperature = float(self.setting("temperature"))
        base = cfg.get("base_temperature")
        self.base_temperature = self.temperature if base is None else float(base)

    def loss(self, batch):
        labels = self.task_labels(batch).reshape(-1)
        if labels.shape[0] != len(batch):
            raise ConfigError(f"SupCon needs one class per sample, got labels {labels.shape}")
        views = self.views("weak", batch.inputs, batch.masks)
        z = [
            F.normalize(self.heads[m](self.encoders[m](v, k).pooled()).float(), dim=1)
            for m, (v, k) in enumerate(zip(views, batch.masks))
        ]
        loss = supcon_loss(
            torch.stack(z, dim=1), labels.long(), self.temperature, self.base_temperature
        )
        return {"loss": loss}
