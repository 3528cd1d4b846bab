"""Batched SimCLR augmentation: shapes, ranges, per-sample randomness, probabilities, and
agreement with torchvision's per-image functional ops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

import comm_repro.augment as aug_mod
from comm_repro.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageAugment,
    ImagePreprocess,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    image_view_transforms,
    to_unit_float,
)

OFF = {"jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0, "flip_p": 0.0, "normalize": False}
FULL = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0)}  # the crop is the whole image
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _images(b: int = 8, h: int = 32, w: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w or h, 3), dtype=torch.uint8, generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference(aug: ImageAugment, images: torch.Tensor, p) -> torch.Tensor:
    """The same parameters through torchvision's functional ops, one image at a time."""
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    x = images.permute(0, 3, 1, 2).float() / 255
    out = []
    for i in range(x.shape[0]):
        top, left, h, w = (int(v) for v in p.box[i].tolist())
        y = TF.resized_crop(x[i], top, left, h, w, [aug.size, aug.size], antialias=False)
        if p.jitter[i]:
            for op in p.order[i].tolist():
                y = ops[op](y, p.factors[i, op].item())
        if p.gray[i]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if p.blur[i]:
            y = TF.gaussian_blur(y, [aug.blur_kernel] * 2, [p.sigma[i].item()] * 2)
        if p.flip[i]:
            y = TF.horizontal_flip(y)
        out.append(y)
    return torch.stack(out)


# -- output format ----------------------------------------------------------------------------


def test_shape_dtype_range_and_normalisation():
    x = _images(8, 40)
    raw = ImageAugment(24, normalize=False)(x, generator=_gen(1))
    assert raw.shape == (8, 3, 24, 24) and raw.dtype == torch.float32 and raw.is_contiguous()
    assert raw.min() >= 0 and raw.max() <= 1
    norm = ImageAugment(24)(x, generator=_gen(1))
    assert torch.allclose(norm, (raw - MEAN) / STD, atol=1e-6)


def test_rejects_non_uint8_hwc_input():
    with pytest.raises(ValueError, match="uint8"):
        ImageAugment(8)(torch.rand(2, 8, 8, 3))
    with pytest.raises(ValueError, match="uint8"):
        ImageAugment(8)(_images(2, 8).permute(0, 3, 1, 2))


def test_channels_last_and_strided_inputs_give_the_same_output():
    x = _images(4, 32)
    ref = ImageAugment(32)(x, generator=_gen(2))
    nchw_cl = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    strided = torch.stack([x, x], dim=3)[:, :, :, 1]  # non-contiguous view of the same pixels
    for alt in (nchw_cl.permute(0, 2, 3, 1), strided, x.permute(0, 3, 1, 2).permute(0, 2, 3, 1)):
        assert torch.equal(ImageAugment(32)(alt, generator=_gen(2)), ref)


