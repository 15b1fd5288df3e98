"""Segmentation scores: pixel accuracy (the tutorial's metric), mean IoU (the one it recommends)
and the boundary F-score (how well outlines are placed).

Data flow::

    y_true  (N, H, W)    integer class index, ``ignore_label`` (255) = unknown pixel
         or (N, H, W, C) float one-hot, -1 in every channel = unknown pixel (original format)
    y_pred  (N, H, W, C) softmax probabilities (argmax is taken)
         or (N, H, W)    integer class index
        -> _index_chunks: both as integer class indices, 32 images at a time
        -> AccuracyEvaluator: per-image accuracy over the known pixels, mean over images
        -> MeanIoUEvaluator:  dataset-level confusion matrix -> per-class IoU -> mean IoU
        -> BoundaryFEvaluator: per image and class, boundary pixels matched within a
           tolerance, summed over the set -> per-class precision, recall, F -> mean F

Every evaluator can score a whole set in one call (``score``) or stream over batches
(``reset`` / ``update`` / ``result``), which is what the training loop does so that the
validation predictions never have to be held in memory at once.

Unknown pixels (the trimap's boundary band) never count, in either metric. Two edge cases are
decided here, and warned about rather than turned into NaN:

* an image whose pixels are all unknown has no accuracy; it is left out of the per-image mean
  (and counted in ``AccuracyEvaluator.num_skipped_images``);
* if nothing at all is left to score (every image all-unknown, or an empty input), ``result``
  returns ``worst_score`` with a ``RuntimeWarning``.
"""
from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any, Iterator

import cv2
import numpy as np

__all__ = [
    "Evaluator",
    "StreamingEvaluator",
    "FractionEvaluator",
    "AccuracyEvaluator",
    "MeanIoUEvaluator",
    "BoundaryFEvaluator",
    "DEFAULT_BOUNDARY_TOLERANCE",
    "confusion_matrix",
    "class_boundaries",
]

# Images converted and scored per vectorised chunk: bounds the temporaries (argmax indices,
# boolean masks) to a few times chunk * H * W elements, e.g. 32 images of 512x512 -> 8 M, so
# scoring a whole 480-image test set never allocates gigabytes next to its inputs.
_CHUNK_IMAGES = 32


# ----------------------------------------------------------------------------------------------
# Input normalisation, shared by every evaluator.
# ----------------------------------------------------------------------------------------------
def _validate_labels(y_true: np.ndarray, ignore_label: int) -> None:
    if y_true.ndim == 4:
        if not (np.issubdtype(y_true.dtype, np.floating)
                or np.issubdtype(y_true.dtype, np.signedinteger)):
            raise ValueError(
                f"4-D labels must be one-hot float (N, H, W, C) with -1 for unknown pixels, "
                f"got dtype {y_true.dtype}")
    elif y_true.ndim == 3:
        if not np.issubdtype(y_true.dtype, np.number):
            raise ValueError(f"labels must be numeric class indices, got dtype {y_true.dtype}")
    else:
        raise ValueError(
            f"labels must be a batch: class indices (N, H, W) with {ignore_label} for unknown "
            f"pixels, or one-hot float (N, H, W, C) with -1 for unknown pixels; got shape "
            f"{y_true.shape}")


def _validate_predictions(y_pred: np.ndarray) -> None:
    if y_pred.ndim == 3 and not np.issubdtype(y_pred.dtype, np.number):
        raise ValueError(f"predictions must be numeric class indices, got dtype {y_pred.dtype}")
    if y_pred.ndim not in (3, 4):
        raise ValueError(
            f"predictions must be a batch: probabilities (N, H, W, C) or class indices "
            f"(N, H, W); got shape {y_pred.shape}")


def _labels_to_index(y_true: np.ndarray, ignore_label: int) -> np.ndarray:
    """Validated labels -> class indices (n, H, W), unknown = ``ignore_label``.

    A 4-D array is the original one-hot format: unknown pixels hold -1 in every channel (the
    original tested channel 0; so do we), the class is the argmax of the channels. A 3-D array
    holds class indices already and is returned as is (no copy).
    """
    if y_true.ndim == 3:
        return y_true
    index = np.argmax(y_true, axis=-1)
    index[y_true[..., 0] < 0] = ignore_label
    return index


def _predictions_to_index(y_pred: np.ndarray) -> np.ndarray:
    """Validated predictions -> class indices (n, H, W): argmax of (n, H, W, C) scores."""
    return np.argmax(y_pred, axis=-1) if y_pred.ndim == 4 else y_pred


