"""SimCLR augmentation of whole uint8 image batches on the batch's device.

Each sample draws its own parameters (crop box, flip, colour-jitter factors and order, grayscale,
blur sigma) with the distributions of torchvision's ``RandomResizedCrop``, ``ColorJitter``,
``RandomGrayscale``, ``GaussianBlur`` and ``RandomHorizontalFlip``; the pixel work is a few batched
tensor operations:

- crop + resize + flip: one bilinear ``grid_sample`` whose sampling positions are those of
  ``resize(crop(x))`` (half-pixel centres scaled to the crop, clamped to its edge pixels), so the
  result equals torchvision's crop followed by a bilinear resize without antialiasing. For crops no
  larger than the output (always so when the output has the image's size) antialiasing changes
  nothing. Flipping the output mirrors the sampling positions; flip commutes with the later
  pointwise ops and with the symmetric blur, so doing it here is exact.
- colour jitter: torchvision applies brightness, contrast, saturation and hue in a random order
  per call. Here every sample draws its own permutation, and four stages run in turn: at stage
  ``s`` each sample applies the operation at position ``s`` of its permutation. Brightness,
  contrast and saturation are one per-sample blend ``clamp(f x + (1 - f) t)`` with ``t`` = 0, the
  mean luma or the luma image, so a stage is one pass over the batch; hue runs on the samples
  whose stage is hue. Per sample this is torchvision's semantics exactly.
- grayscale (ITU-R 601-2 luma) and the Gaussian blur (separable per-sample kernels, reflect
  padding, one grouped convolution per axis) run on the samples that drew them.

On CPU an operation that only some samples drew is computed for those samples (an index copy);
on accelerators it is computed for the whole batch and selected with ``torch.where``, which costs
little there and needs no host synchronisation. Random numbers are drawn for the whole batch
first, so this choice (and processing the batch in chunks) does not change the output.

Work is in float32 with autocast disabled (bf16 would visibly quantise colours).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma weights as torchvision rounds them
CROP_ATTEMPTS = 10  # torchvision's rejection-sampling attempts before the centre-crop fallback

Scalars = torch.Tensor | float


# ---------------------------------------------------------------------------------------------
# Functional operations on float (n, 3, H, W) batches in [0, 1] with per-sample parameters.


def _per_sample(v: Scalars, x: torch.Tensor) -> torch.Tensor:
    """A float or an (n,) tensor -> (n, 1, 1, 1) broadcastable against x."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.reshape(-1, 1, 1, 1) if v.ndim else v.expand(x.shape[0]).reshape(-1, 1, 1, 1)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) in any memory layout -> contiguous float32 (B, 3, H, W) in [0, 1]."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 (B, H, W, 3) images, got {images.dtype} {tuple(images.shape)}"
        )
    out = torch.empty(images.shape[0], 3, *images.shape[1:3], device=images.device)
    return out.copy_(images.permute(0, 3, 1, 2)).div_(255.0)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, 1, H, W), summed in torchvision's order."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return r.mul(LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2])


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma replicated on three channels (a new tensor)."""
    return rgb_to_luma(x).expand(-1, 3, -1, -1).contiguous()


def _blend_(
    x: torch.Tensor,
    luma: torch.Tensor,
    f: torch.Tensor,
    luma_w: torch.Tensor,
    const: torch.Tensor,
) -> torch.Tensor:
    """In place: clamp(f x + (luma_w luma + const), 0, 1) with per-sample (n,1,1,1) terms and
    ``luma`` = rgb_to_luma(x) (consumed).

    Brightness (luma_w = const = 0), contrast (const = (1 - f) mean luma) and saturation
    (luma_w = 1 - f) are all this blend; f = 1, luma_w = const = 0 leaves x unchanged exactly.
    The target term is formed first and added to f x, the order torchvision uses.
    """
    return x.mul_(f).add_(luma.mul_(luma_w).add_(const)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: Scalars) -> torch.Tensor:
    f = _per_sample(factor, x)
    zero = torch.zeros_like(f)
    return _blend_(x.clone(), rgb_to_luma(x), f, zero, zero)


def adjust_contrast(x: torch.Tensor, factor: Scalars) -> torch.Tensor:
    f = _per_sample(factor, x)
    luma = rgb_to_luma(x)
    mean = luma.mean(dim=(1, 2, 3), keepdim=True)
    return _blend_(x.clone(), luma, f, torch.zeros_like(f), (1 - f) * mean)


def adjust_saturation(x: torch.Tensor, factor: Scalars) -> torch.Tensor:
    f = _per_sample(factor, x)
    return _blend_(x.clone(), rgb_to_luma(x), f, 1 - f, torch.zeros_like(f))


def adjust_hue(x: torch.Tensor, shift: Scalars) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (fraction of a turn, per sample); returns a new tensor.

    Closed form of RGB -> HSV -> RGB without per-sextant selects on the output: with ``h`` the
    hue in sextants (red at 0, green at 2, blue at 4), channel c with centre ``c_h`` is
    ``min + (max - min) clamp(2 - dist(h, c_h), 0, 1)``, dist the circular distance on [0, 6),
    written as ``(min - delta) + delta clamp(||h - c_h| - 3|, 1, 2)`` for h in [0, 6).
    Agrees with torchvision's adjust_hue within float rounding.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = torch.maximum(r, torch.maximum(g, b))
    minc = torch.minimum(r, torch.minimum(g, b))
    delta = maxc - minc
    inv = delta.clamp(min=1e-12).reciprocal_()  # grey pixels: numerators are 0 as well
    # Hue in the max channel's sextant; at ties both formulas give the same value.
    h = torch.where(
        maxc == r,
        (g - b).mul_(inv),
        torch.where(maxc == g, (b - r).mul_(inv).add_(2.0), (r - g).mul_(inv).add_(4.0)),
    )
    h.add_(_per_sample(shift, x), alpha=6.0).remainder_(6.0)
    centres = torch.tensor([0.0, 2.0, 4.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    t = (h - centres).abs_().sub_(3.0).abs_().clamp_(1.0, 2.0)
    return torch.addcmul(minc.sub_(delta), t, delta)


def blur_kernel_size(size: int, fraction: float = 0.1) -> int:
    """SimCLR's kernel: ``fraction`` of the image side, made odd (at least 3)."""
    k = int(fraction * size)
    return max(3, k + 1 - k % 2)


