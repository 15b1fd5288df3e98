"""HTTP downloads that survive a dropped connection and never leave a half file in place.

``download(url, dest)`` writes to ``<dest>.part``, resumes an earlier partial file with an HTTP
``Range`` request, checks the length the server announced and (optionally) an MD5, and only then
renames the file to ``dest``. ``TerminalProgressBar`` draws its progress on a terminal.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Optional

from common.errors import DataError

__all__ = ["DownloadError", "ChecksumError", "ProgressCallback", "TerminalProgressBar",
           "download", "md5sum"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1024 * 1024

ProgressCallback = Callable[[int, Optional[int]], None]
"""``progress(bytes_done, bytes_total_or_None)``, called after every downloaded chunk."""


class DownloadError(DataError):
    """A download failed (network, HTTP status, or an incomplete transfer)."""


class ChecksumError(DataError):
    """A file's MD5 differs from the expected one."""


def md5sum(path: str | os.PathLike, *, chunk_bytes: int = _CHUNK_BYTES) -> str:
    """Hex MD5 of a file, read in chunks (the images archive is ~790 MB)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike, *, md5: Optional[str] = None,
             progress: Optional[ProgressCallback] = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming an earlier partial download.

    Bytes go to ``<dest>.part``. If that file exists, the request asks for the rest with
    ``Range: bytes=<size>-``; a server that ignores it (HTTP 200) makes us start over. When the
    transfer is complete (as long as ``Content-Length`` said) and, if ``md5`` is given, the MD5
    matches, the part file is renamed to ``dest``: ``dest`` only ever appears complete and
    verified. An interrupted transfer keeps the part file for the next call to resume; a wrong
    MD5 deletes it (resuming a corrupt file cannot fix it) and raises `ChecksumError`.

    ``progress(done, total)`` is called after each chunk (``total`` None when unknown).
    Returns ``dest``. Raises `DownloadError` for network and HTTP errors.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    response, offset = _open_response(url, dest, part, timeout)

    with response:
        resumed = offset > 0 and response.status == 206 and _range_start(response) == offset
        if offset and not resumed:
            logger.info("%s: server did not resume at byte %d; downloading from the start",
                        url, offset)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        logger.info("downloading %s -> %s%s", url, dest,
                    f" (resuming at {offset} bytes)" if offset else "")
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while True:
                    chunk = response.read(_CHUNK_BYTES)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise DownloadError(
                f"download of {url} interrupted after {done} bytes ({exc}); run again to "
                f"resume from {part}") from exc

    if total is not None and done != total:
        raise DownloadError(
            f"download of {url} incomplete: got {done} of {total} bytes; run again to resume "
            f"from {part}")
    if md5 is not None:
        actual = md5sum(part)
        if actual != md5.lower():
            part.unlink()
            raise ChecksumError(
                f"{url}: MD5 of the downloaded file is {actual}, expected {md5} (corrupt "
                f"transfer, or not the official file). The partial file was deleted; run again "
                f"to re-download, or pass --no-verify if this mirror serves different bytes.")
    os.replace(part, dest)
    logger.info("saved %s (%d bytes)", dest, done)
    return dest


def _open_response(url: str, dest: Path, part: Path,
                   timeout: float) -> tuple[http.client.HTTPResponse, int]:
    """``download``'s request step: the open response and the byte offset asked for (the
    part file's size, or 0). A part file the server cannot resume (HTTP 416) is deleted and
    the whole file asked for once more; other HTTP and network errors are a
    ``DownloadError``."""
    response = None
    for attempt in range(2):  # a second attempt only after a "416 range not satisfiable"
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "gcn-segmentation/pets"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset and attempt == 0:
                # The part file is as long as (or longer than) the resource: it cannot be
                # resumed, so fetch the whole file again.
                logger.warning("%s: server refused to resume at byte %d; starting over",
                               url, offset)
                part.unlink()
                continue
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"cannot reach {url} ({reason}). If this machine is offline, fetch the file "
                f"elsewhere and put it at {dest}, or pass its path explicitly.") from exc
        break
    assert response is not None  # the loop either broke with a response or raised
    return response, offset


def _range_start(response) -> Optional[int]:
    """First byte of a 206 answer, from ``Content-Range: bytes <start>-<end>/<total>``."""
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


class TerminalProgressBar:
    """A one-line progress bar for a terminal, usable as a download ``progress`` callback.

    Draws ``images.tar.gz [#########           ]  45%  355.2/789.9 MiB  11.8 MiB/s`` with
    carriage returns, at most every ``min_interval`` seconds, and ends the line when the
    transfer is complete or on `close`.
    """

    def __init__(self, label: str, *, stream: Optional[IO[str]] = None, width: int = 30,
                 min_interval: float = 0.1) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._first_done: Optional[int] = None
        self._open = False

    def __call__(self, done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if self._first_done is None:
            self._first_done = done  # bytes already there when resuming: not part of the speed
        finished = total is not None and done >= total
        if not finished and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        mib = 1024 * 1024
        speed = (done - self._first_done) / max(now - self._start, 1e-6) / mib
        if total:
            fraction = min(done / total, 1.0)
            filled = int(round(fraction * self.width))
            bar = "#" * filled + " " * (self.width - filled)
            text = (f"\r{self.label} [{bar}] {fraction:4.0%}  {done / mib:.1f}/{total / mib:.1f}"
                    f" MiB  {speed:.1f} MiB/s")
        else:
            text = f"\r{self.label} {done / mib:.1f} MiB  {speed:.1f} MiB/s"
        self.stream.write(text)
        self.stream.flush()
        self._open = True
        if finished:
            self.close()

    def close(self) -> None:
        """End the bar's line (idempotent)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
