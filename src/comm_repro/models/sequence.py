"""The MultiBench sequence encoders: padded (B, T, F) feature sequences -> (B, T, dim) tokens.

The Transformer (the affect datasets') first, then the GRU (MIMIC's time series).

The layers are PyTorch's ``nn.TransformerEncoderLayer`` modules (their parameters, names and
initialisation), run by our own forward: the same pre-norm computation, written for the CPU. At
the paper's MOSI size (d 40, feed-forward 2048) PyTorch's layer spends most of a training step
outside the matrix products: drawing dropout masks with ``bernoulli_`` (about 7 ns per element on
a 2-core AVX-512 CPU) and streaming the (tokens x 2048) feed-forward activations through memory
five times per pass. Here the dropout masks come from 16 random bits per element drawn 64 at a
time, and the feed-forward runs in blocks of rows that stay in the CPU cache, forward and
backward, with ReLU and dropout applied in place; only the rows of real steps go through it.
The arithmetic is the same layer's, with each dropout probability rounded to a multiple of
2**-16 (``benchmarks/bench_mosi_step.py`` measures the effect).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from comm_repro.models.encoders import Encoded

# 16-bit keys per element: a dropout probability is applied as round(p * 2**16) / 2**16
# (0.1 -> 0.1000061)
KEY_LEVELS = 1 << 16
# rows of the feed-forward done at once on the CPU: 512 x 2048 float32 activations (4 MiB) stay
# in cache between the matrix product that makes them and the one that reads them
CPU_BLOCK_ROWS = 512


def dropout_keys(shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Float tensor of ``shape`` holding independent uniform integers in [-2**15, 2**15), drawn
    64 bits at a time from torch's RNG of ``device`` (so seeding and saved RNG states reproduce
    them): an element is kept by dropout with probability p when its key exceeds
    :func:`key_threshold` (p)."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), 2**63 - 1)
    return words.view(torch.int16)[:n].view(shape).to(torch.float32)


def key_threshold(p: float) -> float:
    return round(p * KEY_LEVELS) - KEY_LEVELS // 2 - 0.5


# aten's threshold_backward(g, s, t) is g where s > t, else 0: one fused, vectorised pass that
# applies a ReLU's or a dropout's mask (autograd knows its derivative); .grad_input writes in place
_where_above = torch.ops.aten.threshold_backward
_where_above_ = torch.ops.aten.threshold_backward.grad_input


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (as ``F.dropout``) with keys from :func:`dropout_keys`."""
    if not training or p == 0.0:
        return x
    keys = dropout_keys(x.shape, x.device)
    return _where_above(x, keys, key_threshold(p)) * (1.0 / (1.0 - p))


