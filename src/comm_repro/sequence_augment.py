"""CoMM's "drop + noise" augmentation of padded sequence batches, on the batch's device.

The authors augment each sample's unpadded sequences (MultiBench affect modalities) with
``Compose([RandomApply([drop], p), RandomApply([noise], p)])`` applied to the list of its
modalities, so per sample:

- drop (probability ``drop_p``, decided once for all modalities of the sample): every modality
  draws its own fraction ``f ~ U(drop_frac)`` and zeroes ``round(f * n)`` of its ``n`` real
  steps, chosen uniformly without replacement (independently per modality: in the authors' code
  the ``multimodal`` flag is always False). Rounding, not flooring, is theirs too: a short
  sequence can lose a little more than the fraction's upper bound (both steps of a 2-step one);
- noise (probability ``noise_p``, decided once per sample): N(0, ``noise_std``^2) is added to
  every real step of every modality, dropped ones included (drop runs first).

Here a whole right-padded batch is done at once: a (B, T) mask per modality (True at real steps)
says which steps are real, the chosen steps come from ranking per-step uniform keys (padded
steps rank last), and padded steps are left exactly as they are (zero after collation). No loop
runs over samples; random numbers are drawn for the whole batch from ``generator`` (on its
device) or from torch's default RNG of the batch's device, so a seeded generator reproduces a
batch exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SequenceAugmentParams:
    """Per-sample draws of one batch. ``drop``, ``noise``: (B,) bool, whether the op applies to
    the sample. ``frac``: (B, M) drop fraction per sample and modality. ``dropped``: per modality
    (B, T_m) bool, the steps zeroed. ``noise_values``: per modality (B, T_m, F_m) standard normal
    draws (scaled by ``noise_std`` when applied)."""

    drop: torch.Tensor
    noise: torch.Tensor
    frac: torch.Tensor
    dropped: list[torch.Tensor]
    noise_values: list[torch.Tensor]


def _real_steps(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if x.ndim != 3:
        raise ValueError(f"sequence batches must be (B, T, F), got {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match inputs {tuple(x.shape)}")
    return mask.to(device=x.device, dtype=torch.bool)


class SequenceAugment:
    """Drop + noise views of padded sequence modalities: ``aug(xs, masks, generator)`` with
    ``xs`` a list of (B, T_m, F_m) float batches and ``masks`` a matching list of (B, T_m) bool
    masks (None: every step real) returns the augmented batches (new tensors; the masks stay
    valid unchanged)."""

    def __init__(
        self,
        drop_p: float = 0.5,
        drop_frac: Sequence[float] = (0.0, 0.8),
        noise_p: float = 0.5,
        noise_std: float = 0.1,
    ) -> None:
        lo, hi = float(drop_frac[0]), float(drop_frac[1])
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"drop_frac must satisfy 0 <= low <= high <= 1, got {drop_frac}")
        if not (0.0 <= drop_p <= 1.0 and 0.0 <= noise_p <= 1.0) or noise_std < 0:
            raise ValueError("drop_p and noise_p must lie in [0, 1] and noise_std be >= 0")
        self.drop_p, self.drop_frac = float(drop_p), (lo, hi)
        self.noise_p, self.noise_std = float(noise_p), float(noise_std)

    def __repr__(self) -> str:
        return (
            f"SequenceAugment(drop_p={self.drop_p}, drop_frac={self.drop_frac}, "
            f"noise_p={self.noise_p}, noise_std={self.noise_std})"
        )

    def sample(
        self,
        xs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> SequenceAugmentParams:
        """Draw the parameters of a batch. The stream is fixed by the batch's shapes alone (one
        (B, 2 + M) uniform draw, then per modality (B, T) uniform keys and (B, T, F) normals)."""
        if not xs:
            raise ValueError("SequenceAugment needs at least one modality")
        masks = [None] * len(xs) if masks is None else list(masks)
        if len(masks) != len(xs):
            raise ValueError(f"got {len(masks)} masks for {len(xs)} modalities")
        real = [_real_steps(x, m) for x, m in zip(xs, masks)]
        b, device = xs[0].shape[0], xs[0].device
        if any(x.shape[0] != b for x in xs):
            raise ValueError("all modalities of a batch must have the same batch size")
        dev = generator.device if generator is not None else device
        u = torch.rand(b, 2 + len(xs), device=dev, generator=generator).to(device)
        drop, noise = u[:, 0] < self.drop_p, u[:, 1] < self.noise_p
        lo, hi = self.drop_frac
        frac = lo + (hi - lo) * u[:, 2:]
        dropped, noise_values = [], []
        for m, (x, r) in enumerate(zip(xs, real)):
            keys = torch.rand(x.shape[:2], device=dev, generator=generator).to(device)
            z = torch.randn(x.shape, device=dev, generator=generator).to(device)
            # Padded steps get keys above every real key, so the k lowest ranks are k real steps
            # drawn uniformly without replacement.
            rank = torch.where(r, keys, 2.0).argsort(dim=1).argsort(dim=1)
            count = (frac[:, m].double() * r.sum(dim=1)).round()  # half to even, as round()
            dropped.append(drop[:, None] & (rank < count[:, None]))
            noise_values.append(z)
        return SequenceAugmentParams(drop, noise, frac, dropped, noise_values)

    def apply(
        self,
        xs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None] | None,
        params: SequenceAugmentParams,
    ) -> list[torch.Tensor]:
        """Augment ``xs`` with the given draws."""
        masks = [None] * len(xs) if masks is None else list(masks)
        out = []
        for x, mask, dropped, z in zip(xs, masks, params.dropped, params.noise_values):
            real = _real_steps(x, mask)
            y = torch.where(dropped[..., None], torch.zeros((), dtype=x.dtype, device=x.device), x)
            noisy = (params.noise[:, None] & real)[..., None]
            out.append(torch.where(noisy, y + self.noise_std * z.to(x.dtype), y))
        return out

    def __call__(
        self,
        xs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        return self.apply(xs, masks, self.sample(xs, masks, generator))
