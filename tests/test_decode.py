"""datasets/decode.py: the one decode path, its header check and pixel limit, and the stored
grid (EXIF orientation ignored)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from imagefiles import (bmp, bmp_header, cmyk_jpeg, jpeg, noise, png, truncated,
                        with_exif_orientation)

from datasets import decode
from datasets.headers import read_header
from datasets.decode import (MAX_PIXELS, ImageTooLargeError, UnreadableFileError,
                             decode_image, decode_unchanged, read_image_header)


def test_every_layout_becomes_rgb_uint8_on_the_stored_grid():
    bgr = noise(5, 7, 0)
    np.testing.assert_array_equal(decode_image(png(bgr), "a.png"), bgr[..., ::-1])
    np.testing.assert_array_equal(decode_image(bmp(bgr), "a.bmp"), bgr[..., ::-1])
    gray = decode_image(png(bgr[..., 0]), "gray.png")
    np.testing.assert_array_equal(gray, np.repeat(bgr[..., :1], 3, axis=-1))
    bgra = np.dstack([bgr, np.zeros((5, 7), np.uint8)])      # fully transparent: colour kept
    np.testing.assert_array_equal(decode_image(png(bgra), "rgba.png"), bgr[..., ::-1])
    deep = bgr[..., 0].astype(np.uint16) * 257                # 16 bits: v * 257 >> 8 == v
    np.testing.assert_array_equal(decode_image(png(deep), "deep.png")[..., 1], bgr[..., 0])
    cmyk = decode_image(cmyk_jpeg(4, 6, (0, 255, 255, 0)), "cmyk.jpg")  # pure red
    assert cmyk.shape == (4, 6, 3) and (cmyk[..., 0] > 240).all() and (cmyk[..., 1:] < 15).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_ignored_for_all_eight_values(orientation):
    # A 6x10 image with a bright top-left block: every orientation but 1 would move it (5-8
    # also swap the sides) if the tag were applied; the mask is drawn on the stored grid.
    bgr = np.zeros((6, 10, 3), np.uint8)
    bgr[:3, :4] = 255
    plain = jpeg(bgr, quality=100)
    tagged = with_exif_orientation(plain, orientation)
    decoded = decode_image(tagged, f"exif{orientation}.jpg")
    np.testing.assert_array_equal(decoded, decode_image(plain, "plain.jpg"))
    assert decoded.shape == (6, 10, 3)
    assert decoded[:3, :4].min() > 200 and decoded[3:, 4:].max() < 50
    header = read_header(tagged)  # the header reports the stored grid and the tag
    assert (header.height, header.width, header.orientation) == (6, 10, orientation)
    if orientation >= 5:  # what applying the tag would have done: sides swapped
        rotated = cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR)
        assert rotated.shape == (10, 6, 3)


@pytest.mark.parametrize("data, reason", [
    (b"", "the file is empty"),
    (b"this is text, named .jpg", "not a JPEG, PNG or BMP image"),
    (truncated(jpeg(noise(40, 50, 1))), "JPEG data is truncated or damaged"),
    (truncated(png(noise(40, 50, 1)), 0.7), "PNG data is truncated or damaged"),
    (truncated(bmp(noise(40, 50, 1)), 0.9), "BMP data is truncated or damaged"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "not a JPEG, PNG or BMP image"),  # header cut short
])
def test_every_decoder_failure_is_an_unreadable_file_naming_it(data, reason):
    with pytest.raises(UnreadableFileError, match=reason) as error:
        decode_image(data, "photos/x.jpg")
    assert error.value.path == "photos/x.jpg" and "photos/x.jpg" in str(error.value)


def test_the_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch):
    def never(*args):
        raise AssertionError("decoded although the header is over the limit")

    monkeypatch.setattr(decode.cv2, "imdecode", never)
    with pytest.raises(ImageTooLargeError, match=r"70000x70000 = 4900\.0 megapixels, over the "
                                                 r"limit of 50 megapixels"):
        decode_image(bmp_header(70000, 70000), "bomb.bmp")
    assert MAX_PIXELS == 50_000_000


def test_the_pixel_limit_is_inclusive_and_can_be_moved_or_lifted():
    data = png(noise(10, 12, 2))  # 120 pixels
    assert decode_image(data, "a.png", max_pixels=120).shape == (10, 12, 3)
    with pytest.raises(ImageTooLargeError, match="over the limit of 0.000119 megapixels"):
        decode_image(data, "a.png", max_pixels=119)
    assert decode_image(data, "a.png", max_pixels=None).shape == (10, 12, 3)
    with pytest.raises(ImageTooLargeError):
        decode_unchanged(data, "mask.png", max_pixels=100)


def test_an_opencv_refusal_past_our_limit_is_still_a_counted_skip():
    # With our limit lifted, OpenCV's own cap (2**30 pixels) refuses the bomb by raising.
    with pytest.raises(UnreadableFileError, match="OpenCV refused it"):
        decode_image(bmp_header(70000, 70000), "bomb.bmp", max_pixels=None)


def test_masks_are_decoded_as_stored():
    trimap = np.array([[1, 2], [3, 2]], np.uint16)
    out = decode_unchanged(png(trimap), "m.png")
    assert out.dtype == np.uint16 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, trimap)
    rgb = decode_unchanged(png(np.zeros((2, 3, 3), np.uint8)), "m.png")
    assert rgb.shape == (2, 3, 3)


def test_read_image_header_reads_the_size_without_decoding(tmp_path, monkeypatch):
    (tmp_path / "a.jpg").write_bytes(with_exif_orientation(jpeg(noise(6, 9, 0)), 6))
    monkeypatch.setattr(decode.cv2, "imdecode", None)
    header = read_image_header(tmp_path / "a.jpg")
    assert (header.height, header.width, header.orientation) == (6, 9, 6)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UnreadableFileError, match="empty"):
        read_image_header(tmp_path / "empty.jpg")


def test_a_decoder_result_that_disagrees_with_the_header_is_refused(monkeypatch):
    # Were a decoder to rotate or resize behind our back, the pixels would no longer sit on
    # the mask's grid: refused (and skipped) rather than silently misaligned.
    real = cv2.imdecode
    monkeypatch.setattr(decode.cv2, "imdecode",
                        lambda buffer, flags: np.ascontiguousarray(real(buffer, flags)
                                                                   .swapaxes(0, 1)))
    with pytest.raises(UnreadableFileError, match="decoded 6x10 but its header says 10x6"):
        decode_image(png(noise(6, 10, 3)), "a.png")
