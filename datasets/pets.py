"""Oxford-IIIT Pet archives -> the tutorial's ``data/catdog`` layout (``python -m datasets.pets``).

Data flow::

    annotations.tar.gz ──read once──> {name: trimap PNG bytes}, trainval.txt / test.txt names
    images.tar.gz ──streamed once──> checks ──> <staging>/pool/<name>.jpg
                                                    │ split (random | official)
    <out>/{train,test}/images/<name>.jpg, <out>/{train,test}/masks/<name>.png,
    <out>/prepare_report.json

The archives are never extracted as a whole: both are read as tar *streams* and only the members
we need are taken by name (``images/<name>.jpg``, ``annotations/trimaps/<name>.png``,
``annotations/trainval.txt``, ``annotations/test.txt``). Output paths are built from the member's
base name, never from the member path, and every member is checked first (absolute paths, ``..``,
links pointing outside, device files are rejected and counted), so nothing can be written
outside the output folder whatever the archive holds. This works on every Python 3.10 patch
release (``tarfile``'s ``filter=`` is not needed).

Per image, in this order (the first failing check is the reason reported):

1. ``._*`` macOS resource-fork junk, names not ending in ``.jpg`` (the ``.mat`` files), repeated
   names, images without a trimap: skipped.
2. Size from the file header when it has one (JPEG SOF, PNG IHDR), so the ~2,500 oversized photos
   are dropped without being decoded: an image whose **larger side is ``max_side`` or more** is
   skipped. The tutorial removed "resolution 600 and above" (600 이상), so with the default
   ``max_side=600`` an image with a 600 px side is dropped and one of 599 px is kept.
3. Decoded with OpenCV ignoring EXIF orientation (the trimaps follow the stored pixel grid):
   ``None`` means undecodable -> skipped.
4. Trimap: must decode to a single-channel uint8 array holding only the trimap values 1, 2, 3,
   of exactly the image's height and width; otherwise skipped (``load_example`` downstream would
   fail on it).
5. Kept. A plain 8-bit, 3-component, Huffman-coded JPEG without an EXIF rotation is copied byte
   for byte. Anything else (PNG data behind a ``.jpg`` name, grayscale or CMYK JPEG, EXIF
   orientation, 12-bit/arithmetic JPEG, GIF/BMP...) is re-encoded from the decoded pixels as a
   3-channel JPEG (quality ``jpeg_quality``; an alpha channel is dropped), so every reader -
   OpenCV, PIL, ``tf.io.decode_jpeg`` - gets the same RGB pixels on the trimap's grid.

Masks are the trimap PNGs, copied byte for byte. The split is a seeded random ``test_fraction``
of the kept images (the tutorial: a random 10%) or the official ``trainval.txt`` / ``test.txt``
lists. The whole output is built in a hidden sibling folder and renamed into place at the end,
so an interrupted run never leaves a half-written ``data/catdog``.

Downloads (when the archives are missing from ``--download-dir``) go to ``<file>.part`` first,
resume from it with an HTTP Range request, are checked against the official MD5 and only then
renamed to their final name.
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import gzip
import hashlib
import http.client
import json
import logging
import math
import os
import posixpath
import re
import shutil
import struct
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Optional

import cv2
import numpy as np

logger = logging.getLogger(__name__)

BASE_URL = "https://thor.robots.ox.ac.uk/~vgg/data/pets/"
IMAGES_ARCHIVE = "images.tar.gz"
ANNOTATIONS_ARCHIVE = "annotations.tar.gz"
# MD5 of the official archives; a mirror serving the same files passes the same check.
OFFICIAL_MD5 = {
    IMAGES_ARCHIVE: "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    ANNOTATIONS_ARCHIVE: "95a8c909bbe2e81eed6a22bccdf3f68f",
}
# Written into every output folder: provenance, and the mark that lets --overwrite replace it.
REPORT_FILE = "prepare_report.json"
SPLITS = ("random", "official")
TRIMAP_VALUES = (1, 2, 3)  # 1 = pet, 2 = background, 3 = unknown (the boundary band)

# No image or trimap of the data set comes near this; a bigger member is not read into memory.
_MAX_MEMBER_BYTES = 256 * 1024 * 1024
_CHUNK_BYTES = 1024 * 1024
# Tar errors raised while reading a damaged or non-tar file (gzip.BadGzipFile is an OSError, so
# it is listed on its own rather than catching every OSError, which would hide disk errors).
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)

ProgressCallback = Callable[[int, Optional[int]], None]
"""``progress(bytes_done, bytes_total_or_None)``, called after every downloaded chunk."""


# --------------------------------------------------------------------------------------------
# Errors and the report
# --------------------------------------------------------------------------------------------

class PetsError(RuntimeError):
    """Base class of the errors this module raises for bad input (the CLI prints them)."""


class DownloadError(PetsError):
    """A download failed (network, HTTP status, or an incomplete transfer)."""


class ChecksumError(PetsError):
    """A file's MD5 differs from the official one."""


