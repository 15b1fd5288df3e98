"""The project's commands run as the tests run them: in this process through their boundary
(``common.cli.run``, as ``if __name__ == "__main__"`` calls it) or, where the process itself is
what is tested (signals, several workers, the ``__main__`` line), as a new Python process.

Each new process imports TensorFlow (seconds); in this process a command costs what its own work
costs. ``run_command`` gives what a process would: the exit code, stdout and stderr (the
command's log lines included, since it sets its logging up on the stderr it is given).
``python_process`` starts ``python ARGS`` as a fork of a process that has imported TensorFlow and
Keras and nothing more (multiprocessing's fork server): a process of its own, with its own
TensorFlow runtime, signals and exit code, without paying the import again each time.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import json
import logging
import multiprocessing
import os
import runpy
import socket
import subprocess
import sys
import time
import traceback
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


class PythonProcess:
    """``python ARGS`` (a script path, or ``-c`` and a program, then its arguments) from the
    repository root with ``process_env(**env)``, as a fork of the fork server: what a new
    ``python`` process does once it has imported TensorFlow. Its stdout and stderr go to files
    under ``folder``; the methods are ``subprocess.Popen``'s."""

    _server_started = False

    def __init__(self, folder: Path, *args: object, name: str = "process", **env: str) -> None:
        self.args = [str(arg) for arg in args]
        self.stdout_path, self.stderr_path = folder / f"{name}.stdout", folder / f"{name}.stderr"
        for path in (self.stdout_path, self.stderr_path):
            path.write_text("")
        context = multiprocessing.get_context("forkserver")
        if not PythonProcess._server_started:
            # What the server imports is what every fork starts with; its environment is the
            # one it starts with (TensorFlow reads its log level once, at import).
            context.set_forkserver_preload(["tensorflow", "keras"])
            with _environment(TF_CPP_MIN_LOG_LEVEL="3"):
                from multiprocessing import forkserver
                forkserver.ensure_running()
            PythonProcess._server_started = True
        self._process = context.Process(target=_run_python, args=(
            self.args, process_env(**env), str(ROOT), str(self.stdout_path),
            str(self.stderr_path)), daemon=True)     # ended, not waited for, if a test leaves it
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self._process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout_path.read_text(), self.stderr_path.read_text()

    def wait_for_line(self, fragment: str, timeout: float = 300) -> None:
        """Return once a line of stderr holds ``fragment``; fail when the process ends first."""
        deadline = time.monotonic() + timeout
        while fragment not in self.stderr_path.read_text():
            if self.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {fragment!r} in the stderr of {self.args} (exit code "
                                     f"{self.poll()}):\n{self.stderr_path.read_text()[-3000:]}")
            time.sleep(0.02)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_python(args: list[str], env: dict[str, str], cwd: str, stdout_path: str,
                stderr_path: str) -> None:
    """In the fork: what ``python ARGS`` does after its imports, then its exit (exit handlers
    included) with the code ``python`` would give."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        os.dup2(os.open(path, os.O_WRONLY), fd)
    sys.stdout = open(1, "w", closefd=False)                          # block-buffered, as in a pipe
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    program = args[1] if args[0] == "-c" else None
    sys.argv = ["-c", *args[2:]] if program else list(args)
    sys.path[:0] = [cwd if program else str(Path(args[0]).resolve().parent),
                    *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    code = 0
    try:
        if program:
            exec(compile(program, "<string>", "exec"), {"__name__": "__main__"})
        else:
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as stop:
        if isinstance(stop.code, int) or stop.code is None:
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:                                               # noqa: BLE001 - as python
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