def gaussian_blur(x: torch.Tensor, sigma: Scalars, kernel_size: int) -> torch.Tensor:
    """Per-sample Gaussian blur (same sigma on both axes), reflect padding; the separable kernels
    of all samples go in one grouped convolution per axis. Returns a new tensor."""
    n, c, h, w = x.shape
    half = kernel_size // 2
    pos = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    sig = _per_sample(sigma, x).view(n, 1)
    k = torch.softmax(-0.5 * (pos / sig) ** 2, dim=1)  # normalised exp(-t^2 / 2 sigma^2)
    k = k.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) group
    y = F.pad(x.reshape(1, n * c, h, w), (half, half, half, half), mode="reflect")
    # Depthwise convolutions run markedly faster channels-last (oneDNN, cuDNN).
    y = y.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, h, w)  # channels-last strides; callers copy or normalise in place


def normalize_(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """In place (x - mean) / std per channel."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def _compute_subsets(device: torch.device) -> bool:
    """Whether an op drawn by some samples runs on an index copy of those samples (CPU) rather
    than on the whole batch followed by a select (accelerators: no host sync)."""
    return device.type == "cpu"


def _apply_where(
    x: torch.Tensor,
    mask: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    *params: torch.Tensor,
) -> torch.Tensor:
    """x with ``fn(x, *params)`` in the samples where ``mask`` is set. ``fn`` returns a new
    tensor; ``params`` are per-sample (n,) tensors."""
    if not _compute_subsets(x.device):
        return torch.where(mask.view(-1, 1, 1, 1), fn(x, *params), x)
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:
        return fn(x, *params)
    x[idx] = fn(x[idx], *(p[idx] for p in params))
    return x


# ---------------------------------------------------------------------------------------------
# Random parameters and the pipeline.


@dataclass
class AugmentParams:
    """Per-sample parameters of one batch (tensors of length B on one device).

    ``box``: (B, 4) float64 crop top, left, height, width in input pixels. ``flip``, ``jitter``,
    ``gray``, ``blur``: bool, whether the op applies. ``factors``: (B, 4) brightness, contrast,
    saturation factors and hue shift. ``order``: (B, 4) int64 permutation of the jitter ops
    (0 brightness, 1 contrast, 2 saturation, 3 hue), applied left to right. ``sigma``: blur sigma.
    """

    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor

    def __getitem__(self, rows: slice | torch.Tensor) -> AugmentParams:
        return AugmentParams(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def to(self, device: torch.device | str) -> AugmentParams:
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class ImageAugment:
    """SimCLR views of a uint8 (B, H, W, 3) batch -> float32 (B, 3, size, size), normalised
    with ``mean``/``std`` unless ``normalize=False`` (then values lie in [0, 1]).

    Arguments follow torchvision: ``crop_scale``/``crop_ratio`` of RandomResizedCrop; ``jitter``
    the ColorJitter strengths (brightness, contrast, saturation, hue), applied with probability
    ``jitter_p``; ``gray_p`` of RandomGrayscale; GaussianBlur with probability ``blur_p``, sigma
    uniform in ``blur_sigma`` and a kernel of ``blur_kernel_frac`` of ``size`` (made odd);
    ``flip_p`` of RandomHorizontalFlip. ``chunk``: images processed at a time (None: the whole
    batch); it bounds the working memory and does not change the output.

    Random numbers come from ``generator`` if given (drawn on its device), else from torch's
    default RNG of the batch's device; a seeded generator reproduces a batch exactly on CPU.
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
        blur_kernel_frac: float = 0.1,
        flip_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize: bool = True,
        chunk: int | None = None,
    ) -> None:
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(f"jitter must be 4 strengths >= 0 with hue <= 0.5, got {jitter}")
        self.size = int(size)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(min(crop_ratio)), float(max(crop_ratio)))
        self.jitter = tuple(float(v) for v in jitter)
        self.jitter_p, self.gray_p = float(jitter_p), float(gray_p)
        self.blur_p, self.flip_p = float(blur_p), float(flip_p)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_kernel = blur_kernel_size(self.size, blur_kernel_frac)
        self.mean, self.std, self.normalize = tuple(mean), tuple(std), normalize
        self.chunk = chunk

    def __repr__(self) -> str:
        keys = ("size", "crop_scale", "jitter", "jitter_p", "gray_p", "blur_p", "flip_p")
        return f"ImageAugment({', '.join(f'{k}={getattr(self, k)}' for k in keys)})"

    def sample(
        self,
        b: int,
        h: int,
        w: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> AugmentParams:
        """Draw the parameters of B samples of an H x W batch. One ``torch.rand`` call of fixed
        width, so the stream does not depend on which ops are enabled."""
        dev = generator.device if generator is not None else torch.device(device)
        a = CROP_ATTEMPTS
        u = torch.rand(b, 2 * a + 15, device=dev, generator=generator)
        box = self._crop_boxes(u[:, :a], u[:, a : 2 * a], u[:, 2 * a : 2 * a + 2], h, w)
        u = u[:, 2 * a + 2 :]  # flip, jitter, 4 factors, 4 order keys, gray, blur, sigma
        # torchvision's ranges: [max(0, 1 - s), 1 + s] for the factors, [-hue, hue] for the shift.
        lo = torch.tensor([max(0.0, 1.0 - s) for s in self.jitter[:3]] + [-self.jitter[3]])
        hi = torch.tensor([1.0 + s for s in self.jitter[:3]] + [self.jitter[3]])
        s_lo, s_hi = self.blur_sigma
        params = AugmentParams(
            box=box,
            flip=u[:, 0] < self.flip_p,
            jitter=u[:, 1] < self.jitter_p,
            factors=lo.to(dev) + (hi - lo).to(dev) * u[:, 2:6],
            order=u[:, 6:10].argsort(dim=1),  # a uniform random permutation per sample
            gray=u[:, 10] < self.gray_p,
            blur=u[:, 11] < self.blur_p,
            sigma=s_lo + (s_hi - s_lo) * u[:, 12],
        )
        return params.to(device)

    def _crop_boxes(self, u_area, u_ratio, u_pos, h: int, w: int) -> torch.Tensor:
        """RandomResizedCrop boxes: the first of 10 attempts (area fraction uniform in the scale
        range, log-uniform aspect ratio) that fits, else torchvision's centre-crop fallback."""
        u_area, u_ratio, u_pos = u_area.double(), u_ratio.double(), u_pos.double()
        lo, hi = self.crop_scale
        target = h * w * (lo + (hi - lo) * u_area)
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
        cw = torch.sqrt(target * ratio).round()  # half to even, as Python's round
        ch = torch.sqrt(target / ratio).round()
        fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        found = fits.any(dim=1)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting attempt
        cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
        in_ratio = w / h
        if in_ratio < self.crop_ratio[0]:
            fw, fh = w, round(w / self.crop_ratio[0])
        elif in_ratio > self.crop_ratio[1]:
            fw, fh = round(h * self.crop_ratio[1]), h
        else:
            fw, fh = w, h
        ch = torch.where(found, ch, float(fh))
        cw = torch.where(found, cw, float(fw))
        # Uniform integer offsets as torch.randint(0, h - ch + 1); the min guards u * n == n.
        top = torch.minimum(torch.floor(u_pos[:, 0] * (h - ch + 1)), h - ch)
        left = torch.minimum(torch.floor(u_pos[:, 1] * (w - cw + 1)), w - cw)
        top = torch.where(found, top, float((h - fh) // 2))
        left = torch.where(found, left, float((w - fw) // 2))
        return torch.stack([top, left, ch, cw], dim=1)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        b, h, w = images.shape[:3]
        return self.apply(images, self.sample(b, h, w, images.device, generator))

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment uint8 (B, H, W, 3) ``images`` with the given per-sample parameters."""
        b = images.shape[0]
        chunk = self.chunk or b
        with torch.autocast(images.device.type, enabled=False):
            if chunk >= b:
                return self._pixels(images, params)
            out = torch.empty(b, 3, self.size, self.size, device=images.device)
            for start in range(0, b, chunk):
                rows = slice(start, start + chunk)
                out[rows] = self._pixels(images[rows], params[rows])
            return out

    def _pixels(self, images: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        x = self._crop_resize_flip(to_unit_float(images), p.box, p.flip)
        if self.jitter_p > 0:
            x = self._color_jitter(x, p.jitter, p.factors, p.order)
        if self.gray_p > 0:
            x = _apply_where(x, p.gray, grayscale)
        if self.blur_p > 0:
            x = _apply_where(x, p.blur, self._blur, p.sigma)
        x = x.contiguous()  # a blur of the whole batch leaves channels-last strides
        return normalize_(x, self.mean, self.std) if self.normalize else x

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(x, sigma, self.blur_kernel)

    def _crop_resize_flip(
        self, x: torch.Tensor, box: torch.Tensor, flip: torch.Tensor
    ) -> torch.Tensor:
        """Bilinear sampling at the positions F.interpolate (align_corners=False) uses to resize
        each crop: half-pixel centres scaled to the crop, clamped to its first/last pixel."""
        _, _, h, w = x.shape
        s = self.size
        top, left, ch, cw = box.unbind(1)
        centres = torch.arange(s, device=x.device, dtype=torch.float64) + 0.5

        def axis(start: torch.Tensor, length: torch.Tensor, extent: int) -> torch.Tensor:
            pix = (centres * (length / s)[:, None] - 0.5).clamp(min=0.0)
            pix = torch.minimum(pix, (length - 1)[:, None]) + start[:, None]
            return ((2 * pix + 1) / extent - 1).float()  # grid_sample's normalised coordinates

        gx = axis(left, cw, w)
        gx = torch.where(flip[:, None], gx.flip(1), gx)
        gy = axis(top, ch, h)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _color_jitter(
        self,
        x: torch.Tensor,
        applied: torch.Tensor,
        factors: torch.Tensor,
        order: torch.Tensor,
    ) -> torch.Tensor:
        """Stage ``s`` applies to each sample the op at position s of its own permutation."""
        # Blend terms of every (sample, stage), shaped (n, 4, 1, 1, 1); identity where unused.
        blend = applied[:, None] & (order < 3)
        f = torch.where(blend, factors.gather(1, order.clamp(max=2)), 1.0)
        luma_w = torch.where(blend & (order == 2), 1 - f, 0.0)
        f, luma_w = f.view(-1, 4, 1, 1, 1), luma_w.view(-1, 4, 1, 1, 1)
        contrast = (blend & (order == 1)).view(-1, 4, 1, 1, 1)
        hue = applied[:, None] & (order == 3)
        for s in range(4):
            luma = rgb_to_luma(x)
            const = torch.where(
                contrast[:, s],
                (1 - f[:, s]) * luma.mean(dim=(1, 2, 3), keepdim=True),
                0.0,
            )
            x = _blend_(x, luma, f[:, s], luma_w[:, s], const)
            if self.jitter[3] > 0:
                x = _apply_where(x, hue[:, s], adjust_hue, factors[:, 3])
        return x


class ImagePreprocess:
    """Deterministic view for evaluation: uint8 (B, H, W, 3) -> normalised float32
    (B, 3, size, size); resized (bilinear, antialiased) only when H or W differs from size."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size, self.mean, self.std = int(size), tuple(mean), tuple(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):
            x = to_unit_float(images)
            if x.shape[-2:] != (self.size, self.size):
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
            return normalize_(x, self.mean, self.std)


@dataclass
class ViewTransforms:
    """The views a method may ask of one modality (each: uint8 batch -> normalised float)."""

    strong: Callable[[torch.Tensor], torch.Tensor]  # full SimCLR pipeline
    weak: Callable[[torch.Tensor], torch.Tensor]  # crop only (cross-modal terms of baselines)
    plain: Callable[[torch.Tensor], torch.Tensor]  # no randomness (probing)


def image_view_transforms(size: int, strong: dict, weak: dict) -> ViewTransforms:
    """Build the three views from the config's ``augment.strong`` and ``augment.weak``
    (keyword arguments of ImageAugment)."""
    return ViewTransforms(
        strong=ImageAugment(size, **strong),
        weak=ImageAugment(size, **weak),
        plain=ImagePreprocess(size),
    )
