"""Oxford-IIIT Pet archives -> the tutorial's ``data/catdog`` layout (``python -m datasets.pets``).

Data flow::

    annotations.tar.gz ──read once──> {name: trimap PNG bytes}, trainval.txt / test.txt names
    images.tar.gz ──streamed once──> checks ──> <staging>/pool/<name>.jpg
                                                    │ split (random | official)
    <out>/{train,test}/images/<name>.jpg, <out>/{train,test}/masks/<name>.png,
    <out>/prepare_report.json

This module converts and splits; the pieces it stands on each have their own module: downloads
with resume and MD5 (``datasets/download.py``), reading tar streams safely
(``datasets/archives.py``: nothing is ever extracted by a member's own path, so nothing can be
written outside the output folder), image headers (``datasets/headers.py``), the one decode path
with its pixel limit (``datasets/decode.py``), the trimap checks (``datasets/labels.py``) and the
seeded split (``datasets/split.py``).

Per image, in this order (the first failing check is the reason reported):

1. ``._*`` macOS resource-fork junk, names not ending in ``.jpg`` (the ``.mat`` files), repeated
   names, images without a trimap, members over 256 MiB: skipped.
2. The header (JPEG SOF, PNG IHDR, BMP DIB header): a file that is none of these (an empty
   member, text) is undecodable; an image whose **larger side is ``max_side`` or more** is
   skipped without being decoded. The tutorial removed "resolution 600 and above" (600 이상),
   so with the default ``max_side=600`` an image with a 600 px side is dropped and one of 599 px
   is kept. (The pixel limit of the decode path, ``max_pixels``, applies too; it only matters
   with a very large ``max_side``.)
3. Decoded on the stored pixel grid (EXIF orientation ignored: the trimaps follow the stored
   grid) by ``datasets.decode.decode_image``; any decoder failure -> skipped as undecodable.
4. Trimap: decoded by ``datasets.labels.decode_trimap`` and checked as every reader checks it
   (values 1, 2, 3 only; one channel or three equal ones); it must have exactly the image's
   height and width; otherwise skipped.
5. Kept. A plain 8-bit, 3-component, Huffman-coded JPEG without an EXIF rotation is copied byte
   for byte. Anything else (PNG or BMP data behind a ``.jpg`` name, grayscale or CMYK JPEG, EXIF
   orientation, 12-bit/arithmetic JPEG) is re-encoded from the decoded pixels as a 3-channel
   JPEG (quality ``jpeg_quality``; an alpha channel is dropped), so every reader - OpenCV, PIL,
   ``tf.io.decode_jpeg`` - gets the same RGB pixels on the trimap's grid.

Masks are the trimap PNGs, copied byte for byte. The split is ``datasets.split.seeded_split``
with ``test_fraction`` (the tutorial: a random 10%) or the official ``trainval.txt`` /
``test.txt`` lists. The whole output is built in a hidden sibling folder and swapped into place
at the end (``common.files.staged_dir``), so an interrupted run never leaves a half-written
``data/catdog``; only a folder holding ``prepare_report.json`` is ever replaced.

Downloads (when the archives are missing from ``--download-dir``) go to ``<file>.part`` first,
resume from it with an HTTP Range request, are checked against the official MD5 and only then
renamed to their final name.
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import os
import posixpath
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Optional

import cv2

from common.cli import HelpFormatter, add_debug_flag, run
from common.errors import ConfigError, DataError
from common.files import OutputExistsError, check_replaceable, staged_dir
from datasets.archives import ArchiveError, ArchiveMember, iter_members
from datasets.decode import MAX_PIXELS, ImageTooLargeError, UnreadableFileError, decode_image
from datasets.download import (ChecksumError, DownloadError, ProgressCallback,
                               TerminalProgressBar, download, md5sum)
from datasets.headers import JPEG, PNG, ImageHeader, read_header
from datasets.labels import DataFormatError, check_trimap_values, decode_trimap
from datasets.oxford import is_cat_name
from datasets.split import seeded_split

__all__ = [
    "BASE_URL", "IMAGES_ARCHIVE", "ANNOTATIONS_ARCHIVE", "OFFICIAL_MD5", "REPORT_FILE",
    "SPLITS", "SkipReason", "Conversion", "PrepareReport", "ImageCheck", "ArchiveError",
    "ChecksumError", "DownloadError", "OutputExistsError", "fetch_archive", "check_image",
    "official_split", "prepare_pets", "reason_table", "build_parser", "main",
]

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
WRITER = "python -m datasets.pets"
SPLITS = ("random", "official")

# No image or trimap of the data set comes near this; a bigger member is not read into memory.
_MAX_MEMBER_BYTES = 256 * 1024 * 1024
# Huffman-coded 8-bit JPEGs: what every decoder (including tf.io.decode_jpeg) reads.
_PLAIN_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2})


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

class MissingArchiveError(DataError, FileNotFoundError):
    """An archive given (or expected) on disk is not there."""


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
    OVER_PIXEL_LIMIT = "over-pixel-limit"
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
    SkipReason.OVER_PIXEL_LIMIT: "more pixels than --max-pixels (not decoded)",
    SkipReason.UNDECODABLE: "empty, not a JPEG/PNG/BMP, truncated or damaged",
    SkipReason.BAD_TRIMAP: "trimap unreadable, not one channel (or 3 equal), or values not 1/2/3",
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
    Conversion.OTHER_FORMAT: "BMP data, or a 12-bit/arithmetic/lossless JPEG",
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
            cats = sum(1 for name in names if is_cat_name(name))
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
        lines.extend(reason_table(rows_conv, examples, width))
        lines.append(f"skipped {self.num_skipped} archive members:")
        lines.extend(reason_table(rows_skip, examples, width))
        return "\n".join(lines)


def reason_table(rows: list[tuple[str, str, list[str]]], examples: int,
                 width: int) -> list[str]:
    """Rows ``reason  count  description``, then ``e.g. a, b, c (+n more)`` below (also the
    skip tables of ``python -m datasets.convert``)."""
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


# --------------------------------------------------------------------------------------------
# The archives
# --------------------------------------------------------------------------------------------

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


def _regular_members(path: Path, skipped: dict[SkipReason, list[str]],
                     relevant: Callable[[tuple[str, ...]], bool]) -> Iterator[ArchiveMember]:
    """The regular files of the archive at ``path``. Unsafe members are recorded in ``skipped``
    with a warning wherever they are; links that stay inside the archive are recorded only when
    ``relevant(parts)`` (the others are members we would not read anyway: xmls...)."""
    for member in iter_members(path):
        if member.problem is not None:
            logger.warning("%s: rejected member: %s", path, member.problem)
            skipped.setdefault(SkipReason.UNSAFE_MEMBER, []).append(member.name)
        elif not member.regular:
            if relevant(member.parts):
                skipped.setdefault(SkipReason.NOT_REGULAR_FILE, []).append(member.name)
        else:
            yield member


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

    for member in _regular_members(path, skipped, relevant):
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
class ImageCheck:
    """The outcome of `check_image`: either ``skip`` is set, or ``jpeg`` holds the bytes to
    write (the original bytes when ``conversion`` is None)."""

    skip: Optional[SkipReason] = None
    detail: str = ""
    conversion: Optional[Conversion] = None
    jpeg: Optional[bytes] = None


def check_image(data: bytes, trimap_png: bytes, *, max_side: int = 600,
                jpeg_quality: int = 95, max_pixels: Optional[int] = MAX_PIXELS,
                source: str = "image") -> ImageCheck:
    """Decide what happens to one image file (steps 2-5 of the module docstring).

    ``data``: the bytes of ``images/<name>.jpg``; ``trimap_png``: the bytes of its trimap;
    ``source`` names the member in skip details.
    """
    header = read_header(data)
    if header is None:
        return ImageCheck(SkipReason.UNDECODABLE, f"{len(data)} bytes, starts {data[:8]!r}: "
                                                  f"not a JPEG, PNG or BMP")
    if max(header.height, header.width) >= max_side:
        return ImageCheck(SkipReason.TOO_LARGE, f"{header.width}x{header.height} px")
    try:
        image = decode_image(data, source, max_pixels=max_pixels)  # (h, w, 3) RGB, stored grid
    except ImageTooLargeError as error:
        return ImageCheck(SkipReason.OVER_PIXEL_LIMIT, error.reason)
    except UnreadableFileError as error:
        return ImageCheck(SkipReason.UNDECODABLE, error.reason)

    trimap_source = f"trimap of {source}"
    try:
        trimap = decode_trimap(trimap_png, trimap_source, max_pixels=max_pixels)  # (h, w)
        check_trimap_values(trimap, trimap_source)
    except (UnreadableFileError, DataFormatError) as error:
        return ImageCheck(SkipReason.BAD_TRIMAP, str(error))
    if trimap.shape != (header.height, header.width):
        return ImageCheck(SkipReason.TRIMAP_SIZE_MISMATCH,
                          f"image {header.width}x{header.height}, "
                          f"trimap {trimap.shape[1]}x{trimap.shape[0]}")

    conversion = _needed_conversion(header)
    if conversion is None:
        return ImageCheck(jpeg=data)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:  # pragma: no cover - OpenCV encodes any (h, w, 3) uint8 array
        raise RuntimeError("OpenCV failed to encode a decoded image as JPEG")
    return ImageCheck(conversion=conversion, jpeg=encoded.tobytes())


def _needed_conversion(header: ImageHeader) -> Optional[Conversion]:
    """None when the file is a JPEG every reader decodes to the same 3-channel pixels."""
    if header.format != JPEG:
        return Conversion.PNG if header.format == PNG else Conversion.OTHER_FORMAT
    if header.channels == 1:
        return Conversion.GRAYSCALE
    if header.channels == 4:
        return Conversion.CMYK
    if header.channels != 3 or header.bit_depth != 8 \
            or header.sof_marker not in _PLAIN_SOF_MARKERS:
        return Conversion.OTHER_FORMAT
    if header.orientation not in (None, 1):
        return Conversion.EXIF_ORIENTATION
    return None


# --------------------------------------------------------------------------------------------
# Splits and preparation
# --------------------------------------------------------------------------------------------

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


def prepare_pets(images_archive: str | os.PathLike, annotations_archive: str | os.PathLike,
                 out_dir: str | os.PathLike, *, max_side: int = 600, test_fraction: float = 0.1,
                 seed: int = 0, split: str = "random", overwrite: bool = False,
                 jpeg_quality: int = 95,
                 max_pixels: Optional[int] = MAX_PIXELS) -> PrepareReport:
    """Build ``<out_dir>/{train,test}/{images,masks}`` from the two official archives.

    See the module docstring for the checks and their order. ``split="random"`` holds out a
    seeded ``test_fraction`` of the kept images (``datasets.split.seeded_split``: half up, at
    least one image when ``test_fraction > 0``); ``split="official"`` follows
    ``annotations/trainval.txt`` and ``annotations/test.txt`` (kept images in neither list are
    skipped as ``not-in-split-lists``). The output is assembled in a hidden folder next to
    ``out_dir`` and moved into place at the end; an existing ``out_dir`` is refused unless
    ``overwrite``, and only a folder this command wrote (``common.files.check_replaceable``).
    Returns the `PrepareReport`, also saved as ``<out_dir>/prepare_report.json``.

    Raises:
        ConfigError: an argument out of range. MissingArchiveError: an archive is missing.
        ArchiveError: an archive is damaged or not the official one. OutputExistsError: see
        above.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if max_side < 1:
        raise ConfigError(f"max_side must be a positive number of pixels, got {max_side}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    images_archive, annotations_archive = Path(images_archive), Path(annotations_archive)
    for path, official in ((images_archive, IMAGES_ARCHIVE),
                           (annotations_archive, ANNOTATIONS_ARCHIVE)):
        if not path.is_file():
            raise MissingArchiveError(f"archive {path} not found (expected the official "
                                      f"Oxford-IIIT Pet {official})")
    out = Path(out_dir)
    check_replaceable(out, marker=REPORT_FILE, overwrite=overwrite, writer=WRITER)

    skipped: dict[SkipReason, list[str]] = {}
    annotations = _read_annotations(annotations_archive, skipped)
    logger.info("%s: %d trimaps", annotations_archive, len(annotations.trimaps))
    if split == "official":
        missing = [f"annotations/{n}.txt" for n in ("trainval", "test")
                   if n not in annotations.lists]
        if missing:
            raise ArchiveError(f"{annotations_archive} lacks {', '.join(missing)}, needed by "
                               f"--split official (use --split random instead)")

    with staged_dir(out, marker=REPORT_FILE, overwrite=overwrite, writer=WRITER) as staging:
        pool = staging / "pool"
        pool.mkdir()
        kept, converted = _process_images(images_archive, annotations.trimaps, pool, skipped,
                                          max_side=max_side, jpeg_quality=jpeg_quality,
                                          max_pixels=max_pixels)
        if split == "random":
            train, test = seeded_split(kept, test_fraction, seed)
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
    if not train or ((split == "official" or test_fraction > 0) and not test):
        logger.warning("%s: the %s set is empty", out, "train" if not train else "test")
    logger.info("%s: %d train, %d test images, %d skipped archive members", out, len(train),
                len(test), report.num_skipped)
    return report


def _process_images(archive: Path, trimaps: dict[str, bytes], pool: Path,
                    skipped: dict[SkipReason, list[str]], *, max_side: int,
                    jpeg_quality: int,
                    max_pixels: Optional[int]) -> tuple[dict[str, str], dict[str, Conversion]]:
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

    for member in _regular_members(archive, skipped, relevant):
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
                                 jpeg_quality=jpeg_quality, max_pixels=max_pixels,
                                 source=f"{archive}:{member.name}")
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.pets",
        description="Turn the official Oxford-IIIT Pet archives into the tutorial's layout "
                    "<out>/{train,test}/{images/<name>.jpg,masks/<name>.png}. Archives missing "
                    "from --download-dir are downloaded (and MD5-checked) first.",
        formatter_class=HelpFormatter)
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
    out.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                     help="never decode an image with more pixels than this (checked from "
                          "its header)")
    out.add_argument("--jpeg-quality", type=int, default=95,
                     help="quality of the images that must be re-encoded (PNG, grayscale, "
                          "CMYK...); valid JPEGs are copied unchanged")
    out.add_argument("--examples", type=int, default=3,
                     help="example names shown per reason in the summary")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG lists every skipped file with the reason")
    add_debug_flag(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: resolve (download) the archives, prepare, print the summary table.
    Errors are raised (``python -m datasets.pets`` reports them through ``common.cli.run``:
    one line, exit code 2)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    # Before any download: a refused output folder should not cost an 800 MB transfer.
    check_replaceable(args.out, marker=REPORT_FILE, overwrite=args.overwrite, writer=WRITER)
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
        split=args.split, overwrite=args.overwrite, jpeg_quality=args.jpeg_quality,
        max_pixels=args.max_pixels)
    print(report.summary(examples=args.examples))
    return 0


if __name__ == "__main__":
    run(main)
