"""Cross: CLIP-style alignment of the modalities' embeddings (cross-modal InfoNCE)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from comm_repro.losses import clip_loss
from comm_repro.methods.base import Method

MAX_LOGIT_SCALE = math.log(100.0)


class Cross(Method):
    """Pooled encoder features -> bias-free linear projections; symmetric CLIP loss with a
    learnable temperature (initialised at 0.07, scale clamped to [1, 100]). With more than two
    modalities the loss is the mean over modality pairs. Probe features: the concatenated
    projections. Sequence tokens are pooled by their mean over the real (unpadded) steps, as
    feature maps by their mean over locations."""

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(cfg, modalities, shapes, targets)
        dim = int(self.setting("proj_dim"))
        self.projections = nn.ModuleList(
            nn.Linear(e.out_channels, dim, bias=False) for e in self.encoders
        )
        for proj in self.projections:
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def _embed(self, m: int, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.projections[m](self.encoders[m](x, mask).pooled())

    def loss(self, batch):
        views = self.views("weak", batch.inputs, batch.masks)
        emb = [self._embed(m, v, k) for m, (v, k) in enumerate(zip(views, batch.masks))]
        pairs = [
            clip_loss(emb[i], emb[j], self.logit_scale)
            for i, j in itertools.combinations(range(len(emb)), 2)
        ]
        loss = torch.stack([p[0] for p in pairs]).mean()
        acc = torch.stack([p[1] for p in pairs]).mean()
        return {"loss": loss, "ssl_acc": acc, "logit_scale": self.logit_scale.detach().exp()}

    @torch.no_grad()
    def after_step(self):
        self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    def from_encoded(self, m, encoded):
        return self.projections[m](encoded.pooled()), None
