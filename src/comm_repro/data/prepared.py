"""A prepared set on disk: one ``{split}.npz`` of named arrays per split and a ``manifest.json``
that records each array's shape, dtype and sha256, written last (a set without it is
incomplete). Every load checks the arrays against the manifest, so a truncated or altered file
is named, never silently used. Used by the MultiBench families (affect, MIMIC).

Sets too large for memory (Vision&Touch) use the same manifest with one ``{split}/{array}.npy``
file per array instead (:class:`NpyWriter`, :func:`load_npy_arrays`): written row block by row
block, hashed as written, read back memory-mapped and verified in chunks."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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


# ---------------------------------------------------------------------------------------------
# One memory-mapped .npy file per array, for sets too large for memory

NPY_CHUNK = 1 << 23  # 8 MiB of an array hashed at a time


def npy_path(data_dir: str | Path, split: str, name: str) -> Path:
    return Path(data_dir) / split / f"{name}.npy"


class NpyWriter:
    """An ``.npy`` file of a known shape filled row block by row block, in order.

    The file is preallocated (``open_memmap``: header and full size) at a temporary name beside
    ``path``; blocks are written through a plain file handle, so that the written pages are
    never mapped into the process (its resident memory stays one block). Each block is hashed
    as it is written: :meth:`close` checks that every row came, renames the file to ``path``
    and returns the manifest's record (shape, dtype, sha256 of the C-order bytes, as
    :func:`array_sha256` computes it). Leaving the ``with`` block on an exception deletes the
    temporary file."""

    def __init__(self, path: str | Path, shape: Sequence[int], dtype) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        os.close(fd)
        self.tmp = Path(tmp)
        mm = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=self.dtype, shape=self.shape)
        offset = mm.offset
        del mm
        self._file = self.tmp.open("r+b")
        self._file.seek(offset)
        self._digest = hashlib.sha256()
        self.rows = 0

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` (rows of the array's sample shape, cast to its dtype)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(
                f"{self.path.name}: a block of shape {block.shape} does not fit rows "
                f"{self.rows}.. of {self.shape}"
            )
        data = memoryview(block.reshape(-1).view(np.uint8))
        self._file.write(data)
        self._digest.update(data)
        self.rows += len(block)

    def close(self) -> dict:
        self._file.close()
        if self.rows != self.shape[0]:
            self.abort()
            raise ValueError(f"{self.path.name}: {self.rows} rows written of {self.shape[0]}")
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        return {"shape": list(self.shape), "dtype": str(self.dtype), "sha256": self.hexdigest()}

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()


def records_to_manifest(records: dict[str, dict]) -> dict:
    """A split's manifest entries (shapes, dtypes, sha256 by array, as :func:`write_split`
    returns them) from :meth:`NpyWriter.close`'s records."""
    return {
        "shapes": {k: r["shape"] for k, r in records.items()},
        "dtypes": {k: r["dtype"] for k, r in records.items()},
        "sha256": {k: r["sha256"] for k, r in records.items()},
    }


def chunked_sha256(array: np.ndarray, chunk_bytes: int = NPY_CHUNK) -> str:
    """:func:`array_sha256` of a C-contiguous (e.g. memory-mapped) array, read in row blocks so
    that it is never copied whole."""
    digest = hashlib.sha256()
    if array.ndim == 0 or array.size == 0:
        digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
    row_bytes = max(1, array[0].nbytes)
    rows = max(1, chunk_bytes // row_bytes)
    for start in range(0, len(array), rows):
        block = np.ascontiguousarray(array[start : start + rows])
        digest.update(memoryview(block.reshape(-1).view(np.uint8)))
    return digest.hexdigest()


def npy_data_sha256(path: str | Path, offset: int, nbytes: int) -> str:
    """sha256 of the ``nbytes`` data bytes of an ``.npy`` file after its header (``offset``),
    read through a plain file handle: unlike a pass over a memory map, it leaves no pages
    mapped into the process."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = nbytes
        while left > 0:
            block = f.read(min(NPY_CHUNK, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def load_npy_arrays(
    data_dir: str | Path,
    split: str,
    names: Sequence[str],
    verify: bool = True,
    hint: str | None = None,
) -> dict[str, np.ndarray]:
    """The arrays ``names`` of a split in the ``{split}/{array}.npy`` layout (a prepared set,
    or stored probe features), memory-mapped copy-on-write (``mmap_mode="c"``: writable, so
    ``torch.from_numpy`` takes them without a copy, and nothing is ever written back). Each is
    checked against ``manifest.json`` (shape and dtype always, sha256 of the file's data, read
    in chunks, unless ``verify`` is False). A missing, truncated or altered file raises
    DataError naming it and ``hint`` (default: the command that prepares the set again)."""
    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    manifest = read_manifest(data_dir)
    if hint is None:
        hint = f"prepare it again: `comm-repro prepare {manifest.get('dataset')} --out {data_dir}`"
    try:
        expected = manifest["splits"][split]
        digests, shapes, dtypes = expected["sha256"], expected["shapes"], expected["dtypes"]
        records = {k: (shapes[k], dtypes[k], digests[k]) for k in names}
        if not all(isinstance(d, str) for _, _, d in records.values()):
            raise TypeError("digests must be strings")
    except (KeyError, TypeError) as err:
        raise DataError(
            f"{manifest_path} is unreadable or incomplete ({describe(err)}); {hint}"
        ) from None
    arrays = {}
    for key, (shape, dtype, digest) in records.items():
        path = npy_path(data_dir, split, key)
        if not path.exists():
            raise DataError(f"{path} is missing; {hint}")
        try:
            array = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path} is unreadable ({describe(err)}); {hint}") from None
        if list(array.shape) != shape or str(array.dtype) != dtype:
            raise DataError(
                f"{path}: shape {list(array.shape)} {array.dtype}, {manifest_path.name} says "
                f"{shape} {dtype}; {hint}"
            )
        if verify and npy_data_sha256(path, array.offset, array.nbytes) != digest:
            raise DataError(f"{path} does not match its sha256 in {manifest_path.name}; {hint}")
        arrays[key] = array
    return arrays
