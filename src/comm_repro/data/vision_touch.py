"""Vision&Touch (``triangle_real_data``): a robot arm's camera, force sensor and proprioception.

The raw set is a flat folder of ``.h5`` files, one per 50-step episode chunk (datasets.md §3),
distributed as one zip (:data:`URL`, about 11 GB). The user names the unzipped folder or the zip
(``--source``), or the zip is downloaded (resumable, :func:`comm_repro.download.
http_range_transport`) and unpacked beside itself (:func:`obtain_raw`). :func:`prepare` converts
it once into one memory-mapped ``.npy`` file per array and split (``{split}/{array}.npy``, see
:mod:`comm_repro.data.prepared`) and ``manifest.json``, reading the files one at a time so that
memory does not grow with the set.

The authors' loader (CoMM's ``dataset/robotics/multimodal_manipulation.py``), as reproduced:

1. files: ``sorted(os.listdir(root))`` (here only the ``.h5`` ones); ``perm = arange(N)``
   shuffled by ``np.random.default_rng(42)``; ``n_test = int(0.2 N)``; train = the files at
   ``perm[:N - n_test]``, test = ``perm[N - n_test:]``, in that order. There is no validation
   split: the authors' ``val`` is the test split;
2. 49 samples per file, t = 0..48; the authors replace t = 48 by ``np.random.randint(48)`` at
   every access. Here it is drawn once per file at preparation (``default_rng(seed)`` over the
   sorted file list), so that the prepared set is deterministic; the seed and the drawn values
   are in the manifest;
3. per sample: ``image`` = image[t] (128, 128, 3) uint8 (a file storing images channel-first
   has each transposed (2, 1, 0), as theirs does); ``force`` = tanh of the last 32 readings of
   ``ee_forces_continuous[t]``, (32, 6) float32; ``proprio`` = proprio[t][:8] (8,) float32;
   labels ``ee_yaw_next`` = proprio[t+1][:4] (4,) float32 (regression), ``contact_next`` =
   int64(contact[t+1].sum() > 0) (binary), ``action_next`` = action[t+1] (4,) float32.
"""

from __future__ import annotations

import os
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from comm_repro import download
from comm_repro.atomic import write_json
from comm_repro.data import archive, prepared
from comm_repro.errors import DataError, describe

FORMAT_VERSION = 1
URL = "http://downloads.cs.stanford.edu/juno/triangle_real_data.zip"
ZIP = "triangle_real_data.zip"
FOLDER = "triangle_real_data"
SPLITS = ("train", "test")
STEPS = 50  # per file
SAMPLES = STEPS - 1  # t = 0..48: each needs step t + 1
SPLIT_SEED = 42
TEST_FRACTION = 0.2
FORCE_STEPS = 32
DEFAULT_SEED = 0  # draws the replacement of t = 48, once per file
MODALITIES = {"image": "image", "force": "sequence", "proprio": "tabular"}  # name -> kind
LABELS = ("ee_yaw_next", "contact_next", "action_next")
ARRAYS = (*MODALITIES, *LABELS)
KEYS = ("image", "ee_forces_continuous", "proprio", "contact", "action")  # the keys read
SHAPES = {  # array -> (sample shape, dtype) in the prepared set
    "image": ((128, 128, 3), np.uint8),
    "force": ((FORCE_STEPS, 6), np.float32),
    "proprio": ((8,), np.float32),
    "ee_yaw_next": ((4,), np.float32),
    "contact_next": ((), np.int64),
    "action_next": ((4,), np.float32),
}
MIN_FILES = 5  # int(0.2 N) >= 1


def h5_files(folder: str | Path) -> list[str]:
    """The ``.h5`` file names in ``folder``, in ``sorted(os.listdir)`` order."""
    return [name for name in sorted(os.listdir(folder)) if name.endswith(".h5")]


# ---------------------------------------------------------------------------------------------
# The raw folder: the user's, or unpacked from the (downloaded) zip


