"""Reading tar archives safely: as one forward stream, member by member, never extracting
anything by the member's own path.

``iter_members(path)`` decompresses the archive exactly once (``tarfile`` mode ``r|*``, any
compression) and yields every member that is not a folder, with ``problem`` set when extracting
it by its own path could touch something outside the target folder (``unsafe_member_reason``:
absolute paths, ``..``, links leaving the archive, device files). Callers build output paths from
the member's base name themselves, so nothing is ever written outside their output folder,
whatever the archive holds. This works on every Python 3.10 patch release (``tarfile``'s
``filter=`` is not needed).
"""
from __future__ import annotations

import dataclasses
import gzip
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Optional

from common.errors import DataError

__all__ = ["ArchiveError", "ArchiveMember", "iter_members", "unsafe_member_reason"]

# Errors raised while reading a damaged or non-tar file (gzip.BadGzipFile is an OSError, so it
# is listed on its own rather than catching every OSError, which would hide disk errors).
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


class ArchiveError(DataError):
    """An archive is unreadable or does not have the expected layout."""


def unsafe_member_reason(member: tarfile.TarInfo) -> Optional[str]:
    """Why extracting ``member`` by its own path could touch something outside the target
    folder, or None when it could not.

    Rejected: absolute paths (also ``C:``-style), a ``..`` component, backslashes or NUL bytes in
    the name, symlinks whose target (resolved from the link's folder) or hardlinks whose target
    (relative to the archive root) leave the archive, and character/block devices and FIFOs.
    Links that stay inside are not unsafe (this module still never follows them).
    """
    name = member.name
    if "\x00" in name or "\\" in name:
        return f"name {name!r} contains a NUL byte or a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"absolute path {name!r}"
    if ".." in PurePosixPath(name).parts:
        return f"path {name!r} contains '..'"
    if member.issym() or member.islnk():
        target = member.linkname
        kind = "symlink" if member.issym() else "hardlink"
        if target.startswith("/") or "\\" in target or re.match(r"^[A-Za-z]:", target):
            return f"{kind} {name!r} -> {target!r} points outside the archive"
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"{kind} {name!r} -> {target!r} points outside the archive"
        return None
    if member.ischr() or member.isblk() or member.isfifo():
        return f"device file or FIFO {name!r}"
    return None


@dataclasses.dataclass(frozen=True)
class ArchiveMember:
    """A member of an archive (a file, link or device; a folder only when its path is unsafe).

    Attributes:
        name: the member's path as stored (``"images/Abyssinian_1.jpg"``).
        parts: its normalised path components (``./`` dropped).
        size: bytes of a regular file (0 for links and devices).
        problem: why extracting it by its own path would be unsafe, or None.
        regular: a regular file (not a link, device or FIFO).
        read: returns the bytes of a regular file; valid only while the stream is on this
            member. Raises ``ArchiveError`` when the archive turns out damaged.
    """

    name: str
    parts: tuple[str, ...]
    size: int
    problem: Optional[str]
    regular: bool
    read: Callable[[], bytes]


def iter_members(path: str | Path) -> Iterator[ArchiveMember]:
    """Stream the tar at ``path`` once (any compression), yielding every member that is not a
    folder, and folders whose path is unsafe.

    Raises:
        ArchiveError: the file is not a readable tar archive (named, with what to do).
    """
    path = Path(path)

    def reader(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            if not member.isreg():
                raise ValueError(f"{member.name} is not a regular file")
            try:
                f = tar.extractfile(member)
                assert f is not None  # regular files always have a file object
                return f.read()
            except _ARCHIVE_ERRORS as exc:
                raise ArchiveError(_damaged(path, exc)) from exc
        return read

    try:
        # "r|*": a forward-only stream, so a .tar.gz is decompressed exactly once and no member
        # is ever looked up by seeking.
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                problem = unsafe_member_reason(member)
                if member.isdir() and problem is None:
                    continue
                yield ArchiveMember(member.name, PurePosixPath(member.name).parts,
                                    member.size if member.isreg() else 0, problem,
                                    member.isreg(), reader(tar, member))
    except _ARCHIVE_ERRORS as exc:
        raise ArchiveError(_damaged(path, exc)) from exc


def _damaged(path: Path, exc: BaseException) -> str:
    return (f"{path}: cannot read it as a tar archive ({type(exc).__name__}: {exc}); the file "
            f"is truncated or damaged: delete it and download it again")
