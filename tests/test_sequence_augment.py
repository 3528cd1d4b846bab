"""Drop + noise augmentation of padded sequence batches: padding untouched, drop fractions per
modality, noise scale, determinism."""

from __future__ import annotations

import pytest
import torch

from comm_repro.sequence_augment import SequenceAugment


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 64, t: int = 20, features=(3, 2), seed: int = 0):
    """Right-padded modalities with no exact zero among the real values (so zeroed steps are
    recognisable); lengths from 1 to t, shared by the modalities as in aligned data."""
    g = _gen(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    xs = []
    for f in features:
        x = torch.rand(b, t, f, generator=g) + 0.5
        xs.append(torch.where(mask[..., None], x, 0.0))
    return xs, [mask.clone() for _ in features]


def _zeroed(x, y):
    """(B, T) bool: steps that were non-zero and are all zero now."""
    return (y == 0).all(-1) & (x != 0).all(-1)


def test_padded_steps_and_masks_are_untouched():
    xs, masks = _batch()
    kept = [m.clone() for m in masks]
    out = SequenceAugment(drop_p=1.0, noise_p=1.0)(xs, masks, _gen(1))
    for x, y, m, k in zip(xs, out, masks, kept):
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.equal(m, k)
        assert torch.all(y[~m] == 0)
        assert not torch.equal(y[m], x[m])


def test_drop_fraction_of_real_steps():
    xs, masks = _batch(b=4000, t=50, features=(2, 2))
    aug = SequenceAugment(noise_p=0.0)  # the paper's p = 0.5, fraction U(0, 0.8)
    p = aug.sample(xs, masks, _gen(2))
    out = aug.apply(xs, masks, p)
    n_real = masks[0].sum(1).double()
    fractions = []
    for m, (x, y, mask) in enumerate(zip(xs, out, masks)):
        zeroed = _zeroed(x, y)
        assert torch.equal(zeroed, p.dropped[m]) and not (zeroed & ~mask).any()
        # every real step is either zeroed entirely or left exactly as it was
        assert torch.equal(y[mask & ~zeroed], x[mask & ~zeroed])
        frac = zeroed.sum(1) / n_real
        # round(f n) of n steps, as the authors count them: at most 0.8 where 0.8 n is whole,
        # else up to half a step more (a 2-step sequence can lose both).
        assert frac.min() >= 0 and (frac <= (0.8 * n_real).round() / n_real).all()
        assert frac[n_real % 5 == 0].max() <= 0.8
        expected = torch.where(p.drop, (p.frac[:, m].double() * n_real).round() / n_real, 0.0)
        assert torch.allclose(frac, expected)
        fractions.append(frac)
    assert abs(p.drop.double().mean().item() - 0.5) < 0.03
    mean = torch.stack(fractions).mean().item()
    assert abs(mean - 0.2) < 0.015  # 0.5 x E[U(0, 0.8)]
    assert abs(torch.stack(fractions)[:, p.drop].mean().item() - 0.4) < 0.02


def test_drop_draws_differ_between_modalities():
    xs, masks = _batch(b=256, t=30, features=(2, 2))
    aug = SequenceAugment(drop_p=1.0, noise_p=0.0)
    p = aug.sample(xs, masks, _gen(3))
    out = aug.apply(xs, masks, p)
    z0, z1 = (_zeroed(x, y) for x, y in zip(xs, out))
    assert (p.frac[:, 0] != p.frac[:, 1]).all()
    long = masks[0].sum(1) >= 10
    differ = (z0 != z1).any(1)
    assert differ[long].double().mean() > 0.95  # own fraction and own indices per modality
    # ... while whether drop applies is decided once per sample, for all its modalities
    aug = SequenceAugment(drop_p=0.5, noise_p=0.0)
    p = aug.sample(xs, masks, _gen(4))
    n_real = masks[0].sum(1)
    for m in range(2):
        count = (p.frac[:, m].double() * n_real).round()
        assert torch.equal(p.dropped[m].any(1), p.drop & (count > 0))


def test_determinism_for_a_fixed_generator():
    xs, masks = _batch()
    aug = SequenceAugment()
    a = aug(xs, masks, _gen(5))
    b = aug(xs, masks, _gen(5))
    c = aug(xs, masks, _gen(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))
    torch.manual_seed(7)
    d = aug(xs, masks)
    torch.manual_seed(7)
    assert all(torch.equal(u, v) for u, v in zip(d, aug(xs, masks)))


def test_noise_std_on_real_steps():
    xs, masks = _batch(b=512, t=40, features=(4,))
    aug = SequenceAugment(drop_p=0.0, noise_p=0.5)
    p = aug.sample(xs, masks, _gen(8))
    (y,) = aug.apply(xs, masks, p)
    diff = y - xs[0]
    noisy = masks[0] & p.noise[:, None]
    assert abs(diff[noisy].std().item() - 0.1) < 0.005 and abs(diff[noisy].mean().item()) < 0.005
    assert torch.all(diff[~noisy] == 0)
    assert abs(p.noise.double().mean().item() - 0.5) < 0.07


def test_masks_may_be_omitted_and_shapes_are_checked():
    x = torch.rand(8, 5, 3) + 0.5
    (y,) = SequenceAugment(drop_p=1.0, drop_frac=(0.8, 0.8), noise_p=0.0)([x], None, _gen(0))
    assert torch.equal(_zeroed(x, y).sum(1), torch.full((8,), 4))  # round(0.8 * 5) of 5 steps
    with pytest.raises(ValueError, match="mask shape"):
        SequenceAugment()([x], [torch.ones(8, 4, dtype=torch.bool)])
    with pytest.raises(ValueError, match="drop_frac"):
        SequenceAugment(drop_frac=(0.5, 0.2))
