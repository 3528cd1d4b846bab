"""MLP heads between representations and the contrastive losses."""

from __future__ import annotations

from torch import nn


def mlp_head(in_dim: int, hidden: int, out_dim: int, layers: int = 3) -> nn.Sequential:
    """(Linear-BN-ReLU) x (layers - 1), then Linear: the projection head of CoMM (512, 256) and
    the self-supervised heads of Cross+Self (1024, 256)."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)
