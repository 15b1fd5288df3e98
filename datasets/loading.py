"""Loading examples: files -> uint8 arrays at the training size, one at a time
(``load_example``) or a list into memory (``load_examples``; ``read_data`` in datasets/data.py
reads a whole folder with it).

Data flow, one example (``load_example`` is the only place where this logic lives; ``read_data``
and ``make_tf_dataset`` both call it)::

    images/<name>  --load_image (datasets/decode.py)-->  uint8 RGB (h, w, 3), stored grid
                   --crop_shape/padding(fill IMAGE_FILL = 0)-->  (H, W, 3)
    masks/<stem>.png --read_mask (datasets/labels.py), size checked-->  mask as stored
                   --mask_to_label, every value checked-->  uint8 (h, w): class indices, 255 ignore
                   --fit_label: crop_shape/padding(fill LABEL_FILL = 0)-->  (H, W)

What goes wrong with files, and what happens:

- a file that cannot be decoded (empty, truncated, not a JPEG/PNG/BMP, over the pixel limit):
  ``UnreadableFileError``; readers **skip** the example and report the count once
  (``report_skipped``);
- a mask that does not fit its format or its image (trimap values outside {1, 2, 3}, an index
  >= C, a colour not in the palette, a layout other than the folder's, another size):
  ``DataFormatError`` naming the files.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from common.errors import DataError, format_list
from datasets.classes import BACKGROUND_CLASS
from datasets.decode import (MAX_PIXELS, ImageTooLargeError, UnreadableFileError, decode_image,
                             read_file)
from datasets.examples import Example
from datasets.labels import TRIMAP, DataFormatError, LabelFormat, mask_to_label, read_mask
from datasets.utils import as_size, crop_shape, padding

__all__ = [
    "IMAGE_FILL", "LABEL_FILL", "load_image", "read_example_mask", "fit_label", "load_example",
    "load_label", "load_examples", "report_skipped",
]

logger = logging.getLogger(__name__)

# Padding values: images get black borders; labels get the background class in every mask
# format (trimap, index, palette), so the padded border is background in the loss and in the
# accuracy, as in the original (which padded its trimaps before mapping, with their background
# value 2).
IMAGE_FILL = 0
LABEL_FILL = BACKGROUND_CLASS


def load_image(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode an image file into uint8 **RGB** ``(h, w, 3)`` at full resolution, on its stored
    pixel grid (the EXIF orientation is ignored, as for the masks).

    This is ``datasets.decode.decode_image`` on the file's bytes: grayscale becomes 3 equal
    channels, the alpha channel of RGBA is dropped, 16-bit samples become 8-bit (``>> 8``),
    CMYK JPEGs become RGB, whatever the extension says the content is (a PNG named ``.jpg`` is
    read as a PNG). The original kept ``cv2.imread``'s BGR.

    Raises:
        UnreadableFileError: the file is empty, truncated, not a JPEG/PNG/BMP image, or over
            ``max_pixels`` pixels (``ImageTooLargeError``; checked from the header, before
            decoding).
        OSError: the file cannot be opened.
    """
    path = os.fspath(path)
    return decode_image(read_file(path), path, max_pixels=max_pixels)


