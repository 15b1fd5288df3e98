"""Statistics of label arrays: per-class pixel counts, streamed, and median-frequency weights.

Labels are class-index arrays as everywhere in the project (docs/design.md): integer values
0..C-1, ``ignore_label`` (255) for pixels that count nowhere. ``LabelHistogram`` accumulates
over any number of batches (one image ``(H, W)`` or a batch ``(N, H, W)`` at a time), so a
large training set is counted without holding it in memory; ``median_frequency_weights`` turns
the counts into loss weights for ``--class-weights auto``; ``datasets.check`` reports the same
counts.

Median-frequency balancing (Eigen & Fergus, ICCV 2015), as computed here:

    n_c(i)  = pixels of class c in image i           (ignored pixels count for no class)
    N(i)    = sum_c n_c(i), the labelled pixels of image i
    freq_c  = sum_i n_c(i) / sum_{i : n_c(i) > 0} N(i)
              (pixels of c over the labelled pixels of the images where c is present)
    w_c     = median(freq_k over the classes k present somewhere) / freq_c

A class with no pixel in the labels has no frequency: it is left out of the median and gets
weight 0 (it cannot occur in the loss of those labels anyway), with a warning. "Image" means
one label array as the training loop sees it (after crop and pad: padded pixels are
background).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from common.errors import DataError
from datasets.classes import IGNORE_LABEL

__all__ = ["LabelHistogram", "median_frequency_weights", "class_weights_from_labels"]

logger = logging.getLogger(__name__)

# Label arrays hold byte values: 0..C-1 and the ignore value.
_NUM_VALUES = 256


class LabelHistogram:
    """Per-class pixel counts over a stream of label arrays.

    Attributes (int64 numpy arrays of length C unless said otherwise):
        pixels: pixels of each class.
        present_pixels: labelled pixels of the images in which each class occurs (the
            denominator of the median-frequency rule).
        images: images in which each class occurs.
        value_counts: (256,) pixels of every byte value, classes, ignore and others alike.
        num_images, ignored_pixels, total_pixels: ints.

    With ``strict`` (the default) a value that is neither a class nor ``ignore_label`` is a
    DataError naming the values (and `source`, when given to ``update``); without it such
    pixels are only counted in ``value_counts`` and ``other_pixels`` (a data check reports them).
    """

    def __init__(self, num_classes: int, *, ignore_label: int = IGNORE_LABEL,
                 strict: bool = True) -> None:
        if not 2 <= int(num_classes) <= _NUM_VALUES - 1:
            raise ValueError(f"num_classes must be in [2, 255], got {num_classes!r}")
        if not int(num_classes) <= int(ignore_label) < _NUM_VALUES:
            raise ValueError(f"ignore_label must be in [num_classes, 255], got {ignore_label!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.strict = bool(strict)
        self.pixels = np.zeros(self.num_classes, np.int64)
        self.present_pixels = np.zeros(self.num_classes, np.int64)
        self.images = np.zeros(self.num_classes, np.int64)
        self.value_counts = np.zeros(_NUM_VALUES, np.int64)
        self.num_images = 0

    @property
    def ignored_pixels(self) -> int:
        return int(self.value_counts[self.ignore_label])

    @property
    def total_pixels(self) -> int:
        return int(self.value_counts.sum())

    @property
    def other_pixels(self) -> int:
        """Pixels whose value is neither a class nor the ignore value (0 when strict)."""
        return self.total_pixels - int(self.pixels.sum()) - self.ignored_pixels

    def update(self, labels: Any, *, source: str | None = None) -> "LabelHistogram":
        """Count one label array `(H, W)` or a batch `(N, H, W)` (integers in [0, 255])."""
        labels = np.asarray(labels)
        where = f"{source}: " if source else ""
        if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{where}labels must be integer class indices (H, W) or (N, H, W), "
                            f"got {labels.dtype} {labels.shape}")
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() >= _NUM_VALUES):
                raise DataError(f"{where}label values must lie in [0, 255], got "
                                f"[{labels.min()}, {labels.max()}]")
            labels = labels.astype(np.uint8)
        for label in labels.reshape((-1,) + labels.shape[-2:]):
            counts = np.bincount(label.ravel(), minlength=_NUM_VALUES)   # (256,)
            classes = counts[:self.num_classes]
            if self.strict:
                others = counts.copy()
                others[:self.num_classes] = 0
                others[self.ignore_label] = 0
                if others.any():
                    bad = np.flatnonzero(others)[:10].tolist()
                    raise DataError(
                        f"{where}label values {bad} are neither a class in "
                        f"[0, {self.num_classes}) nor the ignore value {self.ignore_label}; "
                        f"check the number of classes and the mask format")
            present = classes > 0
            self.pixels += classes
            self.present_pixels[present] += classes.sum()
            self.images += present
            self.value_counts += counts
            self.num_images += 1
        return self

    def frequencies(self) -> np.ndarray:
        """`freq_c` of the median-frequency rule, float64 (C,); NaN for an absent class."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pixels > 0, self.pixels / np.maximum(self.present_pixels, 1),
                            np.nan)

    def shares(self) -> np.ndarray:
        """Each class' share of the labelled pixels, float64 (C,) (zeros when there are none)."""
        labelled = self.pixels.sum()
        return self.pixels / labelled if labelled else np.zeros(self.num_classes)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts (for logs, run configs and the data check)."""
        return {"num_images": self.num_images, "total_pixels": self.total_pixels,
                "ignored_pixels": self.ignored_pixels, "other_pixels": self.other_pixels,
                "pixels": self.pixels.tolist(), "images": self.images.tolist(),
                "present_pixels": self.present_pixels.tolist()}


def median_frequency_weights(histogram: LabelHistogram) -> tuple[float, ...]:
    """Median-frequency class weights (see the module docstring), one float per class.

    DataError when no class has any pixel (only ignored pixels, or no labels at all).
    """
    freq = histogram.frequencies()
    present = ~np.isnan(freq)
    if not present.any():
        raise DataError(f"cannot compute class weights: the {histogram.num_images} label arrays "
                        f"hold no labelled pixel (all {histogram.total_pixels} are ignored)")
    median = float(np.median(freq[present]))
    weights = np.zeros(histogram.num_classes)
    weights[present] = median / freq[present]
    absent = np.flatnonzero(~present).tolist()
    if absent:
        logger.warning("class weights: classes %s have no pixel in the training labels; their "
                       "weight is 0", absent)
    return tuple(float(w) for w in weights)


def class_weights_from_labels(labels: Any, num_classes: int, *,
                              ignore_label: int = IGNORE_LABEL) -> tuple[float, ...]:
    """`--class-weights auto`: median-frequency weights of training labels.

    labels: one array `(N, H, W)` (e.g. ``DataSet.labels``; counted image by image), or an
        iterable of arrays `(H, W)` / `(N, H, W)` (e.g. the label batches of a streaming
        ``tf.data`` pipeline: ``(label for _, label in dataset)``), so nothing needs to fit in
        memory at once.
    Logs each class' pixel share, frequency and weight.
    """
    histogram = LabelHistogram(num_classes, ignore_label=ignore_label)
    if isinstance(labels, np.ndarray):
        histogram.update(labels)
    else:
        for batch in labels:
            histogram.update(batch)
    weights = median_frequency_weights(histogram)
    freq = histogram.frequencies()
    logger.info("class weights (median frequency over %d label arrays): %s",
                histogram.num_images,
                ", ".join(f"{c}: share {s:.4f} freq {f:.4f} weight {w:.4f}"
                          for c, (s, f, w) in enumerate(zip(histogram.shares(), freq, weights))))
    return weights
