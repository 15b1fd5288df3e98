"""What train.py, test.py and draw.py share: logging set-up and one-line errors.

Library code raises exceptions whose messages already say what is wrong, which file, and what
to do; the scripts show that message as a single ``error: ...`` line and exit non-zero instead
of a traceback. Anything else (a bug) still gets its full traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

# Exceptions that mean "bad input or a known failure", not "bug": shown as one line.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError, ValueError,
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" only where there is a default worth showing: not for flags
    (False), required options or options whose help explains their None default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or action.required:
            return action.help or ""
        return super()._get_help_string(action)


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter ("oneDNN custom operations are on",
    "Could not find cuda drivers", "failed call to cuInit" on machines without a GPU).

    Those lines are written to file descriptor 2 before TensorFlow reads TF_CPP_MIN_LOG_LEVEL,
    so stderr is pointed at /dev/null for the duration of the import; errors still arrive as
    Python exceptions. An explicit TF_CPP_MIN_LOG_LEVEL in the environment wins for what
    TensorFlow logs later.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def setup_logging(log_file: str | os.PathLike | None = None, verbose: bool = True) -> None:
    """INFO (or WARNING when not verbose) to stderr as plain messages; with ``log_file`` also
    every record, time-stamped, to that file (appended, so a resumed run keeps one log)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname).1s %(message)s"))
    root.addHandler(console)
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(to_file)
    # TensorFlow's and Keras' own Python loggers are chatty at INFO.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def run(main: Callable[[Sequence[str] | None], int | None],
        known_errors: Callable[[], tuple[type[BaseException], ...]] = tuple) -> None:
    """Call ``main(sys.argv[1:])`` and exit with its return code.

    Bad input and known failures become one ``error: ...`` line on stderr (exit 2): the
    built-in ``_USER_ERRORS`` plus ``known_errors()``, a callable so that the script can name
    exception classes of modules it imports lazily (it is only called once an exception is
    raised). Ctrl-C exits 130 without a traceback; anything else keeps its traceback.
    """
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as error:
        if not isinstance(error, (*_USER_ERRORS, *known_errors())):
            raise
        message = str(error) or type(error).__name__
        sys.stderr.write(f"error: {message}\n")
        sys.exit(getattr(error, "exit_code", 2))
    sys.exit(code or 0)
