"""The views a method asks of a batch: ``strong`` and ``weak`` augmentations and the ``plain``
(deterministic) input, per modality by its kind, on the batch's device.

Images are augmented modality by modality (``comm_repro.augment``); the sequence modalities of
a sample are augmented together, as the authors' "drop + noise" (and Fig. 6's crop) decides
each op once per sample for all of them (``comm_repro.sequence_augment``); a tabular modality
(a vector per sample) gets its own noise, decided per sample, as the authors' "noise" on
MIMIC's static features (the same noise applied to the vector as one step). Text (token ids)
has no views of its own: its encoder masks tokens in training (the authors' text
augmentation), and which of a sample's texts a batch holds is drawn with the batch
(``PairedBank.gather``), so both views of a sample read the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from comm_repro.augment import image_view_transforms
from comm_repro.config import ConfigError
from comm_repro.sequence_augment import SequenceAugment

VIEWS = ("strong", "weak")


class Views:
    """``views(name, inputs, masks, which=None)``: the ``name`` view of the modalities ``which``
    (default all), as a list in that order; ``views.plain(m, x)``: modality m's input as the
    encoders take it, without randomness."""

    def __init__(self, modalities: Sequence[dict[str, Any]], shapes: Sequence[Sequence[int]]):
        self.kinds = [m["kind"] for m in modalities]
        self.image: dict[int, Any] = {}
        self.tabular: dict[int, dict[str, SequenceAugment | None]] = {}
        shared: dict[str, dict] | None = None  # the sequence modalities' augment settings
        for m, (modality, shape) in enumerate(zip(modalities, shapes)):
            aug = modality["augment"]
            if modality["kind"] == "image":
                # Views come out at the resolution the data has: (N, H, W, 3) uint8 banks.
                self.image[m] = image_view_transforms(int(shape[0]), aug["strong"], aug["weak"])
            elif modality["kind"] == "sequence":
                settings = {view: aug[view] for view in VIEWS}
                if shared is not None and settings != shared:
                    raise ConfigError(
                        f"modality {modality['name']!r}: the sequence modalities of a dataset "
                        "are augmented together and need the same augment settings"
                    )
                shared = settings
            elif modality["kind"] == "tabular":
                # noise only: a vector has no steps to drop
                self.tabular[m] = {
                    view: _sequence_augment({**aug[view], "drop_p": 0.0}) for view in VIEWS
                }
            elif modality["kind"] != "text":
                raise ConfigError(f"modality kind {modality['kind']!r} has no views")
        self.sequence = {view: _sequence_augment(s) for view, s in (shared or {}).items()}

    def __call__(
        self,
        name: str,
        inputs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        which: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        if name not in VIEWS:
            raise ValueError(f"a view is one of {VIEWS}, got {name!r}")
        which = list(range(len(self.kinds))) if which is None else list(which)
        out: dict[int, torch.Tensor] = {}
        sequences = [m for m in which if self.kinds[m] == "sequence"]
        for m in which:
            if self.kinds[m] == "image":
                out[m] = getattr(self.image[m], name)(inputs[m])
            elif self.kinds[m] == "tabular":
                aug = self.tabular[m][name]
                out[m] = inputs[m] if aug is None else aug([inputs[m][:, None]], [None])[0][:, 0]
            elif self.kinds[m] == "text":
                out[m] = inputs[m]
            elif m == sequences[0]:  # all sequence modalities at once, at the first one's turn
                aug = self.sequence[name]
                xs = [inputs[s] for s in sequences]
                views = xs if aug is None else aug(xs, [masks[s] for s in sequences])
                out.update(zip(sequences, views))
        return [out[m] for m in which]

    def plain(self, m: int, x: torch.Tensor) -> torch.Tensor:
        return self.image[m].plain(x) if self.kinds[m] == "image" else x


def _sequence_augment(settings: dict[str, Any]) -> SequenceAugment | None:
    """The crop, drop and noise augmentation of ``settings``; None (the inputs as they are)
    when it would never apply."""
    aug = SequenceAugment(**settings)
    return aug if aug.active else None
