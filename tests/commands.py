"""The project's commands run as the tests run them: in this process through their boundary
(``common.cli.run``, as ``if __name__ == "__main__"`` calls it) or, where the process itself is
what is tested (signals, several workers, the ``__main__`` line), as a new Python process.

Each new process imports TensorFlow (seconds); in this process a command costs what its own work
costs. ``run_command`` gives what a process would: the exit code, stdout and stderr (the
command's log lines included, since it sets its logging up on the stderr it is given).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from common.cli import run

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def script(name: str):
    """The module of the script ``name`` ("train.py", "test.py", "draw.py"), imported once under
    a name of its own (``test`` is a package of the standard library)."""
    module_name = "script_" + name.removesuffix(".py")
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@contextlib.contextmanager
def root_logger_restored() -> Iterator[None]:
    """Put the root logger's handlers and level back afterwards (commands set up their own
    logging, and train.py logs into its run folder's train.log)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def run_command(command: str | Callable[[Sequence[str]], int | None],
                *args: object) -> subprocess.CompletedProcess:
    """``common.cli.run(main)`` with ``sys.argv = [command, *args]``, stdout and stderr captured,
    where ``command`` is a script's name ("train.py") or a ``main`` function; the root logger's
    handlers and level are put back afterwards (commands set up their own logging, and train.py
    logs into its run folder's train.log)."""
    if isinstance(command, str):
        main, argv = script(command).main, [command, *map(str, args)]
    else:
        main, argv = command, [command.__module__, *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = argv
    try:
        with root_logger_restored(), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                run(main)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a command's own process: the repository and tests/ importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]),
               TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def free_ports(count: int) -> list[int]:
    """``count`` ports on 127.0.0.1 that were free a moment ago (for a cluster's workers)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    """TF_CONFIG of worker ``index`` of a cluster of workers on 127.0.0.1 at ``ports``."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def run_process(*args: object, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python <args>`` from the repository root (a script path, ``-m module`` or ``-c``)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=process_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str,
                          code: int | None = None) -> str:
    """A failed command that said why in exactly one ``error: `` line holding ``fragments``
    (and exited with ``code`` when given), without a traceback. Returns the line."""
    if code is None:
        assert result.returncode != 0, result.stderr
    else:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
