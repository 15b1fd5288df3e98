"""Training data -> "the batches of epoch e from step s on", as a prefetching tf.data pipeline
split over the replicas, with the position to resume from after any step.

Train data is one of (``batch_size`` B is the global batch, over all replicas):

* a ``datasets.DataSet`` (or any object with ``next_batch``, ``num_examples`` and optionally
  ``get_state``/``set_state``): ``num_examples // B`` steps per epoch through ``next_batch``
  (as the original), so an epoch boundary may fall inside a batch. A background tf.data thread
  draws the batches (gather + augmentation) while the device computes (prefetch), and records
  the DataSet's state after each batch, so a run stopped after step s resumes with batch s + 1;
* a callable ``epoch_index -> tf.data.Dataset`` of unbatched ``(image uint8 (H, W, 3), label
  uint8 (H, W))``, one pass = one epoch, whose order depends only on the epoch (e.g.
  ``lambda e: make_tf_dataset(examples, size, shuffle_seed=1, epoch=e)``, or an
  ``ArrayEpochs``). It may take keywords, which the feed then passes: ``batch_size`` (this
  worker's share of the global batch), ``skip_batches`` (batches of the epoch already taken
  by an interrupted run: skipped before anything is decoded; without it the pass is cut with
  ``Dataset.skip``, which reads the skipped files) and ``shard`` ((worker index, workers):
  under multi-worker training a callable that takes it reads only its worker's part, one
  without it is taken to serve its worker's share already);
* a plain ``tf.data.Dataset`` as above, the same pass every epoch (a resumed epoch restarts it;
  one worker only).

Every pipeline yields per-replica batches (b = B / R, consecutive examples: replica r of a step
gets examples r*b .. r*b + b - 1 of its worker's share) and only whole batches. A ``DataSet``
serves one worker only: its position after a step lives in its state, which only the chief
saves; under multi-worker training pass an epoch-indexed callable.
"""
from __future__ import annotations

import inspect
import logging
import threading
from typing import Any, Callable, Union

import numpy as np
import tensorflow as tf

from common.errors import ConfigError

__all__ = ["TrainFeed", "TrainData", "check_index_labels", "check_element_spec"]

logger = logging.getLogger(__name__)

# Steps whose batches are made ahead of the step that takes them.
PREFETCH_STEPS = 2

TrainData = Union[Any, tf.data.Dataset, Callable[[int], tf.data.Dataset]]


def check_index_labels(images: np.ndarray, labels: Any, where: str) -> np.ndarray:
    """``labels`` as class indices matching ``images`` (N, H, W, 3); else a ConfigError."""
    if labels is None:
        raise ConfigError(f"{where} has no labels: training and validation need label masks")
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"{where}: images must be RGB batches (N, H, W, 3), got {images.shape}")
    if labels.shape != images.shape[:3] or not np.issubdtype(labels.dtype, np.integer):
        hint = (" (one-hot labels: convert with datasets.data.from_one_hot first)"
                if labels.ndim == 4 else "")
        raise ConfigError(
            f"{where}: labels must be integer class indices of shape {images.shape[:3]} "
            f"matching the images, got {labels.dtype} {labels.shape}{hint}")
    return labels


def check_element_spec(dataset: tf.data.Dataset, where: str) -> None:
    spec = dataset.element_spec
    ok = (isinstance(spec, (tuple, list)) and len(spec) == 2
          and spec[0].shape.rank == 3 and spec[0].shape[-1] == 3 and spec[1].shape.rank == 2)
    if not ok:
        raise ConfigError(
            f"{where}: a tf.data.Dataset must yield unbatched (image (H, W, 3), label (H, W)) "
            f"pairs, e.g. datasets.pipeline.make_tf_dataset(...); got element spec {spec}")


