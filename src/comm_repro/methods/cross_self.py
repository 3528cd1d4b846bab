"""Cross+Self: cross-modal InfoNCE plus a SimCLR term within each modality (SLIP-style)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from comm_repro.losses import info_nce
from comm_repro.methods.base import Method
from comm_repro.models import mlp_head, pooled


class CrossSelf(Method):
    """Per-modality MLP heads on pooled encoder features. Loss = InfoNCE across modalities on the
    weak views + ssl_scale x mean over modalities of InfoNCE between two strong views of the same
    modality. Probe features: the concatenated pooled encoder features."""

    def __init__(self, cfg, transforms) -> None:
        super().__init__(cfg, transforms)
        hidden, out = int(self.setting("ssl_hidden")), int(self.setting("ssl_out"))
        self.heads = nn.ModuleList(mlp_head(e.out_channels, hidden, out) for e in self.encoders)
        self.temperature = float(self.setting("temperature"))
        self.ssl_scale = float(self.setting("ssl_scale"))

    def _project(self, m: int, x: torch.Tensor) -> torch.Tensor:
        return self.heads[m](pooled(self.encoders[m](x)))

    def loss(self, batch):
        tau, pairs = self.temperature, list(zip(self.transforms, batch))
        weak = [self._project(m, t.weak(x)) for m, (t, x) in enumerate(pairs)]
        cross = [
            info_nce(weak[i], weak[j], tau) for i, j in itertools.combinations(range(len(weak)), 2)
        ]
        out = {"loss_cross": torch.stack([c[0] for c in cross]).mean()}
        for m, (t, x) in enumerate(pairs):
            out[f"loss_self{m}"], _ = info_nce(
                self._project(m, t.strong(x)), self._project(m, t.strong(x)), tau
            )
        selfs = torch.stack([out[f"loss_self{m}"] for m in range(len(pairs))]).mean()
        out["loss"] = out["loss_cross"] + self.ssl_scale * selfs
        out["ssl_acc"] = torch.stack([c[1] for c in cross]).mean()
        return out

    def encode(self, m, x):
        return pooled(self.encoders[m](self.transforms[m].plain(x)))

    def fuse(self, encoded):
        return torch.cat(encoded, dim=1)
