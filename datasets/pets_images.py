"""``images.tar.gz`` -> the kept images: the per-image decision of ``python -m datasets.pets``.

Per image, in this order (the first failing check is the reason reported):

1. ``._*`` macOS resource-fork junk, names not ending in ``.jpg`` (the ``.mat`` files), repeated
   names, images without a trimap, members over 256 MiB: skipped (``process_images``).
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

Steps 2-5 are ``check_image``, on the bytes of one image and its trimap.
"""
from __future__ import annotations

import dataclasses
import logging
import posixpath
from pathlib import Path
from typing import Optional

import cv2

from datasets.archives import ArchiveError
from datasets.decode import MAX_PIXELS, ImageTooLargeError, UnreadableFileError, decode_image
from datasets.headers import JPEG, PNG, ImageHeader, read_header
from datasets.labels import DataFormatError, check_trimap_values, decode_trimap
from datasets.pets_archives import IMAGES_ARCHIVE, regular_members
from datasets.pets_report import MAX_MEMBER_BYTES, Conversion, SkipReason

__all__ = ["ImageCheck", "check_image", "process_images"]

logger = logging.getLogger(__name__)

# Huffman-coded 8-bit JPEGs: what every decoder (including tf.io.decode_jpeg) reads.
_PLAIN_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2})


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


def process_images(archive: Path, trimaps: dict[str, bytes], pool: Path,
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

    for member in regular_members(archive, skipped, relevant):
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
        elif member.size > MAX_MEMBER_BYTES:
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
