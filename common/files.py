"""Crash-safe writes and output-folder guards: the helpers the whole project uses to put files
on disk.

Atomic files: the bytes go to a temporary file in the destination's folder
(``.<name>.<random>.tmp``), are flushed and fsync'ed, then ``os.replace`` swaps the file in
(atomic on POSIX and Windows within one file system) and the folder is fsync'ed so the rename
itself survives a power cut. A crash at any point leaves either the previous file or the new one,
never a torn one. A failed write removes its temporary file; a killed process may leave one
behind, which ``remove_stale_temporaries`` deletes at the next start.

Whole folders (a prepared data set) are built in a hidden sibling folder and swapped in when
complete (``staged_dir``); only a folder that carries the writer's marker file may be replaced
(``check_replaceable``). Commands that write next to their inputs refuse an output folder that is
an input folder (``check_output_dir``) and find out that they cannot write before the work starts
(``check_writable_dir``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from common.errors import EXIT_SYSTEM, ConfigError, GCNError

__all__ = [
    "TEMP_SUFFIX",
    "OutputExistsError",
    "OutputFolderError",
    "UnwritableOutputError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_by_name",
    "check_output_dir",
    "check_replaceable",
    "check_writable_dir",
    "fsync_dir",
    "remove_stale_temporaries",
    "staged_dir",
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


@contextlib.contextmanager
def _replacing(path: Path, suffix: str) -> Iterator[Path]:
    """A temporary sibling of ``path`` for the block to fill; afterwards fsync'ed and renamed
    over ``path`` (the folder fsync'ed too). On an exception it is deleted instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path),
                                    suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp_name, _FILE_MODE)
        yield Path(tmp_name)
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


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically: ``writer(fileobj)`` fills a temporary file, then it is renamed.

    If ``writer`` raises, the temporary file is deleted, ``path`` keeps its previous content,
    and the exception propagates.
    """
    path = Path(path)
    with _replacing(path, TEMP_SUFFIX) as tmp, open(tmp, "wb") as fileobj:
        writer(fileobj)
    return path


def atomic_write_by_name(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """``atomic_write`` for libraries that write by file name: ``writer(tmp_path)`` writes a
    temporary sibling whose name keeps ``path``'s suffix (``.<name>.<random>.tmp.keras``: some
    writers insist on it), then it is fsync'ed and renamed into place."""
    path = Path(path)
    with _replacing(path, TEMP_SUFFIX + path.suffix) as tmp:
        writer(tmp)
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


# ---------------------------------------------------------------------------------------------
# Output folders
# ---------------------------------------------------------------------------------------------

class OutputFolderError(ConfigError):
    """The output folder would write into (or inside) a folder the command reads."""


class OutputExistsError(GCNError, FileExistsError):
    """The output folder exists and may not be replaced."""


class UnwritableOutputError(GCNError):
    """The output folder cannot be created or written (permissions, read-only file system,
    a file in the way): the machine said no, hence the system exit code."""

    exit_code = EXIT_SYSTEM


