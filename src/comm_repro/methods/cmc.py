"""CMC: contrastive multiview coding, InfoNCE between every pair of modalities."""

from __future__ import annotations

from torch import nn

from comm_repro.losses import pairwise_info_nce
from comm_repro.methods.base import PooledFeatures


class CMC(PooledFeatures):
    """Per-modality encoder and a bias-free linear head to ``proj_dim``; the loss is InfoNCE
    (temperature ``temperature``) between the heads' outputs of every pair of modalities,
    averaged over the C(n, 2) pairs, on the inputs without augmentation (the weak views, as the
    authors' CMC sees un-augmented modalities). Probe features: the concatenated pooled encoder
    outputs."""

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(cfg, modalities, shapes, targets)
        dim = int(self.setting("proj_dim"))
        self.heads = nn.ModuleList(
            nn.Linear(e.out_channels, dim, bias=False) for e in self.encoders
        )
        self.temperature = float(self.setting("temperature"))

    def loss(self, batch):
        views = self.views("weak", batch.inputs, batch.masks)
        z = [
            self.heads[m](self.encoders[m](v, k).pooled())
            for m, (v, k) in enumerate(zip(views, batch.masks))
        ]
        loss, acc = pairwise_info_nce(z, self.temperature)
        return {"loss": loss, "ssl_acc": acc}
