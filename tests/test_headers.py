"""datasets/headers.py: size and layout from the first bytes of JPEG, PNG and BMP files."""
from __future__ import annotations

import numpy as np
import pytest
from imagefiles import (bmp, bmp_header, cmyk_jpeg, jpeg, noise, paletted_png, png,
                        png_gray_alpha, with_exif_orientation)

from datasets.headers import (PNG_PALETTE, ImageHeader, parse_bmp_header, parse_jpeg_header,
                              parse_png_header, png_color_type, read_header)


def test_jpeg_header_gives_size_components_and_exif_orientation():
    header = parse_jpeg_header(with_exif_orientation(jpeg(noise(5, 7, 0)), 3))
    assert header == ImageHeader("jpeg", height=5, width=7, channels=3, bit_depth=8,
                                 orientation=3, sof_marker=0xC0)
    gray = parse_jpeg_header(jpeg(np.zeros((4, 9), np.uint8)))
    assert (gray.channels, gray.orientation, gray.height, gray.width) == (1, None, 4, 9)
    assert parse_jpeg_header(cmyk_jpeg(3, 5)).channels == 4
    assert parse_jpeg_header(png(np.zeros((3, 3), np.uint8))) is None
    assert parse_jpeg_header(b"\xff\xd8\xff\xe0\x00") is None  # truncated header


@pytest.mark.parametrize("array, channels, depth", [
    (np.zeros((3, 5), np.uint8), 1, 8),
    (np.zeros((3, 5, 3), np.uint8), 3, 8),
    (np.zeros((3, 5, 4), np.uint8), 4, 8),
    (np.zeros((3, 5), np.uint16), 1, 16),
])
def test_png_header_gives_size_channels_and_depth(array, channels, depth):
    assert parse_png_header(png(array)) == ImageHeader("png", 3, 5, channels, depth)


def test_bmp_header_gives_size_even_for_a_bomb():
    assert parse_bmp_header(bmp(noise(6, 11, 0))) == ImageHeader("bmp", 6, 11, 3, 24)
    bomb = parse_bmp_header(bmp_header(70000, 70000))
    assert (bomb.height, bomb.width, bomb.pixels) == (70000, 70000, 4_900_000_000)
    top_down = bmp_header(4, -3)  # a negative height stores the rows top-down
    assert parse_bmp_header(top_down).height == 3


@pytest.mark.parametrize("data", [
    b"", b"\xff", b"hello, I am text named .jpg", b"GIF89a\x01\x00\x01\x00",
    b"\xff\xd8\xff\xd9",                       # a JPEG with no frame header at all
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 4,          # a PNG cut inside its signature's first chunk
    bmp_header(0, 10),                           # a zero width
])
def test_read_header_refuses_what_is_not_a_jpeg_png_or_bmp(data):
    assert read_header(data) is None


def test_read_header_accepts_a_memoryview_of_a_numpy_buffer():
    data = np.frombuffer(png(np.zeros((2, 3), np.uint8)), np.uint8)
    assert read_header(memoryview(data)) == ImageHeader("png", 2, 3, 1, 8)


def test_png_color_type_tells_a_paletted_png_from_a_gray_one():
    indices = np.zeros((3, 4), np.uint8)
    assert png_color_type(paletted_png(indices, {0: (0, 0, 0)})) == PNG_PALETTE == 3
    assert png_color_type(png(indices)) == 0                       # gray: also one sample
    assert png_color_type(png(np.zeros((3, 4, 3), np.uint8))) == 2
    assert png_color_type(png_gray_alpha(indices)) == 4
    assert png_color_type(png(np.zeros((3, 4, 4), np.uint8))) == 6
    assert png_color_type(jpeg(noise(3, 4, 0))) is None
    assert png_color_type(b"\x89PNG\r\n\x1a\n") is None
