"""The MultiBench sequence encoder: padded (B, T, F) feature sequences -> (B, T, dim) tokens."""

from __future__ import annotations

import torch
from torch import nn

from comm_repro.models.encoders import Encoded


class SequenceEncoder(nn.Module):
    """A 1x1 convolution (no bias) from ``n_features`` to ``dim`` channels, then ``layers``
    pre-norm ``nn.TransformerEncoderLayer`` blocks with ``heads`` heads, a ReLU feed-forward of
    ``dim_feedforward`` units and ``dropout`` (PyTorch's defaults 2048 and 0.1); no positional
    encoding. This is CoMM's encoder of the MultiBench affect modalities (dim 40, 5 layers,
    5 heads).

    ``forward(x, mask)``: ``x`` (B, T, F) float, right-padded; ``mask`` (B, T) bool, True at real
    steps (None: all real). Returns the tokens (B, T, dim) with the mask (an ``Encoded``).
    Padded steps take no part in attention (``src_key_padding_mask``), their inputs are ignored,
    and their outputs are zero, so nothing about them reaches the real steps or later layers. A
    sample with no real step attends over its (zeroed) padding instead, which keeps it finite;
    its tokens are zero.

    The layers are copies of one initialised layer, as ``nn.TransformerEncoder`` makes them (so
    they start from identical weights, as in the authors' model).
    """

    def __init__(
        self,
        n_features: int,
        dim: int = 40,
        layers: int = 5,
        heads: int = 5,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"the sequence encoder's dim {dim} is not divisible by heads {heads}")
        self.n_features, self.dim = int(n_features), int(dim)
        self.out_channels = self.dim
        self.proj = nn.Conv1d(self.n_features, self.dim, kernel_size=1, bias=False)
        layer = nn.TransformerEncoderLayer(
            d_model=self.dim,
            nhead=heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        if x.ndim != 3 or x.shape[-1] != self.n_features:
            raise ValueError(
                f"the sequence encoder expects (B, T, {self.n_features}) inputs, "
                f"got {tuple(x.shape)}"
            )
        if mask is None:
            h = self.proj(x.transpose(1, 2)).transpose(1, 2)
            return Encoded(self.transformer(h))
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match inputs {tuple(x.shape)}"
            )
        mask = mask.to(device=x.device, dtype=torch.bool)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        x = torch.where(mask[..., None], x, zero)
        h = self.proj(x.transpose(1, 2)).transpose(1, 2)
        # PyTorch's key padding mask is True where a step is ignored. A sample with no real step
        # keeps every step so that no attention row is empty (an empty row would give NaN).
        ignore = ~mask & mask.any(dim=1, keepdim=True)
        h = self.transformer(h, src_key_padding_mask=ignore)
        return Encoded(torch.where(mask[..., None], h, zero.to(h.dtype)), mask)
