"""CoMM's time-series augmentations of padded sequence batches, on the batch's device: the
default "drop + noise" and Fig. 6's crop, multi-crop and multi-drop.

The authors augment each sample's unpadded sequences (MultiBench affect modalities) with a
``Compose`` of ``RandomApply([op], p)`` over the list of its modalities; here the ops run in the
order crop, drop, noise, each decided once per sample for all its modalities:

- crop (probability ``crop_p``; Fig. 6): each modality keeps a window of ``round(s * n)``
  consecutive real steps of its ``n``, ``s ~ U(crop_size)`` (8-100 % in the paper), starting
  uniformly at any of the ``n - k + 1`` possible positions, and zeroes its other real steps;
- drop (probability ``drop_p``): every modality draws its own fraction ``f ~ U(drop_frac)`` and
  zeroes ``round(f * n)`` of its ``n`` real steps, chosen uniformly without replacement.
  Rounding, not flooring, is the authors' too: a short sequence can lose a little more than the
  fraction's upper bound (both steps of a 2-step one);
- noise (probability ``noise_p``): N(0, ``noise_std``^2) is added to every real step of every
  modality, dropped and cropped ones included (noise runs last).

``crop_aligned`` / ``drop_aligned`` give the paper's multi-crop / multi-drop for time-aligned
modalities: the first modality's window (or dropped steps) is applied to every modality, step for
step along each one's real steps, so the kept multimodal signal is the same moments in all of
them. (In the authors' code the flags reach the ops through a closure over the loop variable,
so in a composition such as "multi_drop+noise" the drop runs unaligned; here each flag does what
it says. Their crop start is drawn from ``randint(0, n - k)``, which never picks the last window;
here every window is possible.)

A whole right- or left-padded batch is done at once: a (B, T) mask per modality (True at real
steps) says which steps are real, a step's place among its sample's real steps is its position,
the chosen steps come from ranking per-step uniform keys (padded steps rank last), and padded
steps are left exactly as they are (zero after collation). No loop runs over samples; random
numbers are drawn for the whole batch from ``generator`` (on its device) or from torch's default
RNG of the batch's device, so a seeded generator reproduces a batch exactly. Without crop the
draws are those of the drop + noise augmentation alone, so its batches do not change with the
crop's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SequenceAugmentParams:
    """Per-sample draws of one batch. ``crop``, ``drop``, ``noise``: (B,) bool, whether the op
    applies to the sample. ``frac``: (B, M) drop fraction per sample and modality. ``cropped``,
    ``dropped``: per modality (B, T_m) bool, the steps zeroed by each op. ``noise_values``: per
    modality (B, T_m, F_m) standard normal draws (scaled by ``noise_std`` when applied)."""

    crop: torch.Tensor
    drop: torch.Tensor
    noise: torch.Tensor
    frac: torch.Tensor
    cropped: list[torch.Tensor]
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


def _positions(real: torch.Tensor) -> torch.Tensor:
    """(B, T) long: each real step's place among its sample's real steps (0, 1, ...), -1 at
    padded steps."""
    return torch.where(real, real.long().cumsum(dim=1) - 1, -1)


def _range(values: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = float(values[0]), float(values[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"{name} must satisfy 0 <= low <= high <= 1, got {tuple(values)}")
    return lo, hi


class SequenceAugment:
    """Crop, drop and noise views of padded sequence modalities: ``aug(xs, masks, generator)``
    with ``xs`` a list of (B, T_m, F_m) float batches and ``masks`` a matching list of (B, T_m)
    bool masks (None: every step real) returns the augmented batches (new tensors; the masks
    stay valid unchanged)."""

    def __init__(
        self,
        drop_p: float = 0.5,
        drop_frac: Sequence[float] = (0.0, 0.8),
        noise_p: float = 0.5,
        noise_std: float = 0.1,
        crop_p: float = 0.0,
        crop_size: Sequence[float] = (0.08, 1.0),
        crop_aligned: bool = False,
        drop_aligned: bool = False,
    ) -> None:
        if not all(0.0 <= p <= 1.0 for p in (drop_p, noise_p, crop_p)) or noise_std < 0:
            raise ValueError("crop_p, drop_p and noise_p must lie in [0, 1] and noise_std be >= 0")
        self.crop_p, self.crop_size = float(crop_p), _range(crop_size, "crop_size")
        self.drop_p, self.drop_frac = float(drop_p), _range(drop_frac, "drop_frac")
        self.noise_p, self.noise_std = float(noise_p), float(noise_std)
        self.crop_aligned, self.drop_aligned = bool(crop_aligned), bool(drop_aligned)

    def __repr__(self) -> str:
        return (
            f"SequenceAugment(crop_p={self.crop_p}, crop_size={self.crop_size}, "
            f"crop_aligned={self.crop_aligned}, drop_p={self.drop_p}, "
            f"drop_frac={self.drop_frac}, drop_aligned={self.drop_aligned}, "
            f"noise_p={self.noise_p}, noise_std={self.noise_std})"
        )

    @property
    def active(self) -> bool:
        """Whether any op can apply (False: the inputs come back as they are)."""
        return self.crop_p > 0 or self.drop_p > 0 or self.noise_p > 0

    def sample(
        self,
        xs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> SequenceAugmentParams:
        """Draw the parameters of a batch. The stream is fixed by the batch's shapes alone (one
        (B, 2 + M) uniform draw, then per modality (B, T) uniform keys and (B, T, F) normals;
        with ``crop_p > 0``, then one (B, 1 + 2M) uniform draw for the crops)."""
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

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, device=dev, generator=generator).to(device)

        u = uniform(b, 2 + len(xs))
        drop, noise = u[:, 0] < self.drop_p, u[:, 1] < self.noise_p
        lo, hi = self.drop_frac
        frac = lo + (hi - lo) * u[:, 2:]
        positions = [_positions(r) for r in real]
        dropped, noise_values = [], []
        for m, (x, r) in enumerate(zip(xs, real)):
            keys = uniform(*x.shape[:2])
            z = torch.randn(x.shape, device=dev, generator=generator).to(device)
            # Padded steps get keys above every real key, so the k lowest ranks are k real steps
            # drawn uniformly without replacement.
            rank = torch.where(r, keys, 2.0).argsort(dim=1).argsort(dim=1)
            count = (frac[:, m].double() * r.sum(dim=1)).round()  # half to even, as round()
            dropped.append(drop[:, None] & (rank < count[:, None]))
            noise_values.append(z)
        if self.drop_aligned:
            dropped = _aligned(dropped[0], positions)

        crop = torch.zeros(b, dtype=torch.bool, device=device)
        cropped = [torch.zeros_like(r) for r in real]
        if self.crop_p > 0:
            c = uniform(b, 1 + 2 * len(xs))
            crop = c[:, 0] < self.crop_p
            lo, hi = self.crop_size
            size, start = lo + (hi - lo) * c[:, 1 : 1 + len(xs)], c[:, 1 + len(xs) :]
            cropped = [
                crop[:, None] & _outside_window(r, p, size[:, m], start[:, m])
                for m, (r, p) in enumerate(zip(real, positions))
            ]
            if self.crop_aligned:
                cropped = _aligned(cropped[0], positions)
        return SequenceAugmentParams(crop, drop, noise, frac, cropped, dropped, noise_values)

    def apply(
        self,
        xs: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None] | None,
        params: SequenceAugmentParams,
    ) -> list[torch.Tensor]:
        """Augment ``xs`` with the given draws."""
        masks = [None] * len(xs) if masks is None else list(masks)
        out = []
        for x, mask, cropped, dropped, z in zip(
            xs, masks, params.cropped, params.dropped, params.noise_values
        ):
            real = _real_steps(x, mask)
            zeroed = (cropped | dropped)[..., None]
            y = torch.where(zeroed, torch.zeros((), dtype=x.dtype, device=x.device), x)
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


def _outside_window(
    real: torch.Tensor, position: torch.Tensor, size: torch.Tensor, start: torch.Tensor
) -> torch.Tensor:
    """(B, T) bool: the real steps outside a window of ``round(size * n)`` consecutive real
    steps, its first one at ``floor(start * (n - k + 1))`` (``size``, ``start``: (B,) in [0, 1))."""
    n = real.sum(dim=1).double()
    k = (size.double() * n).round()  # half to even, as the authors' round()
    first = (start.double() * (n - k + 1)).floor().clamp(max=(n - k).clamp(min=0))
    inside = (position >= first[:, None]) & (position < (first + k)[:, None])
    return real & ~inside


def _aligned(first: torch.Tensor, positions: list[torch.Tensor]) -> list[torch.Tensor]:
    """The first modality's chosen steps ``first`` (B, T_0) carried to every modality by
    position: a modality's real step at position p is chosen where the first modality's real
    step at p is (never past the first modality's real steps)."""
    b, t0 = first.shape
    by_position = torch.zeros(b, t0 + 1, dtype=torch.bool, device=first.device)
    p0 = positions[0]
    # padded steps (-1) write False to a spare last slot, which any position past the first
    # modality's then reads
    by_position.scatter_(1, torch.where(p0 >= 0, p0, t0), first & (p0 >= 0))
    return [
        by_position.gather(1, torch.where((p >= 0) & (p < t0), p, t0)) & (p >= 0) for p in positions
    ]
