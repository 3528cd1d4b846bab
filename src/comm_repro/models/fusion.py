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
        self.dim, self.heads = dim, heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim // self.heads).transpose(1, 2)

    def _finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = att.shape
        x = x + self.out(att.transpose(1, 2).reshape(b, n, self.dim))
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """``keys``: optional (B, N) bool, True at the positions that may be attended to."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        att = F.scaled_dot_product_attention(
            *map(self._split_heads, (q, k, v)), attn_mask=_attention_mask(keys)
        )
        return self._finish(x, att)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = F.linear(self.norm1(x), self.qkv.weight[self.dim :], self.qkv.bias[self.dim :])
        return tuple(map(self._split_heads, kv.chunk(2, dim=-1)))

    def cls_output(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The block's output at position 0 only, given the keys/values of the positions it
        attends to (and optionally which of them it may attend to, (B, N) bool): all the fusion
        needs from its last block."""
        cls = x[:, :1]
        q = F.linear(self.norm1(cls), self.qkv.weight[: self.dim], self.qkv.bias[: self.dim])
        att = F.scaled_dot_product_attention(
            self._split_heads(q), k, v, attn_mask=_attention_mask(keys)
        )
        return self._finish(cls, att)[:, 0]


def _attention_mask(keys: torch.Tensor | None) -> torch.Tensor | None:
    """(B, N) bool key mask -> (B, 1, 1, N), broadcast over heads and queries (SDPA: True takes
    part in attention)."""
    return None if keys is None else keys[:, None, None, :]


