"""A prepared set on disk: one ``{split}.npz`` of named arrays per split and a ``manifest.json``
that records each array's shape, dtype and sha256, written last (a set without it is
incomplete). Every load checks the arrays against the manifest, so a truncated or altered file
is named, never silently used. Used by the MultiBench families (affect, MIMIC)."""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from comm_repro.atomic import atomic_path
from comm_repro.errors import DataError, describe


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_split(out_dir: Path, split: str, arrays: dict[str, np.ndarray]) -> dict:
    """Write ``{split}.npz`` atomically; returns the manifest's record of its arrays."""
    with atomic_path(out_dir / f"{split}.npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return {
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
        "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
        "sha256": {k: array_sha256(v) for k, v in arrays.items()},
    }


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a prepared set; DataError naming the file when missing or unreadable."""
    path = Path(data_dir) / "manifest.json"
    hint = f"prepare the dataset again: `comm-repro prepare <dataset> --out {data_dir}`"
    if not path.exists():
        raise DataError(f"{path} is missing; {hint}")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("splits"), dict):
            raise ValueError("no splits")
        return manifest
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(f"{path} is unreadable or incomplete ({describe(err)}); {hint}") from None


def load_arrays(
    data_dir: str | Path, split: str, names: Sequence[str], verify: bool = True
) -> dict[str, np.ndarray]:
    """The arrays ``names`` of a prepared split, each checked (shape, dtype, sha256) against
    the manifest unless ``verify`` is False. A missing, truncated or altered file raises
    DataError naming the file and the command that prepares it again."""
    data_dir = Path(data_dir)
    path, manifest_path = data_dir / f"{split}.npz", data_dir / "manifest.json"
    manifest = read_manifest(data_dir)
    hint = f"prepare it again: `comm-repro prepare {manifest.get('dataset')} --out {data_dir}`"
    if not path.exists():
        raise DataError(f"{path} is missing; {hint}")
    try:
        expected = manifest["splits"][split]
        digests, shapes, dtypes = expected["sha256"], expected["shapes"], expected["dtypes"]
        if not all(isinstance(digests[k], str) for k in names):
            raise TypeError("digests must be strings")
    except (KeyError, TypeError) as err:
        raise DataError(
            f"{manifest_path} is unreadable or incomplete ({describe(err)}); {hint}"
        ) from None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in names}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path} is unreadable ({describe(err)}); {hint}") from None
    if verify:
        for key, array in arrays.items():
            if (
                list(array.shape) != shapes.get(key)
                or str(array.dtype) != dtypes.get(key)
                or array_sha256(array) != digests[key]
            ):
                raise DataError(
                    f"{path}: array {key!r} does not match {manifest_path.name}; {hint}"
                )
    return arrays
