"""The project's error classes, the exit codes of every command, and ``format_list``, the one
way messages name a long list of files.

Every failure the project expects (bad input, a bad option, a known failure such as a damaged
checkpoint) is a ``GCNError``: its message already names the file or option and says what to
do, so the command-line boundary (``common/cli.py``) prints it as one ``error: ...`` line and
exits with the error's ``exit_code``. Anything else is a bug and keeps its traceback.

One subclass per area, so that callers can catch "a data problem" without knowing which
module raised it. Library-level subclasses may also derive from a built-in class
(``ValueError``, ``FileNotFoundError``) where Python code would expect that type; the CLI
decides by ``GCNError``, never by the built-in base.
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "EXIT_OK", "EXIT_BUG", "EXIT_ERROR", "EXIT_SYSTEM", "EXIT_NO_RESULT", "EXIT_SIGINT",
    "EXIT_SIGTERM", "GCNError", "DataError", "ModelError", "TrainingError", "ConfigError",
    "format_list",
]

# Exit codes, the same for train.py, test.py, draw.py and the `python -m datasets.*` commands
# (docs/bad-input.md lists them).
EXIT_OK = 0
EXIT_BUG = 1          # an unexpected exception: a bug; the traceback is printed
EXIT_ERROR = 2        # a GCNError (bad input or option, known failure); also argparse's code
EXIT_SYSTEM = 3       # the machine said no: disk full, out of memory, permission, device error
EXIT_NO_RESULT = 4    # the command ran but produced nothing (no best epoch, no image drawn)
EXIT_SIGINT = 130     # stopped by Ctrl-C (128 + SIGINT), work saved where the command can
EXIT_SIGTERM = 143    # stopped by SIGTERM (128 + SIGTERM): docker stop, SLURM, Kubernetes


class GCNError(Exception):
    """Base of every expected failure; the message says what is wrong and what to do."""

    exit_code = EXIT_ERROR


class DataError(GCNError):
    """Files of a data set: layout, decoding, masks, archives, preparation."""


class ModelError(GCNError):
    """Building, loading, saving or exporting a model; backbone weights."""


class TrainingError(GCNError):
    """The training run: resume state, run folder, non-finite loss."""


class ConfigError(GCNError, ValueError):
    """An option or a configuration value out of its range or of the wrong type."""


def format_list(items: Sequence[str], limit: int = 10) -> str:
    """Names for a message: the first ``limit`` joined by commas, then how many more there are
    (``"a, b, ... (3 more)"``), so that a message about thousands of files stays one line."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
