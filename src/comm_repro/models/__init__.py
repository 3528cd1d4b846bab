"""Encoders, latent converters, the fusion transformer and heads."""

from comm_repro.models.encoders import (
    AlexNetEncoder,
    Encoded,
    ResNet18Encoder,
    ResNet50Encoder,
    build_encoder,
)
from comm_repro.models.force import CausalConv1d, CausalConvEncoder
from comm_repro.models.fusion import FusionTransformer
from comm_repro.models.heads import mlp_head
from comm_repro.models.sequence import GRUEncoder, SequenceEncoder
from comm_repro.models.tabular import ProprioEncoder, TabularEncoder
from comm_repro.models.tokens import (
    FeatureTokens,
    PatchTokens,
    SequenceTokens,
    build_tokenizer,
    sincos_2d,
)

__all__ = [
    "AlexNetEncoder",
    "CausalConv1d",
    "CausalConvEncoder",
    "Encoded",
    "FeatureTokens",
    "FusionTransformer",
    "GRUEncoder",
    "PatchTokens",
    "ProprioEncoder",
    "ResNet18Encoder",
    "ResNet50Encoder",
    "SequenceEncoder",
    "SequenceTokens",
    "TabularEncoder",
    "build_encoder",
    "build_tokenizer",
    "mlp_head",
    "sincos_2d",
]
