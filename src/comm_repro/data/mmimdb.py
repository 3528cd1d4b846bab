"""MM-IMDb (Arevalo et al. 2017): movie posters, plots and genres (datasets.md §4).

The raw set is ``mmimdb/split.json`` (``{"train": [...], "dev": [...], "test": [...]}`` of
7-digit ids) and ``mmimdb/dataset/<id>.json`` (``plot``: a list of strings; ``genres``: a list
of capitalised names) with ``<id>.jpeg`` (an RGB poster of any size), distributed as one tarball
(:data:`URL`, about 8 GB). The user names the unpacked folder or the tarball (``--source``), or
the tarball is downloaded (resumable) and unpacked beside itself (:data:`RAW`).

:func:`prepare` converts it once into, per split (``train``, ``valid`` = the authors' ``dev``,
``test``):

- ``image.npy`` (N, 224, 224, 3) uint8: each poster decoded once (truncated JPEGs allowed, no
  size limit, as the authors' loader), ``Resize(224)`` (shorter side, bilinear) and
  ``CenterCrop(224)``, then RGB: the authors' probe transform before ``ToTensor``. Training
  augmentation crops from this square, where the authors crop from the whole poster;
- ``genres.npy`` (N, 23) int64: the multilabel targets, columns in :data:`GENRES` order (the
  authors lower-case the names and fit a ``MultiLabelBinarizer``, which sorts them); genres
  outside the 23 are dropped, as theirs are, and counted in the manifest;
- ``text.json``: the ids and every plot of each movie (the authors draw one plot per access);

and ``manifest.json`` last, with the split sizes beside the official 15,552 / 2,608 / 7,799.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import lzma
import tarfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from comm_repro import download
from comm_repro.atomic import write_json
from comm_repro.data import archive, prepared
from comm_repro.errors import DataError, describe

FORMAT_VERSION = 1
URL = "https://archive.org/download/mmimdb/mmimdb.tar.gz"
TARBALL = "mmimdb.tar.gz"
FOLDER = "mmimdb"
# the 23 genres of the authors' list, in the order of their label columns (sorted)
GENRES = (
    "action",
    "adventure",
    "animation",
    "biography",
    "comedy",
    "crime",
    "documentary",
    "drama",
    "family",
    "fantasy",
    "film-noir",
    "history",
    "horror",
    "music",
    "musical",
    "mystery",
    "romance",
    "sci-fi",
    "short",
    "sport",
    "thriller",
    "war",
    "western",
)
RAW_SPLITS = {"train": "train", "valid": "dev", "test": "test"}  # ours -> split.json's key
SPLITS = tuple(RAW_SPLITS)
OFFICIAL_SIZES = {"train": 15552, "valid": 2608, "test": 7799}  # Arevalo et al. 2017
IMAGE_SIZE = 224
ARRAYS = ("image", "genres")
MODALITIES = {"poster": "image", "plot": "text"}  # a dataset's modality names -> kinds
LABELS = ("genres",)
POSTER_SUFFIXES = (".jpeg", ".jpg")


# ---------------------------------------------------------------------------------------------
# The raw folder: the user's, or unpacked from the (downloaded) tarball


def _raw_folder(path: Path) -> Path | None:
    """``path`` if it holds ``split.json`` and ``dataset/``, else its ``mmimdb`` subfolder if
    that does, else None."""
    for candidate in (path, path / FOLDER):
        if (candidate / "split.json").is_file() and (candidate / "dataset").is_dir():
            return candidate
    return None


def _wanted(name: str, tarball: Path) -> bool:
    """Whether a member is one the preparation reads: ``split.json`` or a file of
    ``dataset/`` (a movie's JSON or poster). DataError for an unsafe name."""
    path = archive.safe_member_path(name, tarball)
    if path.name == "split.json":
        return True
    return path.parent.name == "dataset" and path.suffix.lower() in (".json", *POSTER_SUFFIXES)


class _CountingReader:
    """A file read through a progress bar (the tarball's bytes, compressed or not)."""

    def __init__(self, f, bar: tqdm) -> None:
        self.f, self.bar = f, bar

    def read(self, size: int = -1) -> bytes:
        block = self.f.read(size)
        self.bar.update(len(block))
        return block


COMPRESSED = {b"\x1f\x8b": gzip.GzipFile, b"BZh": bz2.BZ2File, b"\xfd7zXZ": lzma.LZMAFile}


@contextlib.contextmanager
def _members(tarball: Path, what: str, progress: bool):
    """The members of the tarball, read in one pass (stream mode: no seeking back), with a
    progress bar over its bytes. The decompressed stream is read to its end afterwards, so that
    its checksum (gzip's CRC-32 and length, bzip2's, xz's) is verified: a damaged archive can
    otherwise look like a shorter, valid one."""
    with (
        tarball.open("rb") as f,
        tqdm(
            total=tarball.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"{what} {tarball.name}",
            disable=not progress,
        ) as bar,
    ):
        head = f.read(6)
        f.seek(0)
        reader = _CountingReader(f, bar)
        opener = next((o for magic, o in COMPRESSED.items() if head.startswith(magic)), None)
        stream = opener(fileobj=reader, mode="rb") if opener else reader
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            yield tf
        while stream.read(download.CHUNK):
            pass


TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def check_tarball(path: str | Path, progress: bool = False) -> None:
    """DataError unless ``path`` is a complete, readable tarball (every member read, the gzip
    checksum verified) with a ``split.json`` and at least one movie JSON and one poster (the
    format check of a download)."""
    path = Path(path)
    found = Counter()
    try:
        with _members(path, "verify", progress) as tf:
            for member in tf:
                if member.isfile() and _wanted(member.name, path):
                    kind = Path(member.name).suffix.lower()
                    found["split" if member.name.endswith("split.json") else kind] += 1
    except TAR_ERRORS as err:
        raise DataError(f"{path} is not a readable tarball ({describe(err)})") from None
    posters = sum(found[s] for s in POSTER_SUFFIXES)
    if not found["split"] or not found[".json"] or not posters:
        raise DataError(
            f"{path}: no split.json, movie JSON or poster inside ({dict(found)}); not the "
            "MM-IMDb tarball"
        )


def _extract(tarball: Path, into: Path, progress: bool) -> None:
    """The members :func:`_wanted` names, under their paths in ``into``. Links, devices and
    any member outside those are skipped: the tarball is data, never trusted to place files."""
    with _members(tarball, "unpack", progress) as tf:
        for member in tf:
            if not member.isfile() or not _wanted(member.name, tarball):
                continue
            target = into / archive.safe_member_path(member.name, tarball)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            with src, target.open("wb") as dst:
                for block in iter(lambda src=src: src.read(download.CHUNK), b""):
                    dst.write(block)


RAW = archive.ArchivedFolder(
    dataset="mmimdb",
    url=URL,
    archive=TARBALL,
    folder=FOLDER,
    content="MM-IMDb files (split.json and dataset/)",
    kind="tarball",
    find=_raw_folder,
    is_archive=tarfile.is_tarfile,
    check=check_tarball,
    extract=_extract,
    errors=TAR_ERRORS,
)
# The raw folder from --source (the folder or the tarball) or --download-to (see
# ArchivedFolder.obtain): obtain_raw(source=None, download_to=None, progress=True, transport=None)
obtain_raw = RAW.obtain


# ---------------------------------------------------------------------------------------------
# Preparation


def read_split_file(raw_dir: Path) -> dict[str, list[str]]:
    """``split.json`` as our split names -> ids (strings); DataError naming what is wrong."""
    path = raw_dir / "split.json"
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is unreadable ({describe(err)})") from None
    splits = {}
    for ours, key in RAW_SPLITS.items():
        ids = content.get(key) if isinstance(content, dict) else None
        if not isinstance(ids, list) or not ids:
            raise DataError(f"{path}: no list of ids under {key!r} (has {sorted(content)})")
        splits[ours] = [str(i) for i in ids]
    return splits


def read_movie(raw_dir: Path, movie: str) -> tuple[list[str], list[str]]:
    """A movie's plots and genres (as in its JSON: a plot given as one string is one plot)."""
    path = raw_dir / "dataset" / f"{movie}.json"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is unreadable ({describe(err)})") from None
    plots, genres = content.get("plot") or [], content.get("genres") or []
    plots = [plots] if isinstance(plots, str) else plots
    genres = [genres] if isinstance(genres, str) else genres
    if not all(isinstance(p, str) for p in plots) or not all(isinstance(g, str) for g in genres):
        raise DataError(f"{path}: 'plot' and 'genres' must be strings or lists of strings")
    return plots, genres


def genre_targets(genres: list[str]) -> tuple[np.ndarray, list[str]]:
    """The (23,) 0/1 row of a movie's genres (lower-cased) and the names outside the 23."""
    row = np.zeros(len(GENRES), dtype=np.int64)
    unknown = []
    for name in genres:
        key = name.strip().lower()
        if key in GENRES:
            row[GENRES.index(key)] = 1
        else:
            unknown.append(key)
    return row, unknown


@contextlib.contextmanager
def _lenient_pil(truncated: bool):
    """PIL as the authors' loader sets it (no decompression-bomb limit; truncated JPEGs
    decoded as far as they go when ``truncated``), restored afterwards."""
    from PIL import Image, ImageFile

    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, truncated
    try:
        yield Image
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def poster_path(raw_dir: Path, movie: str) -> Path:
    for suffix in POSTER_SUFFIXES:
        path = raw_dir / "dataset" / f"{movie}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"{raw_dir / 'dataset'}: no poster {movie}.jpeg for the movie {movie}")


def read_poster(path: Path, size: int = IMAGE_SIZE) -> tuple[np.ndarray, bool]:
    """A poster as the authors' probe transform gives it: ``Resize(size)``, ``CenterCrop(size)``
    then RGB, as a (size, size, 3) uint8 array; and whether the file was truncated (decoded as
    far as it goes, as the authors allow)."""
    from torchvision.transforms import functional as TF

    for truncated in (False, True):
        with _lenient_pil(truncated) as Image:
            try:
                with Image.open(path) as image:
                    image.load()
                    square = TF.center_crop(TF.resize(image, size), size).convert("RGB")
                return np.asarray(square, dtype=np.uint8), truncated
            except OSError as err:
                if truncated or "truncated" not in str(err):
                    raise DataError(f"{path} is not a readable image ({describe(err)})") from None
    raise AssertionError("unreachable")


def prepare(
    raw_dir: str | Path, out_dir: str | Path, size: int = IMAGE_SIZE, progress: bool = True
) -> dict[str, Any]:
    """Convert the raw folder into ``{train,valid,test}/{image,genres}.npy``, ``text.json``
    and ``manifest.json`` (written last) in ``out_dir`` (module doc); returns the manifest.
    A movie whose JSON or poster is missing or unreadable raises DataError naming the file."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    t0 = time.perf_counter()
    found = _raw_folder(raw_dir)
    if found is None:
        raise DataError(f"{raw_dir} has no split.json and dataset/: not the MM-IMDb folder")
    raw_dir = found
    splits = read_split_file(raw_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # a half-rewritten set never verifies
    unknown, truncated = Counter(), []
    manifest = {
        "dataset": "mmimdb",
        "format_version": FORMAT_VERSION,
        "raw": {"folder": str(raw_dir), "url": URL},
        "genres": list(GENRES),
        "preprocessing": (
            f"poster: Resize({size}) (shorter side, bilinear), CenterCrop({size}), RGB, uint8; "
            "genres lower-cased, columns in the sorted order of the 23 genres, others dropped; "
            "every plot kept"
        ),
        "splits": {},
    }
    total = sum(len(ids) for ids in splits.values())
    bar = tqdm(total=total, desc="prepare mmimdb", unit="movie", disable=not progress)
    with bar:
        for split, ids in splits.items():
            n = len(ids)
            plots, no_plot, no_genre = [], 0, 0
            per_genre = np.zeros(len(GENRES), dtype=np.int64)
            with (
                prepared.NpyWriter(
                    prepared.npy_path(out_dir, split, "image"), (n, size, size, 3), np.uint8
                ) as images,
                prepared.NpyWriter(
                    prepared.npy_path(out_dir, split, "genres"), (n, len(GENRES)), np.int64
                ) as targets,
            ):
                for movie in ids:
                    movie_plots, genres = read_movie(raw_dir, movie)
                    row, dropped = genre_targets(genres)
                    unknown.update(dropped)
                    image, cut = read_poster(poster_path(raw_dir, movie), size)
                    if cut:
                        truncated.append(movie)
                    images.write(image[None])
                    targets.write(row[None])
                    plots.append(movie_plots)
                    no_plot += not movie_plots
                    no_genre += not row.any()
                    per_genre += row
                    bar.update(1)
                records = {"image": images.close(), "genres": targets.close()}
            text_path = out_dir / split / "text.json"
            write_json(text_path, {"ids": ids, "plots": plots})
            manifest["splits"][split] = {
                "count": n,
                "official_count": OFFICIAL_SIZES[split],
                "source_key": RAW_SPLITS[split],
                "movies_without_plot": no_plot,
                "movies_without_known_genre": no_genre,
                "genre_counts": {g: int(c) for g, c in zip(GENRES, per_genre)},
                "text_sha256": download.sha256_file(text_path),
                **prepared.records_to_manifest(records),
            }
    manifest["size_check"] = size_check(manifest["splits"])
    manifest["unknown_genres_dropped"] = dict(sorted(unknown.items()))
    manifest["truncated_posters"] = truncated
    manifest["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def size_check(splits: dict[str, dict]) -> str:
    """What differs between the prepared split sizes and the official ones (one line)."""
    differ = [
        f"{split} {info['count']:,} (official {info['official_count']:,})"
        for split, info in splits.items()
        if info["count"] != info["official_count"]
    ]
    if not differ:
        return "the official split sizes 15,552 / 2,608 / 7,799"
    return "differs from the official split sizes: " + ", ".join(differ)


# ---------------------------------------------------------------------------------------------
# Loading


read_manifest = prepared.read_manifest


def load_split(data_dir: str | Path, split: str, verify: bool = True) -> dict[str, Any]:
    """A prepared split: ``image`` (memory-mapped) and ``genres`` checked against the manifest
    (:func:`comm_repro.data.prepared.load_npy_arrays`), ``ids`` and ``plots`` from its
    ``text.json`` (checked against its sha256)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    loaded: dict[str, Any] = prepared.load_npy_arrays(data_dir, split, ARRAYS, verify)
    text_path = data_dir / split / "text.json"
    hint = f"prepare it again: `comm-repro prepare mmimdb --out {data_dir}`"
    if not text_path.is_file():
        raise DataError(f"{text_path} is missing; {hint}")
    expected = read_manifest(data_dir)["splits"][split].get("text_sha256")
    try:
        raw = text_path.read_bytes()  # read once: hashed, then parsed
        if verify and hashlib.sha256(raw).hexdigest() != expected:
            raise DataError(f"{text_path} does not match its sha256 in manifest.json; {hint}")
        text = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{text_path} is unreadable ({describe(err)}); {hint}") from None
    loaded["ids"], loaded["plots"] = text["ids"], text["plots"]
    return loaded


def token_bank(
    plots: list[list[str]], tokenizer: Any, max_length: int, first_only: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every movie's plots as token ids: ``ids`` (N, P, L) int32 (P: the most plots of a movie,
    L: the longest text, cut at ``max_length``; padding ids and mask False past each text and
    each movie's plots), ``mask`` (N, P, L) bool and ``counts`` (N,) of each movie's plots. A
    movie without a plot has one empty text. ``first_only``: each movie's first plot alone
    (P = 1), the probes' deterministic choice where the authors draw one at random."""
    texts = [(movie or [""])[: 1 if first_only else None] for movie in plots]
    counts = np.array([len(t) for t in texts], dtype=np.int64)
    out = tokenizer(
        [t for movie in texts for t in movie],
        padding="longest",
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    flat_ids, flat_mask = out["input_ids"], out["attention_mask"].astype(bool)
    rows = np.repeat(np.arange(len(texts)), counts)
    cols = np.concatenate([np.arange(c) for c in counts]) if len(texts) else rows
    shape = (len(texts), int(counts.max(initial=1)), flat_ids.shape[1])
    ids = np.full(shape, tokenizer.pad_token_id or 0, dtype=np.int32)
    mask = np.zeros(shape, dtype=bool)
    ids[rows, cols], mask[rows, cols] = flat_ids, flat_mask
    return ids, mask, counts
