"""Latent converters: encoder outputs -> token sequences of the fusion's width."""

from __future__ import annotations

import torch
from torch import nn

from comm_repro.models.encoders import Encoded


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions (h*w, dim): half the channels encode the row, half the
    column, each as sin/cos pairs over geometric frequencies (as in MAE)."""
    if dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for 2-D sin-cos positions, got {dim}")
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        angles = coord[:, None] * freqs[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class PatchTokens(nn.Module):
    """One token per feature-map location: a linear map C -> dim plus its fixed 2-D position
    (the encoder's ``grid``)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, dim)
        self.dim = dim
        self._positions: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def positions(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, device)
        if key not in self._positions:
            self._positions[key] = sincos_2d(h, w, self.dim).to(device)
        return self._positions[key]

    def forward(self, encoded: Encoded) -> torch.Tensor:
        if encoded.grid is None:
            raise ValueError("patch tokens need the encoder's feature-map grid")
        tokens = self.proj(encoded.tokens)
        return tokens + self.positions(*encoded.grid, tokens.device).to(tokens.dtype)


class SequenceTokens(nn.Module):
    """Sequence tokens as they are when the encoder's width is the fusion's (the authors' MultiBench
    models have no adapter there), else a linear map C -> dim; no positions (the MultiBench
    encoders have none either)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Identity() if in_channels == dim else nn.Linear(in_channels, dim)

    def forward(self, encoded: Encoded) -> torch.Tensor:
        return self.proj(encoded.tokens)


class FeatureTokens(nn.Module):
    """The "feature tokenizer" of tabular inputs (Gorishniy et al., 2021; the authors'
    FeaturesInputAdapter): channel i of the encoder's vector becomes the token x_i * w_i + b_i,
    with w_i, b_i learnt (dim,) vectors initialised from N(0, 1) as the authors do: C channels
    -> C tokens."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_channels, dim))
        self.bias = nn.Parameter(torch.randn(in_channels, dim))

    def forward(self, encoded: Encoded) -> torch.Tensor:
        if encoded.tokens.shape[1] != 1:
            raise ValueError(
                "feature tokens need an encoder that returns one vector per sample, got "
                f"{encoded.tokens.shape[1]} tokens: use tokens: step (or patch for images)"
            )
        x = encoded.tokens[:, 0]  # (B, C): the vector the encoder returns
        return x[..., None] * self.weight + self.bias


class PooledLinear(nn.Module):
    """The latent converter of the linear fusion ablation (comm_repro.models.fusion.LinearFusion):
    the encoder output pooled over its real tokens, then a linear map C -> dim; one token."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, dim)

    def forward(self, encoded: Encoded) -> torch.Tensor:
        return self.proj(encoded.pooled())[:, None]


TOKENIZERS = {"patch": PatchTokens, "step": SequenceTokens, "feature": FeatureTokens}


def build_tokenizer(tokens: str, in_channels: int, dim: int) -> nn.Module:
    """The latent converter a modality's ``tokens`` setting names (``patch``, ``step`` or
    ``feature``; comm_repro.config.modality_tokens gives a modality's, defaults included)."""
    if tokens not in TOKENIZERS:
        raise ValueError(f"tokens must be one of {sorted(TOKENIZERS)}, got {tokens!r}")
    return TOKENIZERS[tokens](in_channels, dim)
