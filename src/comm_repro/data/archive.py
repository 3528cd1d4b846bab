"""Raw datasets distributed as one archive of a folder (Vision&Touch's zip, MM-IMDb's tar.gz).

An :class:`ArchivedFolder` says where the archive comes from and how to find, check and unpack
it; :meth:`ArchivedFolder.obtain` turns what the user gave (``--source``: the unpacked folder or
the archive; ``--download-to``: where the archive goes) into the raw folder, downloading the
archive when it is absent (resumable, verified by :func:`comm_repro.download.fetch`) and
unpacking it beside itself, atomically: into a temporary folder renamed only once every member
is out, so that a folder under the final name is always complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from comm_repro import download
from comm_repro.errors import DataError, describe


def safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """An archive member's path, or DataError when it is absolute or climbs out with ``..``
    (such an archive is refused before anything is written)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataError(f"{archive}: member {name!r} has an unsafe path; refused")
    return path


@dataclass(frozen=True)
class ArchivedFolder:
    """A raw folder (``folder``) distributed as the archive ``archive`` at ``url``.

    ``find(path)``: the raw folder at or directly under ``path``, or None. ``is_archive(path)``:
    whether a file is an archive of this kind (a cheap test of its format). ``check(path)``:
    DataError unless the archive is complete and holds the dataset (the format check of a
    download). ``extract(archive, into, progress)``: writes the members the dataset needs into
    the empty folder ``into``; it raises DataError, or OSError and the archive library's own
    errors (listed in ``errors``) for a damaged archive."""

    dataset: str
    url: str
    archive: str
    folder: str
    content: str  # what the raw folder holds, for messages: ".h5 files"
    kind: str  # the archive's kind, for messages: "zip"
    find: Callable[[Path], Path | None]
    is_archive: Callable[[Path], bool]
    check: Callable[[Path], None]
    extract: Callable[[Path, Path, bool], None]
    errors: tuple[type[BaseException], ...] = (OSError, EOFError)

    def default_archive(self) -> Path:
        """``<raw data root>/<dataset>/<archive>`` (:func:`comm_repro.download.raw_data_root`)."""
        return download.raw_data_root() / self.dataset / self.archive

    def unpack(self, archive: str | Path, folder: str | Path, progress: bool = True) -> Path:
        """Extract ``archive`` into ``folder`` atomically (module doc); on any failure nothing
        is left at ``folder``, and a killed run's temporary folder is removed by the next."""
        archive, folder = Path(archive), Path(folder)
        hint = (
            f"download it again (delete {archive}) or unpack it yourself and name the "
            f"{self.folder}/ folder with --source"
        )
        tmp = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            for stale in folder.parent.glob(f".{folder.name}.*.unpack"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(
                tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".unpack")
            )
            self.extract(archive, tmp, progress)
            found = self.find(tmp)
            if found is None:
                raise DataError(f"{archive}: no {self.content} inside; not the {self.dataset} file")
            if found != tmp:  # the archive holds the folder itself: move its content up
                os.replace(found, folder)
            else:
                os.replace(tmp, folder)
        except DataError as err:
            raise DataError(f"{err}; {hint}") from None
        except self.errors as err:
            raise DataError(f"{archive} cannot be unpacked ({describe(err)}); {hint}") from None
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def obtain(
        self,
        source: str | Path | None = None,
        download_to: str | Path | None = None,
        progress: bool = True,
        transport: download.Transport | None = None,
    ) -> Path:
        """The raw folder.

        ``source``: the unpacked folder (read in place; its parent will do), or the archive,
        unpacked beside itself (``<archive's folder>/<folder>/``, reused once there). Otherwise
        the archive at ``download_to`` (a file, or a directory for ``<archive>``; default
        :meth:`default_archive`), downloaded from ``url`` when absent (resumable, over HTTP
        ranges unless ``transport`` says otherwise; the first complete download records its
        sha256, which later downloads must match), then unpacked beside itself."""
        name = f"the unpacked {self.folder}/ folder or {self.archive}"
        if source is not None:
            source = Path(source)
            if source.is_dir():
                found = self.find(source)
                if found is None:
                    raise DataError(f"{source} has no {self.content} (--source): name {name}")
                return found
            if not source.is_file():
                raise DataError(f"{source} is missing (--source): name {name}")
            if not self.is_archive(source):
                raise DataError(
                    f"{source} is neither a folder of {self.content} nor a {self.kind} "
                    f"(--source): name {name}"
                )
            archive = source
        elif download_to is None:
            archive = self.default_archive()
        else:
            archive = Path(download_to)
            if archive.is_dir() or str(download_to).endswith(("/", "\\")):
                archive = archive / self.archive
        found = self.find(archive.parent / self.folder)
        if found is not None:  # unpacked by an earlier run (the rename made it complete)
            return found
        if not archive.is_file():
            download.fetch(
                self.url,
                archive,
                check=self.check,
                transport=transport or download.http_range_transport,
                progress=progress,
            )
        return self.unpack(archive, archive.parent / self.folder, progress=progress)
