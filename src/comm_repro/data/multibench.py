"""MultiBench affect datasets: CMU-MOSI, UR-FUNNY (``humor``) and MUsTARD (``sarcasm``).

The authors distribute each as one pickle (``mosi_data.pkl``, ``humor.pkl``, ``sarcasm.pkl``)
holding ``{split: {"vision", "audio", "text", "labels", ...}}`` for the splits ``train``,
``valid`` and ``test``, with (N, 50, d) float arrays left zero-padded to 50 time steps. Each is
converted once (:func:`prepare`) into one ``{split}.npz`` per split and a ``manifest.json``;
nothing after that reads a pickle. The pickle is read with :class:`RestrictedUnpickler`, which
admits only what numpy arrays, dicts, lists, strings and numbers need: a file that names any
other global is refused before anything in it runs.

Preparation applies the authors' preprocessing:

- samples whose text is all zero are dropped (from every array);
- non-finite values (the ``-inf`` of the audio features, and any ``+inf``/NaN) become 0, and are
  counted in the manifest;
- ``label = label_raw > 0`` (int64; 0 for an exact 0), with the raw value kept as ``label_raw``
  (float32; MOSI's sentiment score in [-3, 3], for regression);
- the left padding becomes a boolean ``mask`` (N, 50), True on the real steps: ``t >= start``,
  where ``start`` is the first step with any non-zero text. The arrays keep all 50 steps; the
  padded ones are masked, not removed (the authors slice them off and right-pad each batch).

Splits: ``train`` is what models are trained on; ``valid`` is what the linear probe's C is chosen
on, and ``test`` is what is scored (the paper's numbers).

Modalities: ``vision`` (N, 50, dv), ``audio`` (N, 50, da), ``text`` (N, 50, 300), float32;
dv/da are 20/5 for MOSI and 371/81 for UR-FUNNY and MUsTARD. Task: binary ``label``
(balanced accuracy, as the paper).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm.auto import tqdm

from comm_repro import download
from comm_repro.atomic import write_json
from comm_repro.data import prepared
from comm_repro.errors import DataError, describe

try:  # numpy >= 2 (numpy.core is a deprecated alias there)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
MODALITIES = ("vision", "audio", "text")
ARRAYS = ("vision", "audio", "text", "mask", "label", "label_raw")
SEQ_LEN = 50


@dataclass(frozen=True)
class AffectSpec:
    name: str
    file: str  # the authors' file name
    drive_id: str  # Google Drive file id the authors' code downloads
    dims: dict[str, int]  # feature size per modality
    size: int | None = None  # known size and sha256 of the authors' file, where known
    sha256: str | None = None

    @property
    def url(self) -> str:
        return download.drive_url(self.drive_id)


DATASETS = {
    "mosi": AffectSpec(
        "mosi",
        "mosi_data.pkl",
        "1_XdzdW8UNG1TTS6QcX10uhoS6N11OBit",
        {"vision": 20, "audio": 5, "text": 300},
        size=154_041_300,
        sha256="1a113ad5edc8b9b625a7e29e6b94a97ecade70494c4e022d9f7ba5affca3bbdc",
    ),
    "humor": AffectSpec(
        "humor",
        "humor.pkl",
        "1L5slPmYyhEVtwGyM1kgcFMjeBpXLZGT0",
        {"vision": 371, "audio": 81, "text": 300},
    ),
    "sarcasm": AffectSpec(
        "sarcasm",
        "sarcasm.pkl",
        "1EMBUmUL5B0PTncGx3L-sBElGOmjFBR_h",
        {"vision": 371, "audio": 81, "text": 300},
    ),
}


class RawDigestWarning(UserWarning):
    """A raw file whose sha256 is not the known (or recorded) one; it is prepared anyway."""


def spec(name: str) -> AffectSpec:
    if name not in DATASETS:
        raise DataError(f"unknown affect dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------------------------------------
# Reading the pickle


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside what numpy arrays need."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What ``_codecs.encode`` does in a protocol-2 pickle of bytes (``encode(s, "latin1")``),
    and nothing else: other codecs are refused."""
    if not isinstance(text, str) or encoding.lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}: only latin1 is read")
    return text.encode("latin-1")