class ArchiveError(PetsError):
    """An archive is unreadable or does not have the official layout."""


class OutputExistsError(PetsError, FileExistsError):
    """The output folder exists and may not be replaced."""


class SkipReason(str, enum.Enum):
    """Why an archive member did not become an example (the value is the short name used in
    the summary table and in ``prepare_report.json``)."""

    UNSAFE_MEMBER = "unsafe-member"
    NOT_REGULAR_FILE = "not-regular-file"
    MACOS_JUNK = "macos-junk"
    NOT_JPEG = "not-jpeg"
    DUPLICATE = "duplicate"
    NO_TRIMAP = "no-trimap"
    MEMBER_TOO_BIG = "member-too-big"
    TOO_LARGE = "too-large"
    UNDECODABLE = "undecodable"
    BAD_TRIMAP = "bad-trimap"
    TRIMAP_SIZE_MISMATCH = "trimap-size-mismatch"
    NOT_IN_SPLIT_LISTS = "not-in-split-lists"

    @property
    def description(self) -> str:
        return _SKIP_DESCRIPTIONS[self]


_SKIP_DESCRIPTIONS = {
    SkipReason.UNSAFE_MEMBER: "absolute path, '..', link leaving the archive, or device file",
    SkipReason.NOT_REGULAR_FILE: "link inside the archive (links are not followed)",
    SkipReason.MACOS_JUNK: "macOS '._' resource-fork file",
    SkipReason.NOT_JPEG: "name does not end in .jpg (e.g. the .mat files)",
    SkipReason.DUPLICATE: "same name seen earlier in the archive (first one kept)",
    SkipReason.NO_TRIMAP: "no annotations/trimaps/<name>.png",
    SkipReason.MEMBER_TOO_BIG: f"file larger than {_MAX_MEMBER_BYTES >> 20} MiB, not read",
    SkipReason.TOO_LARGE: "larger side >= max_side",
    SkipReason.UNDECODABLE: "OpenCV cannot decode it",
    SkipReason.BAD_TRIMAP: "trimap unreadable, not single-channel uint8, or values not 1/2/3",
    SkipReason.TRIMAP_SIZE_MISMATCH: "trimap height/width differ from the image's",
    SkipReason.NOT_IN_SPLIT_LISTS: "in neither trainval.txt nor test.txt (--split official)",
}


class Conversion(str, enum.Enum):
    """Why a kept image was re-encoded instead of copied byte for byte."""

    PNG = "png"
    GRAYSCALE = "grayscale"
    CMYK = "cmyk"
    EXIF_ORIENTATION = "exif-orientation"
    OTHER_FORMAT = "other-format"

    @property
    def description(self) -> str:
        return _CONVERSION_DESCRIPTIONS[self]


_CONVERSION_DESCRIPTIONS = {
    Conversion.PNG: "PNG data behind a .jpg name",
    Conversion.GRAYSCALE: "single-channel JPEG",
    Conversion.CMYK: "4-channel (CMYK/YCCK) JPEG",
    Conversion.EXIF_ORIENTATION: "EXIF rotation tag (stored pixel grid kept, tag dropped)",
    Conversion.OTHER_FORMAT: "12-bit/arithmetic JPEG or another format OpenCV reads",
}


