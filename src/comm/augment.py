"""SimCLR augmentation on whole uint8 batches, on the batch's device.

Every sample draws its own parameters (crop box, jitter factors and order, grayscale, blur sigma,
flip), as torchvision's per-image transforms do, but the pixel work is a handful of batched tensor
operations: one ``grid_sample`` does crop + resize + flip for the whole batch, colour ops run on
the subset of samples that drew them, the blur is one grouped convolution.

Differences from torchvision, chosen for speed: the crop is resized bilinearly without
antialiasing; the four colour-jitter operations run in a random order per sample (as torchvision)
but each stage is computed for all samples that drew that operation at that stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, with torchvision's rounding


def _to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, H, W, 3) images, got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([(h / 6.0) % 1.0, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Closed form: channel n (R=5, G=3, B=1) is v - v s clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6 h) mod 6; no gathers, so it vectorises well."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def blend(x: torch.Tensor, f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """f x + (1 - f) target, clamped: brightness (target 0), contrast (mean grey level) and
    saturation (grey image) are all this blend."""
    return (f * x + (1 - f) * target).clamp_(0, 1)


def adjust_brightness(x, f):
    return blend(x, f, torch.zeros_like(x[:, :1]))


def adjust_contrast(x, f):
    return blend(x, f, grayscale(x).mean(dim=(1, 2, 3), keepdim=True))


def adjust_saturation(x, f):
    return blend(x, f, grayscale(x))


def adjust_hue(x, shift):
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(hsv)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-sample separable Gaussian blur, reflect padding: one grouped conv per axis."""
    b, c, h, w = x.shape
    half = kernel_size // 2
    pos = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (pos[None, :] / sigma[:, None]) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(
        F.pad(y, (half, half, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c
    )
    y = F.conv2d(
        F.pad(y, (0, 0, half, half), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c
    )
    return y.view(b, c, h, w)


class ImageAugment:
    """Random resized crop, colour jitter, grayscale, Gaussian blur and horizontal flip of a
    uint8 (B, H, W, 3) batch -> float32 (B, 3, size, size), normalised unless ``normalize=False``.

    Random numbers come from ``generator`` if given, else from torch's RNG of the batch's device.
    """

    def __init__(
        self,
        size: int,
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        flip_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        self.size = int(size)
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.jitter = tuple(jitter)
        self.jitter_p, self.gray_p, self.blur_p, self.flip_p = jitter_p, gray_p, blur_p, flip_p
        self.blur_sigma = tuple(blur_sigma)
        # SimCLR: a kernel of 10 % of the image side, made odd.
        self.blur_kernel = max(3, int(0.1 * self.size) // 2 * 2 + 1)
        self.mean, self.std, self.normalize = mean, std, normalize

    def _rand(self, n: int, device, generator, *shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, device=device, generator=generator)

    def crop_boxes(self, b: int, h: int, w: int, device, generator=None) -> torch.Tensor:
        """(B, 4) boxes (top, left, height, width) drawn as torchvision's RandomResizedCrop:
        10 attempts of area fraction and log-uniform aspect ratio, else a centre crop."""
        attempts = 10
        area = h * w
        lo, hi = self.crop_scale
        target = area * (lo + (hi - lo) * self._rand(b, device, generator, attempts))
        log_r = (math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        ratio = torch.exp(
            log_r[0] + (log_r[1] - log_r[0]) * self._rand(b, device, generator, attempts)
        )
        cw = torch.sqrt(target * ratio).round()
        ch = torch.sqrt(target / ratio).round()
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = torch.where(
            ok.any(1), ok.float().argmax(1), torch.zeros_like(ok[:, 0], dtype=torch.long)
        )
        cw = cw.gather(1, first[:, None]).squeeze(1)
        ch = ch.gather(1, first[:, None]).squeeze(1)
        # Fallback of torchvision: the whole image, or its centre cropped to the ratio bounds.
        in_ratio = w / h
        if in_ratio < self.crop_ratio[0]:
            fw, fh = w, round(w / self.crop_ratio[0])
        elif in_ratio > self.crop_ratio[1]:
            fw, fh = round(h * self.crop_ratio[1]), h
        else:
            fw, fh = w, h
        found = ok.any(1)
        cw = torch.where(found, cw, torch.full_like(cw, fw))
        ch = torch.where(found, ch, torch.full_like(ch, fh))
        u = self._rand(b, device, generator, 2)
        top = torch.where(
            found, torch.floor(u[:, 0] * (h - ch + 1)), torch.full_like(ch, (h - fh) // 2)
        )
        left = torch.where(
            found, torch.floor(u[:, 1] * (w - cw + 1)), torch.full_like(cw, (w - fw) // 2)
        )
        return torch.stack([top, left, ch, cw], dim=1)

    def _crop_resize_flip(self, x, boxes, flip):
        b, _, h, w = x.shape
        top, left, ch, cw = boxes.unbind(1)
        sign = 1.0 - 2.0 * flip.float()
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = sign * cw / w
        theta[:, 0, 2] = (2 * left + cw) / w - 1
        theta[:, 1, 1] = ch / h
        theta[:, 1, 2] = (2 * top + ch) / h - 1
        grid = F.affine_grid(theta, [b, 3, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _color_jitter(self, x, generator):
        """Brightness, contrast and saturation are one ``blend`` with different targets, so each
        of the four stages applies, in one pass, the operation every sample drew for it; hue
        runs only on the samples that drew it. Samples
        without jitter keep f = 1, which leaves them unchanged exactly."""
        b, device = x.shape[0], x.device
        applied = self._rand(b, device, generator) < self.jitter_p
        bri, con, sat, hue = self.jitter
        factors = torch.stack(
            [
                1 + strength * (2 * self._rand(b, device, generator) - 1)
                for strength in (bri, con, sat)
            ]
            + [hue * (2 * self._rand(b, device, generator) - 1)],
            dim=1,
        )  # (B, 4): brightness, contrast, saturation factors and the hue shift
        order = self._rand(b, device, generator, 4).argsort(dim=1)  # a permutation per sample
        for stage in range(4):
            op = order[:, stage]
            f = torch.where(
                applied & (op < 3), factors.gather(1, op[:, None].clamp(max=2))[:, 0], 1.0
            )
            gray = grayscale(x)
            target = torch.where(
                (op == 1).view(-1, 1, 1, 1),
                gray.mean(dim=(2, 3), keepdim=True).expand_as(gray),
                torch.where((op == 2).view(-1, 1, 1, 1), gray, torch.zeros_like(gray)),
            )
            x = blend(x, f.view(-1, 1, 1, 1), target)
            rows = torch.nonzero(applied & (op == 3)).squeeze(1)
            if rows.numel():
                x[rows] = adjust_hue(x[rows], factors[rows, 3])
        return x

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        device = images.device
        with torch.autocast(device.type, enabled=False):
            x = _to_float(images)
            b, _, h, w = x.shape
            boxes = self.crop_boxes(b, h, w, device, generator)
            flip = self._rand(b, device, generator) < self.flip_p
            x = self._crop_resize_flip(x, boxes, flip)
            x = self._color_jitter(x, generator)
            gray = torch.nonzero(self._rand(b, device, generator) < self.gray_p).squeeze(1)
            if gray.numel():
                x[gray] = grayscale(x[gray]).expand(-1, 3, -1, -1)
            blur = torch.nonzero(self._rand(b, device, generator) < self.blur_p).squeeze(1)
            if blur.numel():
                lo, hi = self.blur_sigma
                sigma = lo + (hi - lo) * self._rand(blur.numel(), device, generator)
                x[blur] = gaussian_blur(x[blur], sigma, self.blur_kernel)
            return _normalize(x, self.mean, self.std) if self.normalize else x


class ImagePreprocess:
    """Deterministic view for evaluation: uint8 (B, H, W, 3) -> normalised (B, 3, size, size)."""

    def __init__(self, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        self.size, self.mean, self.std = int(size), mean, std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):
            x = _to_float(images)
            if x.shape[-2:] != (self.size, self.size):
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
            return _normalize(x, self.mean, self.std)


@dataclass
class ViewTransforms:
    """The views a method may ask of one modality."""

    strong: Callable[[torch.Tensor], torch.Tensor]  # full SimCLR pipeline
    weak: Callable[[torch.Tensor], torch.Tensor]  # crop only (cross-modal terms of baselines)
    plain: Callable[[torch.Tensor], torch.Tensor]  # no randomness (probing)


def image_view_transforms(size: int, strong: dict, weak: dict) -> ViewTransforms:
    """Build the three views from the config's ``augment.strong`` and ``augment.weak``."""
    return ViewTransforms(
        strong=ImageAugment(size, **strong),
        weak=ImageAugment(size, **weak),
        plain=ImagePreprocess(size),
    )
