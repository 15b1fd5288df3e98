"""The train and validation sources of a training run, chosen in one place: in memory or
streamed from disk, one worker or one of several.

=================  ===============================================  ==========================
                   train                                            validation
=================  ===============================================  ==========================
in memory          ``DataSet`` (the tutorial's next_batch order)    ``DataSet``
  several workers  ``ArrayEpochs`` over this worker's share          this worker's share
streamed           epoch -> ``make_tf_dataset`` (its shard)          ``make_tf_dataset``
=================  ===============================================  ==========================

Every worker reads only its share: the streaming path its chunk of every global batch, the
in-memory path every ``workers``-th image; validation likewise (the workers add up their scores,
learning/loop.py), and a worker left without validation images gets an empty set.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from datasets.data import DataSet
from datasets.examples import Example
from datasets.loading import load_examples
from datasets.pipeline import ArrayEpochs, make_tf_dataset

__all__ = ["training_sources"]


def training_sources(train: Sequence[Example], val: Sequence[Example],
                     image_size: tuple[int, int], *, stream: bool, augment: Any, seed: int,
                     shard: tuple[int, int], label_format: Any,
                     max_pixels: int | None) -> tuple[Any, Any]:
    """``(train_set, val_set)`` as ``learning.optimizers.Optimizer`` takes them (val_set None
    without validation images). ``shard``: (this worker's index, the number of workers)."""
    worker, workers = shard
    val_share = list(val[worker::workers])
    if stream:
        def train_set(epoch: int, *, batch_size: int, skip_batches: int,
                      shard: tuple[int, int]) -> Any:
            return make_tf_dataset(train, image_size, shuffle_seed=seed, epoch=epoch,
                                   augment=augment, max_pixels=max_pixels,
                                   label_format=label_format, batch_size=batch_size,
                                   shard=shard, skip_batches=skip_batches)
        val_set = (make_tf_dataset(val_share, image_size, max_pixels=max_pixels,
                                   label_format=label_format) if val_share else None)
        return train_set, val_set
    images, labels, _ = load_examples(list(train[worker::workers]), image_size,
                                      where="train split", max_pixels=max_pixels,
                                      label_format=label_format)
    if workers > 1:
        # Stateless per-epoch order: every worker resumes at the same (epoch, step).
        train_source: Any = ArrayEpochs(images, labels, seed=seed, stream=worker,
                                        augment=augment, length=len(train) // workers)
    else:
        train_source = DataSet(images, labels, seed=seed, augment=augment)
    if val_share:
        images, labels, _ = load_examples(val_share, image_size, where="val split",
                                          max_pixels=max_pixels, label_format=label_format)
        return train_source, DataSet(images, labels)
    if val:      # fewer validation images than workers: this one scores none
        height, width = image_size
        return train_source, DataSet(np.zeros((0, height, width, 3), np.uint8),
                                     np.zeros((0, height, width), np.uint8))
    return train_source, None
