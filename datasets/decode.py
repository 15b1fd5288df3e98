"""The one decode path of the project: every image and mask that any reader loads (the data
layer, ``python -m datasets.pets``, test.py and draw.py through ``datasets.loading.load_image``)
goes through ``decode_image`` or ``decode_unchanged``.

Per file::

    bytes --read_header (datasets/headers.py)--> format, stored height x width
          --refuse: empty, not JPEG/PNG/BMP, more than max_pixels pixels--  (nothing decoded)
          --cv2.imdecode on the stored grid--> (h, w, 3) uint8 RGB  |  mask as stored
          --refuse: decoder failure, decoded size != header size--

Every refusal is an ``UnreadableFileError`` naming the file: readers skip the file and count it
(``ImageTooLargeError`` for the pixel limit is a subclass, so it is skipped and counted too).
Only OpenCV's "Insufficient memory" is let through: that is the machine, not the file.

EXIF orientation is **ignored**: images are decoded on their stored pixel grid, which is the grid
the masks are drawn on (an Oxford trimap follows the stored JPEG, not its rotated display). So an
image and its mask always line up, whatever the orientation tag says; a photo whose camera stored
it sideways is read (and drawn by draw.py) sideways.

The pixel limit ``MAX_PIXELS`` (50 megapixels, e.g. 8660 x 5773) bounds what one decode may
allocate: about 150 MB as uint8 RGB, and several GB in the network's activations at full
resolution. It is far above any photo of the pet data (at most a few megapixels) and above
today's phone cameras; a header claiming 70000 x 70000 (a decompression bomb, or a damaged file)
is refused from its first bytes. Pass ``max_pixels`` (``--max-pixels`` on the commands) to move
it; ``None`` leaves only OpenCV's own cap (2**30 pixels).
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from common.errors import DataError
from datasets.headers import ImageHeader, read_header

__all__ = ["MAX_PIXELS", "UnreadableFileError", "ImageTooLargeError", "read_file",
           "check_header", "decode_image", "decode_unchanged", "read_image_header"]

MAX_PIXELS = 50_000_000

# Stored grid, 3 channels BGR: gray is replicated, alpha dropped, 16 bits cut to 8, CMYK
# converted; the EXIF orientation tag is not applied.
_COLOR_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
# As stored (channels, bit depth); IMREAD_UNCHANGED never applies EXIF orientation.
_UNCHANGED_FLAGS = cv2.IMREAD_UNCHANGED


class UnreadableFileError(DataError, ValueError):
    """An image or mask file exists but cannot be decoded (empty, truncated, not an image,
    over the pixel limit). Readers skip such a file with a warning and a count."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot decode {path}: {reason}")
        self.path = path
        self.reason = reason


class ImageTooLargeError(UnreadableFileError):
    """The header says the image has more pixels than the limit; it was not decoded."""


def read_file(path: str | os.PathLike) -> np.ndarray:
    """The bytes of a file as a 1-D uint8 array (``np.fromfile``: works with non-ASCII paths on
    every platform, unlike ``cv2.imread``).

    Raises:
        UnreadableFileError: the file is empty.
        OSError: the file cannot be opened (missing, permissions): not the file's fault.
    """
    buffer = np.fromfile(os.fspath(path), dtype=np.uint8)
    if buffer.size == 0:
        raise UnreadableFileError(os.fspath(path), "the file is empty")
    return buffer


def check_header(buffer: np.ndarray | bytes, source: str, *,
                 max_pixels: int | None = MAX_PIXELS) -> ImageHeader:
    """The header of the image in ``buffer``, checked against the pixel limit.

    Args:
        buffer: the file's bytes (uint8 array or ``bytes``).
        source: names the file in messages (a path, or ``archive:member``).
        max_pixels: largest ``height * width`` accepted; None for no limit of ours.

    Raises:
        UnreadableFileError: empty, not a JPEG/PNG/BMP, or a damaged header.
        ImageTooLargeError: more than ``max_pixels`` pixels.
    """
    if len(buffer) == 0:
        raise UnreadableFileError(source, "the file is empty")
    header = read_header(memoryview(buffer))
    if header is None:
        raise UnreadableFileError(
            source, "not a JPEG, PNG or BMP image, or its header is damaged")
    if max_pixels is not None and header.pixels > max_pixels:
        raise ImageTooLargeError(
            source, f"its {header.format.upper()} header says {header.width}x{header.height} = "
                    f"{header.pixels / 1e6:.1f} megapixels, over the limit of "
                    f"{max_pixels / 1e6:g} megapixels (raise it with --max-pixels / max_pixels "
                    f"if the image is genuine)")
    return header


def _imdecode(buffer: np.ndarray | bytes, source: str, flags: int,
              header: ImageHeader) -> np.ndarray:
    """``cv2.imdecode`` with every failure turned into ``UnreadableFileError``, and the result
    checked against the header's size."""
    array = np.frombuffer(buffer, np.uint8) if isinstance(buffer, (bytes, bytearray)) else buffer
    try:
        decoded = cv2.imdecode(array, flags)
    except cv2.error as error:
        if "Insufficient memory" in str(error):
            raise  # the machine ran out of memory: the command line reports it (exit 3)
        detail = " ".join(str(error).split())
        raise UnreadableFileError(source, f"OpenCV refused it ({detail})") from None
    if decoded is None:
        raise UnreadableFileError(source, f"the {header.format.upper()} data is truncated or "
                                          f"damaged")
    if decoded.shape[:2] != (header.height, header.width):
        raise UnreadableFileError(
            source, f"decoded {decoded.shape[1]}x{decoded.shape[0]} but its header says "
                    f"{header.width}x{header.height}")
    return decoded


def decode_image(buffer: np.ndarray | bytes, source: str, *,
                 max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode an image into uint8 **RGB** ``(h, w, 3)`` on its stored pixel grid.

    Grayscale becomes 3 equal channels, an alpha channel is dropped (the stored colour is kept,
    not blended), 16-bit samples become 8-bit (``>> 8``), CMYK/YCCK JPEGs become RGB; the EXIF
    orientation is ignored (see the module docstring).

    Raises:
        UnreadableFileError: see ``check_header``; the decoder failed or disagreed with the
            header. ``ImageTooLargeError`` over ``max_pixels``.
    """
    header = check_header(buffer, source, max_pixels=max_pixels)
    image = _imdecode(buffer, source, _COLOR_FLAGS, header)      # (h, w, 3) BGR
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)     # in place: no second buffer


def decode_unchanged(buffer: np.ndarray | bytes, source: str, *,
                     max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode a file as stored, for masks: ``(h, w)`` or ``(h, w, c)``, uint8 or uint16.

    Raises:
        UnreadableFileError: as ``decode_image``.
    """
    header = check_header(buffer, source, max_pixels=max_pixels)
    return _imdecode(buffer, source, _UNCHANGED_FLAGS, header)


def read_image_header(path: str | os.PathLike, *,
                      max_pixels: int | None = MAX_PIXELS) -> ImageHeader:
    """The checked header of an image file, without decoding it (the streaming pipeline's
    up-front check).

    Raises:
        UnreadableFileError: as ``check_header``.
    """
    return check_header(read_file(path), os.fspath(path), max_pixels=max_pixels)
