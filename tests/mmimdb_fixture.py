"""A small MM-IMDb folder in the real layout (datasets.md §4): ``mmimdb/split.json`` and
``mmimdb/dataset/<id>.json`` + ``<id>.jpeg``, with list-valued plots, capitalised genres (some
outside the 23), JPEG posters of odd sizes and modes, and one truncated poster."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

GENRE_POOL = ["Drama", "Comedy", "Sci-Fi", "Film-Noir", "Romance", "Horror", "Action", "Short"]
UNKNOWN = ["News", "Talk-Show"]
SIZES = [(182, 268), (300, 201), (67, 99), (224, 224), (500, 740)]  # (width, height)
SPLIT = {"train": 8, "dev": 3, "test": 4}


def movie_id(i: int) -> str:
    return f"{i + 8:07d}"


def halves(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A poster whose first half (left when portrait, top when landscape) is red, the rest
    blue: after Resize + CenterCrop the square's two halves must keep those colours."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    if height >= width:
        pixels[:, : width // 2] = (220, 20, 20)
        pixels[:, width // 2 :] = (20, 20, 220)
    else:
        pixels[: height // 2] = (220, 20, 20)
        pixels[height // 2 :] = (20, 20, 220)
    image = Image.fromarray(pixels)
    return image.convert(mode) if mode != "RGB" else image


def write_mmimdb_fixture(root: Path, truncate: int | None = 4) -> dict:
    """Write ``root/mmimdb/...``; returns what was written: ids per split key, genres and
    plots per id, the truncated id. Movie ``truncate`` has its JPEG cut to half its bytes."""
    folder = root / "mmimdb" / "dataset"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    split, written, i = {}, {"genres": {}, "plots": {}, "truncated": None}, 0
    for key, count in SPLIT.items():
        split[key] = []
        for _ in range(count):
            movie = movie_id(i)
            genres = list(rng.choice(GENRE_POOL, size=1 + i % 3, replace=False))
            if i % 5 == 2:
                genres.append(UNKNOWN[i % 2])
            plots = [f"Plot {j} of movie {movie}: a story." for j in range(1 + i % 2)]
            record = {"title": f"Movie {movie}", "genres": genres, "plot": plots, "year": 1990}
            (folder / f"{movie}.json").write_text(json.dumps(record))
            width, height = SIZES[i % len(SIZES)]
            mode = "L" if i % 7 == 3 else "RGB"
            buffer = io.BytesIO()
            halves(width, height, mode).save(buffer, format="JPEG", quality=95)
            data = buffer.getvalue()
            if i == truncate:
                data = data[: len(data) // 2]
                written["truncated"] = movie
            (folder / f"{movie}.jpeg").write_bytes(data)
            written["genres"][movie], written["plots"][movie] = genres, plots
            split[key].append(movie)
            i += 1
    (root / "mmimdb" / "split.json").write_text(json.dumps(split))
    written["split"] = split
    return written


def write_tarball(root: Path, path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``root/mmimdb`` as a gzipped tarball at ``path`` (members ``mmimdb/...``), with
    ``extra`` members (name -> bytes) added."""
    with tarfile.open(path, "w:gz") as tf:
        tf.add(root / "mmimdb", arcname="mmimdb")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