@dataclasses.dataclass
class PrepareReport:
    """What `prepare_pets` wrote and what it left out, and why.

    ``train`` / ``test`` are sorted image names (file stems). ``converted`` maps the name of
    each re-encoded image to the reason. ``skipped`` maps a reason to the sorted archive member
    names it applies to (e.g. ``"images/Abyssinian_100.mat"``).
    """

    out_dir: Path
    split: str
    seed: Optional[int]
    test_fraction: Optional[float]
    max_side: int
    train: list[str]
    test: list[str]
    converted: dict[str, Conversion]
    skipped: dict[SkipReason, list[str]]

    @property
    def num_kept(self) -> int:
        return len(self.train) + len(self.test)

    @property
    def num_skipped(self) -> int:
        return sum(len(names) for names in self.skipped.values())

    def to_json(self) -> dict:
        """A JSON-serialisable dict (what ``prepare_report.json`` holds)."""
        return {
            "out_dir": str(self.out_dir),
            "split": self.split,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "max_side": self.max_side,
            "counts": {
                "train": len(self.train),
                "test": len(self.test),
                "converted": len(self.converted),
                "skipped": {reason.value: len(names) for reason, names in self.skipped.items()},
            },
            "train": self.train,
            "test": self.test,
            "converted": {name: conv.value for name, conv in sorted(self.converted.items())},
            "skipped": {reason.value: names for reason, names in self.skipped.items()},
        }

    def summary(self, examples: int = 3) -> str:
        """A human-readable table: kept per split (cats / dogs), re-encoded and skipped files
        per reason with a count and up to ``examples`` names each."""
        if self.split == "random":
            how = f"random split, test_fraction={self.test_fraction}, seed={self.seed}"
        else:
            how = "official split (trainval.txt / test.txt)"
        lines = [f"Oxford-IIIT Pet -> {self.out_dir} ({how}, max_side={self.max_side})"]
        lines.append(f"kept {self.num_kept} images:")
        for split_name, names in (("train", self.train), ("test", self.test)):
            cats = sum(1 for name in names if is_cat(name))
            lines.append(f"  {split_name:<6}{len(names):>6}  ({cats} cats, "
                         f"{len(names) - cats} dogs)")

        by_conversion: dict[Conversion, list[str]] = {}
        for name, conv in sorted(self.converted.items()):
            by_conversion.setdefault(conv, []).append(name)
        rows_conv = [(conv.value, conv.description, names)
                     for conv, names in sorted(by_conversion.items(), key=lambda kv: kv[0].value)]
        rows_skip = [(reason.value, reason.description.replace("max_side", f"{self.max_side} px"),
                      names) for reason, names in self.skipped.items()]
        width = max((len(key) for key, _, _ in rows_conv + rows_skip), default=0)
        lines.append(f"re-encoded to 3-channel JPEG: {len(self.converted)} of them")
        lines.extend(_table(rows_conv, examples, width))
        lines.append(f"skipped {self.num_skipped} archive members:")
        lines.extend(_table(rows_skip, examples, width))
        return "\n".join(lines)


def _table(rows: list[tuple[str, str, list[str]]], examples: int, width: int) -> list[str]:
    """Rows ``reason  count  description``, then ``e.g. a, b, c (+n more)`` below."""
    if not rows:
        return ["  (none)"]
    out = []
    for key, description, names in rows:
        shown = ", ".join(names[:examples])
        more = f" (+{len(names) - examples} more)" if len(names) > examples else ""
        out.append(f"  {key:<{width}} {len(names):>6}  {description}")
        if examples > 0:
            out.append(f"  {'':<{width}} {'':>6}  e.g. {shown}{more}")
    return out


def is_cat(name: str) -> bool:
    """Oxford names cat breeds with a capital (``Abyssinian_1``), dogs in lower case."""
    return name[:1].isupper()


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------

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


def _range_start(response) -> Optional[int]:
    """First byte of a 206 answer, from ``Content-Range: bytes <start>-<end>/<total>``."""
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def fetch_archive(name: str, download_dir: str | os.PathLike, *, base_url: str = BASE_URL,
                  verify: bool = True, progress: Optional[ProgressCallback] = None) -> Path:
    """``<download_dir>/<name>``, downloaded from ``<base_url>/<name>`` when missing.

    With ``verify`` the file (already there or just downloaded) must have the official MD5 of
    ``name``; a mirror must serve identical bytes. ``verify=False`` skips the check with a
    warning. A wrong MD5 on a file that was already there raises `ChecksumError` and leaves the
    file alone (it is the user's; the message says to delete it to download it again).
    """
    if name not in OFFICIAL_MD5:
        raise ValueError(f"unknown archive {name!r}; valid: {sorted(OFFICIAL_MD5)}")
    dest = Path(download_dir) / name
    expected = OFFICIAL_MD5[name] if verify else None
    if not verify:
        logger.warning("not checking the MD5 of %s (verification disabled)", dest)
    if dest.is_file():
        if expected is not None:
            logger.info("checking the MD5 of %s", dest)
            actual = md5sum(dest)
            if actual != expected:
                raise ChecksumError(
                    f"{dest} has MD5 {actual}, but the official {name} has {expected}: the file "
                    f"is damaged or not the official one. Delete it to download it again, or "
                    f"pass --no-verify to use it anyway.")
        return dest
    url = base_url.rstrip("/") + "/" + name
    return download(url, dest, md5=expected, progress=progress)


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


# --------------------------------------------------------------------------------------------
# Reading archives safely
# --------------------------------------------------------------------------------------------

