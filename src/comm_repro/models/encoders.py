"""Per-modality encoders. Each maps a batch (and its padding mask) to tokens: an ``Encoded``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from comm_repro.config import ConfigError


def pool_before_relu(trunk: nn.Sequential) -> nn.Sequential:
    """The same trunk with every ReLU -> MaxPool pair swapped to MaxPool -> ReLU.

    Max-pooling commutes with ReLU (both are monotone), in value and in gradient, so the output
    and every gradient are unchanged; the ReLU and its backward then touch the pooled map, 4.5x
    smaller, which saves about 5 % of an AlexNet training step on the CPU. Neither layer has
    parameters, so state-dict keys stay those of torchvision.
    """
    layers = list(trunk)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


@dataclass
class Encoded:
    """An encoder's output: (B, N, C) tokens, their (B, N) bool mask (True at real steps; None
    when every token is real) and, for feature maps, the (h, w) grid the tokens were laid out
    on (row-major), which positional encodings need."""

    tokens: torch.Tensor
    mask: torch.Tensor | None = None
    grid: tuple[int, int] | None = None

    def pooled(self) -> torch.Tensor:
        """(B, C): the mean over the real tokens (a sample without one gets zeros)."""
        if self.mask is None:
            return self.tokens.mean(dim=1)
        weights = self.mask.to(self.tokens.dtype)[..., None]
        return (self.tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class ConvTrunk(nn.Module):
    """A convolutional image trunk whose (B, C, h, w) feature map becomes h * w tokens of C
    channels (row-major, ``grid`` (h, w)). Subclasses set ``out_channels``, ``min_input_size``
    (the smallest side that leaves a non-empty map), ``label`` and ``feature_map``."""

    out_channels: int
    min_input_size: int
    label: str

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        if mask is not None:
            raise ValueError(f"images have no padding: the {self.label} encoder takes no mask")
        if min(x.shape[-2:]) < self.min_input_size:
            height, width = x.shape[-2:]
            raise ConfigError(
                f"the {self.label} encoder needs images of at least {self.min_input_size} x "
                f"{self.min_input_size} px, got {height} x {width}: set "
                f"datasets.<name>.resolution to {self.min_input_size} or more"
            )
        fmap = self.feature_map(x)
        h, w = fmap.shape[-2:]
        return Encoded(fmap.flatten(2).transpose(1, 2), None, (h, w))


class AlexNetEncoder(ConvTrunk):
    """torchvision's AlexNet convolutional trunk, randomly initialised (trained from scratch).

    (B, 3, H, W) -> (B, 256, h, w) maps, returned as h * w tokens of 256 channels (row-major,
    ``grid`` (h, w)): 6 x 6 at 224 px, 3 x 3 at 128 px, 1 x 1 at 63 and 64 px.
    The side shrinks as conv 11/4 pad 2 -> pool 3/2 -> conv 5 pad 2 -> pool 3/2 -> 3 convs 3 pad 1
    -> pool 3/2: 63 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1, and 62 -> 14 -> 6 -> 6 -> 2 -> 2 -> nothing,
    so ``min_input_size`` is 63 (the config schema's minimum of datasets.<name>.resolution).
    """

    out_channels = 256
    min_input_size = 63
    label = "AlexNet"

    def __init__(self) -> None:
        from torchvision.models import alexnet  # imported on use: torchvision takes seconds

        super().__init__()
        self.features = pool_before_relu(alexnet(weights=None).features)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ResNetEncoder(ConvTrunk):
    """A torchvision ResNet (``arch``) up to ``layer4`` (no global pool, no classifier), randomly
    initialised. The modules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ...) so the
    state dict is torchvision's without ``fc``. Every stride-2 layer (conv1 7/2 pad 3, max-pool
    3/2 pad 1, the first 3 x 3 conv and the shortcut of layers 2-4) maps a side s to
    ceil(s / 2), so the map's side is ceil(H / 32): any image of 1 px or more leaves at least
    one location, and ``min_input_size`` is 1."""

    arch = ""
    min_input_size = 1

    def __init__(self) -> None:
        import torchvision.models

        super().__init__()
        net = getattr(torchvision.models, self.arch)(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet18Encoder(ResNetEncoder):
    """ResNet-18 (512-channel maps: 4 x 4 tokens at 128 px, 7 x 7 at 224 px): the authors'
    Vision&Touch image encoder (timm ``resnet18``, ``global_pool=''``)."""

    arch, out_channels, label = "resnet18", 512, "ResNet-18"


class ResNet50Encoder(ResNetEncoder):
    """ResNet-50 (2048-channel maps of bottleneck blocks: 2 x 2 tokens at 64 px, 7 x 7 at 224
    px): the encoder ablation of the paper's Table 7 (Trifeature, from scratch)."""

    arch, out_channels, label = "resnet50", 2048, "ResNet-50"


class GivenOutputs(nn.Module):
    """Stands for an encoder whose outputs the data holds already (a frozen encoder's probe
    features, computed once: comm_repro.features), so that a probe neither loads nor runs it.
    It has no parameters (a frozen encoder has none in a state dict either)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        raise RuntimeError("this modality's encoder outputs are given: read them, not inputs")


def build_encoder(cfg: dict[str, Any], input_shape: Sequence[int]) -> nn.Module:
    """The encoder ``cfg`` names (a modality's resolved ``encoder`` settings) for samples of
    ``input_shape`` (without the batch axis)."""
    from comm_repro.models.force import CausalConvEncoder
    from comm_repro.models.frozen import ENCODER_CLASSES
    from comm_repro.models.sequence import GRUEncoder, SequenceEncoder
    from comm_repro.models.tabular import ProprioEncoder, TabularEncoder

    name = cfg.get("name")
    options = {k: v for k, v in cfg.items() if k != "name"}
    if name == "given":  # internal: set by comm_repro.features.with_given_encoders
        return GivenOutputs(options["out_channels"])
    images = {"alexnet": AlexNetEncoder, "resnet18": ResNet18Encoder, "resnet50": ResNet50Encoder}
    if name in images:
        return images[name]()
    if name in ENCODER_CLASSES:  # pretrained, named by options (model, weights, ...)
        try:
            return ENCODER_CLASSES[name](**options)
        except TypeError as err:
            raise ConfigError(f"encoder {name!r}: {err}") from None
    takes_features = {
        "transformer": SequenceEncoder,
        "gru": GRUEncoder,
        "causal_conv": CausalConvEncoder,
        "mlp": TabularEncoder,
        "proprio": ProprioEncoder,
    }
    if name in takes_features:
        try:
            return takes_features[name](int(input_shape[-1]), **options)
        except TypeError as err:
            raise ConfigError(f"encoder {name!r}: {err}") from None
    known = ", ".join([*images, *ENCODER_CLASSES, *takes_features])
    raise ConfigError(f"encoder {name!r} is unknown; known: {known}")
