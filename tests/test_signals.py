"""StopSignals: a signal only sets the flag; the warning is logged when the loop reads it."""
from __future__ import annotations

import os
import signal

from learning import signals as signals_module
from learning.signals import StopSignals


def test_the_handler_does_no_io_and_the_stop_is_announced_once_when_read(monkeypatch):
    # A handler that logs can interrupt the main thread inside a write to stderr and write to
    # it again (a reentrant write, a logging-error traceback): it must not log.
    calls = []
    monkeypatch.setattr(signals_module.logger, "warning",
                        lambda *args, **kwargs: calls.append(args))
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM and calls == []     # the handler only flags
        assert stop.requested == "SIGTERM" and len(calls) == 1
        assert stop.requested == "SIGTERM" and len(calls) == 1     # announced once
    assert "SIGTERM received: stopping after the current step" in calls[0][0] % calls[0][1:]
    assert stop.exit_code == 143
