"""What every method shares: one encoder per modality, view transforms, optimiser groups."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from comm_repro.augment import ViewTransforms
from comm_repro.config import ConfigError
from comm_repro.models import build_encoder

NO_DECAY_NAMES = ("cls", "logit_scale")


class Method(nn.Module):
    """Base class. Subclasses define ``loss``, ``encode`` and ``fuse``.

    ``loss(batch)`` takes one raw uint8 (B, H, W, 3) tensor per modality and makes its own views;
    ``features(batch) = fuse([encode(m, x_m)])`` is the frozen representation for probing,
    split in two so that a bank of samples can be encoded once and fused per pair.
    """

    def __init__(self, cfg: dict[str, Any], transforms: list[ViewTransforms]) -> None:
        super().__init__()
        if len(transforms) < 2:
            raise ValueError(f"a multimodal method needs >= 2 modalities, got {len(transforms)}")
        self.cfg = cfg
        self.transforms = transforms
        self.n_modalities = len(transforms)
        self.encoders = nn.ModuleList(build_encoder(self.setting("encoder")) for _ in transforms)

    def setting(self, key: str) -> Any:
        if key not in self.cfg:
            raise ConfigError(f"method {self.cfg.get('name', '?')!r} needs the setting {key!r}")
        return self.cfg[key]

    def loss(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode(self, m: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fuse(self, encoded: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def features(self, batch: list[torch.Tensor]) -> torch.Tensor:
        return self.fuse([self.encode(m, x) for m, x in enumerate(batch)])

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
