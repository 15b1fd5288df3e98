"""Training-time augmentation on uint8 arrays: one random geometric transform applied
identically to an image and its label.

Shaped for ``DataSet(augment=...)`` and ``make_tf_dataset(augment=...)``: a function
``(image, label, rng) -> (image, label)`` that keeps shapes and dtypes and draws all its
randomness from ``rng``, so a seeded generator reproduces it exactly.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# (image (H, W, 3) uint8, label (H, W) uint8 or None, rng) -> (image, label), shapes unchanged.
AugmentFn = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator],
                     "tuple[np.ndarray, np.ndarray | None]"]


def random_flip_scale_crop(image: np.ndarray, label: np.ndarray | None,
                           rng: np.random.Generator, *, max_scale: float = 1.5,
                           flip_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray | None]:
    """Random horizontal flip, random zoom-in by ``s ~ U[1, max_scale]``, random crop back to
    the input size.

    The three steps are composed into one affine map from output pixels to input pixels, and
    both arrays are resampled through that same map with ``cv2.warpAffine``: the image
    bilinearly, the label by nearest neighbour. Sampling both through one map (rather than
    ``cv2.resize`` twice, whose nearest mode uses a different pixel-centre convention from its
    bilinear mode) is what keeps label pixels exactly on their image pixels. Nearest sampling
    only copies input values, so no class is invented and 255 (ignore) stays 255; the map never
    leaves the input (``s >= 1``), and replicated borders cover rounding at the edge.

    Geometry, pixel centres at integer coordinates, output ``(x, y)`` in ``[0, W) x [0, H)``::

        u = (x + x0 + 0.5) / s - 0.5        (u is the scaled-up image's column, cropped at x0)
        x_in = u  or  W - 1 - u when flipped
        y_in = (y + y0 + 0.5) / s - 0.5

    with crop offsets ``x0 ~ U[0, (s - 1) W]``, ``y0 ~ U[0, (s - 1) H]`` (sub-pixel: the zoomed
    image is never materialised). Draws from ``rng`` in a fixed order (flip, scale, y0, x0), so
    the result depends only on the generator's state.

    Args:
        image: ``(H, W, C)`` or ``(H, W)`` uint8.
        label: ``(H, W)`` uint8 class indices, or None (images only).
        rng: the source of randomness.
        max_scale: largest zoom factor, >= 1 (1 disables the zoom and the crop).
        flip_prob: probability of the horizontal flip, in [0, 1].

    Returns:
        ``(image, label)`` with the input shapes and dtypes (label None if it was None).
    """
    if not max_scale >= 1.0:
        raise ValueError(f"max_scale must be >= 1 (1 = no zoom), got {max_scale!r}")
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob!r}")
    if image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W) or (H, W, C), got {image.dtype} "
                         f"{image.shape}")
    height, width = image.shape[:2]
    if label is not None and label.shape != (height, width):
        raise ValueError(f"label shape {label.shape} does not match the image's {(height, width)}")

    flip = rng.random() < flip_prob
    scale = rng.uniform(1.0, max_scale)
    y0 = rng.uniform(0.0, (scale - 1.0) * height)
    x0 = rng.uniform(0.0, (scale - 1.0) * width)

    # Output -> input affine map (2x3), see the docstring. WARP_INVERSE_MAP: it maps dst to src.
    a = 1.0 / scale
    bx = (x0 + 0.5) / scale - 0.5
    by = (y0 + 0.5) / scale - 0.5
    if flip:  # x_in = W - 1 - u = -a x + (W - 1 - bx)
        matrix = np.array([[-a, 0.0, width - 1 - bx], [0.0, a, by]])
    else:
        matrix = np.array([[a, 0.0, bx], [0.0, a, by]])

    def warp(array: np.ndarray, interpolation: int) -> np.ndarray:
        out = cv2.warpAffine(array, matrix, (width, height),
                             flags=interpolation | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(array.shape)  # OpenCV drops a trailing channel axis of size 1

    image_out = warp(image, cv2.INTER_LINEAR)
    label_out = None if label is None else warp(label, cv2.INTER_NEAREST)
    return image_out, label_out