def _h5_members(zf: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """The zip's ``.h5`` members (not macOS resource forks); DataError for an unsafe name."""
    members = []
    for info in zf.infolist():
        name = archive.safe_member_path(info.filename, path)
        if info.is_dir() or name.suffix != ".h5":
            continue
        if "__MACOSX" in name.parts or name.name.startswith("._"):
            continue
        members.append(info)
    return members


def check_zip(path: str | Path) -> None:
    """DataError unless ``path`` is a zip whose members all pass their CRC check and which has
    at least one ``.h5`` member (the format check of a download)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"{path}: member {bad!r} is corrupt (CRC mismatch)")
            if not _h5_members(zf, path):
                raise DataError(f"{path}: no .h5 member; not the Vision&Touch zip")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is not a readable zip ({describe(err)})") from None


def _extract(zip_path: Path, into: Path, progress: bool) -> None:
    """The ``.h5`` members of the zip, flat (by file name) in ``into``, CRC-checked as read."""
    with zipfile.ZipFile(zip_path) as zf:
        members = _h5_members(zf, zip_path)
        names = [PurePosixPath(m.filename.replace("\\", "/")).name for m in members]
        if len(set(names)) != len(names):
            raise DataError(f"{zip_path}: two .h5 members share a file name")
        total = sum(m.file_size for m in members)
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=f"unpack {zip_path.name}",
            disable=not progress,
        ) as bar:
            for info, name in zip(members, names):
                with zf.open(info) as src, (into / name).open("wb") as dst:
                    for block in iter(lambda src=src: src.read(download.CHUNK), b""):
                        dst.write(block)
                        bar.update(len(block))


def _folder_with_h5(path: Path) -> Path | None:
    """``path`` if it holds ``.h5`` files, else its ``triangle_real_data`` subfolder if that
    does, else None."""
    for candidate in (path, path / FOLDER):
        if candidate.is_dir() and h5_files(candidate):
            return candidate
    return None


RAW = archive.ArchivedFolder(
    dataset="vision_touch",
    url=URL,
    archive=ZIP,
    folder=FOLDER,
    content=".h5 files",
    kind="zip",
    find=_folder_with_h5,
    is_archive=zipfile.is_zipfile,
    check=check_zip,
    extract=_extract,
    errors=(zipfile.BadZipFile, OSError, EOFError, zlib.error),
)
# The raw folder from --source (the folder or the zip) or --download-to (see
# ArchivedFolder.obtain): obtain_raw(source=None, download_to=None, progress=True, transport=None)
obtain_raw = RAW.obtain


# ---------------------------------------------------------------------------------------------
# Preparation and loading


def split_files(files: list[str]) -> dict[str, list[str]]:
    """The authors' split of the sorted file list (module doc, step 1), in their order."""
    n = len(files)
    perm = np.arange(n)
    np.random.default_rng(SPLIT_SEED).shuffle(perm)
    n_test = int(TEST_FRACTION * n)
    return {
        "train": [files[i] for i in perm[: n - n_test]],
        "test": [files[i] for i in perm[n - n_test :]],
    }


def replacement_steps(files: list[str], seed: int = DEFAULT_SEED) -> dict[str, int]:
    """The step that replaces t = 48 in each file (sorted list order), drawn once from
    ``default_rng(seed)`` in 0..47, as the authors' ``np.random.randint(48)``."""
    drawn = np.random.default_rng(seed).integers(0, SAMPLES - 1, size=len(files))
    return {name: int(r) for name, r in zip(files, drawn)}


def _read(path: Path) -> dict[str, np.ndarray]:
    """The keys :data:`KEYS` of one raw file, shape-checked; DataError naming the file and
    the key otherwise."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable HDF5 file ({describe(err)})") from None
    data = {}
    with f:
        for key in KEYS:
            if key not in f:
                raise DataError(f"{path}: key {key!r} missing (has {sorted(f.keys())})")
            try:
                data[key] = np.asarray(f[key][()])
            except (OSError, ValueError, TypeError, KeyError) as err:
                raise DataError(f"{path}: key {key!r} is unreadable ({describe(err)})") from None
    image = data["image"]
    if image.ndim == 4 and image.shape[1] == 3:  # channel-first: the authors' per-image (2, 1, 0)
        data["image"] = image = image.transpose(0, 3, 2, 1)
    wanted = {
        "image": (lambda s: s[1:] == (128, 128, 3), "(50, 128, 128, 3)"),
        "ee_forces_continuous": (
            lambda s: len(s) == 3 and s[1] >= FORCE_STEPS and s[2] == 6,
            f"(50, >= {FORCE_STEPS}, 6)",
        ),
        "proprio": (lambda s: len(s) == 2 and s[1] >= 8, "(50, >= 8)"),
        "contact": (lambda s: len(s) >= 1, "(50, ...)"),
        "action": (lambda s: s[1:] == (4,), "(50, 4)"),
    }
    for key, (ok, want) in wanted.items():
        array = data[key]
        shape = tuple(array.shape)
        if not shape or shape[0] != STEPS or not ok(shape):
            raise DataError(f"{path}: key {key!r} has shape {shape}, expected {want}")
        if key == "image" and array.dtype != np.uint8:
            # tolerated: another integer type holding 0..255
            if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
                raise DataError(f"{path}: key 'image' is {array.dtype}, expected uint8")
            data["image"] = array.astype(np.uint8)
        if key != "image" and not (
            np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
        ):
            raise DataError(f"{path}: key {key!r} is {array.dtype}, not numeric")
    return data


def samples(data: dict[str, np.ndarray], replacement: int) -> dict[str, np.ndarray]:
    """The 49 samples of one file's arrays (module doc, step 3), t = 48 replaced."""
    t = np.arange(SAMPLES)
    t[-1] = replacement
    nxt = t + 1
    contact = data["contact"][nxt].reshape(SAMPLES, -1)
    return {
        "image": data["image"][t],
        "force": np.tanh(data["ee_forces_continuous"][t][:, -FORCE_STEPS:]).astype(np.float32),
        "proprio": data["proprio"][t, :8].astype(np.float32),
        "ee_yaw_next": data["proprio"][nxt, :4].astype(np.float32),
        "contact_next": (contact.sum(axis=1) > 0).astype(np.int64),
        "action_next": data["action"][nxt].astype(np.float32),
    }


def prepare(
    raw_dir: str | Path,
    out_dir: str | Path,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> dict:
    """Convert the raw folder into ``{train,test}/{array}.npy`` (:data:`SHAPES`) and
    ``manifest.json`` (written last) in ``out_dir``; returns the manifest. ``seed`` draws the
    replacement of t = 48 (module doc, step 2). A file that is unreadable, lacks a key or has
    a shape other than the format's raises DataError naming the file and the key."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    t0 = time.perf_counter()
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir} is not a folder of .h5 files")
    files = h5_files(raw_dir)
    if len(files) < MIN_FILES:
        raise DataError(
            f"{raw_dir} has {len(files)} .h5 files; the authors' split needs at least {MIN_FILES}"
        )
    splits = split_files(files)
    replaced = replacement_steps(files, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # a half-rewritten set never verifies
    manifest = {
        "dataset": "vision_touch",
        "format_version": FORMAT_VERSION,
        "raw": {
            "folder": str(raw_dir),
            "files": len(files),
            "bytes": sum((raw_dir / name).stat().st_size for name in files),
            "url": URL,
        },
        "split": (
            f"sorted .h5 files; perm = arange(N) shuffled by default_rng({SPLIT_SEED}); "
            f"n_test = int({TEST_FRACTION} N); train = perm[:N - n_test], test = "
            "perm[N - n_test:]; no validation split (the authors' val is test)"
        ),
        "replacement": {
            "rule": (
                f"t = {SAMPLES - 1} is replaced by a step in 0..{SAMPLES - 2} drawn once per file "
                f"(default_rng(seed).integers(0, {SAMPLES - 1}, N) over the sorted files), "
                "where the authors draw np.random.randint(48) at every access"
            ),
            "seed": seed,
            "values": replaced,
        },
        "preprocessing": (
            f"image = image[t] (channel-first files transposed (2, 1, 0)); force = "
            f"tanh(ee_forces_continuous[t][-{FORCE_STEPS}:]); proprio = proprio[t][:8]; "
            "ee_yaw_next = proprio[t+1][:4]; contact_next = contact[t+1].sum() > 0; "
            "action_next = action[t+1]"
        ),
        "splits": {},
    }
    bar = tqdm(total=len(files), desc="prepare vision_touch", unit="file", disable=not progress)
    with bar:
        for split, names in splits.items():
            n = len(names) * SAMPLES
            writers = {}
            try:
                for key, (shape, dtype) in SHAPES.items():
                    path = prepared.npy_path(out_dir, split, key)
                    writers[key] = prepared.NpyWriter(path, (n, *shape), dtype)
                contacts = 0
                for name in names:
                    rows = samples(_read(raw_dir / name), replaced[name])
                    for key, writer in writers.items():
                        writer.write(rows[key])
                    contacts += int(rows["contact_next"].sum())
                    bar.update(1)
                records = {key: writer.close() for key, writer in writers.items()}
            except BaseException:
                for writer in writers.values():
                    writer.abort()
                raise
            manifest["splits"][split] = {
                "files": names,
                "count": n,
                "contact_next_counts": {"0": n - contacts, "1": contacts},
                **prepared.records_to_manifest(records),
            }
    manifest["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


read_manifest = prepared.read_manifest


def load_split(data_dir: str | Path, split: str, verify: bool = True) -> dict[str, np.ndarray]:
    """A prepared split's arrays (:data:`ARRAYS`), memory-mapped, checked against the
    manifest (see :func:`comm_repro.data.prepared.load_npy_arrays`). ``test`` is also the
    split on which the authors choose the probe's C: there is no other."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return prepared.load_npy_arrays(data_dir, split, ARRAYS, verify)
