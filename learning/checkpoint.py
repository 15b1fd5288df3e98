"""Crash-safe files of a run folder: atomic writes and the resume state (``last_state.npz``).

Atomic write: the bytes go to a temporary file in the destination's folder, are flushed and
fsync'ed, then ``os.replace`` swaps the file in (atomic on POSIX and Windows within one file
system) and the folder is fsync'ed so the rename itself survives a power cut. A crash at any
point leaves either the previous file or the new one, never a torn file; a failed write removes
its temporary file.

Resume state layout (one ``.npz``, loadable with ``allow_pickle=False``)::

    model/0000 ... model/NNNN          values of keras_model.variables, in order
    optimizer/0000 ... optimizer/MMMM  values of the Keras optimizer's variables, in order
    step_losses                        float64 (num_steps_done,)
    __meta__                           uint8 bytes of a UTF-8 JSON object: epoch, learning rate,
                                       bad-epoch count, best score, history rows, data state,
                                       model config, variable names and shapes, ...
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

__all__ = [
    "CheckpointError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_state",
    "load_state",
]

_META_KEY = "__meta__"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A resume state that cannot be read or does not fit the current model/run."""


def _fsync_dir(directory: Path) -> None:
    # Persist the rename (directory entry). Not possible on every platform/file system.
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


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically: ``writer(fileobj)`` fills a temporary file, then it is renamed.

    If ``writer`` raises, the temporary file is deleted, ``path`` keeps its previous content,
    and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _write_npz(fileobj: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Serialise ``arrays`` as an uncompressed .npz into ``fileobj`` (the step tests interrupt)."""
    np.savez(fileobj, **arrays)


def save_state(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
               meta: Mapping[str, Any]) -> Path:
    """Atomically write ``arrays`` and the JSON-serialisable ``meta`` to one ``.npz`` file."""
    if _META_KEY in arrays:
        raise ValueError(f"array name {_META_KEY!r} is reserved for the metadata")
    meta_json = json.dumps({"format_version": FORMAT_VERSION, **meta}, allow_nan=True)
    payload = dict(arrays)
    payload[_META_KEY] = np.frombuffer(meta_json.encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda f: _write_npz(f, payload))


def load_state(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by ``save_state`` -> (arrays, meta). Raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no resume state at {path}")
    try:
        # Open the file ourselves: np.load leaks its handle when the zip directory is torn.
        with open(path, "rb") as fileobj, np.load(fileobj, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError, EOFError...
        raise CheckpointError(
            f"{path} is not a readable resume state ({type(err).__name__}: {err}); delete it "
            f"to start the run again from scratch"
        ) from err
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path} has no {_META_KEY!r} entry: not written by save_state")
    meta = json.loads(arrays.pop(_META_KEY).tobytes().decode("utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {meta.get('format_version')}, this code reads "
            f"version {FORMAT_VERSION}"
        )
    return arrays, meta

