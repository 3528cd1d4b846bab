"""Encoders, latent converters, the fusion transformer and heads."""

from comm_repro.models.encoders import AlexNetEncoder, build_encoder, pooled
from comm_repro.models.fusion import FusionTransformer
from comm_repro.models.heads import mlp_head
from comm_repro.models.sequence import SequenceEncoder
from comm_repro.models.tokens import PatchTokens, sincos_2d

__all__ = [
    "AlexNetEncoder",
    "FusionTransformer",
    "PatchTokens",
    "SequenceEncoder",
    "build_encoder",
    "mlp_head",
    "pooled",
    "sincos_2d",
]
