"""Batched augmentation: shapes, ranges, per-sample randomness, agreement with torchvision."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from comm.augment import (
    ImageAugment,
    ImagePreprocess,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
)

OFF = {"jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0, "flip_p": 0.0, "normalize": False}


def _images(b=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g)


def test_shape_dtype_and_range():
    out = ImageAugment(24, normalize=False)(_images())
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    norm = ImageAugment(24)(_images())
    assert norm.min() < 0  # ImageNet normalisation moves values below zero


def test_every_sample_draws_its_own_parameters():
    same = _images(1).expand(6, -1, -1, -1).contiguous()
    out = ImageAugment(32)(same, generator=torch.Generator().manual_seed(0))
    assert len({round(v, 5) for v in out.flatten(1).sum(1).tolist()}) == 6


def test_seeded_generator_is_deterministic():
    a = ImageAugment(32)(_images(), generator=torch.Generator().manual_seed(3))
    b = ImageAugment(32)(_images(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_full_crop_is_a_plain_resize_and_flip_is_exact():
    x = _images(4, 32)
    aug = ImageAugment(32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **OFF)
    base = x.permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(aug(x), base, atol=1e-6)
    flip = ImageAugment(32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **{**OFF, "flip_p": 1.0})
    assert torch.allclose(flip(x), base.flip(-1), atol=1e-6)


def test_grayscale_gives_equal_channels():
    out = ImageAugment(32, **{**OFF, "gray_p": 1.0})(_images())
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def test_zero_strength_jitter_is_identity():
    x = _images()
    plain = ImageAugment(32, crop_scale=(1, 1), crop_ratio=(1, 1), **OFF)(x)
    jit = ImageAugment(
        32, crop_scale=(1, 1), crop_ratio=(1, 1), jitter=(0, 0, 0, 0), **{**OFF, "jitter_p": 1.0}
    )
    assert torch.allclose(jit(x), plain, atol=1e-5)


def test_operations_fire_at_their_probabilities():
    torch.manual_seed(0)
    x = _images(4000, 8)
    out = ImageAugment(8, crop_scale=(1, 1), crop_ratio=(1, 1), **{**OFF, "gray_p": 0.2})(x)
    gray = ((out[:, 0] - out[:, 1]).abs().amax((1, 2)) < 1e-6).float().mean().item()
    assert abs(gray - 0.2) < 0.03
    out = ImageAugment(8, crop_scale=(1, 1), crop_ratio=(1, 1), **{**OFF, "flip_p": 0.5})(x)
    base = x.permute(0, 3, 1, 2).float() / 255
    flipped = (out - base.flip(-1)).abs().amax((1, 2, 3)) < 1e-6
    assert abs(flipped.float().mean().item() - 0.5) < 0.03


def test_crop_boxes_follow_scale_and_ratio_bounds():
    aug = ImageAugment(32, crop_scale=(0.08, 1.0))
    boxes = aug.crop_boxes(5000, 64, 64, "cpu", torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (
        (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 64).all()
    )
    frac = h * w / 64**2
    assert frac.min() >= 0.07 and frac.max() <= 1.0
    assert 0.45 < frac.mean() < 0.6  # uniform area fraction on [0.08, 1], minus rounding/rejections


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.4])
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
    ],
)
def test_blend_operations_match_torchvision(ours, theirs, factor):
    x = _images(3).permute(0, 3, 1, 2).float() / 255
    out = ours(x.clone(), torch.full((3, 1, 1, 1), factor))
    assert torch.allclose(out, theirs(x, factor), atol=1e-5)


def test_brightness_jitter_scales_each_sample_by_its_own_factor():
    x = _images(64, 8)
    aug = ImageAugment(
        8, crop_scale=(1, 1), crop_ratio=(1, 1), jitter=(0.4, 0, 0, 0), **{**OFF, "jitter_p": 1.0}
    )
    out, base = aug(x), x.permute(0, 3, 1, 2).float() / 255
    ok = (out < 1) & (base > 0.05)  # unclamped pixels
    ratios = [(out[i][ok[i]] / base[i][ok[i]]) for i in range(64)]
    assert all(r.max() - r.min() < 1e-4 for r in ratios)  # one factor per sample
    factors = torch.stack([r.mean() for r in ratios])
    assert factors.min() >= 0.6 - 1e-4 and factors.max() <= 1.4 + 1e-4 and factors.std() > 0.1


@pytest.mark.parametrize("shift", [-0.1, 0.0, 0.07])
def test_hue_matches_torchvision(shift):
    x = _images(3).permute(0, 3, 1, 2).float() / 255
    ref = TF.adjust_hue(x, shift)
    assert torch.allclose(adjust_hue(x.clone(), torch.full((3,), shift)), ref, atol=1e-4)


def test_blur_matches_torchvision():
    x = _images(2, 32).permute(0, 3, 1, 2).float() / 255
    sigma = torch.tensor([0.7, 1.9])
    ours = gaussian_blur(x, sigma, 7)
    for i in range(2):
        ref = TF.gaussian_blur(x[i : i + 1], [7, 7], [sigma[i].item()] * 2)
        assert torch.allclose(ours[i : i + 1], ref, atol=1e-5)


def test_preprocess_is_deterministic_resize_and_normalise():
    x = _images(2, 48)
    a, b = ImagePreprocess(24)(x), ImagePreprocess(24)(x)
    assert a.shape == (2, 3, 24, 24) and torch.equal(a, b)
    same = ImagePreprocess(48)(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(same * std + mean, x.permute(0, 3, 1, 2).float() / 255, atol=1e-6)
