"""The training loop: momentum SGD, plateau learning-rate decay, best-model selection, resume.

Data flow of one epoch::

    train data ──batches (B, H, W, 3) uint8 + (B, H, W) uint8──> split over the replicas
        ──compiled step (tf.function, strategy.run)──> loss (float), argmax predictions (B, H, W)
        ──> step losses, train score = mean over the epoch's batches of evaluator.score(batch)
    val data ──compiled forward──> predictions (b, H, W) ──> evaluator(s).update, per batch
        ──> eval score(s) ──> is_better? save best model : count a bad epoch
        ──> _update_learning_rate (plateau rule) ──> history.csv/.json, learning_curve.png/.svg,
            TensorBoard scalars, last_state.npz (resume point)

Train data is one of (``batch_size`` is the global batch, over all replicas):

* a ``datasets.DataSet`` (or any object with ``next_batch``, ``num_examples`` and optionally
  ``get_state``/``set_state``): ``num_examples // batch_size`` steps per epoch through
  ``next_batch`` (as the original), so an epoch boundary may fall inside a batch;
* a ``tf.data.Dataset`` of unbatched ``(image uint8 (H, W, 3), label uint8 (H, W))``, one pass
  = one epoch; the loop batches it (``drop_remainder=True``) and prefetches;
* a callable ``epoch_index -> tf.data.Dataset`` as above (0 for the first epoch), e.g.
  ``lambda e: make_tf_dataset(examples, size, shuffle_seed=1, epoch=e)``: its order depends
  only on the epoch, so a resumed streaming run sees the same batches as an uninterrupted one.

Validation data is a ``DataSet``-like object with ``images`` and ``labels``, or a
``tf.data.Dataset`` of unbatched ``(image, label)``; labels are uint8 class indices with the
ignore value for unknown pixels. Without validation data the train score drives model
selection and the plateau rule, as in the original.

Loss normalisation over replicas: each replica computes the cross-entropy *sum* of its pixels
and divides by the number of valid pixels of the *global* batch (an all-reduce of the counts),
plus ``regularization_loss() / num_replicas``; Keras sums the replicas' gradients, so the update
equals the single-device update on the same global batch. Gradient clipping (``clip_norm``)
acts on that summed gradient.

A non-finite loss stops the run: history and curve are written, the best model and
``last_state.npz`` (end of the last good epoch) stay on disk, and ``NonFiniteLossError`` is
raised, naming the epoch and step and suggesting a lower learning rate or clipping; its
``results`` attribute holds what ``train(details=True)`` would have returned.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import logging
import math
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from learning.checkpoint import CheckpointError, atomic_write_text, load_state, save_state
from learning.evaluators import Evaluator
from learning.utils import plot_learning_curve

__all__ = [
    "Optimizer",
    "MomentumOptimizer",
    "NonFiniteLossError",
    "CheckpointError",
    "LAST_STATE_NAME",
]

logger = logging.getLogger(__name__)

LAST_STATE_NAME = "last_state.npz"
HISTORY_CSV_NAME = "history.csv"
HISTORY_JSON_NAME = "history.json"
TENSORBOARD_DIR_NAME = "tensorboard"

TrainData = Union[Any, tf.data.Dataset, Callable[[int], tf.data.Dataset]]

# tf.summary.scalar lives in the optional `tensorboard` package; with core TF alone we write the
# same event: a float32 scalar tensor tagged for TensorBoard's "scalars" plugin.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def _summary_scalar(tag: str, value: float, step: int) -> None:
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run folder keeps the last good results.

    Attributes: ``epoch`` (1-based), ``step`` (1-based within the epoch), ``global_step``,
    ``loss``, ``learning_rate``, ``save_dir``, ``results`` (the ``train(details=True)`` dict up
    to the failure, the non-finite step loss included).
    """

    def __init__(self, *, epoch: int, step: int, global_step: int, loss: float,
                 learning_rate: float, save_dir: Path, best_epoch: int | None,
                 best_score: float, results: dict[str, Any]) -> None:
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.loss, self.learning_rate, self.save_dir = loss, learning_rate, save_dir
        self.results = results
        kept = (f"the best model (epoch {best_epoch}, score {best_score:.6f})"
                if best_epoch is not None else "no best model yet")
        super().__init__(
            f"training loss became {loss} at epoch {epoch}, step {step} (global step "
            f"{global_step}) with learning rate {learning_rate:.3g}; {kept}, the history and "
            f"the last end-of-epoch state are kept in {save_dir}. Try a lower learning rate "
            f"(--lr, e.g. {learning_rate / 10:.3g}) or gradient clipping (--clip-norm, e.g. 1.0)"
        )


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed for the global generators, fixed by (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


def _tf_error_summary(message: str, limit: int = 300) -> str:
    """The informative line of a TF graph-execution error (not the node and file trace)."""
    noise = ("Graph execution error", "Detected at node", "  File", "\t", " [[", "[[")
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line.startswith(noise)]
    summary = lines[-1] if lines else message.strip()
    return summary if len(summary) <= limit else summary[:limit] + "..."


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _normalised(config: Any) -> Any:
    """A config as it looks after a JSON round trip (tuples -> lists), for comparison."""
    return json.loads(json.dumps(config))


