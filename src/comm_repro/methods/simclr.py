"""SimCLR on one modality (Table 2's unimodal self-supervised row, SimCLR (V))."""

from __future__ import annotations

import torch

from comm_repro.config import ConfigError
from comm_repro.losses import info_nce
from comm_repro.methods.comm import CoMM


class SimCLR(CoMM):
    """CoMM's latent converter, fusion layer and head on the modality ``modality`` (a name)
    alone: InfoNCE between the embeddings of two strong views of it, the other modalities
    never read. Probe features: the fusion's output on that modality. With MM-IMDb's frozen
    CLIP image encoder this is SimCLR trained on unlabelled posters on top of CLIP's tokens
    (the paper does not say which backbone its SimCLR row used)."""

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(
            {"terms": "full_only", "reduce": "mean", **cfg}, modalities, shapes, targets
        )
        names = [m["name"] for m in modalities]
        own = self.setting("modality")
        if own not in names:
            raise ConfigError(
                f"methods.{cfg.get('name', '?')}.modality: {own!r} is not a modality of the "
                f"dataset: {names}"
            )
        self.own = names.index(own)

    def loss(self, batch):
        m = self.own
        x, k = batch.inputs[m], batch.masks[m]
        both = None if k is None else torch.cat([k, k])
        inputs = [torch.cat([x, x]) if i == m else None for i in range(self.n_modalities)]
        masks = [both if i == m else None for i in range(self.n_modalities)]
        (view,) = self.views("strong", inputs, masks, which=[m])
        # the head's BatchNorm sees one view at a time, as in CoMM
        z1, z2 = (
            self.head(self.fusion([t], masks=[k])) for t in self._tokens(m, view, both).chunk(2)
        )
        loss, acc = info_nce(z1, z2, self.temperature)
        return {"loss": loss, "ssl_acc": acc}

    def fused(self, views, masks):
        return self.fusion(
            [self._tokens(self.own, views[self.own], masks[self.own])], masks=[masks[self.own]]
        )

    def from_encoded(self, m, encoded):
        if m != self.own:
            return encoded.tokens[:, 0, :0], None
        return super().from_encoded(m, encoded)

    def fuse_subset(self, encoded, subset):
        if self.own not in subset:
            raise ConfigError(
                f"method {self.cfg.get('name', '?')!r} (simclr) embeds its modality alone and "
                "has no features of the others: set probe.subsets: false for its dataset"
            )
        tokens, mask = encoded[self.own]
        return self.fusion([tokens], masks=[mask])
