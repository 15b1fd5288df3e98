"""Fit an image or a mask to a fixed size without resizing: crop what is too large, pad what is
too small, both centred.

This is the original tutorial's pre-processing, with its exact semantics:

1. ``crop_shape``: a side of odd length first loses its **first** row (height) or column
   (width), so every side becomes even; then a side longer than the target is centre-cropped.
2. ``padding``: a side shorter than the target is padded on both ends with a constant ``fill``.

Pixels are never interpolated, so a trimap stays a trimap. Both functions work on 2-D arrays
``(h, w)`` (masks, labels) and on 3-D arrays ``(h, w, c)`` (images); only the first two axes are
touched.

Where the extra pixel goes. When the amount to crop or pad on an axis is odd (possible when the
target side is odd, since step 1 leaves every side even), the two ends cannot get the same amount.
Both functions then give the **end** of the axis (bottom row, right column) the larger share:

* crop: ``before = excess // 2`` rows are removed at the top, ``excess - before`` at the bottom;
* pad:  ``before = missing // 2`` rows are added at the top, ``missing - before`` at the bottom.

So in both cases the kept/placed content starts at offset ``floor(difference / 2)``, the same
convention as ``tf.image.resize_with_crop_or_pad``. With an even target (the tutorial's 512x512)
the two ends always get the same amount.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np


def as_size(size: Sequence[int], *, name: str = "size") -> tuple[int, int]:
    """Validate a target size and return it as ``(height, width)`` Python ints.

    Accepts any length-2 sequence of positive integers (Python or NumPy ints). Raises
    ``ValueError``/``TypeError`` that say what was given and what is valid, instead of failing
    later with an obscure shape error.
    """
    try:
        values = tuple(size)
    except TypeError:
        raise TypeError(
            f"{name} must be two positive integers (height, width), got {size!r}") from None
    if len(values) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be two positive integers (height, width), got {size!r}")
    height, width = int(values[0]), int(values[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"{name} must be two positive integers (height, width), got {size!r}")
    return height, width


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        shape = getattr(image, "shape", None)
        raise ValueError(
            f"expected a 2-D (h, w) or 3-D (h, w, c) array, got {type(image).__name__} "
            f"with shape {shape}")


def crop_shape(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Make every side even by dropping its first row/column, then centre-crop sides longer
    than ``size``.

    Args:
        image: ``(h, w)`` or ``(h, w, c)`` array of any dtype.
        size: target ``(height, width)``.

    Returns:
        A **view** of ``image`` (no copy) of shape ``(h', w'[, c])`` with ``h' <= height`` or
        ``h'`` even (likewise for the width): sides shorter than the target are left for
        ``padding``. When the crop excess on an axis is odd, the extra row/column is removed at
        the end (bottom/right); see the module docstring.
    """
    _check_image(image)
    target = as_size(size)
    out = image
    for axis, side in enumerate(target):
        length = out.shape[axis]
        # Odd side: drop the first row/column, as the original does, so the side becomes even.
        start = length % 2
        length -= start
        if length > side:
            start += (length - side) // 2  # top/left loses floor(excess / 2)
            length = side
        index = [slice(None)] * out.ndim
        index[axis] = slice(start, start + length)
        out = out[tuple(index)]
    return out


def padding(image: np.ndarray, size: Sequence[int], fill: int | float = 0) -> np.ndarray:
    """Pad ``image`` with the constant ``fill`` on both ends of each axis up to ``size``.

    Args:
        image: ``(h, w)`` or ``(h, w, c)`` array with ``h <= height`` and ``w <= width``
            (run ``crop_shape`` first for larger inputs).
        size: target ``(height, width)``.
        fill: the constant written into the padded border (datasets/loading.py pads images
            with ``IMAGE_FILL`` and labels with ``LABEL_FILL``); must be representable in
            ``image.dtype``.

    Returns:
        A new array of shape ``(height, width[, c])`` and the dtype of ``image``, the input
        placed at offset ``(floor((height - h) / 2), floor((width - w) / 2))``: when the
        padding on an axis is odd, the extra row/column goes to the end (bottom/right).
    """
    _check_image(image)
    height, width = as_size(size)
    h, w = image.shape[:2]
    if h > height or w > width:
        raise ValueError(
            f"padding cannot shrink an array: its size {h}x{w} is larger than the target "
            f"{height}x{width}; call crop_shape(image, size) first")
    # An unsafe cast wraps (-1 -> 255 in uint8) or truncates (2.5 -> 2): refuse instead.
    if not np.array_equal(np.asarray(fill).astype(image.dtype), fill, equal_nan=True):
        raise ValueError(f"fill={fill!r} is not representable in the array's dtype {image.dtype}")
    out = np.full((height, width, *image.shape[2:]), fill, dtype=image.dtype)
    top, left = (height - h) // 2, (width - w) // 2
    out[top:top + h, left:left + w] = image
    return out
