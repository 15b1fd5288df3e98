"""The run folder: every file a training run writes, who may write it, and when.

::

    <run>/
      .lock                  held (flock) by the live run; names its process
      config.json            the resolved TrainConfig, data counts, versions, the command
      split.json             which images trained and which validated
      last_state.npz         the resume state (end of an epoch, or mid-epoch after a stop or a
                             --checkpoint-every interval); a folder holds a run once it exists
      best_model.keras       the best model so far (+ model_config.json, written by the model)
      history.csv / .json    one row per epoch; every step's loss
      learning_curve.png/.svg
      previews/epoch_NNN.png fixed validation images: prediction next to the true mask
      tensorboard/           scalars and preview images (tf.summary)
      train.log              the full log, appended across resumes
      saved_model/           with --export

Slow writes (the resume state, the best model, the curves) go through one background thread
in submission order, so the training steps do not wait for them and a resume state is always
on disk before the best model it points at (``Checkpointer``, learning/checkpoint.py). Every
file is written atomically (``common.files``); a kill at any moment leaves the previous
version or the new one, and the temporary files of a killed write are removed at the next start.

Only the chief writes (``is_chief``): under multi-worker training the other workers get a
folder object whose writes go nowhere, so a shared ``--save-dir`` holds exactly one run.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import queue
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from common.errors import TrainingError
from common.files import atomic_write_json, atomic_write_text, remove_stale_temporaries
from datasets.split import SPLIT_FILE
from models.saving import BEST_MODEL_NAME, MODEL_CONFIG_NAME

__all__ = ["RunFolder", "RunFolderError", "RunFolderLockedError", "BackgroundWriter",
           "default_run_name"]

logger = logging.getLogger(__name__)

try:  # POSIX advisory locks; released by the kernel when the process dies, even by SIGKILL.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunFolderError(TrainingError):
    """The run folder cannot be used as asked (nothing to resume, a run already there)."""


class RunFolderLockedError(RunFolderError):
    """Another live process trains in this run folder."""


def default_run_name(root: str | os.PathLike = "runs") -> Path:
    """``runs/gcn-<date>-<time>-<random>``: two runs started in the same second (or on two
    machines sharing ``runs/``) get different folders."""
    return Path(root) / f"gcn-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class BackgroundWriter:
    """One thread that runs write jobs in submission order.

    A job that fails stops the queue: its exception is raised (once) by the next ``submit`` or
    ``flush``, so a full disk surfaces in the training loop instead of in a log line nobody
    reads. ``flush`` waits until every submitted job ran; ``pending`` counts the jobs not done.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="run-folder-writer",
                                        daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._jobs.unfinished_tasks

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = error
            finally:
                self._jobs.task_done()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, job: Callable[[], Any]) -> None:
        self._raise_pending()
        self._jobs.put(job)

    def flush(self) -> None:
        self._jobs.join()
        self._raise_pending()

    def close(self) -> None:
        """Finish the queued jobs and stop the thread (errors are raised)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self._raise_pending()


class RunFolder:
    """The files of one run (see the module docstring).

    Args:
        path: the folder (created by ``open``).
        is_chief: whether this process writes; other workers of a cluster get the same object
            with every write turned into a no-op.
    """

    CONFIG = "config.json"
    SPLIT = SPLIT_FILE                   # test.py reads it to warn about train/test leakage
    STATE = "last_state.npz"
    BEST_MODEL = BEST_MODEL_NAME         # models/saving.py: a saved model's files
    HISTORY_CSV = "history.csv"
    HISTORY_JSON = "history.json"
    CURVE_STEM = "learning_curve"
    PREVIEWS = "previews"
    TENSORBOARD = "tensorboard"
    LOG = "train.log"
    SAVED_MODEL = "saved_model"
    LOCK = ".lock"
    # What each file is, for the summary train.py prints (model_config.json is the model's).
    LAYOUT = (
        ("best model", f"{BEST_MODEL} + {MODEL_CONFIG_NAME}"),
        ("resume state", STATE),
        ("history", f"{HISTORY_CSV}, {HISTORY_JSON}"),
        ("learning curve", f"{CURVE_STEM}.png, {CURVE_STEM}.svg"),
        ("previews", f"{PREVIEWS}/epoch_NNN.png"),
        ("TensorBoard", f"{TENSORBOARD}/"),
        ("settings, log", f"{CONFIG}, {SPLIT}, {LOG}"),
    )
    # Files a stopped attempt without a resume state may leave; a new run replaces them.
    _ATTEMPT_FILES = (CONFIG, SPLIT, HISTORY_CSV, HISTORY_JSON, f"{CURVE_STEM}.png",
                      f"{CURVE_STEM}.svg", LOG)
    _ATTEMPT_DIRS = (PREVIEWS, TENSORBOARD)

    def __init__(self, path: str | os.PathLike, *, is_chief: bool = True) -> None:
        self.path = Path(path)
        self.is_chief = bool(is_chief)
        self._lock_fd: int | None = None
        self._writer: BackgroundWriter | None = None
        self._summary_writer: Any = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, is_chief={self.is_chief})"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- opening, locking --------------------------------------------------------------------------

    def holds_run(self) -> bool:
        """A folder holds a run once its first resume state exists."""
        return self.file(self.STATE).is_file()

    def open(self, *, resume: bool) -> "RunFolder":
        """Create (if needed) and lock the folder for this process, and check it fits:
        ``resume`` needs a resume state; a new run needs a folder without one. Temporary files
        of killed writes are removed; a new run clears what a stopped attempt without a resume
        state left. Non-chief workers only check."""
        if not self.is_chief:
            return self
        if resume and not self.holds_run():
            if self.file(self.CONFIG).is_file():
                raise RunFolderError(
                    f"cannot resume {self.path}: that run stopped before writing its first "
                    f"resume state ({self.STATE}), so there is nothing to continue; start it "
                    f"again without --resume (the same --save-dir is fine)")
            raise RunFolderError(
                f"cannot resume: {self.file(self.STATE)} not found; is {self.path} a run folder "
                f"written by train.py? (a run writes it at the end of every epoch)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            if not resume and self.holds_run():
                raise RunFolderError(
                    f"{self.path} already holds a run ({self.STATE}): continue it with --resume "
                    f"--save-dir {self.path}, or choose another --save-dir")
            removed = remove_stale_temporaries(self.path)
            if removed:
                logger.info("removed %d temporary file(s) left by an interrupted write in %s",
                            len(removed), self.path)
            if not resume:
                self._clear_attempt()
        except BaseException:
            self.close()
            raise
        self._writer = BackgroundWriter()
        return self

    def _clear_attempt(self) -> None:
        leftovers = [name for name in self._ATTEMPT_FILES if self.file(name).exists()]
        leftovers += [name for name in self._ATTEMPT_DIRS if self.file(name).is_dir()]
        if not leftovers:
            return
        logger.info("%s held files of an attempt that stopped before its first resume state "
                    "(%s): starting over", self.path, ", ".join(leftovers))
        for name in leftovers:
            path = self.file(name)
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _acquire_lock(self) -> None:
        path = self.file(self.LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif os.path.getsize(path) > 0:  # pragma: no cover - no flock: trust the file
                raise BlockingIOError
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderLockedError(
                f"{self.path} is in use by another training process ({holder}); wait for it "
                f"to finish or stop it, or choose another --save-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Finish the background writes (their errors are raised), flush TensorBoard, unlock."""
        try:
            if self._writer is not None:
                writer, self._writer = self._writer, None
                writer.close()
        finally:
            if self._summary_writer is not None:
                self._summary_writer.close()
                self._summary_writer = None
            if self._lock_fd is not None:
                fd, self._lock_fd = self._lock_fd, None
                if fcntl is None:  # pragma: no cover
                    os.ftruncate(fd, 0)
                os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------------------

    def in_background(self, job: Callable[[], Any]) -> None:
        """Run ``job`` on the writer thread, after every job submitted before it."""
        if not self.is_chief:
            return
        if self._writer is None:
            job()
        else:
            self._writer.submit(job)

    @property
    def pending_writes(self) -> int:
        """Background writes queued or running."""
        return self._writer.pending if self._writer is not None else 0

    def flush(self) -> None:
        """Wait until every background write is on disk (raises a failed write's error)."""
        if self._writer is not None:
            self._writer.flush()

    def write_json(self, name: str, document: Any) -> None:
        if self.is_chief:
            atomic_write_json(self.file(name), document)

    def read_json(self, name: str) -> Any:
        path = self.file(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunFolderError(f"{path} cannot be read ({error}); it is written by train.py: "
                                 f"restore it, or start a new run") from error

    def write_history(self, rows: list[dict[str, Any]], document: dict[str, Any]) -> None:
        """history.csv (one row per epoch) and history.json (``document``), atomically."""
        if not self.is_chief:
            return
        if rows:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(self.file(self.HISTORY_CSV), buffer.getvalue())
        atomic_write_text(self.file(self.HISTORY_JSON), json.dumps(document, indent=1) + "\n")

    # -- TensorBoard -----------------------------------------------------------------------------

    def summaries(self) -> Any:
        """The TensorBoard writer (a context manager: ``with run.summaries(): tf.summary...``);
        a no-op writer on other workers."""
        import tensorflow as tf

        if not self.is_chief:
            return tf.summary.create_noop_writer().as_default()
        if self._summary_writer is None:
            self._summary_writer = tf.summary.create_file_writer(str(self.file(self.TENSORBOARD)))
        return self._summary_writer.as_default()

