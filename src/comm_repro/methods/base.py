"""What every method shares: one encoder per modality, the batch's views, optimiser groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from comm_repro.config import ConfigError
from comm_repro.data.paired import Batch
from comm_repro.models import build_encoder
from comm_repro.views import Views

NO_DECAY_NAMES = ("cls", "logit_scale")

Encoding = tuple[torch.Tensor, "torch.Tensor | None"]  # features, and their mask (or None)


class Method(nn.Module):
    """Base class. Subclasses define ``loss``, ``encode`` and ``fuse``.

    ``modalities``: the run's resolved modalities (name, kind, encoder, augment); ``shapes``:
    each modality's sample shape (without the batch axis), which sizes the encoders and views.
    ``loss(batch)`` takes a :class:`Batch` of raw inputs (uint8 images, float sequences with
    their masks, labels) and makes its own views; ``features(batch) = fuse([encode(m, x_m,
    mask_m)])`` is the frozen representation for probing, split in two so that a bank of
    samples can be encoded once and fused per row.
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        modalities: Sequence[dict[str, Any]],
        shapes: Sequence[Sequence[int]],
    ) -> None:
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"a multimodal method needs >= 2 modalities, got {len(modalities)}")
        self.cfg = cfg
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

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode(self, m: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoding:
        raise NotImplementedError

    def fuse(self, encoded: list[Encoding]) -> torch.Tensor:
        raise NotImplementedError

    def features(self, batch: Batch) -> torch.Tensor:
        return self.fuse(
            [self.encode(m, x, k) for m, (x, k) in enumerate(zip(batch.inputs, batch.masks))]
        )

    def after_step(self) -> None:
        """Called after each optimiser step."""

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


class PooledFeatures(Method):
    """A method whose probe features are the concatenated pooled encoder outputs (sequence
    tokens pooled by their mean over the real steps, feature maps over their locations)."""

    def encode(self, m, x, mask=None):
        return self.encoders[m](self.views.plain(m, x), mask).pooled(), None

    def fuse(self, encoded):
        return torch.cat([z for z, _ in encoded], dim=1)