def _check_index_labels(images: np.ndarray, labels: Any, where: str) -> np.ndarray:
    if labels is None:
        raise ValueError(f"{where} has no labels: training and validation need label masks")
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{where}: images must be RGB batches (N, H, W, 3), got {images.shape}")
    if labels.shape != images.shape[:3] or not np.issubdtype(labels.dtype, np.integer):
        hint = (" (one-hot labels: convert with datasets.data.from_one_hot first)"
                if labels.ndim == 4 else "")
        raise ValueError(
            f"{where}: labels must be integer class indices of shape {images.shape[:3]} matching "
            f"the images, got {labels.dtype} {labels.shape}{hint}")
    return labels


def _check_element_spec(dataset: tf.data.Dataset, where: str) -> None:
    spec = dataset.element_spec
    ok = (isinstance(spec, (tuple, list)) and len(spec) == 2
          and spec[0].shape.rank == 3 and spec[0].shape[-1] == 3 and spec[1].shape.rank == 2)
    if not ok:
        raise ValueError(
            f"{where}: a tf.data.Dataset must yield unbatched (image (H, W, 3), label (H, W)) "
            f"pairs, e.g. datasets.data.make_tf_dataset(...); got element spec {spec}")


class _EpochSource:
    """Adapts the train data to "the global batches of epoch k", with its resume state."""

    def __init__(self, data: TrainData, batch_size: int) -> None:
        self.data = data
        self.batch_size = batch_size
        if isinstance(data, tf.data.Dataset):
            self.kind = "dataset"
            _check_element_spec(data, "train_set")
        elif hasattr(data, "next_batch") and hasattr(data, "num_examples"):
            self.kind = "arrays"
            if data.num_examples < batch_size:
                raise ValueError(
                    f"train_set has {data.num_examples} examples, fewer than batch_size="
                    f"{batch_size}: an epoch would have no step; lower batch_size")
            if hasattr(data, "images") and hasattr(data, "labels"):
                # Fail now, not at the first step, on missing or one-hot labels.
                _check_index_labels(np.asarray(data.images[:1]),
                                    None if data.labels is None else data.labels[:1],
                                    "train_set")
        elif callable(data):
            self.kind = "callable"
        else:
            raise TypeError(
                f"train_set must be a DataSet (next_batch, num_examples), a tf.data.Dataset of "
                f"(image, label) or a callable epoch -> tf.data.Dataset; got "
                f"{type(data).__name__}")

    @property
    def steps_per_epoch(self) -> int | None:
        """Known in advance for a DataSet; None (unknown until the pass ends) for tf.data."""
        if self.kind == "arrays":
            return self.data.num_examples // self.batch_size
        return None

    def numpy_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """DataSet source: the epoch's ``steps_per_epoch`` global batches from ``next_batch``."""
        for _ in range(self.steps_per_epoch):
            images, labels = self.data.next_batch(self.batch_size, shuffle=True)
            images = np.asarray(images)
            yield images, _check_index_labels(images, labels, "train_set")

    def batched_dataset(self, epoch_index: int) -> tf.data.Dataset:
        """tf.data source: the epoch's pipeline, batched (full batches only) and prefetched."""
        dataset = self.data(epoch_index) if self.kind == "callable" else self.data
        where = f"train_set({epoch_index})" if self.kind == "callable" else "train_set"
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(f"{where} returned {type(dataset).__name__}, expected a "
                            f"tf.data.Dataset of (image, label)")
        _check_element_spec(dataset, where)
        return dataset.batch(self.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def get_state(self) -> Any:
        if self.kind == "arrays" and hasattr(self.data, "get_state"):
            return self.data.get_state()
        return None

    def set_state(self, state: Any) -> None:
        if self.kind == "arrays":
            if state is not None and hasattr(self.data, "set_state"):
                self.data.set_state(state)
            else:
                logger.warning("resume: the train_set order cannot be restored (no saved "
                               "get_state/set_state); batches will differ from an "
                               "uninterrupted run")
        elif self.kind == "dataset":
            logger.warning("resume: a plain tf.data.Dataset restarts its pass; for an exact "
                           "resume pass a callable epoch -> tf.data.Dataset as train_set")


class Optimizer(ABC):
    """Base class of the gradient-descent trainers: the loop, evaluation, checkpoints, resume.

    Subclasses provide the Keras optimizer (``_build_optimizer``) and the learning-rate schedule
    (``_update_learning_rate``, called once per epoch after the score bookkeeping).

    Args:
        model: a ``models.nn.SegNet`` (uses ``keras_model``, ``num_classes``,
            ``cross_entropy_terms``, ``regularization_loss``, ``save``, ``get_config``). With a
            distribution ``strategy`` it must have been built inside ``strategy.scope()``.
        train_set: DataSet, tf.data.Dataset or callable epoch -> tf.data.Dataset (module doc).
        evaluator: the score that selects the best model and drives the schedule.
        val_set: DataSet-like or tf.data.Dataset of (image, label); None scores the train set.
        batch_size: global batch size (split evenly over the replicas).
        num_epochs: the epoch count to reach (a resumed run continues up to it).
        init_learning_rate: learning rate of the first epoch.
        warmup_steps: ramp the learning rate linearly from ``lr / warmup_steps`` up to ``lr``
            over the first steps of the run (0 = no warm-up). From random initialisation the
            first gradients are large and erratic; a short ramp keeps them from wrecking the
            weights before BatchNorm statistics settle.
        learning_rate_patience: bad epochs tolerated before a decay (decay when exceeded).
        learning_rate_decay: factor applied to the learning rate on a plateau.
        eps: a decay smaller than this is skipped.
        score_threshold: relative improvement needed for a new best (``evaluator.is_better``).
        clip_norm: clip the (summed) gradient to this global norm; None = no clipping.
        ema_momentum: keep an exponential moving average of the trainable weights (updated
            every step, ``avg = m * avg + (1 - m) * w``) and evaluate and save *it* instead of
            the raw weights, which SGD leaves noisy from step to step; None = off. Training
            itself continues from the raw weights.
        eval_batch_size: batch size of the validation pass (default ``batch_size``).
        extra_evaluators: more validation scores to log (e.g. ``MeanIoUEvaluator``); names
            must differ from each other and from ``evaluator``'s.
        strategy: a ``tf.distribute.Strategy``; None = the current (default: one device).
        seed: when given, Python/NumPy/TensorFlow global generators are reseeded from
            (seed, epoch) at the start of every epoch, so random ops outside the data order
            repeat in a resumed run. (The data order is the DataSet's own seed, or the
            epoch-indexed tf.data pipeline's.)
    """

    def __init__(
        self,
        model: Any,
        train_set: TrainData,
        evaluator: Evaluator,
        val_set: Any = None,
        *,
        batch_size: int = 8,
        num_epochs: int = 300,
        init_learning_rate: float = 1e-3,
        warmup_steps: int = 0,
        learning_rate_patience: int = 10,
        learning_rate_decay: float = 0.1,
        eps: float = 1e-8,
        score_threshold: float = 1e-4,
        clip_norm: float | None = None,
        ema_momentum: float | None = None,
        eval_batch_size: int | None = None,
        extra_evaluators: Sequence[Evaluator] = (),
        strategy: tf.distribute.Strategy | None = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.evaluator = evaluator
        self.val_set = val_set
        self.extra_evaluators = tuple(extra_evaluators)
        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        self.num_replicas = int(self.strategy.num_replicas_in_sync)

        _require(isinstance(batch_size, (int, np.integer)) and batch_size >= 1,
                 f"batch_size must be a positive integer, got {batch_size!r}")
        _require(batch_size % self.num_replicas == 0,
                 f"batch_size={batch_size} must be a multiple of the {self.num_replicas} "
                 f"replicas of the distribution strategy (each gets batch_size / replicas)")
        _require(isinstance(num_epochs, (int, np.integer)) and num_epochs >= 1,
                 f"num_epochs must be a positive integer, got {num_epochs!r}")
        _require(init_learning_rate > 0, f"init_learning_rate must be > 0, got "
                 f"{init_learning_rate!r}")
        _require(isinstance(warmup_steps, (int, np.integer)) and warmup_steps >= 0,
                 f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        _require(learning_rate_patience >= 0, f"learning_rate_patience must be >= 0, got "
                 f"{learning_rate_patience!r}")
        _require(0 < learning_rate_decay <= 1, f"learning_rate_decay must be in (0, 1], got "
                 f"{learning_rate_decay!r}")
        _require(eps >= 0, f"eps must be >= 0, got {eps!r}")
        _require(score_threshold >= 0, f"score_threshold must be >= 0, got {score_threshold!r}")
        _require(clip_norm is None or clip_norm > 0,
                 f"clip_norm must be > 0 or None, got {clip_norm!r}")
        _require(ema_momentum is None or 0.0 < ema_momentum < 1.0,
                 f"ema_momentum must be in (0, 1) or None, got {ema_momentum!r}")
        _require(eval_batch_size is None or eval_batch_size >= 1,
                 f"eval_batch_size must be >= 1 or None, got {eval_batch_size!r}")
        names = [e.name for e in (evaluator, *self.extra_evaluators)]
        _require(len(set(names)) == len(names),
                 f"evaluator names must be unique (they name history columns), got {names}")
        if val_set is not None and not isinstance(val_set, tf.data.Dataset):
            _require(hasattr(val_set, "images") and hasattr(val_set, "labels"),
                     f"val_set must have .images and .labels (a DataSet) or be a "
                     f"tf.data.Dataset of (image, label), got {type(val_set).__name__}")
            _check_index_labels(np.asarray(val_set.images), val_set.labels, "val_set")
        elif val_set is not None:
            _check_element_spec(val_set, "val_set")

        self.batch_size = int(batch_size)
        self.num_epochs = int(num_epochs)
        self.init_learning_rate = float(init_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.learning_rate_patience = int(learning_rate_patience)
        self.learning_rate_decay = float(learning_rate_decay)
        self.eps = float(eps)
        self.score_threshold = float(score_threshold)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.ema_momentum = None if ema_momentum is None else float(ema_momentum)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.seed = None if seed is None else int(seed)
        self._source = _EpochSource(train_set, self.batch_size)
        self.train_set = train_set

        self._check_model_in_strategy_scope()
        with self.strategy.scope():
            self._keras_optimizer = self._build_optimizer()
            # The averaging itself lives in the Keras optimizer; a subclass that forgot to pass
            # `_ema_arguments()` would otherwise evaluate raw weights under an "EMA" label.
            _require(self.ema_momentum is None or self._keras_optimizer.use_ema,
                     f"{type(self).__name__}._build_optimizer ignores ema_momentum: pass "
                     f"**self._ema_arguments() to the Keras optimizer")
            # Create the slot variables now: the resume state restores into them.
            self._keras_optimizer.build(self.model.keras_model.trainable_variables)
        self._train_step = tf.function(self._distributed_train_step)
        self._eval_step = tf.function(self._distributed_eval_step, reduce_retracing=True)
        # A separate instance for per-batch train scores, so a streaming evaluation in
        # progress on `evaluator` is never disturbed.
        self._train_evaluator = copy.deepcopy(evaluator)
        self._reset()

    # -- hooks -----------------------------------------------------------------------------------

    @abstractmethod
    def _build_optimizer(self) -> keras.optimizers.Optimizer:
        """The Keras optimizer that applies the gradients (built inside the strategy scope),
        constructed with ``**self._ema_arguments()``."""

    def _ema_arguments(self) -> dict[str, Any]:
        """Keras optimizer arguments for ``ema_momentum`` (none when it is off)."""
        if self.ema_momentum is None:
            return {}
        return {"use_ema": True, "ema_momentum": self.ema_momentum}

    @abstractmethod
    def _update_learning_rate(self) -> None:
        """Update ``curr_learning_rate`` (and ``num_bad_epochs``) once per epoch, after the
        best-score bookkeeping of that epoch."""

    # -- bookkeeping -----------------------------------------------------------------------------

    def _reset(self) -> None:
        """Counters of a fresh run (the original's ``_reset``)."""
        self.curr_epoch = 1                       # the next epoch to run, 1-based
        self.num_bad_epochs = 0
        self.best_score = float(self.evaluator.worst_score)
        self.best_epoch: int | None = None
        self.curr_learning_rate = self.init_learning_rate
        self.history: list[dict[str, Any]] = []   # one row per finished epoch
        self.step_losses: list[float] = []

    def _judge_epoch(self, curr_score: float) -> bool:
        """The end-of-epoch rule: new best? (reset the bad count) else count a bad epoch; then
        the learning-rate hook. Returns whether ``curr_score`` is a new best (save the model)."""
        improved = self.evaluator.is_better(curr_score, self.best_score,
                                            score_threshold=self.score_threshold)
        if improved:
            self.best_score = float(curr_score)
            self.best_epoch = self.curr_epoch
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        self._update_learning_rate()
        return improved

    # -- compiled steps --------------------------------------------------------------------------

    def _check_model_in_strategy_scope(self) -> None:
        variables = self.model.keras_model.variables
        outside = [v.path for v in variables
                   if not self.strategy.extended.variable_created_in_scope(
                       getattr(v, "value", v))]
        if outside:
            raise ValueError(
                f"{len(outside)} model variables (e.g. {outside[0]}) were not created under the "
                f"distribution strategy's scope: build the model inside `with strategy.scope():` "
                f"and pass the same strategy to the optimizer")

    def _replica_train_step(self, images: tf.Tensor, labels: tf.Tensor):
        """One replica's share of a step: images (b, H, W, 3), labels (b, H, W), b = B / R."""
        context = tf.distribute.get_replica_context()
        keras_model = self.model.keras_model
        variables = keras_model.trainable_variables
        with tf.GradientTape() as tape:
            logits = keras_model(tf.cast(images, tf.float32), training=True)  # (b, H, W, C)
            ce_sum, count = self.model.cross_entropy_terms(labels, logits)
            # Valid pixels of the global batch; clamped so an all-ignore batch gives loss 0.
            global_count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                              tf.cast(tf.stop_gradient(count), tf.float32))
            loss = (ce_sum / tf.maximum(global_count, 1.0)
                    + tf.cast(self.model.regularization_loss(), tf.float32) / self.num_replicas)
        gradients = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        if len(pairs) < len(variables):
            logger.warning("%d trainable variables get no gradient from the loss",
                           len(variables) - len(pairs))
        gradients = [g for g, _ in pairs]
        if self.clip_norm is not None:
            # Clip the global gradient, not each replica's share: sum first. Keras sums the
            # replicas' gradients again in apply_gradients, hence the division by R after.
            if self.num_replicas > 1:
                gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
            gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
            if self.num_replicas > 1:
                gradients = [g / self.num_replicas for g in gradients]
        self._keras_optimizer.apply_gradients(zip(gradients, [v for _, v in pairs]))
        predictions = tf.cast(tf.argmax(logits, axis=-1), tf.uint8)  # (b, H, W)
        return loss, predictions, labels

    def _distributed_train_step(self, images: Any, labels: Any):
        """Global batch -> (summed loss, predictions (B, H, W) uint8, labels (B, H, W))."""
        loss, predictions, labels = self.strategy.run(self._replica_train_step,
                                                      args=(images, labels))
        loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        local = self.strategy.experimental_local_results
        return loss, tf.concat(local(predictions), axis=0), tf.concat(local(labels), axis=0)

    def _replica_eval_step(self, images: tf.Tensor) -> tf.Tensor:
        """Inference-mode forward of one replica's images (b, H, W, 3) -> masks (b, H, W)."""
        logits = self.model.keras_model(tf.cast(images, tf.float32), training=False)
        return tf.cast(tf.argmax(logits, axis=-1), tf.uint8)

    def _distributed_eval_step(self, images: Any) -> tf.Tensor:
        """Global batch of images -> predicted masks (B, H, W) uint8, in batch order."""
        predictions = self.strategy.run(self._replica_eval_step, args=(images,))
        return tf.concat(self.strategy.experimental_local_results(predictions), axis=0)

    def _distribute_arrays(self, *arrays: np.ndarray) -> tuple[Any, ...]:
        """Numpy global batch(es) -> per-replica values: replica i gets the i-th of
        ``np.array_split(array, num_replicas)`` (so concatenating the local results in replica
        order restores the batch order)."""
        if self.num_replicas == 1:
            return tuple(tf.convert_to_tensor(array) for array in arrays)
        parts = [np.array_split(array, self.num_replicas) for array in arrays]

        def value_fn(context: tf.distribute.experimental.ValueContext):
            i = context.replica_id_in_sync_group
            return tuple(tf.constant(split[i]) for split in parts)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def _distribute_dataset(self, dataset: tf.data.Dataset):
        if self.num_replicas == 1:
            return dataset
        options = tf.data.Options()
        # One worker: no file sharding, just split each global batch over the local replicas.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    # -- epoch pieces ----------------------------------------------------------------------------

    def _train_batches(self, epoch_index: int) -> Iterator[tuple[Any, Any]]:
        """The epoch's global batches, already split over the replicas."""
        if self._source.kind == "arrays":
            for images, labels in self._source.numpy_batches():
                yield self._distribute_arrays(images, labels)
        else:
            yield from self._distribute_dataset(self._source.batched_dataset(epoch_index))

    def _eval_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(labels, predictions) of the validation set, batch by batch, as numpy arrays.

        With several replicas a short last batch is padded (repeating its last image) to a
        multiple of the replica count and the padding's predictions are dropped, so no replica
        ever gets an empty batch (TensorFlow's CPU convolutions reject those).
        """
        if isinstance(self.val_set, tf.data.Dataset):
            batches = self.val_set.batch(self.eval_batch_size).prefetch(
                tf.data.AUTOTUNE).as_numpy_iterator()
        else:
            all_images = np.asarray(self.val_set.images)
            all_labels = np.asarray(self.val_set.labels)
            batches = ((all_images[i:i + self.eval_batch_size],
                        all_labels[i:i + self.eval_batch_size])
                       for i in range(0, len(all_images), self.eval_batch_size))
        for images, labels in batches:
            count = len(images)
            padding = -count % self.num_replicas
            if padding:
                images = np.concatenate([images, np.repeat(images[-1:], padding, axis=0)])
            (distributed,) = self._distribute_arrays(images)
            yield labels, self._eval_step(distributed).numpy()[:count]

    def _evaluate(self) -> dict[str, float]:
        """Stream the validation set through every evaluator -> {name: score}."""
        evaluators = (self.evaluator, *self.extra_evaluators)
        for evaluator in evaluators:
            evaluator.reset()
        for labels, predictions in self._eval_batches():
            for evaluator in evaluators:
                evaluator.update(labels, predictions)
        return {evaluator.name: float(evaluator.result()) for evaluator in evaluators}

    def _train_epoch(self, epoch: int, save_dir: Path, progress: bool) -> tuple[list[float],
                                                                                 float]:
        """Run one epoch of steps -> (its step losses, its train score).

        The train score is the mean over the epoch's batches of the evaluator's score of each
        batch's predictions (made by the step itself, before its update).
        """
        self._keras_optimizer.learning_rate = self.curr_learning_rate
        first_global_step = len(self.step_losses)  # steps taken in earlier epochs
        bar = keras.utils.Progbar(self._source.steps_per_epoch, verbose=1 if progress else 0,
                                  unit_name="step")
        losses: list[float] = []
        batch_scores: list[float] = []
        for step, (images, labels) in enumerate(self._train_batches(epoch - 1), start=1):
            global_step = first_global_step + step  # 1-based over the whole run
            if global_step <= self.warmup_steps:
                self._keras_optimizer.learning_rate = (
                    self.curr_learning_rate * global_step / self.warmup_steps)
            elif global_step == self.warmup_steps + 1:
                self._keras_optimizer.learning_rate = self.curr_learning_rate
            try:
                loss, predictions, batch_labels = self._train_step(images, labels)
            except tf.errors.InvalidArgumentError as error:
                # E.g. the model's label-range assertion: say which batch, not where in TF.
                raise ValueError(
                    f"epoch {epoch}, step {step}: the training step rejected its batch: "
                    f"{_tf_error_summary(error.message)}. Check the train labels (class indices "
                    f"in [0, {self.model.num_classes}) or the ignore value) and the image "
                    f"size") from error
            loss = float(loss)
            losses.append(loss)
            if not math.isfinite(loss):
                self.step_losses.extend(losses)
                self._fail_non_finite(epoch, step, loss, save_dir)
            batch_scores.append(float(self._train_evaluator.score(batch_labels.numpy(),
                                                                  predictions.numpy())))
            bar.update(step, values=[("loss", loss)])
        if not losses:
            raise ValueError(f"epoch {epoch}: the train data gave no full batch of "
                             f"{self.batch_size} examples")
        return losses, float(np.mean(batch_scores))

    # -- the loop --------------------------------------------------------------------------------

    def train(self, save_dir: str | Path, details: bool = False, verbose: bool = True,
              resume: bool = False) -> dict[str, Any] | None:
        """Train up to ``num_epochs``; keep the best model in ``save_dir``.

        Args:
            save_dir: run folder (created if needed; the original defaulted to /tmp): best
                model (``model.save``), ``last_state.npz``, ``history.csv``/``.json``,
                ``learning_curve.png``/``.svg``, ``tensorboard/``.
            details: return the results dict (else None, as the original).
            verbose: log one INFO line per epoch and show a progress bar on a terminal
                (quiet when stdout is not a TTY); False logs the lines at DEBUG.
            resume: continue from ``save_dir/last_state.npz`` (model and optimizer variables,
                epoch, learning rate, bad-epoch count, best score, history, data order).
                Without it the run starts at epoch 1 from the model's current weights, with
                the initial learning rate and fresh optimizer slots.

        Returns:
            With ``details``: ``step_losses`` (every step), ``step_scores`` (train score per
            epoch), ``eval_scores`` (main validation score per epoch, if ``val_set``),
            ``extra_eval_scores`` ({name: per epoch}), ``learning_rates`` (used in each epoch),
            ``epochs`` (the history rows), ``best_score``, ``best_epoch``.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (see the module docstring).
            CheckpointError: ``resume`` with a missing, unreadable or mismatching state.
        """
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        state_path = save_dir / LAST_STATE_NAME
        if resume:
            self._restore(state_path)
            logger.info("resumed from %s at epoch %d/%d (lr %.3g, best %s %.6f)", state_path,
                        self.curr_epoch, self.num_epochs, self.curr_learning_rate,
                        self.evaluator.name, self.best_score)
        else:
            if state_path.exists():
                logger.warning("%s exists and will be overwritten by this new run (pass "
                               "resume=True to continue it)", state_path)
            self._reset()
            for variable in self._keras_optimizer.variables:
                variable.assign(np.zeros(variable.shape, variable.dtype))

        progress = verbose and sys.stdout.isatty()
        log = logger.info if verbose else logger.debug
        steps = self._source.steps_per_epoch
        log("training %d epochs from epoch %d (%s steps per epoch, batch %d over %d "
            "replica(s)), run folder %s", self.num_epochs, self.curr_epoch,
            steps if steps is not None else "?", self.batch_size, self.num_replicas, save_dir)
        writer = tf.summary.create_file_writer(str(save_dir / TENSORBOARD_DIR_NAME))
        start_time = time.time()
        try:
            while self.curr_epoch <= self.num_epochs:
                self._run_epoch(self.curr_epoch, save_dir, progress, log, writer)
        finally:
            writer.close()
        log("training done in %.1f s; best %s %.6f at epoch %s", time.time() - start_time,
            self.evaluator.name, self.best_score, self.best_epoch)
        if self.best_epoch is None:
            logger.warning("no epoch beat the worst score %s: no best model was saved in %s",
                           self.evaluator.worst_score, save_dir)
        return self._results() if details else None

    def _run_epoch(self, epoch: int, save_dir: Path, progress: bool, log: Callable[..., None],
                   writer: Any) -> None:
        if self.seed is not None:
            keras.utils.set_random_seed(_epoch_seed(self.seed, epoch))
        epoch_start = time.time()
        first_step = len(self.step_losses)
        losses, train_score = self._train_epoch(epoch, save_dir, progress)
        self.step_losses.extend(losses)
        learning_rate = self.curr_learning_rate     # the rate this epoch trained with
        with self._averaged_weights():
            eval_scores = self._evaluate() if self.val_set is not None else {}
            curr_score = eval_scores[self.evaluator.name] if eval_scores else train_score
            improved = self._judge_epoch(curr_score)     # may decay curr_learning_rate
            if improved:
                self.model.save(save_dir)
        row = {
            "epoch": epoch,
            "steps": len(losses),
            "loss": float(np.mean(losses)),
            f"train_{self.evaluator.name}": train_score,
            **{f"eval_{name}": score for name, score in eval_scores.items()},
            "lr": learning_rate,
            "improved": improved,
            "best_score": self.best_score,
            "num_bad_epochs": self.num_bad_epochs,
            "seconds": time.time() - epoch_start,
        }
        self.history.append(row)
        evals = "".join(f" | eval {name} {score:.6f}" for name, score in eval_scores.items())
        log("[epoch %d/%d] loss %.6f | train %s %.6f%s | lr %.3g | %.1f s%s", epoch,
            self.num_epochs, row["loss"], self.evaluator.name, train_score, evals,
            learning_rate, row["seconds"], " | best, saved" if improved else "")

        self._write_history(save_dir)
        self._plot(save_dir)
        with writer.as_default():
            for i, loss in enumerate(losses, start=first_step + 1):
                _summary_scalar("step/loss", loss, step=i)
            _summary_scalar("epoch/loss", row["loss"], step=epoch)
            _summary_scalar(f"epoch/train_{self.evaluator.name}", train_score, step=epoch)
            for name, score in eval_scores.items():
                _summary_scalar(f"epoch/eval_{name}", score, step=epoch)
            _summary_scalar("epoch/learning_rate", learning_rate, step=epoch)
        writer.flush()
        self.curr_epoch = epoch + 1
        self._save_state(save_dir / LAST_STATE_NAME)

    @contextlib.contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """With ``ema_momentum``: the model holds the moving average of its trainable weights
        inside the block (for evaluation and saving), its raw weights again after it."""
        if self.ema_momentum is None:
            yield
            return
        variables = self.model.keras_model.trainable_variables
        raw = [np.array(v.numpy()) for v in variables]
        self._keras_optimizer.finalize_variable_values(variables)  # Keras: weights <- average
        try:
            yield
        finally:
            for variable, value in zip(variables, raw):
                variable.assign(value)

    def _fail_non_finite(self, epoch: int, step: int, loss: float, save_dir: Path) -> None:
        """Write what we have (not the state: its weights are damaged) and raise."""
        self._write_history(save_dir)
        self._plot(save_dir)
        error = NonFiniteLossError(
            epoch=epoch, step=step, global_step=len(self.step_losses), loss=loss,
            learning_rate=self.curr_learning_rate, save_dir=save_dir,
            best_epoch=self.best_epoch, best_score=self.best_score, results=self._results())
        logger.error("%s", error)
        raise error

    # -- outputs ---------------------------------------------------------------------------------

    def _results(self) -> dict[str, Any]:
        name = self.evaluator.name
        results: dict[str, Any] = {
            "step_losses": list(self.step_losses),
            "step_scores": [row[f"train_{name}"] for row in self.history],
            "learning_rates": [row["lr"] for row in self.history],
            "epochs": [dict(row) for row in self.history],
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
        }
        if self.val_set is not None:
            results["eval_scores"] = [row[f"eval_{name}"] for row in self.history]
            results["extra_eval_scores"] = {
                e.name: [row[f"eval_{e.name}"] for row in self.history]
                for e in self.extra_evaluators}
        return results

    def _write_history(self, save_dir: Path) -> None:
        if self.history:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)
            atomic_write_text(save_dir / HISTORY_CSV_NAME, buffer.getvalue())
        document = {
            "evaluator": self.evaluator.name,
            "mode": self.evaluator.mode,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "epochs": self.history,
            "step_losses": [_json_float(x) for x in self.step_losses],
        }
        atomic_write_text(save_dir / HISTORY_JSON_NAME, json.dumps(document, indent=1) + "\n")

    def _plot(self, save_dir: Path) -> None:
        results = self._results()
        plot_learning_curve(-1, results["step_losses"], results["step_scores"],
                            eval_scores=results.get("eval_scores"), mode=self.evaluator.mode,
                            img_dir=save_dir, score_name=self.evaluator.name,
                            extra_eval_scores=results.get("extra_eval_scores"))

    # -- resume state ----------------------------------------------------------------------------

    def _training_config(self) -> dict[str, Any]:
        return {
            "optimizer": type(self).__name__,
            "batch_size": self.batch_size,
            "init_learning_rate": self.init_learning_rate,
            "warmup_steps": self.warmup_steps,
            "learning_rate_patience": self.learning_rate_patience,
            "learning_rate_decay": self.learning_rate_decay,
            "eps": self.eps,
            "score_threshold": self.score_threshold,
            "clip_norm": self.clip_norm,
            "ema_momentum": self.ema_momentum,
            "evaluator": self.evaluator.name,
            "seed": self.seed,
        }

    def _state_variables(self) -> dict[str, list]:
        return {"model": list(self.model.keras_model.variables),
                "optimizer": list(self._keras_optimizer.variables)}

    def _save_state(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        names: dict[str, list[str]] = {}
        for group, variables in self._state_variables().items():
            names[group] = [v.path for v in variables]
            for i, variable in enumerate(variables):
                arrays[f"{group}/{i:04d}"] = np.asarray(variable.numpy())
        arrays["step_losses"] = np.asarray(self.step_losses, dtype=np.float64)
        meta = {
            "epoch": self.curr_epoch - 1,            # last finished epoch
            "learning_rate": self.curr_learning_rate,
            "num_bad_epochs": self.num_bad_epochs,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "data_state": self._source.get_state(),
            "model_config": _normalised(self.model.get_config()),
            "model_class": type(self.model).__name__,
            "training_config": self._training_config(),
            "variable_names": names,
        }
        save_state(path, arrays, meta)

    def _restore(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(
                f"cannot resume: {path} not found (a run writes it at the end of every epoch); "
                f"start without resume, or point save_dir at the interrupted run folder")
        arrays, meta = load_state(path)
        saved_model = (meta.get("model_class"), meta.get("model_config"))
        current_model = (type(self.model).__name__, _normalised(self.model.get_config()))
        if saved_model != current_model:
            saved_cfg, current_cfg = saved_model[1] or {}, current_model[1]
            differing = sorted(k for k in set(saved_cfg) | set(current_cfg)
                               if saved_cfg.get(k) != current_cfg.get(k))
            raise CheckpointError(
                f"cannot resume from {path}: it was written for a {saved_model[0]} with config "
                f"{saved_cfg}, the current model is a {current_model[0]} with config "
                f"{current_cfg} (differing: {', '.join(differing) or 'class'}). Rebuild the "
                f"same model, or start a new run in another folder")
        for group, variables in self._state_variables().items():
            saved_names = meta["variable_names"][group]
            saved = [arrays[f"{group}/{i:04d}"] for i in range(len(saved_names))]
            shapes_now = [tuple(v.shape) for v in variables]
            shapes_saved = [a.shape for a in saved]
            if shapes_now != shapes_saved:
                mismatch = _first_mismatch(saved_names, shapes_saved, variables)
                raise CheckpointError(
                    f"cannot resume from {path}: its {len(saved)} {group} variables do not match "
                    f"the current {len(variables)} ({mismatch})")
            for variable, value in zip(variables, saved):
                variable.assign(value)
        differences = {k: (v, self._training_config().get(k))
                       for k, v in meta["training_config"].items()
                       if self._training_config().get(k) != v}
        if differences:
            logger.warning("resume: training settings differ from the interrupted run "
                           "(saved, now): %s", differences)
        self.curr_epoch = int(meta["epoch"]) + 1
        self.curr_learning_rate = float(meta["learning_rate"])
        self.num_bad_epochs = int(meta["num_bad_epochs"])
        self.best_score = float(meta["best_score"])
        self.best_epoch = meta["best_epoch"]
        self.history = list(meta["history"])
        self.step_losses = arrays["step_losses"].tolist()
        self._source.set_state(meta["data_state"])


def _first_mismatch(saved_names: list[str], saved_shapes: list[tuple], variables: list) -> str:
    for i, (name, shape, variable) in enumerate(zip(saved_names, saved_shapes, variables)):
        if tuple(variable.shape) != shape:
            return (f"#{i}: saved {name} {shape} vs current {variable.path} "
                    f"{tuple(variable.shape)}")
    return "different variable counts"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class MomentumOptimizer(Optimizer):
    """Stochastic gradient descent with momentum (0.9) and the tutorial's plateau decay.

    (The original class of this name built Adam; this one is what its name says.) Keras' SGD
    keeps ``v <- momentum * v - lr * g; w <- w + v`` (optionally Nesterov), which equals TF1's
    MomentumOptimizer while the learning rate is constant.

    Plateau rule, after each epoch's bookkeeping: if ``num_bad_epochs > learning_rate_patience``
    the rate becomes ``lr * learning_rate_decay`` unless that changes it by no more than ``eps``,
    and the bad-epoch count restarts either way.

    Arguments are those of ``Optimizer`` plus ``momentum`` and ``nesterov``.
    """

    def __init__(
        self,
        model: Any,
        train_set: TrainData,
        evaluator: Evaluator,
        val_set: Any = None,
        *,
        batch_size: int = 8,
        num_epochs: int = 300,
        init_learning_rate: float = 1e-3,
        momentum: float = 0.9,
        nesterov: bool = False,
        warmup_steps: int = 0,
        learning_rate_patience: int = 10,
        learning_rate_decay: float = 0.1,
        eps: float = 1e-8,
        score_threshold: float = 1e-4,
        clip_norm: float | None = None,
        ema_momentum: float | None = None,
        eval_batch_size: int | None = None,
        extra_evaluators: Sequence[Evaluator] = (),
        strategy: tf.distribute.Strategy | None = None,
        seed: int | None = None,
    ) -> None:
        _require(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        super().__init__(
            model, train_set, evaluator, val_set,
            batch_size=batch_size, num_epochs=num_epochs, init_learning_rate=init_learning_rate,
            warmup_steps=warmup_steps, learning_rate_patience=learning_rate_patience,
            learning_rate_decay=learning_rate_decay, eps=eps, score_threshold=score_threshold,
            clip_norm=clip_norm, ema_momentum=ema_momentum, eval_batch_size=eval_batch_size,
            extra_evaluators=extra_evaluators, strategy=strategy, seed=seed)

    def _build_optimizer(self) -> keras.optimizers.Optimizer:
        return keras.optimizers.SGD(learning_rate=self.init_learning_rate,
                                    momentum=self.momentum, nesterov=self.nesterov,
                                    **self._ema_arguments())

    def _update_learning_rate(self) -> None:
        if self.num_bad_epochs > self.learning_rate_patience:
            new_learning_rate = self.curr_learning_rate * self.learning_rate_decay
            if self.curr_learning_rate - new_learning_rate > self.eps:
                self.curr_learning_rate = new_learning_rate
            self.num_bad_epochs = 0

    def _training_config(self) -> dict[str, Any]:
        return {**super()._training_config(), "momentum": self.momentum,
                "nesterov": self.nesterov}
