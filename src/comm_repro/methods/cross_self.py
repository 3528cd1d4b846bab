"""Cross+Self: cross-modal InfoNCE plus a SimCLR term within each modality (SLIP-style)."""

from __future__ import annotations

import torch
from torch import nn

from comm_repro.losses import info_nce, pairwise_info_nce
from comm_repro.methods.base import PooledFeatures
from comm_repro.models import mlp_head


class CrossSelf(PooledFeatures):
    """Per-modality MLP heads on pooled encoder features. Loss = InfoNCE across modalities on the
    weak views + ssl_scale x mean over modalities of InfoNCE between two strong views of the same
    modality. Probe features: the concatenated pooled encoder features (sequence tokens pooled by
    their mean over the real steps)."""

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(cfg, modalities, shapes, targets)
        hidden, out = int(self.setting("ssl_hidden")), int(self.setting("ssl_out"))
        self.heads = nn.ModuleList(mlp_head(e.out_channels, hidden, out) for e in self.encoders)
        self.temperature = float(self.setting("temperature"))
        self.ssl_scale = float(self.setting("ssl_scale"))

    def _project(self, m: int, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.heads[m](self.encoders[m](x, mask).pooled())

    def loss(self, batch):
        tau, masks = self.temperature, batch.masks
        views = self.views("weak", batch.inputs, masks)
        weak = [self._project(m, v, k) for m, (v, k) in enumerate(zip(views, masks))]
        loss_cross, acc = pairwise_info_nce(weak, tau)
        out = {"loss_cross": loss_cross}
        for m in range(self.n_modalities):
            a, b = (self.views("strong", batch.inputs, masks, [m])[0] for _ in range(2))
            out[f"loss_self{m}"], _ = info_nce(
                self._project(m, a, masks[m]), self._project(m, b, masks[m]), tau
            )
        selfs = torch.stack([out[f"loss_self{m}"] for m in range(self.n_modalities)]).mean()
        out["loss"] = out["loss_cross"] + self.ssl_scale * selfs
        out["ssl_acc"] = acc
        return out