def _index_chunks(y_true: Any, y_pred: Any,
                  ignore_label: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Check a batch of labels and predictions, then yield them as class indices (n, H*W),
    ``_CHUNK_IMAGES`` images at a time."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    _validate_labels(y_true, ignore_label)
    _validate_predictions(y_pred)
    if y_true.shape[:3] != y_pred.shape[:3]:
        raise ValueError(
            f"labels and predictions cover different pixels: labels {y_true.shape[:3]} vs "
            f"predictions {y_pred.shape[:3]} (as (N, H, W))")
    for start in range(0, y_true.shape[0], _CHUNK_IMAGES):
        t = _labels_to_index(y_true[start:start + _CHUNK_IMAGES], ignore_label)
        p = _predictions_to_index(y_pred[start:start + _CHUNK_IMAGES])
        yield t.reshape(t.shape[0], -1), p.reshape(p.shape[0], -1)


def confusion_matrix(
    y_true: Any, y_pred: Any, num_classes: int, ignore_label: int = 255
) -> np.ndarray:
    """Pixel confusion matrix over the known pixels: ``cm[t, p]`` = pixels of class t predicted p.

    Args:
        y_true: labels, class indices (N, H, W) with ``ignore_label`` for unknown pixels, or the
            original one-hot float (N, H, W, C) with -1 for unknown pixels.
        y_pred: probabilities (N, H, W, C) or class indices (N, H, W).
        num_classes: C; labels and predictions must lie in [0, C).
        ignore_label: label value of unknown pixels, left out of the matrix.

    Returns:
        int64 array (C, C); rows are true classes, columns predicted classes.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    for t, p in _index_chunks(y_true, y_pred, ignore_label):
        known = t != ignore_label
        t = t[known].astype(np.int64, copy=False)
        p = p[known].astype(np.int64, copy=False)
        if t.size and (t.min() < 0 or t.max() >= num_classes):
            bad = np.unique(t[(t < 0) | (t >= num_classes)])[:5].tolist()
            raise ValueError(
                f"label values {bad} are neither a class in [0, {num_classes}) nor the ignore "
                f"label {ignore_label}")
        if p.size and (p.min() < 0 or p.max() >= num_classes):
            bad = np.unique(p[(p < 0) | (p >= num_classes)])[:5].tolist()
            raise ValueError(f"predicted classes {bad} are outside [0, {num_classes})")
        # One bincount over the flattened (true, predicted) pair index: far faster than
        # sklearn's confusion_matrix, and exact in int64.
        counts += np.bincount(num_classes * t + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _relative_is_better(curr: float, best: float, mode: str, score_threshold: float) -> bool:
    """The original's relative-threshold comparison, for either direction."""
    if mode == "max":
        return curr > best * (1.0 + score_threshold)
    return curr < best * (1.0 - score_threshold)


def _warn_nothing_to_score(name: str, worst: float, stacklevel: int = 3) -> float:
    warnings.warn(
        f"{name}: no known (non-ignored) pixel to score; returning the worst score {worst}",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
    return worst


def _mean_of_scored(per_class: np.ndarray, name: str, worst: float) -> float:
    """The mean over the classes that have a score (not NaN); `worst`, with a warning naming
    the caller's caller, when none has."""
    present = ~np.isnan(per_class)
    if not present.any():
        return _warn_nothing_to_score(name, worst, stacklevel=4)
    return float(per_class[present].mean())


# ----------------------------------------------------------------------------------------------
# Base classes.
# ----------------------------------------------------------------------------------------------
class Evaluator(ABC):
    """Base class of a score: the original's four members plus a streaming interface.

    Subclasses define ``worst_score``, ``mode`` ('max' when higher is better, 'min' otherwise),
    ``score(y_true, y_pred)`` and ``is_better(curr, best, score_threshold=1e-4)``.

    ``reset`` / ``update`` / ``result`` have a generic fallback here that keeps every batch and
    calls ``score`` once on their concatenation (memory grows with the data); evaluators that
    can accumulate sufficient statistics derive from ``StreamingEvaluator`` instead.
    """

    @property
    def name(self) -> str:
        """Short identifier used in logs, history columns and plot legends."""
        return type(self).__name__.removesuffix("Evaluator").lower() or "score"

    @property
    @abstractmethod
    def worst_score(self) -> float:
        """The score of the worst possible prediction (the initial "best" of a training run)."""

    @property
    @abstractmethod
    def mode(self) -> str:
        """'max' if a higher score is better, 'min' if lower is better."""

    @abstractmethod
    def score(self, y_true: Any, y_pred: Any) -> float:
        """Score predictions ``y_pred`` against labels ``y_true`` (whole set, one call)."""

    @abstractmethod
    def is_better(self, curr: float, best: float, score_threshold: float = 1e-4) -> bool:
        """Whether ``curr`` improves on ``best`` by more than the relative ``score_threshold``."""

    # Generic streaming fallback: buffer, then score once. The buffer lives in the instance
    # dict, created on first use, so subclasses need not call an __init__ of ours.
    def reset(self) -> None:
        """Forget every batch seen since the last reset."""
        self.__dict__["_buffered"] = []

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Add one batch of labels and predictions."""
        self.__dict__.setdefault("_buffered", []).append((np.asarray(y_true), np.asarray(y_pred)))

    def result(self) -> float:
        """Score of every batch added since the last reset."""
        buffered = self.__dict__.get("_buffered", [])
        if not buffered:
            return _warn_nothing_to_score(self.name, self.worst_score)
        y_true = np.concatenate([t for t, _ in buffered], axis=0)
        y_pred = np.concatenate([p for _, p in buffered], axis=0)
        return self.score(y_true, y_pred)


class StreamingEvaluator(Evaluator):
    """An evaluator that accumulates statistics batch by batch; ``score`` = reset+update+result."""

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def update(self, y_true: Any, y_pred: Any) -> None: ...

    @abstractmethod
    def result(self) -> float: ...

    def score(self, y_true: Any, y_pred: Any) -> float:
        self.reset()
        self.update(y_true, y_pred)
        return self.result()

    def totals(self) -> np.ndarray:
        """The sufficient statistics accumulated since ``reset``, as one float64 vector that
        can be summed with another evaluator's (multi-worker validation adds every worker's)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be summed over workers")

    def set_totals(self, totals: np.ndarray) -> None:
        """Replace the accumulated statistics by ``totals`` (e.g. the sum over workers)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be summed over workers")


class FractionEvaluator(StreamingEvaluator):
    """A streaming score in [0, 1] where higher is better (pixel accuracy, mean IoU): worst
    score 0, the original's relative ``is_better``."""

    @property
    def worst_score(self) -> float:
        return 0.0

    @property
    def mode(self) -> str:
        return "max"

    def is_better(self, curr: float, best: float, score_threshold: float = 1e-4) -> bool:
        """True if ``curr > best * (1 + score_threshold)`` (relative improvement)."""
        return _relative_is_better(curr, best, self.mode, score_threshold)


# ----------------------------------------------------------------------------------------------
# Pixel accuracy.
# ----------------------------------------------------------------------------------------------
class AccuracyEvaluator(FractionEvaluator):
    """Pixel accuracy exactly as the tutorial defined it, vectorised.

    For each image: (correctly classified known pixels) / (known pixels); the score is the mean
    of these per-image accuracies over the images (not the pooled pixel accuracy, which would
    weigh images by their number of known pixels). Images whose pixels are all unknown are left
    out of the mean (see the module docstring).

    After ``result()``, ``per_image_accuracy`` holds the accuracies of the scored images in order
    (float64) and ``num_skipped_images`` the number of all-unknown images left out.
    """

    def __init__(self, ignore_label: int = 255) -> None:
        self.ignore_label = int(ignore_label)
        self.reset()

    @property
    def name(self) -> str:
        return "accuracy"

    def reset(self) -> None:
        self._accuracies: list[np.ndarray] = []
        self.num_skipped_images = 0
        self._summed: tuple[float, int] | None = None   # (sum, count) from set_totals

    def totals(self) -> np.ndarray:
        """[sum of the per-image accuracies, scored images, skipped images]."""
        accuracies = self.per_image_accuracy
        return np.array([math.fsum(accuracies.tolist()), accuracies.size,
                         self.num_skipped_images], np.float64)

    def set_totals(self, totals: np.ndarray) -> None:
        total, count, skipped = (float(v) for v in totals)
        self._accuracies, self.num_skipped_images = [], int(round(skipped))
        self._summed = (total, int(round(count)))

    def update(self, y_true: Any, y_pred: Any) -> None:
        for t, p in _index_chunks(y_true, y_pred, self.ignore_label):   # (n, H*W) each
            known = t != self.ignore_label                               # (n, H*W) bool
            num_known = np.count_nonzero(known, axis=1)                  # (n,)
            # Mask unknown pixels explicitly: a prediction that happens to equal the ignore
            # value must not count as a correct pixel.
            num_correct = np.count_nonzero((t == p) & known, axis=1)
            scored = num_known > 0
            self.num_skipped_images += int(np.count_nonzero(~scored))
            # int64 / int64 -> float64, the same correctly-rounded quotient sklearn computes.
            self._accuracies.append(num_correct[scored] / num_known[scored])

    @property
    def per_image_accuracy(self) -> np.ndarray:
        """Accuracy of every scored image since the last reset, in input order (float64)."""
        if not self._accuracies:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate(self._accuracies)

    def result(self) -> float:
        if self._summed is not None:
            total, count = self._summed
            if count == 0:
                return _warn_nothing_to_score(self.name, self.worst_score)
            return total / count
        accuracies = self.per_image_accuracy
        if accuracies.size == 0:
            return _warn_nothing_to_score(self.name, self.worst_score)
        if self.num_skipped_images:
            warnings.warn(
                f"accuracy: {self.num_skipped_images} image(s) with no known pixel were left "
                f"out of the mean over images",
                RuntimeWarning,
                stacklevel=2,
            )
        # fsum: the exact sum, independent of how the images were split into batches.
        return math.fsum(accuracies.tolist()) / accuracies.size


# ----------------------------------------------------------------------------------------------
# Mean intersection over union.
# ----------------------------------------------------------------------------------------------
class MeanIoUEvaluator(FractionEvaluator):
    """Mean IoU over classes from one confusion matrix accumulated over the whole dataset.

    IoU of class c = TP / (TP + FP + FN) = cm[c, c] / (row_c + col_c - cm[c, c]), over the known
    pixels of all images together. A class that appears neither in the labels nor in the
    predictions has 0 / 0 IoU: it is left out of the mean (its per-class IoU is NaN), so a
    validation set without dogs is not penalised for that. If no class appears at all, the
    score is ``worst_score`` with a warning.

    After ``result()``: ``confusion`` (C, C) int64, ``per_class_iou`` (C,) float64 (NaN for
    absent classes), also returned together by ``result_details()``.
    """

    def __init__(self, num_classes: int = 3, ignore_label: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.reset()

    @property
    def name(self) -> str:
        return "mean_iou"

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, y_true: Any, y_pred: Any) -> None:
        self.confusion += confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_label)

    def totals(self) -> np.ndarray:
        """The confusion matrix, flattened."""
        return self.confusion.astype(np.float64).ravel()

    def set_totals(self, totals: np.ndarray) -> None:
        self.confusion = np.rint(np.asarray(totals)).astype(np.int64).reshape(
            self.num_classes, self.num_classes)

    @property
    def per_class_iou(self) -> np.ndarray:
        """IoU of each class (C,) float64; NaN for a class absent from labels and predictions."""
        cm = self.confusion
        tp = np.diag(cm).astype(np.float64)
        union = cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm)
        iou = np.full(self.num_classes, np.nan)
        present = union > 0
        iou[present] = tp[present] / union[present]
        return iou

    def result(self) -> float:
        return _mean_of_scored(self.per_class_iou, self.name, self.worst_score)

    def result_details(self) -> dict[str, Any]:
        """Everything a report needs: mean IoU, per-class IoU, confusion matrix, pixel accuracy.

        ``pixel_accuracy`` here is the pooled one (trace / total known pixels), which differs
        from ``AccuracyEvaluator``'s mean over images.
        """
        total = int(self.confusion.sum())
        return {
            "mean_iou": self.result(),
            "per_class_iou": self.per_class_iou,
            "confusion_matrix": self.confusion.copy(),
            "pixel_accuracy": float(np.trace(self.confusion) / total) if total else float("nan"),
        }