def read_example_mask(example: Example, image_shape: Sequence[int] | None = None, *,
                      label_format: LabelFormat | None = None,
                      max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """The example's mask as stored (``datasets.labels.decode_mask``: values not converted),
    its layout checked against the format and its size against ``image_shape``.

    Raises:
        UnreadableFileError: the mask cannot be decoded.
        DataFormatError: no mask path, a layout that is not the format's, or a size that
            differs from ``image_shape`` (both files and sizes are named).
    """
    if example.mask_path is None:
        raise DataFormatError(f"{example.name} has no mask path: list the folder with "
                              f"list_examples(data_dir, no_label=False), or pass no_label=True")
    mask = read_mask(example.mask_path, label_format or TRIMAP, max_pixels=max_pixels)
    if image_shape is not None and mask.shape[:2] != tuple(image_shape):
        raise DataFormatError(
            f"mask {example.mask_path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its "
            f"image {example.image_path} is {image_shape[0]}x{image_shape[1]}: a mask must have "
            f"exactly its image's size")
    return mask


def fit_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A full-resolution label cropped like its image and padded with ``LABEL_FILL``."""
    return padding(crop_shape(label, size), size, fill=LABEL_FILL)


def load_example(example: Example, image_size: Sequence[int], no_label: bool = False, *,
                 max_pixels: int | None = MAX_PIXELS,
                 label_format: LabelFormat | None = None,
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Load one example at ``image_size``: the single place where the per-file logic lives.

    Args:
        example: from ``list_examples``.
        image_size: ``(H, W)``.
        no_label: skip the mask and return ``(image, None)``.
        max_pixels: the pixel limit of ``load_image`` (images and masks).
        label_format: how to read the mask (``datasets.labels.LabelFormat``); None: trimap.

    Returns:
        ``image`` uint8 RGB ``(H, W, 3)``: ``crop_shape`` then ``padding`` with ``IMAGE_FILL``.
        ``label`` uint8 ``(H, W)`` or None: ``load_label``, cropped like the image and padded
        with ``LABEL_FILL`` (class 0, background). For trimaps: 1 -> ``example.foreground_class``, 2 -> 0,
        3 -> ``IGNORE_LABEL``.

    Raises:
        UnreadableFileError: the image or the mask cannot be decoded (callers skip).
        DataFormatError: the mask does not fit its format (values outside the format's, a
            layout other than the folder's) or its size differs from its image's (both files
            and sizes are named); ``example`` has no mask although labels are asked for.
        ValueError, TypeError: ``image_size`` is not two positive ints.
    """
    size = as_size(image_size, name="image_size")
    full = load_image(example.image_path, max_pixels=max_pixels)     # (h, w, 3)
    image = padding(crop_shape(full, size), size, fill=IMAGE_FILL)  # (H, W, 3), a new array
    if no_label:
        return image, None
    label = load_label(example, image_shape=full.shape[:2], max_pixels=max_pixels,
                       label_format=label_format)                   # (h, w)
    return image, fit_label(label, size)


def load_label(example: Example, image_shape: Sequence[int] | None = None, *,
               max_pixels: int | None = MAX_PIXELS,
               label_format: LabelFormat | None = None) -> np.ndarray:
    """The label of ``example`` at full resolution (no crop, no pad): uint8 ``(h, w)`` class
    indices, ``IGNORE_LABEL`` for ignored pixels (for trimaps: 0 background,
    ``example.foreground_class`` for the animal, ``IGNORE_LABEL`` for unknown).

    Args:
        example: an example with a ``mask_path``.
        image_shape: ``(h, w)`` of the decoded image, checked against the mask's size.
        max_pixels: the pixel limit for the mask.
        label_format: how to read the mask; None: trimap.

    Raises:
        UnreadableFileError: the mask cannot be decoded.
        DataFormatError: no mask path, a mask that does not fit its format, or a size that
            differs from ``image_shape`` (both files and sizes are named).
    """
    label_format = label_format or TRIMAP
    mask = read_example_mask(example, image_shape, label_format=label_format,
                             max_pixels=max_pixels)
    return mask_to_label(mask, label_format, example.mask_path,
                         foreground_class=example.foreground_class)


def load_examples(examples: Sequence[Example], image_size: Sequence[int], no_label: bool = False,
                  *, where: str = "load_examples", max_pixels: int | None = MAX_PIXELS,
                  label_format: LabelFormat | None = None,
                  ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Load a list of examples into memory (``read_data`` for a folder; scripts use it for
    subsets such as a train/validation split).

    Unreadable files are skipped with one warning (count and names) at the end, as in
    ``read_data``; ``where`` names the source in that warning.

    Raises:
        DataError: not one example could be decoded.
        DataFormatError: see ``load_example``.

    Returns:
        ``(X uint8 (N, H, W, 3), y uint8 (N, H, W) or None, names)``, N the readable examples.
    """
    size = as_size(image_size, name="image_size")
    height, width = size
    images = np.empty((len(examples), height, width, 3), dtype=np.uint8)
    labels = None if no_label else np.empty((len(examples), height, width), dtype=np.uint8)

    names: list[str] = []
    skipped: list[str] = []
    for example in examples:
        try:
            image, label = load_example(example, size, no_label=no_label, max_pixels=max_pixels,
                                        label_format=label_format)
        except UnreadableFileError as error:
            skipped.append(error)
            continue
        row = len(names)  # rows stay dense: a skipped file leaves no hole
        images[row] = image
        if labels is not None:
            labels[row] = label
        names.append(example.name)

    if skipped:
        report_skipped(skipped, len(examples), where)
        # Shrink in place (realloc) instead of copying the kept rows; no views exist yet.
        images.resize((len(names), height, width, 3), refcheck=False)
        if labels is not None:
            labels.resize((len(names), height, width), refcheck=False)
    logger.info("%s: %d examples at %dx%d, %.1f MB", where, len(names), height, width,
                (images.nbytes + (0 if labels is None else labels.nbytes)) / 1e6)
    return images, labels, names


def report_skipped(skipped: Sequence[UnreadableFileError], total: int, where: str) -> None:
    """One warning for the files a reader skipped: their count, how many were over the pixel
    limit, and their paths. Raises ``DataError`` when nothing was left."""
    too_large = sum(isinstance(error, ImageTooLargeError) for error in skipped)
    logger.warning("%s: skipped %d unreadable file(s) of %d examples%s: %s", where, len(skipped),
                   total, f" ({too_large} over the pixel limit)" if too_large else "",
                   format_list([error.path for error in skipped], limit=50))
    if len(skipped) == total:
        raise DataError(f"none of the {total} examples in {where} could be decoded, e.g. "
                        f"{skipped[0]}")