class SubsetFusion(nn.Module):
    """A fusion of the modalities' tokens into one embedding per subset of modalities.
    Subclasses define ``forward_subsets(tokens, subsets, masks)``: one embedding per subset
    (None = all modalities); ``forward`` fuses one subset."""

    def forward(
        self,
        tokens: list[torch.Tensor],
        subset: Sequence[int] | None = None,
        masks: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        return self.forward_subsets(tokens, [subset], masks)[0]


class FusionTransformer(SubsetFusion):
    """[CLS] + concatenated modality tokens -> ``layers`` blocks -> LayerNorm'd [CLS].

    A ``subset`` lists the modalities whose tokens enter the sequence; leaving a modality out is
    CoMM's masking (the excluded tokens cannot influence the output at all).

    Only the [CLS] output is used, so the last block is evaluated at [CLS] alone; with one block
    (the paper's setting) every subset also shares the per-token keys and values, which are
    computed once. Both shortcuts give the same numbers as running the full sequence.

    Sequence modalities come right-padded to the longest sample of a batch: their boolean
    masks (True at real steps) make the padded steps invisible to attention.
    """

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 4.0, layers: int = 1) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def _sequence(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        cls = self.cls.expand(tokens[0].shape[0], -1, -1).to(tokens[0].dtype)
        return torch.cat([cls, *tokens], dim=1)

    @staticmethod
    def _masked(
        tokens: list[torch.Tensor], masks: Sequence[torch.Tensor | None] | None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Tokens with their padded steps zeroed, and the (B, 1 + sum T) key mask (True at [CLS]
        and at real steps); the tokens unchanged and None when no modality has a mask.

        Zeroing keeps whatever the padded steps hold (even inf or NaN) out of the arithmetic, so
        the output, and its gradient, do not depend on them."""
        if masks is None or all(m is None for m in masks):
            return tokens, None
        if len(masks) != len(tokens):
            raise ValueError(f"got {len(masks)} masks for {len(tokens)} modalities")
        b, device = tokens[0].shape[0], tokens[0].device
        keys = [torch.ones(b, 1, dtype=torch.bool, device=device)]
        out = []
        for m, (t, mask) in enumerate(zip(tokens, masks)):
            if mask is None:
                keys.append(torch.ones(t.shape[:2], dtype=torch.bool, device=device))
                out.append(t)
                continue
            if mask.shape != t.shape[:2]:
                raise ValueError(
                    f"the mask of modality {m} has shape {tuple(mask.shape)}, its tokens "
                    f"{tuple(t.shape)}: expected (B, T) = {tuple(t.shape[:2])}"
                )
            mask = mask.to(device=device, dtype=torch.bool)
            keys.append(mask)
            out.append(
                torch.where(mask[..., None], t, torch.zeros((), dtype=t.dtype, device=device))
            )
        return out, torch.cat(keys, dim=1)

    def forward_subsets(
        self,
        tokens: list[torch.Tensor],
        subsets: Sequence[Sequence[int] | None],
        masks: Sequence[torch.Tensor | None] | None = None,
    ) -> list[torch.Tensor]:
        """One [CLS] embedding per subset of modalities (None = all).

        ``masks``: per modality None or a (B, T) bool tensor, True at real steps. Padded steps
        are never attended to (their values do not matter); [CLS] always attends to itself, so
        a sample whose chosen modalities are all padding gets a finite embedding from [CLS]
        alone. Without masks every step is real.
        """
        chosen = [list(range(len(tokens))) if s is None else list(s) for s in subsets]
        if any(not s for s in chosen):
            raise ValueError("the fusion needs at least one modality")
        tokens, keys = self._masked(tokens, masks)
        last = self.blocks[-1]
        if len(self.blocks) == 1:
            x = self._sequence(tokens)
            k, v = last.keys_values(x)
            bounds = torch.tensor([0, *(t.shape[1] for t in tokens)]).cumsum(0) + 1
            outs = []
            for s in chosen:
                keep = torch.cat(
                    [torch.zeros(1, dtype=torch.long)]
                    + [torch.arange(int(bounds[m]), int(bounds[m + 1])) for m in s]
                ).to(x.device)
                kept = None if keys is None else keys[:, keep]
                outs.append(last.cls_output(x, k[:, :, keep], v[:, :, keep], kept))
            return [self.norm(o) for o in outs]
        starts = [1]  # where each modality's steps begin in the key mask
        for t in tokens:
            starts.append(starts[-1] + t.shape[1])
        outs = []
        for s in chosen:
            x = self._sequence([tokens[m] for m in s])
            sub = None
            if keys is not None:
                sub = torch.cat(
                    [keys[:, :1]] + [keys[:, starts[m] : starts[m + 1]] for m in s], dim=1
                )
            for block in self.blocks[:-1]:
                x = block(x, sub)
            outs.append(self.norm(last.cls_output(x, *last.keys_values(x), sub)))
        return outs


class LinearFusion(SubsetFusion):
    """The fusion ablation (paper Table 4, "Concat + Linear"): no attention, no latent
    converters. Each modality's encoder output, pooled over its real tokens, is mapped by a
    linear layer of its own to ``dim`` (:class:`PooledLinear`, CoMM's tokenizer in this mode:
    one token per modality); the fusion concatenates the n tokens, zeros in the place of a
    modality left out of a subset, and maps them by one linear layer to the embedding. Every
    function of the modalities it computes is linear, so it cannot represent an interaction
    such as XOR (synergy)."""

    def __init__(self, n_modalities: int, dim: int) -> None:
        super().__init__()
        self.n_modalities, self.dim = n_modalities, dim
        self.linear = nn.Linear(n_modalities * dim, dim)

    def forward_subsets(self, tokens, subsets, masks=None):
        """One embedding per subset of modalities (None = all); ``tokens``: one (B, 1, dim)
        token per modality (the masks were applied by the pooling)."""
        if len(tokens) != self.n_modalities:
            raise ValueError(f"got {len(tokens)} modalities, the fusion has {self.n_modalities}")
        vectors = [t[:, 0] for t in tokens]
        outs = []
        for s in subsets:
            chosen = range(self.n_modalities) if s is None else set(s)
            if not chosen:
                raise ValueError("the fusion needs at least one modality")
            parts = [v if m in chosen else torch.zeros_like(v) for m, v in enumerate(vectors)]
            outs.append(self.linear(torch.cat(parts, dim=1)))
        return outs