class _FeedForward(torch.autograd.Function):
    """``linear2(dropout(relu(linear1(x))))`` on (N, d) rows, in blocks of ``block`` rows.

    Saves the hidden activations after ReLU and dropout (h); since the dropout scale is
    positive, h > 0 exactly where both ReLU and dropout passed the gradient, so h is all the
    backward pass needs.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, p: float, block: int):
        n, hidden = x.shape[0], w1.shape[0]
        h = x.new_empty(n, hidden)
        out = x.new_empty(n, w2.shape[0])
        scale = 1.0 / (1.0 - p)
        for s in range(0, n, block):
            hb = h[s : s + block]
            torch.addmm(b1, x[s : s + block], w1.t(), out=hb)
            hb.relu_()
            if p > 0.0:
                keys = dropout_keys(hb.shape, hb.device)
                _where_above_(hb, keys, key_threshold(p), grad_input=hb).mul_(scale)
            torch.addmm(b2, hb, w2.t(), out=out[s : s + block])
        ctx.save_for_backward(x, w1, w2, h)
        ctx.scale, ctx.block = scale, block
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w1, w2, h = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = torch.empty_like(x)
        # W1's gradient is accumulated transposed: x^T @ gh is the faster product of the two
        grad_w1t, grad_w2 = torch.zeros_like(w2), torch.zeros_like(w2)
        grad_b1 = torch.zeros(w1.shape[0], dtype=x.dtype, device=x.device)
        for s in range(0, x.shape[0], ctx.block):
            go, hb, xb = grad_out[s : s + ctx.block], h[s : s + ctx.block], x[s : s + ctx.block]
            gh = go @ w2
            _where_above_(gh, hb, 0.0, grad_input=gh)
            if ctx.scale != 1.0:
                gh.mul_(ctx.scale)
            grad_w2.addmm_(go.t(), hb)
            grad_w1t.addmm_(xb.t(), gh)
            grad_b1 += gh.sum(0)
            torch.mm(gh, w1, out=grad_x[s : s + ctx.block])
        return grad_x, grad_w1t.t(), grad_b1, grad_w2, grad_out.sum(0), None, None


def feed_forward(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's feed-forward block (without its residual dropout) on (N, d) rows."""
    p = layer.dropout.p if layer.training else 0.0
    block = CPU_BLOCK_ROWS if x.device.type == "cpu" else max(1, x.shape[0])
    l1, l2 = layer.linear1, layer.linear2
    if torch.is_autocast_enabled(x.device.type):  # the blocks run outside autocast's casts
        dtype = torch.get_autocast_dtype(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            params = [t.to(dtype) for t in (l1.weight, l1.bias, l2.weight, l2.bias)]
            return _FeedForward.apply(x.to(dtype), *params, p, block)
    return _FeedForward.apply(x, l1.weight, l1.bias, l2.weight, l2.bias, p, block)


def self_attention(
    layer: nn.TransformerEncoderLayer, x: torch.Tensor, ignore: torch.Tensor | None
) -> torch.Tensor:
    """The layer's multi-head self-attention on (B, T, d); ``ignore`` (B, T) True at keys that
    take no part; dropout on the attention weights as ``nn.MultiheadAttention`` does."""
    attn = layer.self_attn
    b, t, d = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    scores = (q * (d // heads) ** -0.5) @ k.transpose(-2, -1)
    if ignore is not None:
        scores = scores.masked_fill(ignore[:, None, None, :], float("-inf"))
    weights = dropout(scores.softmax(dim=-1), attn.dropout, layer.training)
    out = (weights @ v).transpose(1, 2).reshape(b, t, d)
    return attn.out_proj(out)


def encoder_layer(
    layer: nn.TransformerEncoderLayer,
    x: torch.Tensor,
    ignore: torch.Tensor | None,
    rows: torch.Tensor | None,
) -> torch.Tensor:
    """One pre-norm layer: x + dropout(SA(norm1(x))), then x + dropout(FF(norm2(x))), the
    feed-forward only at ``rows`` (B, T) bool (None: every step); other steps keep x."""
    x = x + dropout(self_attention(layer, layer.norm1(x), ignore), layer.dropout1.p, layer.training)
    if rows is None:
        ff = feed_forward(layer, layer.norm2(x).reshape(-1, x.shape[-1])).view(x.shape)
        return x + dropout(ff, layer.dropout2.p, layer.training)
    real = x[rows]
    ff = feed_forward(layer, layer.norm2(real))
    return x.index_put((rows,), real + dropout(ff, layer.dropout2.p, layer.training))


def _padding_zeroed(tokens: torch.Tensor, mask: torch.Tensor | None) -> Encoded:
    """The tokens with their padded steps (mask False) set to zero, and the mask."""
    if mask is None:
        return Encoded(tokens)
    zero = torch.zeros((), dtype=tokens.dtype, device=tokens.device)
    return Encoded(torch.where(mask[..., None], tokens, zero), mask)


class SequenceEncoder(nn.Module):
    """A 1x1 convolution (no bias) from ``n_features`` to ``dim`` channels, then ``layers``
    pre-norm transformer layers with ``heads`` heads, a ReLU feed-forward of
    ``dim_feedforward`` units and ``dropout`` (PyTorch's defaults 2048 and 0.1); no positional
    encoding. This is CoMM's encoder of the MultiBench affect modalities (dim 40, 5 layers,
    5 heads).

    ``forward(x, mask)``: ``x`` (B, T, F) float, right-padded; ``mask`` (B, T) bool, True at real
    steps (None: all real). Returns the tokens (B, T, dim) with the mask (an ``Encoded``).
    Padded steps take no part in attention, their inputs are ignored, and their outputs are
    zero, so nothing about them reaches the real steps or later layers. A sample with no real
    step attends over its (zeroed) padding instead, which keeps it finite; its tokens are zero.

    The layers are copies of one initialised ``nn.TransformerEncoderLayer``, as
    ``nn.TransformerEncoder`` makes them (so they start from identical weights, as in the
    authors' model); the forward pass is this module's (see the module docstring).
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
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match inputs {tuple(x.shape)}"
            )
        ignore = rows = None
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
            x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
            if not bool(mask.all()):
                # keys ignored in attention; a sample with no real step keeps every step so
                # that no attention row is empty (an empty row would give NaN)
                ignore = ~mask & mask.any(dim=1, keepdim=True)
                rows = mask
        h = self.proj(x.transpose(1, 2)).transpose(1, 2)
        for layer in self.transformer.layers:
            h = encoder_layer(layer, h, ignore, rows)
        return _padding_zeroed(h, mask)


class GRUEncoder(nn.Module):
    """A one-layer GRU from ``n_features`` to ``dim`` hidden units whose every output step is a
    token (MultiBench's GRU as CoMM uses it on MIMIC's time series: 12 -> 512, 24 tokens).
    ``forward(x, mask)`` as :class:`SequenceEncoder`: right-padded (B, T, F) inputs with a (B, T)
    mask; the GRU runs forward in time, so padded steps after the real ones cannot reach them,
    and their tokens are zero."""

    def __init__(self, n_features: int, dim: int = 512) -> None:
        super().__init__()
        self.n_features, self.dim = int(n_features), int(dim)
        self.out_channels = self.dim
        self.gru = nn.GRU(self.n_features, self.dim, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        if x.ndim != 3 or x.shape[-1] != self.n_features:
            raise ValueError(
                f"the GRU encoder expects (B, T, {self.n_features}) inputs, got {tuple(x.shape)}"
            )
        tokens, _ = self.gru(x)
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
        return _padding_zeroed(tokens, mask)
