"""The encoders of a tabular modality (a vector of features per sample)."""

from __future__ import annotations

import torch
from torch import nn

from comm_repro.models.encoders import Encoded


class TabularEncoder(nn.Module):
    """MultiBench's two-layer perceptron: Linear(n_features, hidden) -> ReLU -> Linear(hidden,
    out), no dropout (MIMIC's static features: 5 -> 10 -> 10). ``forward(x, mask)``: ``x``
    (B, n_features) float; returns the (B, out) vector as one token of ``out`` channels (the
    ``tabular`` tokenizer turns each channel into a token of its own)."""

    def __init__(self, n_features: int, hidden: int = 10, out: int = 10) -> None:
        super().__init__()
        self.n_features, self.out_channels = int(n_features), int(out)
        self.fc = nn.Linear(self.n_features, int(hidden))
        self.fc2 = nn.Linear(int(hidden), self.out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        if x.ndim != 2 or x.shape[-1] != self.n_features:
            raise ValueError(
                f"the tabular encoder expects (B, {self.n_features}) inputs, got {tuple(x.shape)}"
            )
        return Encoded(self.fc2(torch.relu(self.fc(x)))[:, None, :])


class ProprioEncoder(nn.Module):
    """The authors' Vision&Touch ProprioEncoder: Linear layers ``n_features`` (8) -> 32 -> 64 ->
    128 -> ``dim``, each followed by LeakyReLU(0.1) (the last one too), PyTorch's default
    initialisation. ``forward(x, mask)``: ``x`` (B, n_features) float; returns the (B, dim)
    vector as one token, as :class:`TabularEncoder` does."""

    widths = (32, 64, 128)

    def __init__(self, n_features: int, dim: int = 512) -> None:
        super().__init__()
        self.n_features, self.out_channels = int(n_features), int(dim)
        sizes = [self.n_features, *self.widths, self.out_channels]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        if x.ndim != 2 or x.shape[-1] != self.n_features:
            raise ValueError(
                f"the proprio encoder expects (B, {self.n_features}) inputs, got {tuple(x.shape)}"
            )
        return Encoded(self.layers(x)[:, None, :])
