"""What an image file says about itself before any pixel is decoded: format, size, channels.

The decode path (``datasets/decode.py``) reads this header first, so that an image too large to
decode safely is refused from a few dozen bytes, and a file whose contents are not a format we
read is refused without handing it to a decoder. Three formats are understood, whatever the
file's extension says:

- JPEG: the marker segments are walked up to the first frame header (SOF), which gives the
  height, width, components (1 gray, 3 colour, 4 CMYK/YCCK), precision and coding process; an
  APP1 ``Exif`` segment on the way gives the EXIF orientation tag.
- PNG: the IHDR chunk (width, height, bit depth, colour type).
- BMP: the DIB header (width, height, bits per pixel), ``BITMAPCOREHEADER`` or later.

Everything here is pure Python on ``bytes``: no NumPy, no OpenCV.
"""
from __future__ import annotations

import dataclasses
import struct

__all__ = ["ImageHeader", "read_header", "parse_jpeg_header", "parse_png_header",
           "parse_bmp_header", "png_color_type", "PNG_PALETTE", "JPEG", "PNG", "BMP"]

JPEG, PNG, BMP = "jpeg", "png", "bmp"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> samples per pixel: gray, RGB, palette index, gray + alpha, RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
PNG_PALETTE = 3   # the colour type of a paletted PNG (Pascal VOC's masks)
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                          0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """The stored size and layout of an image file.

    Attributes:
        format: ``"jpeg"``, ``"png"`` or ``"bmp"``.
        height, width: the stored pixel grid (before any EXIF rotation).
        channels: samples per pixel as stored: JPEG components, PNG samples (a palette counts
            as 1), BMP 1 for palette images (<= 8 bits) else 3 or 4.
        bit_depth: bits per sample (JPEG precision, PNG bit depth, BMP bits per pixel).
        orientation: the EXIF orientation tag of a JPEG (1 = as stored), None without one.
        sof_marker: the JPEG frame marker (0xC0 baseline, 0xC1 extended, 0xC2 progressive,
            others lossless/arithmetic), None for other formats.
    """

    format: str
    height: int
    width: int
    channels: int
    bit_depth: int
    orientation: int | None = None
    sof_marker: int | None = None

    @property
    def pixels(self) -> int:
        return self.height * self.width


def read_header(data: bytes | memoryview) -> ImageHeader | None:
    """The header of a JPEG, PNG or BMP file held in ``data`` (the whole file or a prefix that
    reaches past the header; ``bytes`` or a ``memoryview`` of a NumPy buffer), or None when ``data`` is none of them, is empty, or its header is
    damaged or claims a zero size."""
    for parse in (parse_jpeg_header, parse_png_header, parse_bmp_header):
        header = parse(data)
        if header is not None:
            return header if header.height > 0 and header.width > 0 else None
    return None


def parse_jpeg_header(data: bytes) -> ImageHeader | None:
    """Walk the JPEG marker segments up to the first frame header; None if ``data`` is not a
    JPEG or the header is damaged. Reads the EXIF orientation from an APP1 ``Exif`` segment."""
    if bytes(data[:2]) != b"\xff\xd8":
        return None
    orientation: int | None = None
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
        (length,) = struct.unpack(">H", bytes(data[pos + 2:pos + 4]))
        segment = bytes(data[pos + 4:pos + 2 + length])
        if length < 2 or len(segment) != length - 2:
            return None
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00") and orientation is None:
            orientation = _exif_orientation(segment[6:])
        elif marker in _SOF_MARKERS:
            if len(segment) < 6:
                return None
            precision, height, width, components = struct.unpack(">BHHB", segment[:6])
            return ImageHeader(JPEG, height, width, components, precision, orientation, marker)
        pos += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
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


def parse_png_header(data: bytes) -> ImageHeader | None:
    """Size and layout from a PNG's IHDR chunk (the first chunk), None if not a PNG."""
    if bytes(data[:8]) != _PNG_SIGNATURE or bytes(data[12:16]) != b"IHDR" or len(data) < 26:
        return None
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", bytes(data[16:26]))
    if colour_type not in _PNG_CHANNELS:
        return None
    return ImageHeader(PNG, height, width, _PNG_CHANNELS[colour_type], bit_depth)


def png_color_type(data: bytes | memoryview) -> int | None:
    """The IHDR colour type of a PNG (0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA), None
    for anything that ``parse_png_header`` does not read. The mask readers use it to tell a
    paletted mask (``PNG_PALETTE``), whose decoded colours come from its palette, from a gray
    one: both have one sample per pixel."""
    if parse_png_header(data) is None:
        return None
    return int(data[25])


def parse_bmp_header(data: bytes) -> ImageHeader | None:
    """Size from a BMP's DIB header, None if not a BMP. A negative height (top-down rows)
    counts by its absolute value."""
    if bytes(data[:2]) != b"BM" or len(data) < 26:
        return None
    (dib_size,) = struct.unpack("<I", bytes(data[14:18]))
    if dib_size == 12:  # BITMAPCOREHEADER (OS/2): 16-bit unsigned sizes
        width, height, _planes, bits = struct.unpack("<HHHH", bytes(data[18:26]))
    elif dib_size >= 40 and len(data) >= 30:  # BITMAPINFOHEADER and its successors
        width, height, _planes, bits = struct.unpack("<iiHH", bytes(data[18:30]))
        height = abs(height)
    else:
        return None
    if width <= 0:
        return None
    channels = 1 if bits <= 8 else (4 if bits == 32 else 3)
    return ImageHeader(BMP, height, width, channels, bits)