def test_bf16_autocast_keeps_float32_work():
    x = _images(4, 32)
    ref = ImageAugment(32)(x, generator=_gen(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ImageAugment(32)(x, generator=_gen(3))
        plain = ImagePreprocess(16)(x)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert plain.dtype == torch.float32


# -- randomness -------------------------------------------------------------------------------


def test_every_sample_draws_its_own_parameters():
    same = _images(1).expand(6, -1, -1, -1)
    out = ImageAugment(32)(same, generator=_gen(0))
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(6) for j in range(i))


def test_seeded_generator_is_deterministic():
    x = _images()
    a = ImageAugment(32)(x, generator=_gen(3))
    assert torch.equal(a, ImageAugment(32)(x, generator=_gen(3)))
    assert not torch.allclose(a, ImageAugment(32)(x, generator=_gen(4)))
    torch.manual_seed(5)
    b = ImageAugment(32)(x)
    torch.manual_seed(5)
    assert torch.equal(b, ImageAugment(32)(x))  # the default RNG, reseeded


def test_chunks_and_the_accelerator_path_do_not_change_the_output(monkeypatch):
    x = _images(12, 24)
    ref = ImageAugment(24)(x, generator=_gen(6))
    assert torch.equal(ImageAugment(24, chunk=5)(x, generator=_gen(6)), ref)
    # The select-over-the-whole-batch path used on accelerators, run on CPU.
    monkeypatch.setattr(aug_mod, "_compute_subsets", lambda device: False)
    assert torch.allclose(ImageAugment(24)(x, generator=_gen(6)), ref, atol=1e-6)


def test_operations_fire_at_their_probabilities():
    """Each op alone on 4000 tiny images: the share of changed outputs is its probability."""
    n, x = 4000, _images(4000, 8, seed=1)
    base = to_unit_float(x)
    # Sigma from 1: a sigma near 0.1 leaves 8 px images unchanged to float precision.
    changed = {
        name: ImageAugment(8, **FULL, **{**OFF, name: p}, blur_sigma=(1.0, 2.0))(
            x, generator=_gen(7)
        )
        for name, p in [("jitter_p", 0.8), ("gray_p", 0.2), ("blur_p", 0.5), ("flip_p", 0.5)]
    }
    tol = 4 * math.sqrt(0.25 / n)
    for name, p in [("jitter_p", 0.8), ("blur_p", 0.5), ("flip_p", 0.5)]:
        frac = ((changed[name] - base).abs().amax((1, 2, 3)) > 1e-4).float().mean().item()
        assert abs(frac - p) < tol, name
    out = changed["gray_p"]
    gray = ((out[:, 0] - out[:, 1]).abs().amax((1, 2)) == 0).float().mean().item()
    assert abs(gray - 0.2) < tol
    flipped = (changed["flip_p"] == base.flip(-1)).flatten(1).all(1)
    assert abs(flipped.float().mean().item() - 0.5) < tol  # changed samples are exact flips


def test_parameter_distributions():
    aug = ImageAugment(32)
    p = aug.sample(6000, 40, 40, generator=_gen(8))
    f = p.factors
    assert f[:, :3].min() >= 0.6 and f[:, :3].max() <= 1.4 and f[:, 3].abs().max() <= 0.1
    assert torch.allclose(f.mean(0), torch.tensor([1.0, 1.0, 1.0, 0.0]), atol=0.01)
    assert 0.1 <= p.sigma.min() and p.sigma.max() <= 2.0
    perms = {tuple(o) for o in p.order.tolist()}
    assert len(perms) == 24  # every order of the four jitter ops occurs
    assert torch.equal(p.order.sort(1).values, torch.arange(4).expand(6000, 4))
    # A strength above 1 clips the lower end of the factor range at 0, as torchvision does.
    strong = ImageAugment(8, jitter=(1.5, 0, 0, 0)).sample(1000, 8, 8, generator=_gen(9))
    assert strong.factors[:, 0].min() >= 0 and strong.factors[:, 0].max() > 2.0


def test_crop_boxes_follow_torchvision_random_resized_crop():
    aug = ImageAugment(32)
    top, left, h, w = aug.sample(8000, 48, 64, generator=_gen(10)).box.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 48).all()
    assert (left + w <= 64).all() and torch.equal(top, top.round())
    torch.manual_seed(0)
    img = torch.zeros(3, 48, 64)
    tv = torch.tensor(
        [RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(8000)],
        dtype=torch.float64,
    )
    ours = torch.stack([h * w / (48 * 64), (w / h).log(), top, left], dim=1)
    theirs = torch.stack(
        [tv[:, 2] * tv[:, 3] / (48 * 64), (tv[:, 3] / tv[:, 2]).log(), tv[:, 0], tv[:, 1]], dim=1
    )
    assert ((ours.mean(0) - theirs.mean(0)).abs() < torch.tensor([0.01, 0.01, 0.4, 0.5])).all()
    assert torch.allclose(ours.std(0), theirs.std(0), rtol=0.05)


def test_crop_fallback_is_torchvision_centre_crop():
    # A 8 x 100 strip never fits an area of >= 90 % with ratio <= 4/3: centre crop of 8 x 11.
    aug = ImageAugment(8, crop_scale=(0.9, 1.0))
    box = aug.sample(5, 8, 100, generator=_gen(11)).box
    assert torch.equal(
        box, torch.tensor([[0.0, 44.0, 8.0, 11.0]], dtype=torch.float64).expand(5, 4)
    )


# -- single operations ------------------------------------------------------------------------


def test_full_crop_is_the_image_and_flip_is_exact():
    x = _images(4, 32)
    base = to_unit_float(x)
    assert torch.equal(ImageAugment(32, **FULL, **OFF)(x), base)
    assert torch.equal(ImageAugment(32, **FULL, **{**OFF, "flip_p": 1.0})(x), base.flip(-1))


@pytest.mark.parametrize(("h", "w", "size"), [(24, 24, 40), (48, 48, 32), (30, 40, 24)])
def test_full_crop_is_a_plain_resize(h, w, size):
    x = _images(3, h, w)
    # The whole image (a non-square one has no ratio-1 crop that is all of it).
    crop = {"crop_scale": (1.0, 1.0), "crop_ratio": (w / h, w / h)}
    out = ImageAugment(size, **crop, **OFF)(x, generator=_gen(12))
    ref = F.interpolate(to_unit_float(x), size=(size, size), mode="bilinear", antialias=False)
    assert torch.allclose(out, ref, atol=2e-6)


def test_grayscale_gives_equal_channels_of_luma():
    x = _images()
    out = ImageAugment(32, **FULL, **{**OFF, "gray_p": 1.0})(x)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    ref = TF.rgb_to_grayscale(to_unit_float(x), num_output_channels=3)
    assert torch.allclose(out, ref, atol=1e-6)


