"""Checkpoints: the resume state file (``last_state.npz``) and ``Checkpointer``, which owns every
file that makes a run resumable (the resume state and the best model).

The state is one ``.npz`` written atomically (``common.files.atomic_write``), so a crash at any
point leaves the previous state or the new one.

Resume state layout (one ``.npz``, loadable with ``allow_pickle=False``)::

    <group>/0000 ... <group>/NNNN      values of a group's variables, in order (groups: model,
                                       optimizer, totals: learning/state.py)
    step_losses                        float64 (num_steps_done,)
    __meta__                           uint8 bytes of a UTF-8 JSON object: position (epoch,
                                       step), schedule, best score, history rows, data state,
                                       model config, training config, variable names, ...
"""
from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

import numpy as np

from common.errors import TrainingError
from common.files import atomic_write
from models.saving import BEST_MODEL_NAME, MODEL_CONFIG_NAME, ArchiveWriter

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "save_state",
    "load_state",
]

logger = logging.getLogger(__name__)

_META_KEY = "__meta__"
FORMAT_VERSION = 2


class CheckpointError(TrainingError):
    """A resume state that cannot be read or does not fit the current model/run."""


def _write_npz(fileobj: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Serialise ``arrays`` as the uncompressed .npz ``np.savez`` writes (``np.load`` reads it),
    each array's data written from its own buffer (the step the tests interrupt).

    ``np.savez`` hands a zip member its arrays as bytes copies: for the GCN's model and
    optimizer state that copy is a large share of the write's CPU time, spent on the writer
    thread while the training steps want every core (benchmarks/save_speed.py compares)."""
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



# -- the checkpointer --------------------------------------------------------------------------

def _normalised(config: Any) -> Any:
    """A config as it looks after a JSON round trip (tuples -> lists), for comparison."""
    return json.loads(json.dumps(config))


class Checkpointer:
    """Every file that makes a run resumable, written and read here: the resume state
    (``last_state.npz``: the whole ``TrainState`` plus the train data's position) and the best
    model (``best_model.keras`` + ``model_config.json``).

    Writes are host snapshots taken between steps (``read_values``: no copy) and written on the
    run folder's writer thread in order, so the resume state is always on disk before the best
    model it points at, and at most one state waits in memory. Only the chief writes; under
    multi-worker training ``restore`` reads on the chief and sends the state to every worker
    (their ``--save-dir`` need not be shared).

    Args:
        run: the opened ``RunFolder`` (paths, lock, writer thread).
        state: the ``TrainState`` saved and restored as a whole.
        training_config: the settings the run was started with (saved; on resume, settings
            other than ``resumable`` ones that differ are logged).
        resumable: names in ``training_config`` that may differ on resume.
        cluster, strategy: this process's place and the strategy (for the broadcast).
    """

    def __init__(self, run: Any, state: Any, *, training_config: dict[str, Any],
                 resumable: Sequence[str] = (), cluster: Any = None,
                 strategy: Any = None) -> None:
        self.run, self.state = run, state
        self.training_config = training_config
        self.resumable = tuple(resumable)
        self.cluster, self.strategy = cluster, strategy
        self.saved_at = time.monotonic()      # when the last resume state was queued
        self._archive_writer: Any = None      # built at the first best model (chief only)

    @property
    def _distributed(self) -> bool:
        return self.cluster is not None and self.cluster.distributed

    # -- writing ---------------------------------------------------------------------------------

    def save(self, data_state: Any) -> None:
        """Queue the resume state of this moment (``data_state``: the feed's position)."""
        self.run.flush()          # the previous state's writes first: one state in memory
        self.saved_at = time.monotonic()
        if not self.run.is_chief:
            return
        model = self.state.model
        meta = {**self.state.host_state(), "data_state": data_state,
                "model_class": type(model).__name__,
                "model_config": _normalised(model.get_config()),
                "training_config": self.training_config}
        arrays: dict[str, np.ndarray] = {
            "step_losses": np.asarray(self.state.step_losses, np.float64)}
        names: dict[str, list[str]] = {}
        from learning.state import read_values   # TensorFlow: the file functions above need none
        for group, variables in self.state.variable_groups().items():
            names[group] = [getattr(v, "path", v.name) for v in variables]
            for i, value in enumerate(read_values(variables)):
                arrays[f"{group}/{i:04d}"] = value
        path = self.run.file(self.run.STATE)
        meta = {**meta, "variable_names": names}
        self.run.in_background(lambda: save_state(path, arrays, meta))

    def save_best(self, epoch: int, score: float, evaluator: str) -> None:
        """Queue the best model: the weights of this moment (averaged with EMA)."""
        from learning.state import read_values

        with self.state.averaged_weights():
            weights = read_values(self.state.model.keras_model.weights)
        if not self.run.is_chief:
            return
        if self._archive_writer is None:
            self._archive_writer = ArchiveWriter(self.state.model)
        writer, folder = self._archive_writer, self.run.path
        info = {"training": {"epoch": epoch, evaluator: score, "evaluator": evaluator}}
        self.run.in_background(lambda: writer.write(folder, BEST_MODEL_NAME, weights, info=info))

    # -- reading ---------------------------------------------------------------------------------

    def restore(self) -> Any:
        """Load the run folder's resume state into the ``TrainState`` (every worker) and
        return the train data's position; rewrite a best model lost to a kill."""
        meta, step_losses = self._read_everywhere()
        self.state.load_host_state(meta, step_losses)
        differences = {key: (value, self.training_config.get(key))
                       for key, value in meta["training_config"].items()
                       if key not in self.resumable and self.training_config.get(key) != value}
        if differences:
            logger.warning("resume: training settings differ from the interrupted run "
                           "(saved, now): %s", differences)
        self._repair_best_model(meta["training_config"].get("evaluator", "score"))
        return meta["data_state"]

    def _read_everywhere(self) -> tuple[dict[str, Any], list[float]]:
        """The chief reads the state into the variables; under multi-worker training it then
        sends the values and the host state to the other workers."""
        if not self._distributed:
            return self._read()
        from learning.cluster import broadcast_bytes, broadcast_variables

        chief = self.cluster.is_chief
        document: dict[str, Any] = {}
        failure: BaseException | None = None
        if chief:
            try:
                meta, losses = self._read()
                document = {"meta": meta, "step_losses": losses}
            except TrainingError as error:
                document, failure = {"error": str(error)}, error
        payload = broadcast_bytes(self.strategy,
                                  json.dumps(document).encode() if chief else None, chief)
        document = json.loads(payload.decode("utf-8"))
        if failure is not None:
            raise failure
        if "error" in document:
            raise TrainingError(f"the chief could not resume the run: {document['error']}")
        self._check_model(document["meta"])
        variables = [v for group in self.state.variable_groups().values() for v in group]
        broadcast_variables(self.strategy, variables, chief)
        return document["meta"], document["step_losses"]

    def _read(self) -> tuple[dict[str, Any], list[float]]:
        path = self.run.file(self.run.STATE)
        arrays, meta = load_state(path)
        self._check_model(meta)
        for group, variables in self.state.variable_groups().items():
            saved_names = meta["variable_names"].get(group, [])
            saved = [arrays[f"{group}/{i:04d}"] for i in range(len(saved_names))]
            shapes_now = [tuple(v.shape) for v in variables]
            if shapes_now != [a.shape for a in saved]:
                mismatch = next(
                    (f"#{i}: saved {n} {a.shape} vs current {tuple(v.shape)}"
                     for i, (n, a, v) in enumerate(zip(saved_names, saved, variables))
                     if tuple(v.shape) != a.shape), "different variable counts")
                raise CheckpointError(
                    f"cannot resume from {path}: its {len(saved)} {group} variables do not "
                    f"match the current {len(variables)} ({mismatch})")
            for variable, value in zip(variables, saved):
                variable.assign(value)
        return meta, arrays["step_losses"].tolist()

    def _check_model(self, meta: dict[str, Any]) -> None:
        model = self.state.model
        saved = (meta.get("model_class"), meta.get("model_config"))
        current = (type(model).__name__, _normalised(model.get_config()))
        if saved == current:
            return
        saved_config, current_config = saved[1] or {}, current[1]
        differing = sorted(k for k in set(saved_config) | set(current_config)
                           if saved_config.get(k) != current_config.get(k))
        raise CheckpointError(
            f"cannot resume from {self.run.file(self.run.STATE)}: it was written for a "
            f"{saved[0]} with config {saved_config}, the current model is a {current[0]} with "
            f"config {current_config} (differing: {', '.join(differing) or 'class'}). Rebuild "
            f"the same model, or start a new run in another folder")

    def best_model_epoch(self) -> int | None:
        """The epoch of the best model on disk (from its model_config.json), if any."""
        path = self.run.file(MODEL_CONFIG_NAME)
        if not self.run.file(BEST_MODEL_NAME).is_file() or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("training", {}).get("epoch")
        except (OSError, ValueError):
            return None

    def _repair_best_model(self, evaluator: str) -> None:
        """A kill between the state and the best model it points at: write the best now
        (the state's weights are the best epoch's when the best is the state's last epoch)."""
        state = self.state
        if not self.run.is_chief or state.step or state.pass_done:
            return
        best_epoch = state.best.epoch
        last_done = state.history[-1]["epoch"] if state.history else None
        if best_epoch is None or best_epoch != last_done or \
                self.best_model_epoch() == best_epoch:
            return
        logger.warning("the best model of epoch %d was not on disk (the run was stopped while "
                       "saving it): writing it from the resume state", best_epoch)
        self.save_best(best_epoch, state.best.score, evaluator)
        self.run.flush()
