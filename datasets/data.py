"""The tutorial's data API: a split folder read into memory (``read_data``), minibatches from
in-memory arrays (``DataSet``), and converters to and from the original's one-hot labels.

The steps ``read_data`` takes each live in one module of their own: listing the folder
(datasets/examples.py), deciding its label format (datasets/label_format.py), loading examples
(datasets/loading.py); header-only checks are in datasets/validation.py and the streaming
``tf.data`` pipeline over the same files (``make_tf_dataset``) in datasets/pipeline.py.

Differences from the original, all for memory: images are **uint8 RGB** (the original kept
float32 **BGR** straight from ``cv2.imread``; the model scales RGB itself), labels are **uint8
class indices with 255 = ignore** (the original kept float32 one-hot with -1 in every channel of
an unknown pixel). That is 1 MiB per 512x512 sample instead of 6 MiB; ``to_one_hot`` /
``from_one_hot`` convert to and from the original label format.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from datasets.augment import AugmentFn
from datasets.classes import IGNORE_LABEL, PET_CLASS_NAMES
from datasets.decode import MAX_PIXELS
from datasets.examples import list_examples
from datasets.label_format import resolve_label_format
from datasets.labels import LabelFormat
from datasets.loading import load_examples

__all__ = ["read_data", "to_one_hot", "from_one_hot", "DataSet"]


def read_data(data_dir: str | os.PathLike, image_size: Sequence[int], no_label: bool = False,
              return_names: bool = False, *, max_pixels: int | None = MAX_PIXELS,
              label_format: LabelFormat | str | None = None,
              ) -> (tuple[np.ndarray, np.ndarray | None]
                    | tuple[np.ndarray, np.ndarray | None, list[str]]):
    """Load every example of a split folder into memory.

    Same contract as the original's ``read_data`` (all jpg/jpeg/png of ``images/`` in any case,
    masks from ``masks/<stem>.png``, images padded with 0 and masks with background, class from
    the first letter's case, unknown pixels ignored) but in the lean format of docs/design.md.
    Examples come in sorted file-name order (the original used unsorted ``glob`` order).

    Unreadable files (empty, truncated, not an image, over ``max_pixels``; image or mask) are
    **skipped**: the tutorial removed them by hand. One warning at the end gives their count and
    names, and ``names`` (with ``return_names=True``) tells which files the rows are. Every
    other problem is an error naming the file (see ``list_examples`` and ``load_example``).

    Memory: the output arrays are allocated once and filled in place (no Python list of
    arrays, no final ``np.array`` copy), so the peak is the result plus one decoded image:
    ``H*W*4`` bytes per sample (1 MiB at 512x512) against ~6.3 MB for the original float32 BGR +
    float32 one-hot (``benchmarks/memory_read_data.py`` measures both).

    Args:
        data_dir: folder with ``images/`` (and ``masks/``); with ``no_label`` also a plain
            folder of images.
        image_size: ``(H, W)`` of every output.
        no_label: read images only; ``y`` is None.
        return_names: also return the image file names, one per row.
        max_pixels: images (and masks) with more pixels are skipped without being decoded.
        label_format: None (trimaps), a ``LabelFormat``, or a ``--label-format`` name resolved
            by ``resolve_label_format`` (names and class count from the folder's
            ``classes.json`` or the defaults).

    Returns:
        ``(X, y)`` or ``(X, y, names)``: ``X`` uint8 RGB ``(N, H, W, 3)``, ``y`` uint8
        ``(N, H, W)`` class indices, 255 ignore (trimaps: 0 background, 1 cat, 2 dog), or None
        if ``no_label``; ``names`` a list of N file names such as ``"Bombay_217.jpg"``.
    """
    examples = list_examples(data_dir, no_label=no_label, label_format=label_format)
    if isinstance(label_format, str) and not no_label:
        label_format = resolve_label_format(examples, label_format, data_dir=data_dir,
                                            max_pixels=max_pixels)
    images, labels, names = load_examples(examples, image_size, no_label=no_label,
                                          where=os.fspath(data_dir), max_pixels=max_pixels,
                                          label_format=label_format)
    if return_names:
        return images, labels, names
    return images, labels


# ---------------------------------------------------------------------------------------------
# Label format converters
# ---------------------------------------------------------------------------------------------

def to_one_hot(labels: np.ndarray, num_classes: int = len(PET_CLASS_NAMES),
               ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """Class indices ``(..., H, W)`` -> the original's float32 one-hot ``(..., H, W, C)`` with
    -1 in every channel of an ignored pixel.

    Raises:
        ValueError: a label is neither a class in ``[0, num_classes)`` nor ``ignore_label``.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    ignored = labels == ignore_label
    bad = ~ignored & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ValueError(f"labels hold values {np.unique(labels[bad]).tolist()} that are neither "
                         f"a class in [0, {num_classes}) nor ignore_label={ignore_label}")
    # One channel at a time: the only temporaries are (..., H, W) booleans.
    one_hot = np.empty((*labels.shape, num_classes), dtype=np.float32)
    for c in range(num_classes):
        one_hot[..., c] = labels == c
    one_hot[ignored] = -1.0
    return one_hot


