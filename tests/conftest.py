"""Session-wide test setup, the local HTTP server the download tests share, and ``shared_once``
(a folder built once for all the test processes of a run).

TensorFlow fixes its device list on first use, so the split of the CPU into two logical devices
(used by the MirroredStrategy tests to exercise the multi-replica code path without a GPU) has
to happen here, before any test touches TensorFlow: at ``pytest_configure``, in every process
that runs tests. The pytest-xdist controller runs none, so it does not import TensorFlow (its
start and its exit would hold the workers' start and the end of the run by seconds).
"""
import atexit
import fcntl
import http.server
import os
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if getattr(config.option, "numprocesses", None) and not worker:
        return                                      # the pytest-xdist controller
    if worker:
        # A worker has sent its results when its exit handlers run; the interpreter's teardown
        # of TensorFlow after them takes seconds that the end of the run waits for.
        atexit.register(_exit_now)
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


def _exit_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="session")
def two_cpus():
    """The one MirroredStrategy over the two logical CPUs of a test process. One per process:
    each strategy numbers its collective ops from the same keys, so a second one in the same
    process meets the first one's cached collectives (of another dtype or shape) and fails."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


class LocalFileServer:
    """Serves ``files`` on 127.0.0.1 with optional ``Range: bytes=N-`` support; can cut the
    next response short after ``cut_next`` bytes to simulate a dropped connection."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.support_range = True
        self.cut_next: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and server.support_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_next is not None:
                    body, server.cut_next = body[:server.cut_next], None
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve_files():
    """``start(files)`` serves ``{path: bytes}`` on 127.0.0.1 (a free port) until the test
    ends: a ``LocalFileServer`` with ``.url``, ``.requests``, ``.support_range``, ``.cut_next``."""
    servers: list[LocalFileServer] = []

    def start(files: dict[str, bytes]) -> LocalFileServer:
        servers.append(LocalFileServer(files))
        return servers[-1]

    yield start
    for server in servers:
        server.close()



@pytest.fixture(scope="session")
def shared_once(tmp_path_factory):
    """``shared_once(name, build)``: the folder ``name`` filled by ``build(folder)`` once for the
    whole test run. The pytest-xdist workers (each its own session) share the parent of their
    temporary folders and take turns on a lock there: the second one waits for the first one's
    folder instead of building its own. Tests only read it (copy it to change it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent

    def once(name: str, build: Callable[[Path], None]) -> Path:
        folder, done = root / name, root / f"{name}.done"
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                build(folder)
                done.touch()
        return folder

    return once
