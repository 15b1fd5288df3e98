"""The command-line boundary every command shares: train.py, test.py, draw.py and the
``python -m datasets.pets`` / ``python -m datasets.synthetic`` tools.

``run(main)`` calls ``main(argv)`` and turns what escapes it into one of four outcomes:

- a ``GCNError`` (bad input, a known failure): ``error: <message>`` on stderr, exit with the
  error's ``exit_code`` (2, or 130/143 for a training run stopped by a signal);
- ``OSError``, ``MemoryError``, TensorFlow's ``ResourceExhaustedError`` or OpenCV's
  "Insufficient memory" (the machine said no): ``error: <message> (run with --debug for the
  traceback)``, exit 3;
- Ctrl-C (``KeyboardInterrupt``): ``interrupted``, exit 130;
- anything else is a bug: the full traceback, exit 1.

Options every command spells the same way are parsed here too: ``parse_size`` reads an
``--image-size`` (``N`` or ``HxW``) and ``size_argument`` is its argparse ``type``.

``--debug`` anywhere on the command line adds the traceback to the first two kinds (the exit code
does not change). ``run`` takes the flag out of ``argv`` itself, so a command's own parser never
has to know it; ``add_debug_flag`` only lists it in ``--help``.

This module imports nothing of the project but ``common.errors``; TensorFlow and OpenCV are
looked up in ``sys.modules`` only (an error of theirs can only come from a command that imported
them).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from common.errors import EXIT_BUG, EXIT_ERROR, EXIT_OK, EXIT_SIGINT, EXIT_SYSTEM, GCNError

__all__ = ["DEBUG_FLAG", "DEBUG_HINT", "HelpFormatter", "add_debug_flag", "describe_error",
           "parse_size", "size_argument", "quiet_tensorflow", "run", "setup_logging"]

DEBUG_FLAG = "--debug"
DEBUG_HINT = f"run with {DEBUG_FLAG} for the traceback"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" only where there is a default worth showing: not for flags
    (False), required options or options whose help explains their None default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or action.required:
            return action.help or ""
        return super()._get_help_string(action)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """List ``--debug`` in the command's ``--help`` (``run`` handles the flag itself)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="on an error, also print the Python traceback")


def parse_size(text: str) -> tuple[int, int]:
    """An image size as written on a command line (``--image-size``): ``"512"`` -> (512, 512),
    ``"384x512"`` -> (384, 512) (height x width). ValueError for anything else."""
    parts = str(text).lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"expected N or HxW with positive sides, got {text!r}")
    return values  # type: ignore[return-value]


def size_argument(text: str) -> tuple[int, int]:
    """``parse_size`` as an argparse ``type``: its message reaches the usage error (argparse
    replaces a ValueError's message by "invalid <function> value")."""
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def _one_line(text: str) -> str:
    """The message on one line: its non-blank lines joined (TensorFlow and OpenCV messages span
    several)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _out_of_memory(error: BaseException) -> str | None:
    """"TensorFlow" / "OpenCV" when ``error`` is that library's out-of-memory error, else None."""
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    if errors is not None and isinstance(error, errors.ResourceExhaustedError):
        return "TensorFlow"
    cv2 = sys.modules.get("cv2")
    # OpenCV has one exception class; its code -4 (CV_StsNoMem) reads "Insufficient memory".
    if cv2 is not None and isinstance(error, cv2.error) and "Insufficient memory" in str(error):
        return "OpenCV"
    return None


def describe_error(error: BaseException,
                   known: tuple[type[BaseException], ...] = ()) -> tuple[int, str | None]:
    """``(exit code, one-line message)`` for an exception that escaped a command, or
    ``(EXIT_BUG, None)`` when it is a bug whose traceback must be shown.

    ``known``: extra classes a command reports as one line with ``EXIT_ERROR`` (for its own
    built-in exceptions that are not ``GCNError`` yet).
    """
    if isinstance(error, GCNError):
        return error.exit_code, _one_line(str(error)) or type(error).__name__
    if known and isinstance(error, known):
        return EXIT_ERROR, _one_line(str(error)) or type(error).__name__
    library = _out_of_memory(error)
    if library is not None:
        # TensorFlow's first line names the op and the shape; the rest is a long op trace.
        first = str(getattr(error, "message", error)).strip().splitlines()
        detail = first[0] if first else type(error).__name__
        return EXIT_SYSTEM, f"out of memory in {library}: {detail} ({DEBUG_HINT})"
    if isinstance(error, MemoryError):
        detail = _one_line(str(error)) or "a Python allocation failed"
        return EXIT_SYSTEM, f"out of memory: {detail} ({DEBUG_HINT})"
    if isinstance(error, OSError):
        # str(OSError) already names the file: "[Errno 28] No space left on device: 'x'".
        return EXIT_SYSTEM, f"{_one_line(str(error)) or type(error).__name__} ({DEBUG_HINT})"
    return EXIT_BUG, None


def run(main: Callable[[Sequence[str]], int | None],
        known_errors: Callable[[], tuple[type[BaseException], ...]] = tuple) -> NoReturn:
    """Call ``main(sys.argv[1:] without --debug)`` and exit with its return code (0 for None),
    reporting what escapes it as the module docstring's table says.

    ``known_errors``: a callable returning classes to report like ``GCNError`` with exit code
    2, called only once an exception escaped (so a command can name classes of modules it
    imports lazily).
    """
    argv = sys.argv[1:]
    debug = DEBUG_FLAG in argv
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        code = main(argv)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_SIGINT)
    except Exception as error:
        code, message = describe_error(error, tuple(known_errors()))
        if message is None:
            raise  # a bug: Python prints the traceback and exits with 1
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        sys.exit(code)
    sys.exit(EXIT_OK if code is None else code)
