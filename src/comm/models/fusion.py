"""The fusion transformer: one [CLS] embedding from the tokens of any subset of modalities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        x = x + self.out(att.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class FusionTransformer(nn.Module):
    """[CLS] + concatenated modality tokens -> ``layers`` blocks -> LayerNorm'd [CLS].

    ``subset`` lists the modalities whose tokens enter the sequence; leaving a modality out is
    CoMM's masking (the excluded tokens cannot influence the output at all).
    """

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 4.0, layers: int = 1) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, tokens: list[torch.Tensor], subset: Sequence[int] | None = None
    ) -> torch.Tensor:
        chosen = range(len(tokens)) if subset is None else subset
        seq = [tokens[m] for m in chosen]
        if not seq:
            raise ValueError("the fusion needs at least one modality")
        x = torch.cat([self.cls.expand(seq[0].shape[0], -1, -1).to(seq[0].dtype), *seq], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0])