def test_zero_strength_jitter_is_identity():
    x = _images()
    jit = ImageAugment(32, **FULL, jitter=(0, 0, 0, 0), **{**OFF, "jitter_p": 1.0})
    assert torch.equal(jit(x), to_unit_float(x))


def test_zero_hue_shift_is_identity_on_all_colour_kinds():
    levels = torch.tensor([0.0, 0.2, 0.5, 1.0])
    corners = torch.cartesian_prod(levels, levels, levels)  # greys, primaries, ties
    x = torch.cat([corners.T.reshape(1, 3, 8, 8), torch.rand(2, 3, 8, 8, generator=_gen(13))])
    assert torch.allclose(adjust_hue(x, 0.0), x, atol=1e-5)
    assert torch.allclose(adjust_hue(adjust_hue(x, 0.3), -0.3), x, atol=1e-5)


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (adjust_brightness, TF.adjust_brightness, [0.0, 0.6, 1.4]),
        (adjust_contrast, TF.adjust_contrast, [0.0, 0.6, 1.4]),
        (adjust_saturation, TF.adjust_saturation, [0.0, 0.6, 1.4]),
        (adjust_hue, TF.adjust_hue, [-0.5, -0.1, 0.07]),
    ],
)
def test_colour_ops_match_torchvision_per_sample(ours, theirs, factors):
    x = torch.rand(3, 3, 16, 16, generator=_gen(14))
    x[0, :, :4] = 0.5  # grey pixels
    out = ours(x, torch.tensor(factors))
    ref = torch.stack([theirs(x[i], f) for i, f in enumerate(factors)])
    assert torch.allclose(out, ref, atol=2e-6)


def test_blur_matches_torchvision_per_sample():
    x = to_unit_float(_images(3, 32))
    sigma = torch.tensor([0.1, 0.7, 2.0])
    out = gaussian_blur(x, sigma, 7)
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [7, 7], [sigma[i].item()] * 2)
        assert torch.allclose(out[i], ref, atol=2e-6)


def test_blur_kernel_is_a_tenth_of_the_image_made_odd():
    assert [blur_kernel_size(s) for s in (224, 128, 64, 32, 8)] == [23, 13, 7, 3, 3]
    assert (
        ImageAugment(224).blur_kernel == 23
        and ImageAugment(224, blur_kernel_frac=0.2).blur_kernel == 45
    )


# -- whole pipeline against torchvision ---------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"jitter": (0.9, 0.9, 0.9, 0.5), "jitter_p": 1.0, "gray_p": 0.3},
        {"crop_scale": (0.5, 1.0)},
    ],
)
def test_pipeline_matches_torchvision_functional_ops(options):
    x = _images(24, 40, 36, seed=15)
    aug = ImageAugment(32, normalize=False, **options)
    p = aug.sample(24, 40, 36, generator=_gen(16))
    assert torch.allclose(aug.apply(x, p), _reference(aug, x, p), atol=3e-5)


# -- deterministic view and builder -------------------------------------------------------------


def test_preprocess_is_deterministic_resize_and_normalise():
    x = _images(2, 48)
    a = ImagePreprocess(24)(x)
    assert a.shape == (2, 3, 24, 24) and torch.equal(a, ImagePreprocess(24)(x))
    ref = TF.resize(to_unit_float(x), [24, 24], antialias=True)
    assert torch.allclose(a * STD + MEAN, ref, atol=1e-6)
    same = ImagePreprocess(48)(x)
    assert torch.allclose(same * STD + MEAN, to_unit_float(x), atol=1e-6)


def test_view_builder_follows_the_config():
    strong = {"crop_scale": [0.08, 1.0], "jitter": [0.4, 0.4, 0.4, 0.1], "jitter_p": 0.8}
    weak = {"crop_scale": [0.5, 1.0], "jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0, "flip_p": 0.0}
    views = image_view_transforms(16, strong, weak)
    assert views.weak.crop_scale == (0.5, 1.0) and views.strong.jitter_p == 0.8
    flat = torch.tensor([200, 30, 90], dtype=torch.uint8).expand(32, 16, 16, 3)
    colour = (torch.tensor([200.0, 30.0, 90.0]) / 255).view(1, 3, 1, 1)
    # A flat colour survives any crop: the weak view keeps it, the strong view recolours most.
    torch.manual_seed(0)
    assert torch.allclose(views.weak(flat) * STD + MEAN, colour.expand(32, 3, 16, 16), atol=1e-6)
    recoloured = (views.strong(flat) * STD + MEAN - colour).abs().amax((1, 2, 3)) > 1e-3
    assert recoloured.float().mean() > 0.6
    assert torch.equal(views.plain(flat), views.plain(flat))