_ADMITTED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,  # arrays in protocol 5
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,  # bytes in protocol-2 pickles written by Python 3
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, tuples, strings, bytes and numbers; any other global
    raises :class:`UnsafePickleError` before it is looked up, so nothing else can run.

    Both spellings of numpy's module (``numpy.core`` before numpy 2, ``numpy._core`` since) are
    admitted; they resolve to the installed numpy's functions without importing the alias."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise UnsafePickleError(module, name) from None


class _HashingReader:
    """A read-only file wrapper that feeds every byte read through it to sha256 and a progress
    bar, so that the digest comes from the same single pass as the unpickling."""

    def __init__(self, f: BinaryIO, bar: tqdm) -> None:
        self._f, self._bar = f, bar
        self.digest = hashlib.sha256()
        self.size = 0

    def _seen(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self.size += len(data)
        self._bar.update(len(data))

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._seen(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self._f.readline(limit)
        self._seen(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        self._seen(memoryview(buffer).cast("B")[:n])
        return n

    def drain(self) -> None:
        """Read what follows the pickle's STOP, so the digest covers the whole file."""
        while self.read(download.CHUNK):
            pass


def load_pickle(path: str | Path, progress: bool = False) -> tuple[Any, str, int]:
    """The object in the pickle at ``path``, read with :class:`RestrictedUnpickler` in one
    streaming pass, with the file's sha256 and size. Raises DataError naming the file (and the
    global, for a refused one)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing or not a file")
    try:
        with (
            path.open("rb") as f,
            download.byte_progress(path, f"read {path.name}", progress) as bar,
        ):
            reader = _HashingReader(f, bar)
            data = RestrictedUnpickler(reader, encoding="latin1").load()
            reader.drain()
    except UnsafePickleError as err:
        raise DataError(
            f"{path}: refused, the pickle names the global {err.global_name}, which a data file "
            "has no use for; nothing in it was run (only numpy arrays, dicts, lists, strings "
            "and numbers are read)"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        OverflowError,
    ) as err:
        raise DataError(f"{path} is not a readable pickle of arrays ({describe(err)})") from None
    return data, reader.digest.hexdigest(), reader.size


def looks_like_pickle(path: Path) -> None:
    """A download check: Drive sends an HTML page when it refuses; a pickle never starts so."""
    with path.open("rb") as f:
        head = f.read(512).lstrip()
    if not head or head.startswith(b"<"):
        what = "is empty" if not head else "is a web page, not a pickle"
        raise DataError(f"{path.name} {what} (Google Drive may have refused the download)")


# ---------------------------------------------------------------------------------------------
# Structure and preprocessing


def check_structure(data: Any, name: str, path: str | Path) -> None:
    """Raise DataError naming what is wrong, if ``data`` is not the authors' layout for
    dataset ``name``: splits train/valid/test, each a dict with vision/audio/text float arrays
    (N, 50, d) of the dataset's feature sizes and ``labels`` with one value per sample."""
    dims = spec(name).dims
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of splits, found {type(data).__name__}")
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise DataError(
            f"{path}: split {missing[0]!r} is missing (found {_keys(data)}; expected "
            f"{', '.join(SPLITS)})"
        )
    for split in SPLITS:
        part = data[split]
        where = f"{path}: split {split!r}"
        if not isinstance(part, dict):
            raise DataError(f"{where} is a {type(part).__name__}, expected a dict of arrays")
        for key in (*MODALITIES, "labels"):
            if key not in part:
                raise DataError(f"{where} has no {key!r} (found {_keys(part)})")
            if not isinstance(part[key], np.ndarray):
                raise DataError(
                    f"{where}: {key!r} is a {type(part[key]).__name__}, expected a numpy array"
                )
        n = len(part["text"]) if part["text"].ndim else 0
        for key in MODALITIES:
            array, want = part[key], (SEQ_LEN, dims[key])
            label = f"{where}: {key!r} has shape {array.shape}"
            if array.ndim != 3:
                raise DataError(f"{label}, expected (N, {want[0]}, {want[1]})")
            if array.shape[1] != SEQ_LEN:
                raise DataError(f"{label}: {array.shape[1]} time steps, expected {SEQ_LEN}")
            if array.shape[2] != want[1]:
                raise DataError(f"{label}: feature size {array.shape[2]}, expected {want[1]}")
            if array.shape[0] != n:
                raise DataError(f"{label}: {array.shape[0]} samples, but text has {n}")
            if array.dtype.kind != "f":
                raise DataError(f"{label} of dtype {array.dtype}, expected floats")
        labels = part["labels"]
        label = f"{where}: 'labels' has shape {labels.shape}"
        if labels.ndim == 0 or labels.shape[0] != n:
            raise DataError(f"{label}, expected {n} samples as the modalities")
        per_sample = math.prod(labels.shape[1:])
        if per_sample != 1:
            raise DataError(f"{label}: {per_sample} values per sample, expected one")
        if labels.dtype.kind not in "fiub":
            raise DataError(f"{label} of dtype {labels.dtype}, expected numbers")
        if labels.dtype.kind == "f" and not np.isfinite(labels).all():
            raise DataError(f"{where}: 'labels' holds non-finite values")


def _keys(d: dict) -> str:
    return ", ".join(repr(k) for k in list(d)[:8]) or "nothing"


def preprocess_split(part: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """The authors' preprocessing of one split (see the module docstring): the arrays to save
    and what was changed (dropped samples, non-finite values replaced per modality)."""
    text = part["text"]
    keep = np.any(text != 0, axis=(1, 2))
    n_dropped = int(len(keep) - keep.sum())
    out, replaced = {}, {}
    for key in MODALITIES:
        array = part[key][keep] if n_dropped else part[key]
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not array.flags.writeable or array is part[key]:
            array = array.copy()  # never change the caller's arrays
        bad = ~np.isfinite(array)
        counts = {"-inf": 0, "+inf": 0, "nan": 0}
        if bad.any():
            values = array[bad]
            counts = {
                "-inf": int(np.isneginf(values).sum()),
                "+inf": int(np.isposinf(values).sum()),
                "nan": int(np.isnan(values).sum()),
            }
            array[bad] = 0.0
        out[key] = array
        replaced[key] = counts
    nonzero = np.any(out["text"] != 0, axis=2)  # (N, T); every kept sample has a True
    start = np.argmax(nonzero, axis=1)
    out["mask"] = np.arange(SEQ_LEN)[None, :] >= start[:, None]
    labels = part["labels"].reshape(len(keep))[keep]
    out["label"] = (labels > 0).astype(np.int64)
    out["label_raw"] = labels.astype(np.float32)
    return out, {"dropped_all_zero_text": n_dropped, "non_finite_replaced": replaced}


# ---------------------------------------------------------------------------------------------
# Raw files: where they are, the download, the digest check


def default_raw_path(name: str) -> Path:
    """``<raw data root>/<name>/<file>``, e.g. ``data/raw/mosi/mosi_data.pkl`` in the
    repository (see :func:`comm_repro.download.raw_data_root`)."""
    return download.raw_data_root() / name / spec(name).file


def obtain_raw(
    name: str,
    source: str | Path | None = None,
    download_to: str | Path | None = None,
    progress: bool = True,
    transport: download.Transport | None = None,
) -> Path:
    """The raw pickle of dataset ``name``: ``source`` if given (it must exist), else the file at
    ``download_to`` (a file path, or a directory for the authors' file name; default
    :func:`default_raw_path`), downloaded from the authors' Google Drive file if absent."""
    ds = spec(name)
    if source is not None:
        source = Path(source)
        if not source.is_file():
            raise DataError(f"{source} is missing or not a file (--source)")
        return source
    if download_to is None:
        target = default_raw_path(name)
    else:
        target = Path(download_to)
        if target.is_dir() or str(download_to).endswith(("/", "\\")):
            target = target / ds.file
    if target.is_file():
        return target
    return download.fetch(
        ds.url,
        target,
        expected_size=ds.size,
        expected_sha256=ds.sha256,
        check=looks_like_pickle,
        transport=transport or download.gdown_transport,
        progress=progress,
    )


def _expected_digest(name: str, raw: Path) -> tuple[str | None, str | None]:
    """The sha256 ``raw`` should have and where that comes from, or (None, None)."""
    ds = spec(name)
    if ds.sha256:
        return ds.sha256, "the authors' file as known"
    record = download.read_record(raw)
    if record is not None:
        return record["sha256"], f"recorded in {download.record_path(raw)}"
    return None, None


# ---------------------------------------------------------------------------------------------
# Preparation and loading


def prepare(name: str, raw: str | Path, out_dir: str | Path, progress: bool = True) -> dict:
    """Convert the raw pickle of dataset ``name`` into ``{split}.npz`` (vision, audio, text
    float32; mask bool; label int64; label_raw float32) and ``manifest.json`` in ``out_dir``.
    Returns the manifest. A structure that is not the authors' raises DataError naming what is
    wrong; a sha256 other than the known (or recorded) one only warns (RawDigestWarning)."""
    ds, raw, out_dir = spec(name), Path(raw), Path(out_dir)
    t0 = time.perf_counter()
    data, digest, size = load_pickle(raw, progress=progress)
    expected, expected_from = _expected_digest(name, raw)
    if expected is not None and digest != expected:
        warnings.warn(
            f"{raw} has sha256 {digest}, not {expected} ({expected_from}); preparing it anyway",
            RawDigestWarning,
            stacklevel=2,
        )
    check_structure(data, name, raw)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # a half-rewritten set never verifies
    manifest = {
        "dataset": name,
        "format_version": FORMAT_VERSION,
        "raw": {
            "file": str(raw),
            "size": size,
            "sha256": digest,
            "expected_sha256": expected,
            "expected_from": expected_from,
            "matches": None if expected is None else digest == expected,
            "url": ds.url,
        },
        "seq_len": SEQ_LEN,
        "feature_dims": dict(ds.dims),
        "preprocessing": (
            "samples with all-zero text dropped; non-finite values set to 0; label = "
            "label_raw > 0; mask = t >= first step with non-zero text"
        ),
        "splits": {},
    }
    bar = tqdm(SPLITS, desc=f"prepare {name}", disable=not progress)
    for split in bar:
        arrays, changes = preprocess_split(data[split])
        data[split] = None  # free the raw split before the next one
        if len(arrays["label"]) == 0:
            raise DataError(f"{raw}: split {split!r} has no sample with non-zero text")
        stored = prepared.write_split(out_dir, split, arrays)
        labels = arrays["label"]
        manifest["splits"][split] = {
            "count": len(labels),
            "label_counts": {str(k): int((labels == k).sum()) for k in (0, 1)},
            "positive_fraction": round(float(labels.mean()), 4),
            "label_raw_range": [float(arrays["label_raw"].min()), float(arrays["label_raw"].max())],
            "masked_steps": int((~arrays["mask"]).sum()),
            **changes,
            **stored,
        }
        del arrays
    splits = manifest["splits"].values()
    manifest["dropped_samples"] = sum(s["dropped_all_zero_text"] for s in splits)
    manifest["non_finite_replaced"] = sum(
        n for s in splits for counts in s["non_finite_replaced"].values() for n in counts.values()
    )
    manifest["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


@dataclass
class AffectSplit:
    vision: np.ndarray  # (N, 50, dv) float32
    audio: np.ndarray  # (N, 50, da) float32
    text: np.ndarray  # (N, 50, 300) float32
    mask: np.ndarray  # (N, 50) bool, True on real (unpadded) steps
    label: np.ndarray  # (N,) int64, label_raw > 0
    label_raw: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.label)

    @property
    def modalities(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in MODALITIES}


read_manifest = prepared.read_manifest


def load_split(data_dir: str | Path, split: str, verify: bool = True) -> AffectSplit:
    """Load a prepared split (``train``, ``valid`` or ``test``), checking each array's shape,
    dtype and sha256 against the manifest. A missing, truncated or altered file raises
    DataError naming the file. ``valid`` is for choosing the probe's C, ``test`` is scored."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return AffectSplit(**prepared.load_arrays(data_dir, split, ARRAYS, verify))
