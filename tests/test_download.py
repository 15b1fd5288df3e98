"""datasets/download.py: resumable, MD5-checked downloads from a local HTTP server (no
internet), and the terminal progress bar."""
from __future__ import annotations

import hashlib
import io
import socket

import numpy as np
import pytest

from datasets.download import ChecksumError, DownloadError, TerminalProgressBar, download

BLOB = np.random.default_rng(0).integers(0, 256, 2_500_000, dtype=np.uint8).tobytes()
BLOB_MD5 = hashlib.md5(BLOB).hexdigest()


@pytest.fixture
def server(serve_files):
    return serve_files({"/pets/blob.bin": BLOB})


def test_download_with_md5_and_progress(server, tmp_path):
    calls = []
    dest = download(f"{server.url}/pets/blob.bin", tmp_path / "d" / "blob.bin", md5=BLOB_MD5,
                         progress=lambda done, total: calls.append((done, total)))
    assert dest == tmp_path / "d" / "blob.bin" and dest.read_bytes() == BLOB
    assert not (tmp_path / "d" / "blob.bin.part").exists()
    assert calls[-1] == (len(BLOB), len(BLOB))
    assert all(total == len(BLOB) for _, total in calls)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


def test_wrong_md5_fails_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "blob.bin"
    with pytest.raises(ChecksumError) as err:
        download(f"{server.url}/pets/blob.bin", dest, md5="0" * 32)
    message = str(err.value)
    assert BLOB_MD5 in message and "0" * 32 in message and "/pets/blob.bin" in message
    assert "--no-verify" in message
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    dest = tmp_path / "blob.bin"
    server.cut_next = 1_000_000
    with pytest.raises(DownloadError, match="incomplete: got 1000000 of 2500000 bytes"):
        download(f"{server.url}/pets/blob.bin", dest, md5=BLOB_MD5)
    assert not dest.exists() and (tmp_path / "blob.bin.part").stat().st_size == 1_000_000
    download(f"{server.url}/pets/blob.bin", dest, md5=BLOB_MD5)
    assert dest.read_bytes() == BLOB
    assert server.requests == [("/pets/blob.bin", None), ("/pets/blob.bin", "bytes=1000000-")]


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    server.support_range = False
    (tmp_path / "blob.bin.part").write_bytes(b"stale bytes from another file")
    download(f"{server.url}/pets/blob.bin", tmp_path / "blob.bin", md5=BLOB_MD5)
    assert (tmp_path / "blob.bin").read_bytes() == BLOB
    assert server.requests == [("/pets/blob.bin", "bytes=29-")]


def test_download_errors_name_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/pets/nope\.bin failed: HTTP 404"):
        download(f"{server.url}/pets/nope.bin", tmp_path / "nope.bin")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"cannot reach http://127.0.0.1:{port}/x.*offline"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_terminal_progress_bar():
    stream = io.StringIO()
    bar = TerminalProgressBar("blob", stream=stream, width=10, min_interval=0.0)
    bar(512 * 1024, 1024 * 1024)
    assert stream.getvalue().startswith("\rblob [#####     ]  50%  0.5/1.0 MiB")
    bar(1024 * 1024, 1024 * 1024)  # complete: the line is ended
    assert "[##########] 100%" in stream.getvalue() and stream.getvalue().endswith("\n")
    bar.close()
    assert stream.getvalue().count("\n") == 1
