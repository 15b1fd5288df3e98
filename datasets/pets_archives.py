"""The official Oxford-IIIT Pet archives: where they come from, and what is read out of them.

``fetch_archive`` finds an archive in the download folder or downloads it (``<file>.part``
first, resumed with an HTTP Range request, checked against the official MD5 and only then
renamed: ``datasets/download.py``). ``read_annotations`` holds the trimaps and the two split
lists of ``annotations.tar.gz`` in memory; ``regular_members`` is the one filter both archives
are read through (``datasets/archives.py`` streams a tar and never extracts a member by its own
path, so nothing can be written outside the output folder).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

from common.errors import DataError
from datasets.archives import ArchiveError, ArchiveMember, iter_members
from datasets.download import ChecksumError, ProgressCallback, download, md5sum
from datasets.pets_report import MAX_MEMBER_BYTES, SkipReason

__all__ = ["BASE_URL", "IMAGES_ARCHIVE", "ANNOTATIONS_ARCHIVE", "OFFICIAL_MD5",
           "MissingArchiveError", "fetch_archive", "require_archives", "regular_members",
           "Annotations", "read_annotations"]

logger = logging.getLogger(__name__)

BASE_URL = "https://thor.robots.ox.ac.uk/~vgg/data/pets/"
IMAGES_ARCHIVE = "images.tar.gz"
ANNOTATIONS_ARCHIVE = "annotations.tar.gz"
# MD5 of the official archives; a mirror serving the same files passes the same check.
OFFICIAL_MD5 = {
    IMAGES_ARCHIVE: "5c4f3ee8e5d25df40f4fd59a7f44e54c",
    ANNOTATIONS_ARCHIVE: "95a8c909bbe2e81eed6a22bccdf3f68f",
}


class MissingArchiveError(DataError, FileNotFoundError):
    """An archive given (or expected) on disk is not there."""


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


def require_archives(images_archive: Path, annotations_archive: Path) -> None:
    """Raise `MissingArchiveError` naming the first of the two archives that is not a file."""
    for path, official in ((images_archive, IMAGES_ARCHIVE),
                           (annotations_archive, ANNOTATIONS_ARCHIVE)):
        if not path.is_file():
            raise MissingArchiveError(f"archive {path} not found (expected the official "
                                      f"Oxford-IIIT Pet {official})")


def regular_members(path: Path, skipped: dict[SkipReason, list[str]],
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
class Annotations:
    """What `read_annotations` keeps of ``annotations.tar.gz``."""

    trimaps: dict[str, bytes]          # name -> PNG bytes of annotations/trimaps/<name>.png
    lists: dict[str, list[str]]        # "trainval" / "test" -> names, in file order


def read_annotations(path: Path, skipped: dict[SkipReason, list[str]]) -> Annotations:
    """Trimaps (~7,400 small PNGs, ~20 MB in all) and the two split lists, held in memory."""
    trimaps: dict[str, bytes] = {}
    lists: dict[str, list[str]] = {}

    def relevant(parts: tuple[str, ...]) -> bool:
        return parts[:2] == ("annotations", "trimaps")

    for member in regular_members(path, skipped, relevant):
        parts = member.parts
        if len(parts) == 3 and relevant(parts):
            file_name = parts[2]
            stem, suffix = posixpath.splitext(file_name)
            if file_name.startswith("._"):
                skipped.setdefault(SkipReason.MACOS_JUNK, []).append(member.name)
            elif suffix.lower() == ".png":
                if member.size > MAX_MEMBER_BYTES:
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
    return Annotations(trimaps, lists)


def _parse_list(data: bytes, where: str) -> list[str]:
    """Names from a split list: lines ``<name> <class id> <species> <breed id>``; blank lines
    and ``#`` comments skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{where} is not UTF-8 text ({exc})") from exc
    return [line.split()[0] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
