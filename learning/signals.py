"""Stop requests: SIGINT (Ctrl-C) and SIGTERM (docker stop, SLURM, Kubernetes) become a flag
that the training loop reads between compiled calls, so it can stop after the current step with
a resume state on disk instead of dying mid-epoch.

A second SIGINT while the loop is saving means "now": it raises ``KeyboardInterrupt`` (the
state written before is intact). Handlers can only be installed from the main thread; elsewhere
(a library caller's worker thread) the default behaviour stays and a warning says so.

Before the loop runs (reading data, building the model), there is no step to finish: train.py
installs ``StopSignals(immediate=True)``, whose handler raises ``TrainingInterrupted`` at once,
naming what the process was doing (``phase``), so a preempted job always ends with one line and
the signal's exit code. The loop's own flag-mode handlers replace them while it runs.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from common.errors import EXIT_SIGINT, EXIT_SIGTERM, TrainingError

__all__ = ["StopSignals", "TrainingInterrupted", "EXIT_CODES"]

logger = logging.getLogger(__name__)

EXIT_CODES = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM stopped the run; the message says what was kept. ``phase``: what the
    process was doing when an immediate-mode handler stopped it (None: the training loop
    stopped after a step, with a resume state)."""

    def __init__(self, message: str, exit_code: int, phase: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.phase = phase


class StopSignals:
    """``with StopSignals() as stop: ... if stop.requested: ...``

    ``requested`` is the name of the first signal received ("SIGTERM"), or None. With
    ``immediate``, a signal raises ``TrainingInterrupted`` ("stopped by SIGTERM while <phase>")
    instead of setting the flag.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
                 *, immediate: bool = False) -> None:
        self.signals = signals
        self.immediate = immediate
        self.phase = "starting"          # what the process is doing, for immediate mode
        self.received: signal.Signals | None = None
        self._announced = False
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> str | None:
        if self.received is None:
            return None
        if not self._announced:
            # Logged here, by the loop reading the flag, not in the handler: a signal that
            # arrives while the main thread is writing a log line to stderr would make the
            # handler's own line a reentrant write on that stream (a "--- Logging error ---"
            # traceback in the output of a run stopped by SIGTERM).
            self._announced = True
            logger.warning("%s received: stopping after the current step and saving the run "
                           "(Ctrl-C again to quit without saving)", self.received.name)
        return self.received.name

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.received, EXIT_SIGTERM)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        received = signal.Signals(signum)
        if self.immediate:
            self.received = received
            raise TrainingInterrupted(f"stopped by {received.name} while {self.phase}",
                                      exit_code=self.exit_code, phase=self.phase)
        if self.received is not None and received == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = received      # nothing else: no I/O inside a signal handler

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training outside the main thread: SIGINT/SIGTERM will not save a "
                           "resume state")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
