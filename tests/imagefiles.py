"""Bytes of small image files for the tests: well-formed ones of every layout the readers meet,
and the malformed kinds of the bad-input corpus. Imported by the test modules (pytest puts
``tests/`` on ``sys.path``)."""
from __future__ import annotations

import io
import struct

import cv2
import numpy as np
from PIL import Image  # a dependency of matplotlib; the only writer of CMYK JPEGs at hand


def jpeg(bgr: np.ndarray, quality: int = 95) -> bytes:
    """A baseline JPEG of a (h, w, 3) BGR or (h, w) gray array."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png(array: np.ndarray) -> bytes:
    """A PNG of a (h, w), (h, w, 3) BGR or (h, w, 4) BGRA array, uint8 or uint16."""
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def bmp(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".bmp", bgr)
    assert ok
    return buf.tobytes()


def noise(h: int, w: int, seed: int) -> np.ndarray:
    """(h, w, 3) uint8 random pixels."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def trimap(h: int, w: int) -> np.ndarray:
    """(h, w) uint8: background 2, a pet rectangle 1 with a one-pixel unknown band 3 around it."""
    t = np.full((h, w), 2, np.uint8)
    t[h // 4:3 * h // 4, w // 4:3 * w // 4] = 3
    t[h // 4 + 1:3 * h // 4 - 1, w // 4 + 1:3 * w // 4 - 1] = 1
    return t


def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment (little-endian TIFF, IFD0 with the orientation tag only)
    right after a JPEG's SOI."""
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0))
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def cmyk_jpeg(h: int, w: int, cmyk: tuple[int, int, int, int] = (200, 30, 10, 40)) -> bytes:
    """A 4-component (Adobe CMYK) JPEG of one colour."""
    buf = io.BytesIO()
    Image.new("CMYK", (w, h), cmyk).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def bmp_header(width: int, height: int, bits: int = 24) -> bytes:
    """Only the 54-byte header of a BMP (BITMAPINFOHEADER) claiming ``width x height``, with a
    few bytes of pixel data: what a decompression bomb or a damaged file looks like."""
    return (b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
            + b"\x00" * 64)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` share of a file, as an interrupted copy leaves it."""
    return data[:int(len(data) * keep)]


def png_gray_alpha(gray: np.ndarray) -> bytes:
    """A gray + alpha PNG (OpenCV cannot write one), fully opaque."""
    buf = io.BytesIO()
    Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), "LA").save(buf, "PNG")
    return buf.getvalue()


def paletted_png(indices: np.ndarray, colors: dict[int, tuple[int, int, int]],
                 transparent: int | None = None) -> bytes:
    """A paletted PNG (colour type 3, as Pascal VOC ships its masks; OpenCV cannot write one):
    ``indices`` (h, w) uint8 palette indices, ``colors`` index -> RGB (others black);
    ``transparent``: a palette index made fully transparent (a tRNS chunk)."""
    table = [0] * (3 * 256)
    for index, rgb in colors.items():
        table[3 * index:3 * index + 3] = rgb
    image = Image.fromarray(np.asarray(indices, np.uint8), "P")
    image.putpalette(table)
    buf = io.BytesIO()
    image.save(buf, "PNG", **({} if transparent is None else {"transparency": transparent}))
    return buf.getvalue()


def rgb_png(rgb: np.ndarray) -> bytes:
    """An RGB PNG of a (h, w, 3) uint8 **RGB** array (colour masks are given in RGB)."""
    return png(np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1]))