def _same_folder(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are one folder: the same inode when both exist (this sees
    through symlinks, ``..`` and case-insensitive file systems), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_dir(out: str | os.PathLike, inputs: Iterable[str | os.PathLike], *,
                     subfolders: Iterable[str] = (), nested_ok: bool = False,
                     containing_ok: bool = True, option: str = "--out") -> Path:
    """Refuse an output folder whose files could land on the command's input files.

    Args:
        out: the output folder (need not exist yet).
        inputs: the folders whose files the command reads (``<data>/images``, ``<data>/masks``,
            or a plain folder of photos).
        subfolders: folders the command writes below ``out`` (``"masks"``): ``--out data/test``
            would write ``data/test/masks/<name>.png`` over the trimaps.
        nested_ok: allow ``out`` inside an input folder. The readers list folders without
            recursion, so a subfolder is never read back; draw.py's default output for a plain
            folder of photos is ``<folder>/draws``.
        containing_ok: allow ``out`` to contain an input (folder or file). A command that
            replaces the whole of ``out`` (``staged_dir``) passes False: the swap would delete
            its own inputs.
        option: the option's name for the message.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        OutputFolderError: ``out`` or ``out/<subfolder>`` is one of ``inputs``, or (unless
            ``nested_ok``) ``out`` lies inside one of them, or (unless ``containing_ok``)
            contains one of them. Nothing is created.
    """
    out = Path(out)
    inputs = [Path(folder) for folder in inputs]
    written = [out] + [out / sub for sub in subfolders]
    for folder in inputs:
        for target in written:
            if _same_folder(target, folder):
                what = f"{option} {out}" if target == out else f"{target} (below {option} {out})"
                raise OutputFolderError(
                    f"{what} is the input folder {folder}: outputs are named like their inputs "
                    f"and would overwrite them; choose another {option}")
        if not nested_ok and any(_same_folder(parent, folder)
                                 for parent in Path(os.path.abspath(out)).parents):
            raise OutputFolderError(
                f"{option} {out} lies inside the input folder {folder}; keep outputs out of the "
                f"data folders: choose another {option}")
        if not containing_ok and any(_same_folder(out, parent)
                                     for parent in Path(os.path.abspath(folder)).parents):
            raise OutputFolderError(
                f"{option} {out} contains the input {folder}, and the whole of {out} is "
                f"replaced: choose an {option} that holds no input")
    return out


def check_writable_dir(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """Check that files can be written into the folder ``path``, before a command spends
    minutes computing what it would write there. Leaves no trace: the missing folders are
    created for a probe file and removed again.

    Raises:
        UnwritableOutputError: the folder cannot be created or written (permissions, a
            read-only file system, a file in the way); exit code 3, the message names it.
    """
    path = Path(path)
    missing = []  # the folders this check creates, deepest first
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UnwritableOutputError(
            f"cannot write into {option} {path}: {reason}; choose a folder you can write "
            f"to") from error
    finally:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                break
    return path


def check_replaceable(out: str | os.PathLike, *, marker: str, overwrite: bool, writer: str,
                      option: str = "--out") -> None:
    """Refuse to replace an existing, non-empty ``out`` unless ``overwrite``; even then only a
    folder that ``writer`` made (it holds the file ``marker``) is replaced, so a mistyped
    ``--out`` cannot delete an unrelated folder.

    Raises:
        OutputExistsError: naming the folder and what to do.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another {option}")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(
            f"{out} already exists and is not empty; pass --overwrite to replace it with a "
            f"fresh one, or choose another {option}")
    if not (out / marker).is_file():
        raise OutputExistsError(
            f"refusing to replace {out}: it has no {marker}, so it was not written by "
            f"{writer}; remove it yourself or choose another {option}")


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, *, marker: str, overwrite: bool,
               writer: str) -> Iterator[Path]:
    """Build a whole output folder elsewhere and swap it in as ``out`` only when complete::

        with staged_dir(out, marker="report.json", overwrite=False, writer="...") as work:
            ...  # write everything into `work`, including the marker file

    ``check_replaceable`` runs first (before any work) and again just before the swap (building
    may take minutes). The folder is built in a hidden sibling (``.<name>.partial-<random>``,
    same file system, so the swap is a rename). An old ``out`` is renamed aside, the new one
    renamed in, and only then is the old one deleted; if the second rename fails the old one is
    put back. If the block raises (or is interrupted), the partial folder is deleted and ``out``
    is left as it was.
    """
    out = Path(out)
    check_replaceable(out, marker=marker, overwrite=overwrite, writer=writer)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield work
        check_replaceable(out, marker=marker, overwrite=overwrite, writer=writer)
        _swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _swap_in(work: Path, out: Path) -> None:
    """Rename ``work`` to ``out``, moving an existing ``out`` aside first (see ``staged_dir``)."""
    if not out.exists():
        os.replace(work, out)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()  # only the unique name is needed
        os.replace(out, old)
        try:
            os.replace(work, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)
