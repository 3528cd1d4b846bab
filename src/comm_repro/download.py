"""Raw-data downloads that never leave half a file under the name a reader looks for.

A download goes to a temporary name beside its target (``.{name}.download``) and is renamed to
the target only once it is complete and verified: against a known size and sha256 where the
project knows them, else against the digest recorded by the first verified download (a small
JSON file beside the raw file, ``{name}.json``), which later runs check. Google Drive files are
fetched with ``gdown`` (imported only when a download is needed), which resumes an interrupted
transfer from the partial file it keeps beside the target; plain HTTP files with
:func:`http_range_transport`, which does the same with ``Range`` requests.

Raw files live outside ``results/`` (default ``data/raw/`` under the repository root, see
:func:`raw_data_root`), so that deleting the results never deletes a large download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from comm_repro.atomic import write_json
from comm_repro.errors import DataError, describe

DRIVE_URL = "https://drive.google.com/uc?id={}"
RAW_DIR_ENV = "COMM_REPRO_RAW_DIR"
CHUNK = 1 << 22  # 4 MiB
HTTP_TIMEOUT = 60.0  # seconds without a byte before a transfer counts as failed
PART_SUFFIX = ".part"

# (url, output, progress): write the whole file at ``output`` or raise.
Transport = Callable[[str, Path, bool], Any]


def drive_url(file_id: str) -> str:
    return DRIVE_URL.format(file_id)


def raw_data_root() -> Path:
    """Where raw downloads go by default: ``$COMM_REPRO_RAW_DIR`` when set, else ``data/raw`` in
    the repository root when the package runs from a checkout, else ``data/raw`` in the current
    directory."""
    if os.environ.get(RAW_DIR_ENV):
        return Path(os.environ[RAW_DIR_ENV])
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "src" / "comm_repro").is_dir():
        return root / "data" / "raw"
    return Path("data") / "raw"


def byte_progress(path: Path, desc: str, progress: bool) -> tqdm:
    """A progress bar over the bytes of the file at ``path``."""
    size = path.stat().st_size
    return tqdm(total=size, unit="B", unit_scale=True, desc=desc, disable=not progress)


def sha256_file(path: str | Path, progress: bool = False, desc: str | None = None) -> str:
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f, byte_progress(path, desc or f"sha256 {path.name}", progress) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def record_path(raw: str | Path) -> Path:
    """The JSON file beside a raw file that records its size and sha256."""
    raw = Path(raw)
    return raw.with_name(raw.name + ".json")


def read_record(raw: str | Path) -> dict[str, Any] | None:
    """The recorded size and sha256 of a raw file, or None when nothing is recorded."""
    path = record_path(raw)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record.get("sha256"), str) or not isinstance(record.get("size"), int):
            raise ValueError("no sha256 and size")
        return record
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(
            f"{path} is unreadable ({err}); it only records the digest of {Path(raw).name}: "
            "delete it and run again"
        ) from None


def write_record(raw: Path, url: str, size: int, sha256: str) -> Path:
    path = record_path(raw)
    write_json(
        path,
        {
            "file": raw.name,
            "url": url,
            "size": size,
            "sha256": sha256,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return path


def gdown_transport(url: str, output: Path, progress: bool) -> None:
    """Download ``url`` to ``output`` with gdown; an interrupted transfer is resumed from the
    partial file gdown keeps beside ``output`` (``resume=True``)."""
    try:
        import gdown
    except ImportError:
        raise DataError("gdown is not installed (pip install gdown)") from None
    result = gdown.download(url=url, output=str(output), quiet=not progress, resume=True)
    if result is None:  # older gdown versions report some failures by returning None
        raise DataError("gdown gave up without a file")


def part_path(output: str | Path) -> Path:
    """Where :func:`http_range_transport` keeps the partial transfer of ``output``."""
    output = Path(output)
    return output.with_name(output.name + PART_SUFFIX)


def _total_from_content_range(value: str | None) -> int | None:
    """The full size in a ``Content-Range`` header (``bytes a-b/total`` or ``bytes */total``)."""
    match = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*", value or "")
    return int(match.group(1)) if match else None


def http_range_transport(
    url: str, output: Path, progress: bool, timeout: float = HTTP_TIMEOUT
) -> None:
    """Download ``url`` to ``output`` over HTTP(S), resuming an interrupted transfer.

    The bytes go to :func:`part_path` (``output`` + ``.part``), which survives a failure (fetch
    deletes ``output`` only). A rerun asks for the rest (``Range: bytes=<size>-``) and appends
    when the server answers 206 with that offset; a 200 (the server ignores ranges) or a 206 at
    another offset starts again from byte 0; a 416 means the part already holds the whole file
    when ``Content-Range`` says so, else it is discarded and the transfer starts again. A
    transfer that ends before its ``Content-Length`` raises, keeping the part. ``timeout``:
    seconds a connect or a read may wait. The part is renamed to ``output`` once complete; its
    content is verified by the caller (:func:`fetch`: digest and format check)."""
    output = Path(output)
    part = part_path(output)
    for _attempt in range(2):  # the second only after a part the server would not continue
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": "comm-repro", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code != 416 or not offset:
                raise
            total = _total_from_content_range(err.headers.get("Content-Range"))
            err.close()
            if total == offset:  # complete; a killed run did not rename it
                os.replace(part, output)
                return
            part.unlink()  # longer than the file, or the server does not say: start again
            continue
        with response:
            length = response.headers.get("Content-Length")
            length = int(length) if length is not None else None
            if response.status == 206:
                match = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != offset:
                    part.unlink()
                    continue
                mode = "ab"
            else:  # 200: the whole file, from byte 0
                offset, mode = 0, "wb"
            total = offset + length if length is not None else None
            received = 0
            with (
                part.open(mode) as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    desc=f"download {output.name}",
                    disable=not progress,
                ) as bar,
            ):
                for block in iter(lambda r=response: r.read(CHUNK), b""):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
            # http.client returns b"" rather than raising when the server closes early
            if length is not None and received != length:
                raise ConnectionError(
                    f"the transfer ended after {offset + received:,} of {total:,} bytes; "
                    f"{part.name} keeps them and a rerun resumes"
                )
        os.replace(part, output)
        return
    raise ConnectionError(f"the server would not continue {part.name}, nor send it again")


def fetch(
    url: str,
    target: str | Path,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    check: Callable[[Path], None] | None = None,
    transport: Transport | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``target`` through a temporary file beside it, renamed only once
    complete and verified.

    Verification: ``expected_size``/``expected_sha256`` when given, else the digest recorded
    beside ``target`` by an earlier download, if any; then ``check(tmp)`` (a format test that
    raises DataError). A verified download records its size and sha256 beside ``target``.
    Any failure raises one-line DataError naming ``url`` and ``target`` and leaves no file at
    ``target`` (a partial transfer that the transport can resume stays beside it, under its own
    name: gdown's, or :func:`part_path` for :func:`http_range_transport`).
    """
    target = Path(target)
    transport = transport or gdown_transport
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.download")
    elsewhere = (
        f"fetch {url} another way (e.g. in a browser) and put it at {target}, or name a copy "
        "you have with --source (in a study: datasets.<name>.source)"
    )
    record = read_record(target)
    if expected_sha256 is None and record is not None:
        expected_sha256, expected_size = record["sha256"], record["size"]
        known = f"the digest recorded in {record_path(target)} by the first download"
    else:
        known = "the known digest"

    def verify() -> tuple[int, str]:
        size = tmp.stat().st_size
        if expected_size is not None and size != expected_size:
            raise DataError(
                f"download of {target.name} has {size:,} bytes, expected {expected_size:,}"
            )
        digest = sha256_file(tmp, progress=progress, desc=f"verify {target.name}")
        if expected_sha256 is not None and digest != expected_sha256:
            raise DataError(
                f"download of {target.name} has sha256 {digest}, expected {expected_sha256} "
                f"({known})"
            )
        if check is not None:
            check(tmp)
        return size, digest

    if tmp.is_file():  # a finished transfer that a killed run did not verify yet
        try:
            size, digest = verify()
        except DataError:
            tmp.unlink()
    if not tmp.is_file():
        try:
            transport(url, tmp, progress)
        except Exception as err:  # network, Drive refusals, gdown's own errors: all mean "failed"
            tmp.unlink(missing_ok=True)
            raise DataError(
                f"could not download {target.name} ({describe(err)}); {elsewhere}"
            ) from None
        if not tmp.is_file():
            raise DataError(f"could not download {target.name} (no file written); {elsewhere}")
        try:
            size, digest = verify()
        except DataError as err:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{err}; nothing kept; {elsewhere}") from None
    os.replace(tmp, target)
    write_record(target, url, size, digest)
    return target
