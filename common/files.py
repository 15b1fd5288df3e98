"""Crash-safe writes: the one helper the whole project uses to put a file on disk.

The bytes go to a temporary file in the destination's folder (``.<name>.<random>.tmp``), are
flushed and fsync'ed, then ``os.replace`` swaps the file in (atomic on POSIX and Windows within
one file system) and the folder is fsync'ed so the rename itself survives a power cut. A crash
at any point leaves either the previous file or the new one, never a torn one. A failed write
removes its temporary file; a killed process may leave one behind, which
``remove_stale_temporaries`` deletes at the next start.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_by_name",
    "fsync_dir",
    "remove_stale_temporaries",
]

TEMP_SUFFIX = ".tmp"


def _file_mode() -> int:
    """The permissions ``open()`` would give a new file (0666 minus the umask): ``mkstemp``
    makes 0600 files, which would hide a run's outputs from the user's group."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def fsync_dir(directory: str | os.PathLike) -> None:
    """Persist a folder's entries (a rename). Not possible on every platform/file system."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_prefix(path: str | os.PathLike) -> str:
    """The name prefix of the temporary files that stand in for ``path`` while it is written."""
    return f".{Path(path).name}."


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically: ``writer(fileobj)`` fills a temporary file, then it is renamed.

    If ``writer`` raises, the temporary file is deleted, ``path`` keeps its previous content,
    and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path),
                                    suffix=TEMP_SUFFIX)
    try:
        os.chmod(tmp_name, _FILE_MODE)
        with os.fdopen(fd, "wb") as fileobj:
            writer(fileobj)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_by_name(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """``atomic_write`` for libraries that write by file name: ``writer(tmp_path)`` writes a
    temporary sibling that ends like ``path`` (``.<name>.<random>.tmp<suffix>`` is avoided: the
    name keeps ``path``'s suffix, e.g. ``.keras``, which some writers insist on), then it is
    fsync'ed and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path),
                                    suffix=TEMP_SUFFIX + path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp_name, _FILE_MODE)
        writer(Path(tmp_name))
        with open(tmp_name, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, document: Any, *, indent: int = 2,
                      sort_keys: bool = False) -> Path:
    """Atomically replace ``path`` with ``document`` as JSON (UTF-8, newline-terminated).

    Values JSON cannot hold (paths, tuples inside sets...) are written with ``str``.
    """
    text = json.dumps(document, indent=indent, sort_keys=sort_keys, default=str)
    return atomic_write_text(path, text + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes killed mid-way left in ``folder`` (not below).

    Only names of the forms the writers here make (``.<name>.<random>.tmp`` and
    ``.<name>.<random>.tmp<suffix>``) are touched.
    Returns the removed paths.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        stale = entry.name.startswith(".") and (
            entry.name.endswith(TEMP_SUFFIX) or TEMP_SUFFIX + "." in entry.name)
        if stale and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed
