"""The force encoder of Vision&Touch: a stack of causal, strided 1-D convolutions."""

from __future__ import annotations

import torch
from torch import nn

from comm_repro.models.encoders import Encoded


class CausalConv1d(nn.Conv1d):
    """``nn.Conv1d`` padded by (kernel - 1) * dilation on both sides, whose last that-many
    outputs are cut: what is left sees no input after its own position (the authors'
    ``CausalConv1D``). With kernel 2, stride 2 (their setting) output j is
    w0 * x[2j - 1] + w1 * x[2j] + b (x[-1] the zero padding), and T steps give floor(T / 2)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
    ) -> None:
        trim = kernel_size - 1  # dilation 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=trim)
        self.trim = trim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out[..., : -self.trim] if self.trim else out


class CausalConvEncoder(nn.Module):
    """The authors' ForceEncoder: five causal convolutions, kernel 2, stride 2, from
    ``n_features`` (6) through 16, 32, 64, 128 to ``dim`` channels, each followed by
    LeakyReLU(0.1); PyTorch's default initialisation (the authors' ``init_weights`` resets only
    2-D convolutions and batch norms).

    ``forward(x, mask)``: ``x`` (B, 32, n_features) float, the last 32 force readings (channels
    last, as the data has them; transposed here). Each layer halves the length (floor), so 32
    steps leave one, and the (B, dim, 1) output is returned as one token of ``dim`` channels
    (the authors flatten it). Other lengths are refused: floor(T / 32) steps would be left,
    none below 32, and the output width would depend on T. No mask: the window has no padding.

    Because each layer's output j reads inputs 2j - 1 and 2j only, and only output 0 survives
    the last layer, the token depends on the oldest of the 32 readings (x[:, 0]) alone; this is
    the authors' network as published (tests/test_models.py checks it).
    """

    steps = 32
    widths = (16, 32, 64, 128)

    def __init__(self, n_features: int, dim: int = 128) -> None:
        super().__init__()
        self.n_features, self.out_channels = int(n_features), int(dim)
        sizes = [self.n_features, *self.widths, self.out_channels]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [CausalConv1d(a, b, kernel_size=2, stride=2), nn.LeakyReLU(0.1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        if mask is not None:
            raise ValueError("the causal-conv encoder takes no mask: its window has no padding")
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.steps, self.n_features):
            raise ValueError(
                f"the causal-conv encoder expects (B, {self.steps}, {self.n_features}) inputs, "
                f"got {tuple(x.shape)}"
            )
        out = self.layers(x.transpose(1, 2))  # (B, dim, 1)
        return Encoded(out.flatten(1)[:, None, :])
