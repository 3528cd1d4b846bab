"""Time-series augmentation of padded sequence batches: padding untouched, drop fractions per
modality, noise scale, determinism; Fig. 6's crop windows, multi-crop and multi-drop."""

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


def _left_padded(b: int = 256, t: int = 30, features=(3, 2), seed: int = 0):
    """As _batch, with the padding in front (the MultiBench affect arrays' layout)."""
    xs, masks = _batch(b, t, features, seed)
    return [x.flip(1) for x in xs], [m.flip(1) for m in masks]


def _kept_window(zeroed: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """Per sample, the positions (among its real steps) left unzeroed."""
    out = []
    for z, m in zip(zeroed, mask):
        out.append([i for i, lost in enumerate(z[m].tolist()) if not lost])
    return out


def test_crop_keeps_one_window_of_the_drawn_size_per_modality():
    xs, masks = _left_padded(b=2000, t=40)
    aug = SequenceAugment(drop_p=0.0, noise_p=0.0, crop_p=1.0, crop_size=(0.25, 0.75))
    p = aug.sample(xs, masks, _gen(3))
    out = aug.apply(xs, masks, p)
    n_real = masks[0].sum(1)
    starts, windows = [], []
    for m, (x, y, mask) in enumerate(zip(xs, out, masks)):
        zeroed = _zeroed(x, y)
        assert torch.equal(zeroed, p.cropped[m]) and torch.all(y[~mask] == 0)
        for kept, n in zip(_kept_window(zeroed, mask), n_real.tolist()):
            if kept:  # consecutive real steps, about the drawn share of them
                assert kept == list(range(kept[0], kept[0] + len(kept)))
                assert round(0.25 * n) - 1 <= len(kept) <= round(0.75 * n) + 1
                if n >= 20:
                    starts.append(kept[0] / (n - len(kept) + 1))
                    windows.append(kept[-1] == n - 1)
    # every start is possible, the last window too (the authors' randint never draws it)
    assert 0.4 < sum(starts) / len(starts) < 0.6 and any(windows)
    # unaligned: the two modalities keep different windows
    assert not torch.equal(p.cropped[0], p.cropped[1])


def test_multi_crop_and_multi_drop_keep_the_same_moments_in_every_modality():
    xs, masks = _left_padded(b=500, t=30)
    for aug in (
        SequenceAugment(drop_p=0.0, noise_p=0.0, crop_p=1.0, crop_aligned=True),
        SequenceAugment(drop_p=1.0, noise_p=0.0, drop_aligned=True),
    ):
        out = aug(xs, masks, _gen(4))
        zeroed = [_zeroed(x, y) for x, y in zip(xs, out)]
        assert zeroed[0].any() and torch.equal(zeroed[0], zeroed[1])


def test_aligned_ops_follow_each_modalitys_own_real_steps():
    # modality 2 has real steps at other time indices: aligned means the same positions along
    # the real steps (its n-th real step goes with the first modality's n-th)
    xs, masks = _batch(b=300, t=20, features=(2, 2))
    xs[1], masks[1] = xs[1].flip(1), masks[1].flip(1)
    aug = SequenceAugment(drop_p=1.0, noise_p=0.0, drop_aligned=True)
    p = aug.sample(xs, masks, _gen(5))
    first = [d[m] for d, m in zip(p.dropped[0], masks[0])]
    second = [d[m].flip(0) for d, m in zip(p.dropped[1].flip(1), masks[1].flip(1))]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_without_crop_the_drop_and_noise_draws_are_unchanged():
    xs, masks = _batch()
    default = SequenceAugment()(xs, masks, _gen(6))
    with_crop_settings = SequenceAugment(crop_size=(0.5, 0.9), crop_aligned=True)(
        xs, masks, _gen(6)
    )
    assert all(torch.equal(a, b) for a, b in zip(default, with_crop_settings))


def test_crop_then_drop_then_noise():
    xs, masks = _batch(b=200, t=30)
    aug = SequenceAugment(drop_p=1.0, noise_p=1.0, noise_std=0.5, crop_p=1.0)
    p = aug.sample(xs, masks, _gen(7))
    (y, _) = aug.apply(xs, masks, p)
    zeroed = p.cropped[0] | p.dropped[0]
    noise = 0.5 * p.noise_values[0]
    # every zeroed real step carries the noise alone; the others their value plus the noise
    assert torch.allclose(y[zeroed], noise[zeroed])
    kept = masks[0] & ~zeroed
    assert torch.allclose(y[kept], xs[0][kept] + noise[kept])
    assert not SequenceAugment(drop_p=0.0, noise_p=0.0).active
    assert SequenceAugment(drop_p=0.0, noise_p=0.0, crop_p=0.1).active
    with pytest.raises(ValueError, match="crop_size"):
        SequenceAugment(crop_size=(0.9, 0.1))