# ----------------------------------------------------------------------------------------------
# Boundary F-score.
# ----------------------------------------------------------------------------------------------
# Pixels: a predicted outline this close (Euclidean) to the true one counts as right. About
# the width of the trimap's unknown band in the pet photos (2-4 px); DAVIS uses 0.8% of the
# image diagonal (4 px at 384x384).
DEFAULT_BOUNDARY_TOLERANCE = 3


def class_boundaries(mask: np.ndarray, value: int) -> np.ndarray:
    """Boundary pixels of class ``value`` in a (H, W) mask: its pixels with a 4-neighbour of
    another value. The image's own border is no boundary. Bool (H, W)."""
    inside = mask == value
    edge = np.zeros_like(inside)
    edge[1:] |= inside[1:] & ~inside[:-1]
    edge[:-1] |= inside[:-1] & ~inside[1:]
    edge[:, 1:] |= inside[:, 1:] & ~inside[:, :-1]
    edge[:, :-1] |= inside[:, :-1] & ~inside[:, 1:]
    return edge


def _fill_ignored(labels: np.ndarray, ignore_label: int) -> np.ndarray:
    """Every ignored pixel takes the class of the nearest known pixel (Euclidean, OpenCV's 5x5
    approximation), so a trimap's outline runs through the middle of its unknown band."""
    ignored = labels == ignore_label
    if not ignored.any():
        return labels
    # Known pixels are the zeros OpenCV measures to; each gets its own label, in raster order.
    _, nearest = cv2.distanceTransformWithLabels(ignored.astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    return labels[~ignored][nearest - 1]


class BoundaryFEvaluator(FractionEvaluator):
    """Boundary F-score per class and its mean (as DAVIS' and Cityscapes' boundary measures).

    For each image and class c, the boundary pixels of c in the truth and in the prediction
    (``class_boundaries``) are matched within ``tolerance`` pixels (Euclidean; a disk dilation):
    precision = predicted boundary pixels near a true one / predicted boundary pixels, recall
    = true boundary pixels near a predicted one / true boundary pixels, both pooled over the
    whole set (like the IoU's confusion matrix); F = 2PR / (P + R).

    Ignored pixels (``ignore_label``, the trimap's unknown band along every outline) first take
    the class of the nearest known pixel, so the true outline runs through the middle of the
    band; an image with no known pixel is skipped. A class with no boundary in either truth or
    prediction is left out of the mean (NaN), as in ``MeanIoUEvaluator``; one with boundaries
    on one side only scores 0.

    After ``result()``: ``per_class_f``, ``per_class_precision``, ``per_class_recall`` (C,)
    float64.
    """

    def __init__(self, num_classes: int = 3, ignore_label: int = 255,
                 tolerance: int = DEFAULT_BOUNDARY_TOLERANCE) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise ValueError(f"tolerance must be an integer number of pixels >= 0, got "
                             f"{tolerance!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.tolerance = tolerance
        radius = np.arange(-tolerance, tolerance + 1)
        self._disk = (radius[:, None] ** 2 + radius[None, :] ** 2
                      <= tolerance ** 2).astype(np.uint8)
        self.reset()

    @property
    def name(self) -> str:
        return "boundary_f"

    def reset(self) -> None:
        # Per class: matched predicted, predicted, matched true, true boundary pixels.
        self.counts = np.zeros((self.num_classes, 4), np.int64)

    def totals(self) -> np.ndarray:
        return self.counts.astype(np.float64).ravel()

    def set_totals(self, totals: np.ndarray) -> None:
        self.counts = np.rint(np.asarray(totals)).astype(np.int64).reshape(self.num_classes, 4)

    def update(self, y_true: Any, y_pred: Any) -> None:
        height, width = np.shape(y_true)[1:3]
        for t, p in _index_chunks(y_true, y_pred, self.ignore_label):   # (n, H*W) each
            for truth, predicted in zip(t.reshape(-1, height, width),
                                        p.reshape(-1, height, width)):
                if np.all(truth == self.ignore_label):
                    continue
                self._add_image(_fill_ignored(truth, self.ignore_label), predicted)

    def _near(self, edge: np.ndarray) -> np.ndarray:
        """Pixels within ``tolerance`` of a pixel of ``edge``."""
        return cv2.dilate(edge.view(np.uint8), self._disk).view(bool)

    def _add_image(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        for c in range(self.num_classes):
            true_edge = class_boundaries(truth, c)
            pred_edge = class_boundaries(predicted, c)
            self.counts[c] += (np.count_nonzero(pred_edge & self._near(true_edge)),
                               np.count_nonzero(pred_edge),
                               np.count_nonzero(true_edge & self._near(pred_edge)),
                               np.count_nonzero(true_edge))

    def _per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        matched_pred, pred, matched_true, true = self.counts.T.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(pred > 0, matched_pred / pred, 0.0)
            recall = np.where(true > 0, matched_true / true, 0.0)
            f = np.where(precision + recall > 0,
                         2 * precision * recall / (precision + recall), 0.0)
        absent = (pred == 0) & (true == 0)
        return (np.where(absent, np.nan, f), np.where(absent, np.nan, precision),
                np.where(absent, np.nan, recall))

    @property
    def per_class_f(self) -> np.ndarray:
        return self._per_class()[0]

    @property
    def per_class_precision(self) -> np.ndarray:
        return self._per_class()[1]

    @property
    def per_class_recall(self) -> np.ndarray:
        return self._per_class()[2]

    def result(self) -> float:
        return _mean_of_scored(self.per_class_f, self.name, self.worst_score)