def from_one_hot(one_hot: np.ndarray, ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """The original's one-hot ``(..., H, W, C)`` -> uint8 class indices ``(..., H, W)``.

    Each pixel gets the argmax of its channels (so soft probabilities work too), except pixels
    whose channels are all negative (the original's -1 marker), which get ``ignore_label``.
    """
    one_hot = np.asarray(one_hot)
    if one_hot.ndim < 1 or not 0 < one_hot.shape[-1] <= 255:
        raise ValueError(f"expected (..., C) with 1 <= C <= 255 class channels, got shape "
                         f"{one_hot.shape}")
    if not 0 <= ignore_label <= 255 or ignore_label < one_hot.shape[-1]:
        raise ValueError(f"ignore_label={ignore_label} must be a uint8 value that is not a "
                         f"class index (>= {one_hot.shape[-1]})")
    labels = one_hot.argmax(axis=-1).astype(np.uint8)
    labels[one_hot.max(axis=-1) < 0] = ignore_label
    return labels


# ---------------------------------------------------------------------------------------------
# In-memory minibatches
# ---------------------------------------------------------------------------------------------

class DataSet:
    """Minibatches from in-memory arrays, with the original's API and semantics.

    ``next_batch`` walks through a permutation of the examples; it shuffles on the first call
    and at the end of every epoch, and a batch that crosses the end of an epoch is the old
    epoch's tail followed by the new epoch's head, so every example is seen exactly once per
    epoch. (The original took the "old tail" through a view of the index array *after*
    shuffling it in place, so its boundary batches actually drew from the new order.)

    Randomness never touches NumPy's global RNG: ``seed`` feeds three independent streams, for
    the epoch orders, for ``augment`` and for ``sample_batch``, so monitoring with
    ``sample_batch`` or switching augmentation on does not change the order of ``next_batch``.
    Epoch e's order is a permutation drawn from (the order seed, e) alone, so the position is a
    few numbers: ``get_state()``/``set_state()`` capture and restore all of it for an exact
    resume in O(1) space, whatever the data set's size.

    Args:
        images: ``(N, H, W, 3)`` array (uint8 RGB by convention; any dtype works).
        labels: ``(N, ...)`` array (uint8 ``(N, H, W)`` by convention) or None.
        seed: seeds the generators; None draws fresh entropy.
        augment: ``augment(image, label, rng) -> (image, label)`` applied to each example of
            each ``next_batch`` batch (not to ``sample_batch``: that one is for scoring); it
            must keep shapes and dtypes. ``label`` is None for unlabelled data.
    """

    _STATE_FORMAT = "datasets.data.DataSet/2"

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, *,
                 seed: int | None = None, augment: AugmentFn | None = None) -> None:
        if not isinstance(images, np.ndarray) or images.ndim < 1:
            raise TypeError(f"images must be a NumPy array (N, H, W, C), got "
                            f"{type(images).__name__}")
        if labels is not None and (not isinstance(labels, np.ndarray)
                                   or labels.shape[:1] != images.shape[:1]):
            raise ValueError(
                f"images and labels must have the same number of examples, got "
                f"{images.shape[0]} images and "
                f"{getattr(labels, 'shape', (None,))[0]} labels")
        self._images = images
        self._labels = labels
        self._num_examples = int(images.shape[0])
        self._augment = augment
        order_seed, augment_seed, sample_seed = np.random.SeedSequence(seed).spawn(3)
        self._order_seed = order_seed
        self._augment_rng = np.random.Generator(np.random.PCG64(augment_seed))
        self._sample_rng = np.random.Generator(np.random.PCG64(sample_seed))
        self._order_epoch: int | None = None    # whose permutation is the order (None: 0..N-1)
        self._indices = np.arange(self._num_examples, dtype=np.int64)  # the epoch's order
        self._epochs_completed = 0
        self._index_in_epoch = 0

    @property
    def images(self) -> np.ndarray:
        return self._images

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def num_examples(self) -> int:
        return self._num_examples

    @property
    def epochs_completed(self) -> int:
        """Epoch boundaries crossed by ``next_batch`` so far (as in the original, the count goes
        up on the call that needs examples beyond the end)."""
        return self._epochs_completed

    def _check_batch_size(self, batch_size: int, *, replacement: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not replacement and batch_size > self._num_examples:
            raise ValueError(f"batch_size={batch_size} is larger than the data set "
                             f"({self._num_examples} examples); use at most {self._num_examples}")

    def _gather(self, indices: np.ndarray, *,
                augment: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Copy the rows ``indices`` out (fancy indexing), then augment them in place."""
        images = self._images[indices]
        labels = None if self._labels is None else self._labels[indices]
        if augment and self._augment is not None:
            for i in range(len(indices)):
                image, label = self._augment(images[i], None if labels is None else labels[i],
                                             self._augment_rng)
                if image.shape != images.shape[1:] or (
                        labels is not None and getattr(label, "shape", None) != labels.shape[1:]):
                    raise ValueError(
                        f"augment must keep shapes: got image {image.shape} and label "
                        f"{getattr(label, 'shape', None)} for inputs {images.shape[1:]} and "
                        f"{None if labels is None else labels.shape[1:]}")
                images[i] = image
                if labels is not None:
                    labels[i] = label
        return images, labels

    def next_batch(self, batch_size: int,
                   shuffle: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The next ``batch_size`` examples of the epoch order, wrapping into the next epoch.

        Returns:
            ``(images (B, ...), labels (B, ...) or None)``: copies, augmented if ``augment``.
        Raises:
            ValueError: ``batch_size`` is not in ``[1, num_examples]``.
        """
        self._check_batch_size(batch_size)
        start = self._index_in_epoch
        if self._epochs_completed == 0 and start == 0 and shuffle:
            self._shuffle(0)
        if start + batch_size > self._num_examples:
            self._epochs_completed += 1
            tail = self._indices[start:]
            if shuffle:
                self._shuffle(self._epochs_completed)
            self._index_in_epoch = batch_size - len(tail)
            indices = np.concatenate([tail, self._indices[:self._index_in_epoch]])
        else:
            self._index_in_epoch = start + batch_size
            indices = self._indices[start:self._index_in_epoch]
        return self._gather(indices, augment=True)

    def _shuffle(self, epoch: int) -> None:
        """The order becomes epoch ``epoch``'s permutation (a new array: a batch may still
        hold a view of the old one)."""
        seed = np.random.SeedSequence(self._order_seed.entropy,
                                      spawn_key=(*self._order_seed.spawn_key, epoch))
        self._indices = np.random.default_rng(seed).permutation(self._num_examples)
        self._order_epoch = epoch

    def sample_batch(self, batch_size: int,
                     shuffle: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``batch_size`` random examples drawn with replacement (``batch_size`` may exceed
        ``num_examples``), or without ``shuffle`` the first ``batch_size`` examples. Never
        augmented; does not move ``next_batch``'s position.

        Raises:
            ValueError: ``batch_size`` < 1, or > ``num_examples`` without ``shuffle``.
        """
        self._check_batch_size(batch_size, replacement=shuffle)
        if shuffle:
            indices = self._sample_rng.integers(self._num_examples, size=batch_size)
        else:
            indices = np.arange(batch_size)
        return self._gather(indices, augment=False)

    def get_state(self) -> dict[str, Any]:
        """Everything that decides future batches, as a small JSON-serialisable dict (plain
        ints and strings): position, epoch count, which epoch's permutation is the order, the
        order seed and the other generators' states (PCG64 states and seeds are 128-bit ints,
        which Python's ``json`` round-trips exactly)."""
        return {
            "format": self._STATE_FORMAT,
            "num_examples": self._num_examples,
            "epochs_completed": self._epochs_completed,
            "index_in_epoch": self._index_in_epoch,
            "order": {"entropy": self._order_seed.entropy,
                      "spawn_key": list(self._order_seed.spawn_key),
                      "epoch": self._order_epoch},
            "rng": {
                "augment": self._augment_rng.bit_generator.state,
                "sample": self._sample_rng.bit_generator.state,
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()``'s output (possibly through JSON): the batches that follow are
        exactly those that followed when the state was taken.

        Raises:
            ValueError: the state is not a DataSet state or belongs to a data set of another size.
        """
        if not isinstance(state, dict) or state.get("format") != self._STATE_FORMAT:
            raise ValueError(f"not a DataSet state (expected format {self._STATE_FORMAT!r})")
        if state["num_examples"] != self._num_examples:
            raise ValueError(f"the state is for {state['num_examples']} examples, this data set "
                             f"has {self._num_examples}")
        index_in_epoch = int(state["index_in_epoch"])
        if not 0 <= index_in_epoch <= self._num_examples:
            raise ValueError(f"the state's index_in_epoch={index_in_epoch} is outside "
                             f"[0, {self._num_examples}]")
        order = state["order"]
        self._order_seed = np.random.SeedSequence(order["entropy"],
                                                  spawn_key=tuple(order["spawn_key"]))
        if order["epoch"] is None:
            self._indices, self._order_epoch = np.arange(self._num_examples, dtype=np.int64), None
        else:
            self._shuffle(int(order["epoch"]))
        self._augment_rng.bit_generator.state = state["rng"]["augment"]
        self._sample_rng.bit_generator.state = state["rng"]["sample"]
        self._index_in_epoch = index_in_epoch
        self._epochs_completed = int(state["epochs_completed"])