class TrainFeed:
    """The epochs of one train data source (see the module docstring).

    Args:
        data: DataSet-like, callable epoch -> tf.data.Dataset, or tf.data.Dataset.
        batch_size: the global batch B.
        num_replicas: replicas R that split each global batch (B must be a multiple of R).
    """

    def __init__(self, data: TrainData, batch_size: int, num_replicas: int, *,
                 num_workers: int = 1, worker_index: int = 0) -> None:
        self.data = data
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.num_workers, self.worker_index = int(num_workers), int(worker_index)
        self.replica_batch = self.batch_size // self.num_replicas
        self.local_batch = self.batch_size // self.num_workers   # this worker's share
        self.local_replicas = self.num_replicas // self.num_workers
        # DataSet state after each batch of the current epoch: {steps done: state}.
        self._states: dict[int, Any] = {}
        self._lock = threading.Lock()
        if isinstance(data, tf.data.Dataset):
            self.kind = "dataset"
            check_element_spec(data, "train_set")
            if self.num_workers > 1:
                raise ConfigError("under multi-worker training the train_set must be a callable "
                                  "epoch -> tf.data.Dataset (every worker resumes at the same "
                                  "step), e.g. datasets.pipeline.make_tf_dataset or ArrayEpochs")
        elif hasattr(data, "next_batch") and hasattr(data, "num_examples"):
            self.kind = "arrays"
            if self.num_workers > 1:
                raise ConfigError("a DataSet serves one worker: under multi-worker training "
                                  "pass datasets.pipeline.ArrayEpochs over the worker's share, or "
                                  "make_tf_dataset(..., shard=...)")
            if data.num_examples < batch_size:
                raise ConfigError(
                    f"train_set has {data.num_examples} examples, fewer than batch_size="
                    f"{batch_size}: an epoch would have no step; lower batch_size")
            if hasattr(data, "images") and hasattr(data, "labels"):
                # Fail now, not at the first step, on missing or one-hot labels.
                check_index_labels(np.asarray(data.images[:1]),
                                   None if data.labels is None else data.labels[:1], "train_set")
        elif callable(data):
            self.kind = "callable"
        else:
            raise ConfigError(
                f"train_set must be a DataSet (next_batch, num_examples), a tf.data.Dataset of "
                f"(image, label) or a callable epoch -> tf.data.Dataset; got "
                f"{type(data).__name__}")

    @property
    def steps_per_epoch(self) -> int | None:
        """Known in advance for a DataSet; None (unknown until the pass ends) for tf.data."""
        if self.kind == "arrays":
            return self.data.num_examples // self.batch_size
        return None

    # -- pipelines -------------------------------------------------------------------------------

    def epoch(self, epoch_index: int, start_step: int = 0) -> tf.data.Dataset:
        """Per-replica batches of epoch ``epoch_index`` (0-based) from step ``start_step`` on
        (the steps before it were taken by an interrupted run)."""
        if self.kind == "arrays":
            dataset = self._array_epoch(start_step)
        else:
            dataset = self._stream_epoch(epoch_index, start_step)
        # A fixed prefetch and no tf.data autotuning: autotuning's own threads compete with the
        # compiled steps that read this pipeline for the few cores of a CPU machine, and the
        # steps then run on one core in stretches. Parallel maps of a stream use one call per
        # core.
        options = tf.data.Options()
        options.autotune.enabled = False
        # (The pipelines yield one element per local replica and step.)
        return dataset.prefetch(PREFETCH_STEPS * self.local_replicas).with_options(options)

    def _array_epoch(self, start_step: int) -> tf.data.Dataset:
        data, steps = self.data, self.steps_per_epoch
        batch, replicas, part = self.batch_size, self.num_replicas, self.replica_batch
        sample_images = np.asarray(data.images[:1])
        sample_labels = np.asarray(data.labels[:1])
        height, width = sample_images.shape[1:3]
        with self._lock:
            self._states = {start_step: self._get_state()}

        def draw(step: np.int64) -> tuple[np.ndarray, np.ndarray]:
            # Runs in a tf.data thread, one step after the other (a sequential map of a
            # stateful function): the next batch, its position recorded before the batch
            # leaves, so once the step that takes it has run its position is there for a
            # resume state.
            images, labels = data.next_batch(batch, shuffle=True)
            images = np.asarray(images)
            labels = check_index_labels(images, labels, "train_set")
            with self._lock:
                self._states[int(step) + 1] = self._get_state()
            return images, labels

        def step_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            dtypes = (tf.as_dtype(sample_images.dtype), tf.as_dtype(sample_labels.dtype))
            images, labels = tf.numpy_function(draw, [step], dtypes, stateful=True)
            return (tf.ensure_shape(images, (batch, height, width, 3)),
                    tf.ensure_shape(labels, (batch, height, width)))

        # Not Dataset.from_generator: under Python 3.11 its kernel fixes glibc's mmap threshold
        # at 128 KiB for the whole process (mallopt), after which every larger tensor of every
        # step is a fresh mmap: page faults took a fifth of the CPU time of an epoch here.
        dataset = tf.data.Dataset.range(start_step, steps).map(step_batch)
        if replicas == 1:
            return dataset
        # (B, H, W, ...) -> R consecutive per-replica batches (b, H, W, ...), b = B / R.
        return dataset.flat_map(lambda images, labels: tf.data.Dataset.from_tensor_slices((
            tf.reshape(images, (replicas, part, height, width, 3)),
            tf.reshape(labels, (replicas, part, height, width)))))

    def _stream_epoch(self, epoch_index: int, start_step: int) -> tf.data.Dataset:
        skip = start_step * self.local_batch
        if self.kind == "callable":
            where = f"train_set({epoch_index})"
            accepted = inspect.signature(self.data).parameters
            offered = {"batch_size": self.local_batch, "skip_batches": start_step,
                       "shard": (self.worker_index, self.num_workers)}
            keywords = {k: v for k, v in offered.items() if k in accepted}
            dataset = self.data(epoch_index, **keywords)
            if "skip_batches" in keywords:
                skip = 0
        else:
            where, dataset = "train_set", self.data
        if not isinstance(dataset, tf.data.Dataset):
            raise ConfigError(f"{where} returned {type(dataset).__name__}, expected a "
                              f"tf.data.Dataset of (image, label)")
        check_element_spec(dataset, where)
        if skip:
            dataset = dataset.skip(skip)
        # Whole batches of this worker's share only, then cut into its replicas' shares.
        dataset = dataset.batch(self.local_batch, drop_remainder=True)
        return dataset.rebatch(self.replica_batch) if self.local_replicas > 1 else dataset

    def distributed_epoch(self, epoch_index: int, start_step: int, strategy: Any) -> Any:
        """``epoch`` through the strategy's input path, whatever the replica count: each
        replica's batches are prefetched onto its device (one GPU as several; on the default
        strategy the dataset itself)."""
        dataset = self.epoch(epoch_index, start_step)
        return strategy.distribute_datasets_from_function(lambda context: dataset)

    # -- resume position ---------------------------------------------------------------------------

    def forget_before(self, steps_done: int) -> None:
        """The positions before ``steps_done`` will not be asked for again (the loop read the
        device up to there): at most the prefetched steps' positions stay in memory."""
        with self._lock:
            for step in [s for s in self._states if s < steps_done]:
                del self._states[step]

    def _get_state(self) -> Any:
        return self.data.get_state() if hasattr(self.data, "get_state") else None

    def state_after(self, steps_done: int) -> Any:
        """What ``restore`` needs to continue after ``steps_done`` steps of the current epoch:
        the DataSet's state after that batch (None for the tf.data sources, whose position is
        the step count itself)."""
        if self.kind != "arrays":
            return None
        with self._lock:
            state = self._states.get(steps_done)
        self.forget_before(steps_done)
        if state is None and hasattr(self.data, "get_state"):
            raise RuntimeError(f"no data position recorded after step {steps_done}")
        return state

    def restore(self, state: Any, steps_done: int) -> None:
        """Continue from ``state_after(steps_done)`` of an interrupted run."""
        if self.kind == "arrays":
            if state is not None and hasattr(self.data, "set_state"):
                self.data.set_state(state)
                with self._lock:
                    self._states = {steps_done: state}
            else:
                logger.warning("resume: the train_set order cannot be restored (no "
                               "get_state/set_state); batches will differ from an "
                               "uninterrupted run")
        elif self.kind == "dataset":
            logger.warning("resume: a plain tf.data.Dataset restarts its pass; for an exact "
                           "resume pass a callable epoch -> tf.data.Dataset as train_set")
