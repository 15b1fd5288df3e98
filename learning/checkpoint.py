"""The resume state file (``last_state.npz``): one ``.npz`` written atomically
(``common.files.atomic_write``), so a crash at any point leaves the previous state or the new one.

Resume state layout (one ``.npz``, loadable with ``allow_pickle=False``)::

    <group>/0000 ... <group>/NNNN      values of a group's variables, in order (groups: model,
                                       optimizer, totals: see learning/loop.py)
    step_losses                        float64 (num_steps_done,)
    __meta__                           uint8 bytes of a UTF-8 JSON object: position (epoch,
                                       step), schedule, best score, history rows, data state,
                                       model config, training config, variable names, ...
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from common.errors import TrainingError
from common.files import atomic_write

__all__ = [
    "CheckpointError",
    "save_state",
    "load_state",
]

_META_KEY = "__meta__"
FORMAT_VERSION = 2


class CheckpointError(TrainingError):
    """A resume state that cannot be read or does not fit the current model/run."""


def _write_npz(fileobj: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Serialise ``arrays`` as the uncompressed .npz ``np.savez`` writes (``np.load`` reads it),
    each array's data written from its own buffer (the step the tests interrupt).

    ``np.savez`` hands a zip member its arrays as bytes copies, 16 MB at a time: for the GCN's
    190 MB of model and optimizer state that copy was a third of the write's CPU time, spent on
    the writer thread while the training steps want both cores (benchmarks/save_speed.py)."""
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for name, value in arrays.items():
            value = np.require(value, requirements="C")          # keeps 0-d arrays 0-d
            if value.dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects: not a resume state value")
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, np.lib.format.header_data_from_array_1_0(value))
                member.write(memoryview(value.reshape(-1)).cast("B"))


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

