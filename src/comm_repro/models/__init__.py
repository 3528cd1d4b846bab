"""Encoders, latent converters, the fusion transformer and heads."""

from comm_repro.models.encoders import AlexNetEncoder, Encoded, build_encoder
from comm_repro.models.fusion import FusionTransformer
from comm_repro.models.heads import mlp_head
from comm_repro.models.sequence import GRUEncoder, SequenceEncoder
from comm_repro.models.tabular import TabularEncoder
from comm_repro.models.tokens import (
    FeatureTokens,
    PatchTokens,
    SequenceTokens,
    build_tokenizer,
    sincos_2d,
)

__all__ = [
    "AlexNetEncoder",
    "Encoded",
    "FeatureTokens",
    "FusionTransformer",
    "GRUEncoder",
    "PatchTokens",
    "SequenceEncoder",
    "SequenceTokens",
    "TabularEncoder",
    "build_encoder",
    "build_tokenizer",
    "mlp_head",
    "sincos_2d",
]
