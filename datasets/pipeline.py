"""Epochs in a stateless seeded order, split among readers, and the streaming ``tf.data``
pipeline over files (``make_tf_dataset``) for data that does not fit in memory.

The order of epoch k depends only on ``(shuffle_seed, k)`` (``epoch_order``), so a resumed or
multi-worker run rebuilds it without replaying earlier epochs; ``shard_indices`` cuts it into
the readers' parts of each global batch. ``ArrayEpochs`` serves in-memory arrays that way;
``make_tf_dataset`` decodes files with ``datasets.loading.load_example``, the code ``read_data``
uses, so both give the same arrays.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from common.errors import ConfigError, DataError, format_list
from datasets.augment import AugmentFn
from datasets.decode import MAX_PIXELS, UnreadableFileError
from datasets.examples import Example
from datasets.labels import TRIMAP, DataFormatError, LabelFormat
from datasets.loading import load_example
from datasets.validation import validate_examples
from datasets.utils import as_size

if TYPE_CHECKING:  # TensorFlow is imported lazily, only by make_tf_dataset (see there).
    import tensorflow as tf

__all__ = ["epoch_order", "shard_indices", "ArrayEpochs", "make_tf_dataset"]

logger = logging.getLogger(__name__)


def epoch_order(num_examples: int, shuffle_seed: int | None, epoch: int) -> np.ndarray:
    """The order of ``make_tf_dataset`` for one epoch: ``arange(num_examples)`` without a seed,
    else a permutation that depends only on ``(shuffle_seed, epoch)`` (stateless, so a resumed
    run rebuilds epoch k's order without replaying epochs 0..k-1)."""
    if shuffle_seed is None:
        return np.arange(num_examples, dtype=np.int64)
    for name, value in (("shuffle_seed", shuffle_seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.default_rng([int(shuffle_seed), int(epoch)]).permutation(num_examples)


def shard_indices(order: np.ndarray, batch_size: int | None, shard: tuple[int, int] = (0, 1),
                  skip_batches: int = 0) -> np.ndarray:
    """The part of an epoch's ``order`` that one of ``shard[1]`` readers takes.

    With ``batch_size`` b (this reader's share of a batch), the order is cut into global
    batches of ``b * shard[1]`` (a short tail is dropped), the first ``skip_batches`` are left
    out (a resumed epoch), and reader ``shard[0]`` takes the ``shard[0]``-th chunk of b of each:
    so the readers' batches together are exactly the one-reader run's global batches, and no
    file is read twice. Without ``batch_size`` the order is returned whole (one reader only).
    """
    index, count = shard
    if not (isinstance(count, (int, np.integer)) and count >= 1 and 0 <= index < count):
        raise ConfigError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    if batch_size is None:
        if count != 1 or skip_batches:
            raise ConfigError("sharding or skipping batches needs the batch_size")
        return np.asarray(order)
    if batch_size < 1 or skip_batches < 0:
        raise ConfigError(f"batch_size must be >= 1 and skip_batches >= 0, got {batch_size} "
                          f"and {skip_batches}")
    global_batch = batch_size * count
    batches = len(order) // global_batch
    grid = np.asarray(order)[:batches * global_batch].reshape(batches, global_batch)
    return grid[skip_batches:, index * batch_size:(index + 1) * batch_size].reshape(-1)


class ArrayEpochs:
    """In-memory examples served epoch by epoch in a stateless seeded order: the counterpart of
    ``DataSet`` for multi-worker training, where every worker holds only its share of the
    arrays and a resumed run must find its place from (epoch, step) alone.

    ``epochs(epoch, batch_size=b, skip_batches=s)`` -> ``tf.data.Dataset`` of unbatched
    ``(image, label)``: the epoch's permutation (fixed by seed, stream and epoch), whole batches
    of b only, from batch s on. ``augment(image, label, rng)`` gets a generator seeded by
    (seed, stream, epoch, example index), as in ``make_tf_dataset``.

    Args:
        images, labels: ``(N, H, W, 3)`` and ``(N, H, W)`` uint8.
        seed: the order's seed.
        stream: a second seed part, e.g. the worker index, so that workers sharing ``seed``
            shuffle their shares independently.
        length: use only the first ``length`` examples of each epoch's order (workers with
            shares of different sizes agree on one step count this way); default N.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, seed: int, stream: int = 0,
                 augment: AugmentFn | None = None, length: int | None = None) -> None:
        if len(images) != len(labels):
            raise ConfigError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.seed, self.stream, self.augment = int(seed), int(stream), augment
        self.length = len(images) if length is None else min(int(length), len(images))

    @property
    def num_examples(self) -> int:
        return self.length

    def __call__(self, epoch: int, *, batch_size: int | None = None,
                 skip_batches: int = 0) -> tf.data.Dataset:
        import tensorflow as tf

        order = np.random.default_rng([self.seed, self.stream, int(epoch)]).permutation(
            len(self.images))[:self.length]
        indices = shard_indices(order, batch_size, (0, 1), skip_batches)
        height, width = self.images.shape[1:3]

        def gather(index: np.int64) -> tuple[np.ndarray, np.ndarray]:
            image, label = self.images[int(index)].copy(), self.labels[int(index)].copy()
            if self.augment is not None:
                rng = np.random.default_rng([self.seed, self.stream, int(epoch), int(index)])
                image, label = self.augment(image, label, rng)
            return image, label

        def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image, label = tf.numpy_function(gather, [index], (tf.uint8, tf.uint8),
                                             name="gather_example")
            image.set_shape((height, width, 3))
            label.set_shape((height, width))
            return image, label

        return tf.data.Dataset.from_tensor_slices(indices).map(
            load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# validate_examples' results by (examples, no_label, max_pixels, label_format): train.py builds
# the training pipeline anew every epoch from the same list; its files are checked once per
# process (for one way of reading its masks).
_VALIDATED: dict[tuple[tuple[Example, ...], bool, int | None, LabelFormat | None],
                 list[Example]] = {}
_VALIDATED_MAX_ENTRIES = 8


def _validated(examples: list[Example], no_label: bool, max_pixels: int | None,
               label_format: LabelFormat | None) -> list[Example]:
    key = (tuple(examples), no_label, max_pixels, None if no_label else label_format or TRIMAP)
    if key not in _VALIDATED:
        if len(_VALIDATED) >= _VALIDATED_MAX_ENTRIES:
            _VALIDATED.pop(next(iter(_VALIDATED)))  # the oldest entry
        _VALIDATED[key] = validate_examples(examples, no_label=no_label, max_pixels=max_pixels,
                                            where="make_tf_dataset", label_format=label_format)
    return _VALIDATED[key]


def make_tf_dataset(examples: Iterable[Example], image_size: Sequence[int], *,
                    no_label: bool = False, shuffle_seed: int | None = None, epoch: int = 0,
                    augment: AugmentFn | None = None,
                    max_pixels: int | None = MAX_PIXELS,
                    label_format: LabelFormat | None = None, batch_size: int | None = None,
                    shard: tuple[int, int] = (0, 1),
                    skip_batches: int = 0) -> tf.data.Dataset:
    """A ``tf.data`` pipeline over files, for data that does not fit in memory.

    One epoch, unbatched, elements in the order ``epoch_order(len(checked), shuffle_seed,
    epoch)`` of the examples that passed ``validate_examples``; the caller batches and
    prefetches. Each element is decoded by ``load_example``
    (the same code as ``read_data``, so the arrays are identical) inside ``tf.numpy_function``,
    ``num_parallel_calls=AUTOTUNE`` with ``deterministic=True`` (OpenCV releases the GIL while
    decoding, so the worker threads can overlap).

    Args:
        examples: from ``list_examples``; their ``mask_path`` is needed unless ``no_label``.
        image_size: ``(H, W)``.
        no_label: elements are images only.
        shuffle_seed: None keeps the list order; an int shuffles by ``(shuffle_seed, epoch)``.
        epoch: selects the epoch's permutation (and the augmentation draws).
        augment: ``augment(image, label, rng)`` per element, with a generator seeded by
            ``(shuffle_seed, epoch, example index)``: reproducible whatever the thread
            scheduling (fresh entropy per call of this function when ``shuffle_seed`` is None).
        max_pixels: images (and masks) with more pixels are skipped without being decoded.
        label_format: how to read the masks (None: trimaps).
        batch_size, shard, skip_batches: read only this reader's part of the epoch
            (``shard_indices``): its chunk of ``batch_size`` of each global batch, from global
            batch ``skip_batches`` on. Skipped examples are never decoded (a resumed epoch).

    Returns:
        ``tf.data.Dataset`` of ``(image uint8 (H, W, 3), label uint8 (H, W))``, or of images
        ``(H, W, 3)`` when ``no_label``, with static shapes.

    Nothing fails while batches are read. Before the pipeline is built, ``validate_examples``
    checks every example (image header, mask values and size; once per process for a given
    list): a bad mask raises ``DataFormatError`` here, naming the file, and unreadable files are
    dropped with one warning, as ``read_data`` does. An image whose pixel data is damaged
    behind a valid header, or a file changed on disk since the check, is skipped with a warning
    when reached.

    Raises:
        DataFormatError: a mask does not fit its format or its image.
        DataError: no example at all, or none readable.
        ValueError: labels asked for examples without ``mask_path``.

    TensorFlow is imported here rather than at module top, so that ``read_data``, ``DataSet``
    and the data preparation scripts work without paying TensorFlow's import time.
    """
    import tensorflow as tf

    size = as_size(image_size, name="image_size")
    examples = _validated(_listed_examples(examples, no_label), no_label, max_pixels,
                          label_format)
    order = shard_indices(epoch_order(len(examples), shuffle_seed, epoch), batch_size, shard,
                          skip_batches)
    augment_seed = (int(shuffle_seed) if shuffle_seed is not None
                    else int(np.random.SeedSequence().entropy))
    decode = _example_decoder(examples, size, no_label=no_label, max_pixels=max_pixels,
                              label_format=label_format, augment=augment,
                              augment_seed=augment_seed, epoch=epoch)
    dataset = tf.data.Dataset.from_tensor_slices(order)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.filter(lambda image, label, ok: ok)
    if no_label:
        return dataset.map(lambda image, label, ok: image)
    return dataset.map(lambda image, label, ok: (image, label))


def _listed_examples(examples: Iterable[Example], no_label: bool) -> list[Example]:
    """``make_tf_dataset``'s first step: the examples as a list, refused when there are none
    or, unless ``no_label``, when some have no ``mask_path``."""
    examples = list(examples)
    if not examples:
        raise DataError("make_tf_dataset needs at least one example")
    if not no_label:
        unlabelled = [e.name for e in examples if e.mask_path is None]
        if unlabelled:
            raise DataFormatError(f"{len(unlabelled)} examples have no mask_path "
                                  f"({format_list(unlabelled)}); pass no_label=True for images "
                                  f"only")
    return examples


def _example_decoder(examples: list[Example], size: tuple[int, int], *, no_label: bool,
                     max_pixels: int | None, label_format: LabelFormat | None,
                     augment: AugmentFn | None, augment_seed: int, epoch: int,
                     ) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """``make_tf_dataset``'s map function: example index -> ``(image, label, ok)`` tensors
    with static shapes, decoded by ``load_example`` in a ``tf.numpy_function`` and augmented
    with a generator seeded by ``(augment_seed, epoch, index)``. A file that cannot be read,
    or that changed on disk since it was validated, gives ``ok`` False (and a warning) so that
    the pipeline filters it out."""
    import tensorflow as tf

    height, width = size
    empty_image = np.zeros((height, width, 3), np.uint8)
    empty_label = np.zeros((height, width), np.uint8)

    def load(index: np.int64) -> tuple[np.ndarray, np.ndarray, np.bool_]:
        """Runs in a tf.data worker thread: example index -> (image, label, ok)."""
        example = examples[int(index)]
        try:
            image, label = load_example(example, size, no_label=no_label, max_pixels=max_pixels,
                                        label_format=label_format)
        except UnreadableFileError as error:
            logger.warning("make_tf_dataset: skipping %s: %s", example.name, error)
            return empty_image, empty_label, np.bool_(False)
        except DataFormatError as error:  # it passed validate_examples: changed on disk since
            logger.warning("make_tf_dataset: skipping %s, changed since it was checked: %s",
                           example.name, error)
            return empty_image, empty_label, np.bool_(False)
        if augment is not None:
            rng = np.random.default_rng([augment_seed, int(epoch), int(index)])
            image, label = augment(image, label, rng)
        return image, (empty_label if label is None else label), np.bool_(True)

    def decode(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, label, ok = tf.numpy_function(load, [index], (tf.uint8, tf.uint8, tf.bool),
                                             name="load_example")
        image.set_shape((height, width, 3))
        label.set_shape((height, width))
        ok.set_shape(())
        return image, label, ok

    return decode