def unsafe_member_reason(member: tarfile.TarInfo) -> Optional[str]:
    """Why extracting ``member`` by its own path could touch something outside the target
    folder, or None when it could not.

    Rejected: absolute paths (also ``C:``-style), a ``..`` component, backslashes or NUL bytes in
    the name, symlinks whose target (resolved from the link's folder) or hardlinks whose target
    (relative to the archive root) leave the archive, and character/block devices and FIFOs.
    Links that stay inside are not unsafe (this module still never follows them).
    """
    name = member.name
    if "\x00" in name or "\\" in name:
        return f"name {name!r} contains a NUL byte or a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"absolute path {name!r}"
    if ".." in PurePosixPath(name).parts:
        return f"path {name!r} contains '..'"
    if member.issym() or member.islnk():
        target = member.linkname
        kind = "symlink" if member.issym() else "hardlink"
        if target.startswith("/") or "\\" in target or re.match(r"^[A-Za-z]:", target):
            return f"{kind} {name!r} -> {target!r} points outside the archive"
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"{kind} {name!r} -> {target!r} points outside the archive"
        return None
    if member.ischr() or member.isblk() or member.isfifo():
        return f"device file or FIFO {name!r}"
    return None


@dataclasses.dataclass(frozen=True)
class _Member:
    """A regular file of an archive: its normalised path parts (``./`` dropped) and a reader
    that returns its bytes (valid only while the stream is on this member)."""

    name: str
    parts: tuple[str, ...]
    size: int
    read: Callable[[], bytes]


