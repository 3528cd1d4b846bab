"""Trifeature stimuli (Hermann & Lampinen, 2020) and the bimodal pairing of the CoMM paper.

Each image is one of 10 shapes, filled with one of 10 textures, in one of 10 colours, on grey.
The renderer reproduces the reference generator of the CoMM authors bit for bit for a given seed:
the same constants, the same random numbers drawn in the same order (one ``default_rng(seed)``
for the whole set), the same float types. The per-pixel loops of the reference are written as
numpy index arithmetic, which makes generation about two orders of magnitude faster.

Order of random draws per stimulus: shape angle, shape offsets (x then y), texture offsets
(x then y, drawn for every texture), texture-specific draws, texture angle.

Splits are stored in the order of the reference's sorted file names
(``{shape}_{texture}_{colour}[_{i}].png``) so that pair indices mean the same images in both.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from comm_repro.atomic import atomic_path, write_json
from comm_repro.errors import DataError, describe

SHAPES = (
    "triangle", "square", "plus", "circle", "tee",
    "rhombus", "pentagon", "star", "fivesquare", "trapezoid",
)  # fmt: skip
TEXTURES = (
    "solid", "stripes", "grid", "hexgrid", "dots",
    "noise", "triangles", "zigzags", "rain", "pluses",
)  # fmt: skip
COLOR_RGB = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "pink": (1.0, 0.4, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "purple": (0.3, 0.0, 0.5),
    "ocean": (0.1, 0.4, 0.5),
    "orange": (1.0, 0.6, 0.0),
    "white": (1.0, 1.0, 1.0),
}
COLORS = tuple(COLOR_RGB)
BG_COLOR = np.array((0.5, 0.5, 0.5), dtype=np.float32)
_COLOR_ARRAYS = {n: np.array(c, dtype=np.float32) for n, c in COLOR_RGB.items()}

TEMPLATE_SIZE = 128
RENDER_SIZE = 224
TEXTURE_SIZE = 2 * RENDER_SIZE  # textures are rendered larger, rotated, then cropped
ANGLE_RANGE = 45
SCALE = 10  # texture period in pixels
N_COMBINATIONS = len(SHAPES) * len(TEXTURES) * len(COLORS)
N_TEST_COMBINATIONS = N_COMBINATIONS - int(0.8 * N_COMBINATIONS)  # the reference's rounding
FORMAT_VERSION = 1
SPLITS = ("train", "test")


@dataclass
class TrifeatureSplit:
    images: np.ndarray  # (N, H, W, 3) uint8
    shape: np.ndarray  # (N,) int64 indices into SHAPES
    texture: np.ndarray  # (N,) int64 indices into TEXTURES
    color: np.ndarray  # (N,) int64 indices into COLORS

    def __len__(self) -> int:
        return len(self.shape)


# ---------------------------------------------------------------------------------------------
# Rendering


def shape_template(name: str, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """Binary (size, size) float32 mask of a shape, upright and centred."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    half, sixth, third = size // 2, size // 6, size // 3
    mask = np.zeros((size, size), dtype=bool)
    if name == "square":
        mask[:] = True
    elif name == "circle":
        mask = np.square(i + 0.5 - half) + np.square(j + 0.5 - half) < np.square(half)
    elif name == "triangle":
        mask = np.abs(j - half) - np.abs(i // 2) < 1
    elif name == "plus":
        mask[:, half - sixth : half + sixth + 1] = True
        mask[half - sixth : half + sixth + 1, :] = True
    elif name == "tee":
        mask[:, half - sixth : half + sixth + 1] = True
        mask[:third, :] = True
    elif name == "rhombus":
        d = j - half + i // 2
        mask = (d > 0) & (d < half)
    elif name == "pentagon":
        mid = int(size * 0.4)
        top = np.abs(j - half) - np.abs(i * 1.25) < 1
        x_off = (i - mid) // 3.1
        bottom = (x_off < j) & (j < size - x_off)
        mask = np.where(i < mid, top, bottom)
    elif name == "star":
        line = int(size * 0.4)
        line2, line3 = line + int(0.2 * size), line + int(0.15 * size)
        tip = (i < line) & (np.abs(j - half) - np.abs(i // 4) < 1)
        x_off = (i - line) * 2.4
        arms = (i >= line) & (i < line2) & (x_off < j) & (j < size - x_off)
        x1 = size * 0.33 - 0.43 * (i - line3)
        x2 = size * 0.62 - 1.05 * (i - line3)
        legs = (i >= line3) & (((x1 < j) & (j < x2)) | ((x1 < size - j) & (size - j < x2)))
        mask = tip | arms | legs
    elif name == "fivesquare":
        two_thirds = 2 * size // 3
        mask[:] = True
        mask[:, third:two_thirds] = False
        mask[third:two_thirds, :] = False
        mask[third:two_thirds, third:two_thirds] = True
    elif name == "trapezoid":
        x_off = i // 3.1
        mask = (x_off < j) & (j < size - x_off)
    else:
        raise ValueError(f"unknown shape {name!r}; known: {SHAPES}")
    return mask.astype(np.float32)


def texture_pattern(name: str, rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size, size) texture mask; float32, except ``noise`` which is int64 as in the reference
    (it turns the stimulus into float64 downstream; the uint8 result is the same)."""
    ox, oy = rng.integers(0, SCALE), rng.integers(0, SCALE)
    i = np.arange(size)[:, None]
    j = np.arange(size)[None, :]
    y, x = (i + oy) % SCALE, (j + ox) % SCALE
    lwidth, small = SCALE // 3, SCALE // 5
    if name == "solid":
        return np.ones((size, size), dtype=np.float32)
    if name == "noise":
        return rng.binomial(1, 0.5, (size, size))
    if name == "stripes":
        mask = np.broadcast_to(y < lwidth, (size, size))
    elif name == "grid":
        mask = (y < lwidth) | (x < lwidth)
    elif name == "hexgrid":
        yy, xx = i + oy, j + ox
        slant = (1.73 * yy).astype(np.int64)
        mask = (
            ((xx + slant) % SCALE < small) | ((xx - slant) % SCALE < small) | (yy % SCALE < small)
        )
    elif name == "dots":
        radius_sq = (3 * SCALE // 7) ** 2
        mask = (x - SCALE // 2) ** 2 + (y - SCALE // 2) ** 2 < radius_sq
    elif name == "triangles":
        mask = y // 2 - np.abs(x - SCALE // 2) > 0
    elif name == "zigzags":
        flipped = ((i + oy) // SCALE) % 2 == 1
        xz = np.where(flipped, SCALE - x - 1, x)
        off = y // 2
        mask = (off < xz) & (xz < SCALE - SCALE // 2 + off)
    elif name == "rain":
        rng.integers(0, SCALE)  # drawn and unused by the reference; keeps the RNG in step
        # One Bernoulli draw per pixel in row-major order, as the reference's scalar calls; a
        # hit paints a vertical streak of the next `height` rows.
        hits = rng.binomial(1, 0.05, (size, size)).astype(bool)
        height = SCALE - SCALE // 3
        mask = np.zeros((size, size), dtype=bool)
        for k in range(height):
            mask[k:] |= hits[: size - k]
    elif name == "pluses":
        hw = 1.5
        flipped = ((i + oy) // SCALE) % 2 == 1
        centre_row = np.abs(y - SCALE // 2) < hw
        crosses = (np.abs(x - SCALE // 2) < hw) | centre_row
        shifted = (np.abs(x) < hw) | (SCALE - x < hw) | (centre_row & (np.abs(x - SCALE // 2) > hw))
        mask = np.where(flipped, shifted, crosses)
    else:
        raise ValueError(f"unknown texture {name!r}; known: {TEXTURES}")
    return np.ascontiguousarray(mask, dtype=np.float32)


class Renderer:
    """Draws stimuli from one random stream; templates are built once."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.templates = {s: shape_template(s) for s in SHAPES}

    def _placed_shape(self, name: str) -> np.ndarray:
        angle = self.rng.integers(-ANGLE_RANGE, ANGLE_RANGE)
        shape = scipy.ndimage.rotate(self.templates[name], angle, order=1)
        image = np.zeros((RENDER_SIZE, RENDER_SIZE), np.float32)
        ox = self.rng.integers(0, RENDER_SIZE - shape.shape[0])
        oy = self.rng.integers(0, RENDER_SIZE - shape.shape[1])
        image[ox : ox + shape.shape[0], oy : oy + shape.shape[1]] = shape
        return image

    def stimulus(self, shape: str, texture: str, color: str) -> np.ndarray:
        """(224, 224, 3) uint8 image."""
        image = self._placed_shape(shape)
        pattern = texture_pattern(texture, self.rng)
        angle = self.rng.integers(-ANGLE_RANGE, ANGLE_RANGE)
        pattern = scipy.ndimage.rotate(pattern, angle, order=0, reshape=False)
        c = RENDER_SIZE // 2
        image = np.multiply(image, pattern[c:-c, c:-c])
        rgb = image[:, :, None] * _COLOR_ARRAYS[color][None, None, :]
        rgb += (1 - image)[:, :, None] * BG_COLOR[None, None, :]
        return (rgb * 255.0).astype(np.uint8)

    def test_combinations(self) -> np.ndarray:
        """(1000,) 1 for combinations held out for the test split (the stream's first draw)."""
        flags = np.array([1] * N_TEST_COMBINATIONS + [0] * (N_COMBINATIONS - N_TEST_COMBINATIONS))
        self.rng.shuffle(flags)
        return flags


def file_name(shape: int, texture: int, color: int, copy: int | None) -> str:
    """The reference's file name of an image (its sort order defines our storage order)."""
    stem = f"{SHAPES[shape]}_{TEXTURES[texture]}_{COLORS[color]}"
    return f"{stem}.png" if copy is None else f"{stem}_{copy}.png"


def parse_file_name(name: str) -> tuple[int, int, int]:
    """(shape, texture, colour) indices of a reference file name."""
    shape, texture, color = name.removesuffix(".png").split("_")[:3]
    return SHAPES.index(shape), TEXTURES.index(texture), COLORS.index(color)


def stimuli(seed: int = 42, num_per_combination: int = 3) -> Iterator[tuple[str, str, np.ndarray]]:
    """(split, reference file name, uint8 image) of every stimulus, in drawing order: one test
    image per held-out combination, ``num_per_combination`` train images for the others."""
    renderer = Renderer(seed)
    flags = renderer.test_combinations()
    combos = itertools.product(range(len(SHAPES)), range(len(TEXTURES)), range(len(COLORS)))
    for (s, t, c), is_test in zip(combos, flags):
        for copy in [None] if is_test else range(num_per_combination):
            image = renderer.stimulus(SHAPES[s], TEXTURES[t], COLORS[c])
            yield ("test" if is_test else "train"), file_name(s, t, c, copy), image


def generate(
    seed: int = 42, num_per_combination: int = 3, progress: bool = True
) -> dict[str, TrifeatureSplit]:
    """Render the whole set (paper: 2,400 train + 200 test images), each split in the order of
    the reference's sorted file names."""
    total = N_TEST_COMBINATIONS + (N_COMBINATIONS - N_TEST_COMBINATIONS) * num_per_combination
    rows: dict[str, list] = {"train": [], "test": []}
    for split, name, image in tqdm(
        stimuli(seed, num_per_combination), total=total, desc="rendering", disable=not progress
    ):
        rows[split].append((name, image))
    splits = {}
    for split, items in rows.items():
        items.sort(key=lambda r: r[0])
        labels = np.array([parse_file_name(name) for name, _ in items], dtype=np.int64)
        splits[split] = TrifeatureSplit(
            images=np.stack([image for _, image in items]),
            shape=labels[:, 0],
            texture=labels[:, 1],
            color=labels[:, 2],
        )
    return splits


# ---------------------------------------------------------------------------------------------
# Storage

ARRAYS = ("images", "shape", "texture", "color")


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def save_splits(
    splits: dict[str, TrifeatureSplit], out_dir: str | Path, seed: int, num_per_combination: int
) -> Path:
    """One compressed ``{split}.npz`` per split and a ``manifest.json`` with checksums."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "dataset": "trifeatures",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "num_per_combination": num_per_combination,
        "image_size": RENDER_SIZE,
        "splits": {},
    }
    for name, split in splits.items():
        arrays = {k: getattr(split, k) for k in ARRAYS}
        with atomic_path(out_dir / f"{name}.npz") as tmp, tmp.open("wb") as f:
            np.savez_compressed(
                f,
                **arrays,
                shape_names=np.array(SHAPES),
                texture_names=np.array(TEXTURES),
                color_names=np.array(COLORS),
            )
        manifest["splits"][name] = {
            "count": len(split),
            "sha256": {k: _sha256(v) for k, v in arrays.items()},
        }
    write_json(out_dir / "manifest.json", manifest)
    return out_dir / "manifest.json"


def _read_manifest(path: Path, split: str, hint: str) -> dict[str, str]:
    """The sha256 of each array of ``split`` from manifest.json; DataError when unusable."""
    try:
        digests = json.loads(path.read_text())["splits"][split]["sha256"]
        if not all(isinstance(digests[key], str) for key in ARRAYS):
            raise TypeError("digests must be strings")
        return digests
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path} is unreadable or incomplete ({describe(err)}); {hint}") from None


def load_split(data_dir: str | Path, split: str, verify: bool = True) -> TrifeatureSplit:
    """Load a prepared split, checking each array it reads against the manifest's sha256.
    A missing, truncated or altered file raises DataError naming the file."""
    data_dir = Path(data_dir)
    hint = f"prepare it again: `comm-repro prepare trifeatures --out {data_dir}`"
    path, manifest_path = data_dir / f"{split}.npz", data_dir / "manifest.json"
    for p in (path, manifest_path):
        if not p.exists():
            raise DataError(f"{p} is missing; {hint}")
    expected = _read_manifest(manifest_path, split, hint) if verify else {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ARRAYS}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path} is unreadable ({describe(err)}); {hint}") from None
    for key, array in arrays.items():
        if verify and _sha256(array) != expected[key]:
            raise DataError(f"{path}: array {key!r} does not match {manifest_path.name}; {hint}")
    return TrifeatureSplit(**arrays)


def downsample(images: np.ndarray, size: int, chunk: int = 256) -> np.ndarray:
    """Area-average (N, H, W, 3) uint8 images to (N, size, size, 3); a no-op at full size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = []
    for s in range(0, len(images), chunk):
        x = torch.from_numpy(images[s : s + chunk]).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(size, size), mode="area")
        out.append(y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Bimodal pairing and tasks


def _pairing_rng(seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """The reference draws the synergy mapping and then the pair subsample from one fresh
    generator; returns the mapping and the generator positioned after it."""
    rng = np.random.default_rng(seed)
    return rng.permutation(len(COLORS)), rng


def synergy_mapping(seed: int = 42) -> np.ndarray:
    """(10,) colour index paired with each texture index; with seed 42: solid-cyan,
    stripes-purple, grid-red, hexgrid-ocean, dots-yellow, noise-blue, triangles-pink,
    zigzags-white, rain-green, pluses-orange."""
    return _pairing_rng(seed)[0]


def make_pairs(
    split: TrifeatureSplit, biased: bool, max_pairs: int | None = 10_000, seed: int = 42
) -> np.ndarray:
    """(P, 2) image-index pairs (i, j) sharing their shape (i = j allowed).

    ``biased`` keeps only pairs whose (texture of i, colour of j) is in the synergy mapping.
    At most ``max_pairs`` (None: all) are drawn without replacement, as the reference does.
    """
    mapping, rng = _pairing_rng(seed)
    allowed = split.shape[:, None] == split.shape[None, :]
    if biased:
        allowed &= mapping[split.texture][:, None] == split.color[None, :]
    pairs = np.stack(np.nonzero(allowed), axis=1).astype(np.int64)
    n = len(pairs) if max_pairs is None else min(int(max_pairs), len(pairs))
    return pairs[rng.choice(len(pairs), size=n, replace=False)]


TASKS = ("share", "unique1", "unique2", "synergy")


def task_labels(
    split: TrifeatureSplit, pairs: np.ndarray, mapping: np.ndarray
) -> dict[str, np.ndarray]:
    """Redundancy (shared shape), uniqueness (texture of each image) and synergy (whether the
    texture of image 1 and the colour of image 2 follow the mapping) labels of each pair."""
    i, j = pairs[:, 0], pairs[:, 1]
    return {
        "share": split.shape[i],
        "unique1": split.texture[i],
        "unique2": split.texture[j],
        "synergy": (mapping[split.texture[i]] == split.color[j]).astype(np.int64),
    }