def _iter_regular_members(path: Path, skipped: dict[SkipReason, list[str]],
                          relevant: Callable[[tuple[str, ...]], bool]) -> Iterator[_Member]:
    """Stream the tar at ``path`` once (any compression), yielding its regular files.

    Unsafe members are recorded in ``skipped`` with a warning wherever they are; links that stay
    inside the archive are recorded only when ``relevant(parts)`` (the others are members we
    would not read anyway: directories, xmls...). Read errors become `ArchiveError` naming the
    file.
    """
    def reader(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            try:
                f = tar.extractfile(member)
                assert f is not None  # regular files always have a file object
                return f.read()
            except _ARCHIVE_ERRORS as exc:
                raise ArchiveError(_damaged(path, exc)) from exc
        return read

    try:
        # "r|*": a forward-only stream, so a .tar.gz is decompressed exactly once and no member
        # is ever looked up by seeking.
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                problem = unsafe_member_reason(member)
                parts = PurePosixPath(member.name).parts
                if problem is not None:
                    logger.warning("%s: rejected member: %s", path, problem)
                    skipped.setdefault(SkipReason.UNSAFE_MEMBER, []).append(member.name)
                    continue
                if member.isdir():
                    continue
                if not member.isreg():
                    if relevant(parts):
                        skipped.setdefault(SkipReason.NOT_REGULAR_FILE, []).append(member.name)
                    continue
                yield _Member(member.name, parts, member.size, reader(tar, member))
    except _ARCHIVE_ERRORS as exc:
        raise ArchiveError(_damaged(path, exc)) from exc


def _damaged(path: Path, exc: BaseException) -> str:
    return (f"{path}: cannot read it as a tar archive ({type(exc).__name__}: {exc}); the file "
            f"is truncated or damaged: delete it and download it again")


@dataclasses.dataclass
class _Annotations:
    trimaps: dict[str, bytes]          # name -> PNG bytes of annotations/trimaps/<name>.png
    lists: dict[str, list[str]]        # "trainval" / "test" -> names, in file order


def _read_annotations(path: Path, skipped: dict[SkipReason, list[str]]) -> _Annotations:
    """Trimaps (~7,400 small PNGs, ~20 MB in all) and the two split lists, held in memory."""
    trimaps: dict[str, bytes] = {}
    lists: dict[str, list[str]] = {}

    def relevant(parts: tuple[str, ...]) -> bool:
        return parts[:2] == ("annotations", "trimaps")

    for member in _iter_regular_members(path, skipped, relevant):
        parts = member.parts
        if len(parts) == 3 and relevant(parts):
            file_name = parts[2]
            stem, suffix = posixpath.splitext(file_name)
            if file_name.startswith("._"):
                skipped.setdefault(SkipReason.MACOS_JUNK, []).append(member.name)
            elif suffix.lower() == ".png":
                if member.size > _MAX_MEMBER_BYTES:
                    skipped.setdefault(SkipReason.MEMBER_TOO_BIG, []).append(member.name)
                elif stem in trimaps:
                    skipped.setdefault(SkipReason.DUPLICATE, []).append(member.name)
                else:
                    trimaps[stem] = member.read()
        elif len(parts) == 2 and parts[0] == "annotations" and parts[1] in ("trainval.txt",
                                                                             "test.txt"):
            lists[parts[1][:-4]] = _parse_list(member.read(), f"{path}:{member.name}")
    if not trimaps:
        raise ArchiveError(
            f"{path} holds no annotations/trimaps/*.png: is it the Oxford-IIIT Pet "
            f"{ANNOTATIONS_ARCHIVE}? (images and annotations archives swapped?)")
    return _Annotations(trimaps, lists)


def _parse_list(data: bytes, where: str) -> list[str]:
    """Names from a split list: lines ``<name> <class id> <species> <breed id>``; blank lines
    and ``#`` comments skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{where} is not UTF-8 text ({exc})") from exc
    return [line.split()[0] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


# --------------------------------------------------------------------------------------------
# Image checks
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JpegHeader:
    """What the JPEG markers before the scan say (no pixels decoded)."""

    sof_marker: int             # 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    precision: int              # bits per sample, 8 for nearly every JPEG
    height: int
    width: int
    components: int             # 1 grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK
    orientation: Optional[int]  # EXIF orientation tag (1 = as stored), None without EXIF


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                          0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Huffman-coded 8-bit JPEGs: what every decoder (including tf.io.decode_jpeg) reads.
_PLAIN_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2})


def parse_jpeg_header(data: bytes) -> Optional[JpegHeader]:
    """Walk the JPEG marker segments up to the first frame header; None if ``data`` is not a
    JPEG or the header is damaged. Reads the EXIF orientation from an APP1 ``Exif`` segment."""
    if not data.startswith(b"\xff\xd8"):
        return None
    orientation: Optional[int] = None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        segment = data[pos + 4:pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return None
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00") and orientation is None:
            orientation = _exif_orientation(segment[6:])
        elif marker in _SOF_MARKERS:
            if len(segment) < 6:
                return None
            precision, height, width, components = struct.unpack(">BHHB", segment[:6])
            return JpegHeader(marker, precision, height, width, components, orientation)
        pos += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> Optional[int]:
    """Tag 0x0112 of IFD0 of a TIFF structure (the EXIF payload), None if absent/damaged."""
    if tiff[:4] == b"II*\x00":
        endian = "<"
    elif tiff[:4] == b"MM\x00*":
        endian = ">"
    else:
        return None
    try:
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd:ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
            tag, kind, _n = struct.unpack(endian + "HHI", entry[:8])
            if tag == 0x0112 and kind == 3:  # SHORT: the value sits in the entry itself
                (value,) = struct.unpack(endian + "H", entry[8:10])
                return value
    except struct.error:
        return None
    return None


def _png_size(data: bytes) -> Optional[tuple[int, int]]:
    """``(height, width)`` from a PNG's IHDR chunk, None if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return height, width


@dataclasses.dataclass(frozen=True)
class ImageCheck:
    """The outcome of `check_image`: either ``skip`` is set, or ``jpeg`` holds the bytes to
    write (the original bytes when ``conversion`` is None)."""

    skip: Optional[SkipReason] = None
    detail: str = ""
    conversion: Optional[Conversion] = None
    jpeg: Optional[bytes] = None


def check_image(data: bytes, trimap_png: bytes, *, max_side: int = 600,
                jpeg_quality: int = 95) -> ImageCheck:
    """Decide what happens to one image file (steps 2-5 of the module docstring).

    ``data``: the bytes of ``images/<name>.jpg``; ``trimap_png``: the bytes of its trimap.
    """
    jpeg = parse_jpeg_header(data)
    header_size = (jpeg.height, jpeg.width) if jpeg is not None else _png_size(data)
    if header_size is not None and max(header_size) >= max_side:
        return ImageCheck(SkipReason.TOO_LARGE, f"{header_size[1]}x{header_size[0]} px")

    buffer = np.frombuffer(data, np.uint8)
    # (h, w, 3) uint8 BGR on the stored grid: gray is replicated, alpha dropped, 16 bits cut to
    # 8, CMYK converted. EXIF rotation is ignored because the trimaps follow the stored grid.
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        return ImageCheck(SkipReason.UNDECODABLE, f"{len(data)} bytes, starts {data[:8]!r}")
    height, width = image.shape[:2]
    if max(height, width) >= max_side:
        return ImageCheck(SkipReason.TOO_LARGE, f"{width}x{height} px")

    trimap = cv2.imdecode(np.frombuffer(trimap_png, np.uint8), cv2.IMREAD_UNCHANGED)
    if trimap is None or trimap.ndim != 2 or trimap.dtype != np.uint8:
        found = "undecodable" if trimap is None else f"{trimap.dtype} {trimap.shape}"
        return ImageCheck(SkipReason.BAD_TRIMAP, f"trimap is {found}, expected uint8 (h, w)")
    values = np.unique(trimap)
    if not np.isin(values, TRIMAP_VALUES).all():
        return ImageCheck(SkipReason.BAD_TRIMAP,
                          f"trimap values {values.tolist()}, expected only {TRIMAP_VALUES}")
    if trimap.shape != (height, width):
        return ImageCheck(SkipReason.TRIMAP_SIZE_MISMATCH,
                          f"image {width}x{height}, trimap {trimap.shape[1]}x{trimap.shape[0]}")

    conversion = _needed_conversion(data, jpeg)
    if conversion is None:
        return ImageCheck(jpeg=data)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:  # pragma: no cover - OpenCV encodes any (h, w, 3) uint8 array
        raise RuntimeError("OpenCV failed to encode a decoded image as JPEG")
    return ImageCheck(conversion=conversion, jpeg=encoded.tobytes())


def _needed_conversion(data: bytes, jpeg: Optional[JpegHeader]) -> Optional[Conversion]:
    """None when ``data`` is a JPEG every reader decodes to the same 3-channel pixels."""
    if jpeg is None:
        return Conversion.PNG if _png_size(data) is not None else Conversion.OTHER_FORMAT
    if jpeg.components == 1:
        return Conversion.GRAYSCALE
    if jpeg.components == 4:
        return Conversion.CMYK
    if jpeg.components != 3 or jpeg.precision != 8 or jpeg.sof_marker not in _PLAIN_SOF_MARKERS:
        return Conversion.OTHER_FORMAT
    if jpeg.orientation not in (None, 1):
        return Conversion.EXIF_ORIENTATION
    return None


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

def random_split(names: Iterable[str], *, test_fraction: float = 0.1,
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, test)``, both sorted: ``round(test_fraction * n)`` names (halves round up)
    drawn for the test set by a permutation from ``numpy.random.default_rng(seed)``.

    The names are sorted first, so the result depends only on the set of names and the seed,
    never on the archive order.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    ordered = sorted(set(names))
    num_test = math.floor(test_fraction * len(ordered) + 0.5)
    order = np.random.default_rng(seed).permutation(len(ordered))
    test_idx = set(order[:num_test].tolist())
    train = [n for i, n in enumerate(ordered) if i not in test_idx]
    test = [n for i, n in enumerate(ordered) if i in test_idx]
    return train, test


def official_split(names: Iterable[str], *, trainval: Iterable[str],
                   test: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """``(train, test, unlisted)``, all sorted: the names listed in ``trainval`` / ``test``,
    and those in neither. A name in both lists is an error."""
    trainval_set, test_set = set(trainval), set(test)
    both = sorted(trainval_set & test_set)
    if both:
        raise ArchiveError(f"trainval.txt and test.txt both list {len(both)} names, e.g. "
                           f"{both[:3]}: the split lists are inconsistent")
    ordered = sorted(set(names))
    return ([n for n in ordered if n in trainval_set], [n for n in ordered if n in test_set],
            [n for n in ordered if n not in trainval_set and n not in test_set])


# --------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------

def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse to write into an existing, non-empty ``out_dir`` unless ``overwrite``; even then,
    only a folder written by this module (it holds ``prepare_report.json``) is replaced, so a
    mistyped ``--out`` cannot delete an unrelated folder."""
    out = Path(out_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another --out")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(
            f"{out} already exists and is not empty; pass --overwrite to replace it with a "
            f"fresh preparation, or choose another --out")
    if not (out / REPORT_FILE).is_file():
        raise OutputExistsError(
            f"refusing to replace {out}: it has no {REPORT_FILE}, so it was not written by "
            f"datasets.pets; remove it yourself or choose another --out")


def prepare_pets(images_archive: str | os.PathLike, annotations_archive: str | os.PathLike,
                 out_dir: str | os.PathLike, *, max_side: int = 600, test_fraction: float = 0.1,
                 seed: int = 0, split: str = "random", overwrite: bool = False,
                 jpeg_quality: int = 95) -> PrepareReport:
    """Build ``<out_dir>/{train,test}/{images,masks}`` from the two official archives.

    See the module docstring for the checks and their order. ``split="random"`` holds out a
    seeded ``test_fraction`` of the kept images (`random_split`); ``split="official"`` follows
    ``annotations/trainval.txt`` and ``annotations/test.txt`` (kept images in neither list are
    skipped as ``not-in-split-lists``). The output is assembled in a hidden folder next to
    ``out_dir`` and moved into place at the end; an existing ``out_dir`` is refused unless
    ``overwrite`` (see `check_output_dir`). Returns the `PrepareReport`, also saved as
    ``<out_dir>/prepare_report.json``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    images_archive, annotations_archive = Path(images_archive), Path(annotations_archive)
    for path, official in ((images_archive, IMAGES_ARCHIVE),
                           (annotations_archive, ANNOTATIONS_ARCHIVE)):
        if not path.is_file():
            raise FileNotFoundError(f"archive {path} not found (expected the official "
                                    f"Oxford-IIIT Pet {official})")
    out = Path(out_dir)
    check_output_dir(out, overwrite=overwrite)

    skipped: dict[SkipReason, list[str]] = {}
    annotations = _read_annotations(annotations_archive, skipped)
    logger.info("%s: %d trimaps", annotations_archive, len(annotations.trimaps))
    if split == "official":
        missing = [f"annotations/{n}.txt" for n in ("trainval", "test")
                   if n not in annotations.lists]
        if missing:
            raise ArchiveError(f"{annotations_archive} lacks {', '.join(missing)}, needed by "
                               f"--split official (use --split random instead)")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        pool = staging / "pool"
        pool.mkdir()
        kept, converted = _process_images(images_archive, annotations.trimaps, pool, skipped,
                                          max_side=max_side, jpeg_quality=jpeg_quality)
        if split == "random":
            train, test = random_split(kept, test_fraction=test_fraction, seed=seed)
        else:
            train, test, unlisted = official_split(kept, trainval=annotations.lists["trainval"],
                                                   test=annotations.lists["test"])
            if unlisted:
                skipped[SkipReason.NOT_IN_SPLIT_LISTS] = [kept[n] for n in unlisted]
                for name in unlisted:
                    converted.pop(name, None)
        for split_name, names in (("train", train), ("test", test)):
            (staging / split_name / "images").mkdir(parents=True)
            (staging / split_name / "masks").mkdir()
            for name in names:
                os.replace(pool / f"{name}.jpg", staging / split_name / "images" / f"{name}.jpg")
                (staging / split_name / "masks" / f"{name}.png").write_bytes(
                    annotations.trimaps[name])
        shutil.rmtree(pool)  # only the unlisted images are left in it

        report = PrepareReport(
            out_dir=out, split=split, seed=seed if split == "random" else None,
            test_fraction=test_fraction if split == "random" else None, max_side=max_side,
            train=train, test=test, converted=converted,
            skipped={reason: sorted(skipped[reason]) for reason in SkipReason
                     if skipped.get(reason)})
        info = report.to_json()
        info["sources"] = {"images_archive": str(images_archive),
                           "annotations_archive": str(annotations_archive)}
        info["jpeg_quality"] = jpeg_quality
        (staging / REPORT_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        _move_into_place(staging, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not train or ((split == "official" or test_fraction > 0) and not test):
        logger.warning("%s: the %s set is empty", out, "train" if not train else "test")
    logger.info("%s: %d train, %d test images, %d skipped archive members", out, len(train),
                len(test), report.num_skipped)
    return report


def _process_images(archive: Path, trimaps: dict[str, bytes], pool: Path,
                    skipped: dict[SkipReason, list[str]], *, max_side: int,
                    jpeg_quality: int) -> tuple[dict[str, str], dict[str, Conversion]]:
    """Stream ``images/*.jpg`` of ``archive``, write each kept image to ``pool/<name>.jpg``.

    Returns ``({name: member name} of kept images, {name: conversion} of re-encoded ones)``;
    skips are appended to ``skipped``.
    """
    kept: dict[str, str] = {}
    converted: dict[str, Conversion] = {}
    seen: set[str] = set()
    num_images = 0

    def relevant(parts: tuple[str, ...]) -> bool:
        return len(parts) == 2 and parts[0] == "images"

    def skip(reason: SkipReason, member: str, detail: str = "") -> None:
        skipped.setdefault(reason, []).append(member)
        logger.debug("skipped %s: %s%s", member, reason.value, f" ({detail})" if detail else "")

    for member in _iter_regular_members(archive, skipped, relevant):
        if not relevant(member.parts):
            continue  # e.g. a README next to images/
        num_images += 1
        file_name = member.parts[1]
        name, suffix = posixpath.splitext(file_name)
        if file_name.startswith("._"):
            skip(SkipReason.MACOS_JUNK, member.name)
        elif suffix.lower() != ".jpg" or not name:
            skip(SkipReason.NOT_JPEG, member.name)
        elif name in seen:
            skip(SkipReason.DUPLICATE, member.name)
        elif name not in trimaps:
            seen.add(name)
            skip(SkipReason.NO_TRIMAP, member.name)
        elif member.size > _MAX_MEMBER_BYTES:
            seen.add(name)
            skip(SkipReason.MEMBER_TOO_BIG, member.name, f"{member.size} bytes")
        else:
            seen.add(name)
            result = check_image(member.read(), trimaps[name], max_side=max_side,
                                 jpeg_quality=jpeg_quality)
            if result.skip is not None:
                skip(result.skip, member.name, result.detail)
            else:
                assert result.jpeg is not None
                (pool / f"{name}.jpg").write_bytes(result.jpeg)
                kept[name] = member.name
                if result.conversion is not None:
                    converted[name] = result.conversion
                    logger.debug("re-encoded %s: %s", member.name, result.conversion.value)
        if num_images % 1000 == 0:
            logger.info("%s: %d images read, %d kept", archive, num_images, len(kept))

    if num_images == 0:
        raise ArchiveError(
            f"{archive} holds no images/* members: is it the Oxford-IIIT Pet {IMAGES_ARCHIVE}? "
            f"(images and annotations archives swapped?)")
    return kept, converted


def _move_into_place(staging: Path, out: Path, *, overwrite: bool) -> None:
    """Rename the finished ``staging`` folder to ``out``; an old ``out`` (allowed by
    `check_output_dir`, checked again here since preparing takes minutes) is moved aside first
    and deleted only once the new folder is in place."""
    check_output_dir(out, overwrite=overwrite)
    if not out.exists():
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()  # only the unique name is needed
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.pets",
        description="Turn the official Oxford-IIIT Pet archives into the tutorial's layout "
                    "<out>/{train,test}/{images/<name>.jpg,masks/<name>.png}. Archives missing "
                    "from --download-dir are downloaded (and MD5-checked) first.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = parser.add_argument_group("archives")
    src.add_argument("--images-archive", type=Path, default=None,
                     help=f"local {IMAGES_ARCHIVE} (not verified, never downloaded); "
                          f"default: <download-dir>/{IMAGES_ARCHIVE}")
    src.add_argument("--annotations-archive", type=Path, default=None,
                     help=f"local {ANNOTATIONS_ARCHIVE} (not verified, never downloaded); "
                          f"default: <download-dir>/{ANNOTATIONS_ARCHIVE}")
    src.add_argument("--download-dir", type=Path, default=Path("data/downloads"),
                     help="where the archives are, or are downloaded to when missing")
    src.add_argument("--base-url", default=BASE_URL,
                     help="where to download the archives from (a mirror must serve the "
                          "official files, or use --no-verify)")
    src.add_argument("--no-verify", action="store_true",
                     help="skip the MD5 check of the archives in --download-dir (warns)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("data/catdog"), help="output folder")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing output folder written by this command")
    out.add_argument("--split", choices=SPLITS, default="random",
                     help="random: seeded --test-fraction of the kept images; official: "
                          "annotations/trainval.txt and test.txt")
    out.add_argument("--test-fraction", type=float, default=0.1,
                     help="share of kept images in the test set (--split random)")
    out.add_argument("--seed", type=int, default=0, help="seed of the random split")
    out.add_argument("--max-side", type=int, default=600,
                     help="drop images whose larger side is this many pixels or more "
                          "(the tutorial removed 600 and above)")
    out.add_argument("--jpeg-quality", type=int, default=95,
                     help="quality of the images that must be re-encoded (PNG, grayscale, "
                          "CMYK...); valid JPEGs are copied unchanged")
    out.add_argument("--examples", type=int, default=3,
                     help="example names shown per reason in the summary")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG lists every skipped file with the reason")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: resolve (download) the archives, prepare, print the summary table.
    Returns the exit status (0 ok, 1 on a reported error)."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Before any download: a refused output folder should not cost an 800 MB transfer.
        check_output_dir(args.out, overwrite=args.overwrite)
        archives = {}
        for name, given in ((IMAGES_ARCHIVE, args.images_archive),
                            (ANNOTATIONS_ARCHIVE, args.annotations_archive)):
            if given is not None:
                archives[name] = given  # the user's file: used as is
                continue
            bar = TerminalProgressBar(name) if sys.stderr.isatty() else None
            try:
                archives[name] = fetch_archive(name, args.download_dir, base_url=args.base_url,
                                               verify=not args.no_verify, progress=bar)
            finally:
                if bar is not None:
                    bar.close()
        report = prepare_pets(
            archives[IMAGES_ARCHIVE], archives[ANNOTATIONS_ARCHIVE], args.out,
            max_side=args.max_side, test_fraction=args.test_fraction, seed=args.seed,
            split=args.split, overwrite=args.overwrite, jpeg_quality=args.jpeg_quality)
    except (PetsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary(examples=args.examples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
