"""The compiled training and validation steps, spread over the replicas of a tf.distribute
strategy, with the training metrics accumulated on the device.

One training step on replica r of R (images (b, H, W, 3) uint8, labels (b, H, W) uint8,
b = B / R, B the global batch)::

    logits = model(images, training=True)                          (b, H, W, C) float32
    ce_r, n_r = model.cross_entropy_terms(labels, logits)           sums over the valid pixels
    sums = all_reduce(SUM, step_statistics(...))      [n, ce, per-image accuracy sum, scored
                                                       images, bad label pixels, confusion]
    loss_r = model.loss_from_terms(ce_r, n, weight decay / R)       n = the global valid count
    g = all_reduce(SUM, gradients of loss_r)          the step's one all-reduce of gradients
    clipping: scale s = clip / max(|g|, clip), applied by the fused SGD as the learning rate
              lr * s (sgd.py), by other optimizers to g itself
    the optimizer applies g without summing it again (FusedMomentumSGD.summed_gradients)
    totals += (global loss, batch score, confusion, ...)            identical on every replica

So the update equals the one-device update on the same global batch, and every replica holds
the same totals: every replica adds the same all-reduced sums to its own copy of mirrored
variables (aggregation NONE: no collective), which the host reads once per log interval or
epoch, not per step. Labels that are neither a class nor the ignore value count as ignored in
the loss and are counted (``bad_label_pixels``, ``first_bad_label``): the host names the step
at its next read, no assertion stops the device.

The batch score is the original's train score of one batch: the mean over its images (with at
least one valid pixel) of each image's share of correctly classified valid pixels, made from the
training-mode predictions of the step itself, before its update. The epoch's train score is the
mean of the batch scores: exactly what the original computed with ``evaluator.score`` per batch.

With ``jit_compile`` the replica step (forward, loss, statistics, gradients, clipping, update)
and the validation step are each compiled by XLA as one program. Every op of the step has an
XLA kernel, and no tensor of the step is float64 or int32 per pixel (GPUs keep int32 tensors in
host memory): the statistics count in float32 one-hot products, exact to 2^24 pixels per image,
and turn float64 only once summed per image.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from learning.config import JIT_COMPILE

__all__ = ["TrainSteps", "Totals", "clip_scale", "step_statistics", "resolve_jit_compile",
           "HEAD"]

logger = logging.getLogger(__name__)

# Every replica adds the same all-reduced sums: each updates its own copy, without a collective.
_MIRRORED = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
                 aggregation=tf.VariableAggregation.NONE)

# The entries of step_statistics' vector before the confusion counts.
HEAD = ("count", "ce_sum", "accuracy_sum", "scored_images", "bad_label_pixels")
_COUNT, _CE_SUM, _ACCURACY_SUM, _SCORED, _BAD = range(len(HEAD))


def resolve_jit_compile(setting: str) -> bool:
    """``--jit-compile``: "on", "off", or "auto" (on where TensorFlow sees a GPU)."""
    if setting not in JIT_COMPILE:
        raise ConfigError(f"jit_compile must be one of {', '.join(JIT_COMPILE)}, got "
                          f"{setting!r}")
    if setting == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return setting == "on"


def _check_xla_can_compile(model: Any, strategy: tf.distribute.Strategy) -> None:
    """``ConfigError`` for the settings under which XLA cannot compile the step on CPUs: several
    CPU replicas (TensorFlow sums over them through a host-side merge that XLA cannot hold),
    and mixed precision (XLA's CPU backend turns part of the GCN's half-precision convolution
    gradients to float32 and then rejects the mixed types it made)."""
    replicas = int(strategy.num_replicas_in_sync)
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:   # the default strategy: the step runs where TensorFlow places it
        devices = [device.name for device in tf.config.list_logical_devices("GPU")[:1]] or ["CPU"]
    if all("GPU" in device.upper() for device in devices):
        return
    if replicas > 1:
        raise ConfigError(
            f"--jit-compile on: XLA compiles a step spread over several replicas only when "
            f"every replica is a GPU, and this strategy runs {replicas} replicas on "
            f"{', '.join(devices)}; use --jit-compile off (or auto, which is off on CPUs)")
    compute = model.keras_model.dtype_policy.compute_dtype
    if compute != "float32":
        raise ConfigError(
            f"--jit-compile on: XLA's CPU backend cannot compile the step in mixed precision "
            f"({compute} computations); use --jit-compile off (or auto, which is off on "
            f"CPUs), or float32")


def clip_scale(gradients: Sequence[tf.Tensor], clip_norm: float) -> tf.Tensor:
    """The factor ``tf.clip_by_global_norm(gradients, clip_norm)`` multiplies the gradients
    by, in its form: ``clip_norm * min(1 / norm, 1 / clip_norm)``, NaN if the norm is not
    finite (so a non-finite gradient still poisons the step, and the loop stops on it)."""
    norm = tf.linalg.global_norm(gradients)
    norm = tf.where(tf.math.is_finite(norm), norm, float("nan"))
    return clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm)


def step_statistics(labels: tf.Tensor, logits: tf.Tensor, ce_sum: tf.Tensor, count: tf.Tensor,
                    *, num_classes: int, ignore_label: int) -> tf.Tensor:
    """One replica's share of the step's sums, a float64 vector: the ``HEAD`` entries [loss
    count, cross-entropy sum, sum of per-image accuracies, images with a valid pixel, bad label
    pixels], then the confusion counts (C*C, row = truth, column = prediction).

    labels (b, H, W) any integer type; logits (b, H, W, C). A valid pixel holds a class in
    [0, C) other than ``ignore_label``; a bad one holds neither a class nor the ignore value.
    Per pixel, only int64 labels and predictions and float32 one-hots: each image's confusion
    matrix is the product of its truth and prediction one-hots (one batched matmul, no
    bincount), exact while an image has fewer than 2^24 pixels; the rest is per image.
    """
    labels = tf.cast(labels, tf.int64)                                    # (b, H, W)
    predictions = tf.argmax(logits, axis=-1)                              # (b, H, W) int64
    kept = tf.reduce_sum(tf.cast(tf.not_equal(labels, ignore_label), tf.float32), axis=[1, 2])
    if 0 <= ignore_label < num_classes:
        labels = tf.where(tf.equal(labels, ignore_label), tf.constant(-1, tf.int64), labels)
    # tf.one_hot gives a row of zeros for an index outside [0, C): ignored and bad labels.
    shape = [tf.shape(labels)[0], -1, num_classes]
    truth = tf.reshape(tf.one_hot(labels, num_classes, dtype=tf.float32), shape)
    predicted = tf.reshape(tf.one_hot(predictions, num_classes, dtype=tf.float32), shape)
    per_image = tf.cast(tf.linalg.matmul(truth, predicted, transpose_a=True), tf.float64)
    valid = tf.reduce_sum(per_image, axis=[1, 2])                         # (b,)
    correct = tf.linalg.trace(per_image)                                  # (b,)
    scored = valid > 0
    accuracy_sum = tf.reduce_sum(tf.where(scored, correct / tf.maximum(valid, 1.0), 0.0))
    bad = tf.reduce_sum(tf.cast(kept, tf.float64) - valid)
    head = tf.stack([tf.cast(count, tf.float64), tf.cast(ce_sum, tf.float64), accuracy_sum,
                     tf.reduce_sum(tf.cast(scored, tf.float64)), bad])
    return tf.concat([head, tf.reshape(tf.reduce_sum(per_image, axis=0), [-1])], axis=0)


class Totals:
    """The device-side sums of one epoch's training steps (host view: ``read()``)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.steps = tf.Variable(tf.constant(0, tf.int64), name="steps", **_MIRRORED)
        self.loss_sum = tf.Variable(tf.constant(0.0, tf.float64), name="loss_sum", **_MIRRORED)
        self.batch_score_sum = tf.Variable(tf.constant(0.0, tf.float64), name="batch_score_sum",
                                           **_MIRRORED)
        self.scored_batches = tf.Variable(tf.constant(0, tf.int64), name="scored_batches",
                                          **_MIRRORED)
        self.confusion = tf.Variable(tf.zeros(num_classes * num_classes, tf.float64),
                                     name="confusion", **_MIRRORED)
        self.bad_label_pixels = tf.Variable(tf.constant(0.0, tf.float64),
                                            name="bad_label_pixels", **_MIRRORED)
        # Step (1-based within the epoch) of the first non-finite loss / bad label; 0 = none.
        self.first_non_finite = tf.Variable(tf.constant(0, tf.int64), name="first_non_finite",
                                            **_MIRRORED)
        self.first_bad_label = tf.Variable(tf.constant(0, tf.int64), name="first_bad_label",
                                           **_MIRRORED)

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.steps, self.loss_sum, self.batch_score_sum, self.scored_batches,
                self.confusion, self.bad_label_pixels, self.first_non_finite,
                self.first_bad_label]

    def reset(self) -> None:
        for variable in self.variables:
            variable.assign(tf.zeros_like(variable))

    def read(self) -> dict[str, Any]:
        """The totals as host values (one device->host copy of a few numbers)."""
        values = [np.asarray(v.numpy()) for v in self.variables]
        steps, loss_sum, score_sum, scored, confusion, bad, non_finite, bad_step = values
        return {
            "steps": int(steps), "loss_sum": float(loss_sum),
            "batch_score_sum": float(score_sum), "scored_batches": int(scored),
            "confusion": np.rint(confusion).astype(np.int64).reshape(
                self.num_classes, self.num_classes),
            "bad_label_pixels": int(round(float(bad))),
            "first_non_finite": int(non_finite), "first_bad_label": int(bad_step),
        }

    def add(self, sums: tf.Tensor, global_loss: tf.Tensor) -> None:
        """One step's all-reduced ``step_statistics`` and its global loss (float64)."""
        step = self.steps + 1
        self.steps.assign_add(1)
        self.loss_sum.assign_add(global_loss)
        has_scored = sums[_SCORED] > 0
        self.batch_score_sum.assign_add(tf.where(
            has_scored, sums[_ACCURACY_SUM] / tf.maximum(sums[_SCORED], 1.0), 0.0))
        self.scored_batches.assign_add(tf.cast(has_scored, tf.int64))
        self.confusion.assign_add(sums[len(HEAD):])
        self.bad_label_pixels.assign_add(sums[_BAD])
        first = lambda flag, variable: tf.where(  # noqa: E731 - keeps the two lines parallel
            tf.logical_and(flag, tf.equal(variable, 0)), step, variable)
        self.first_non_finite.assign(first(tf.logical_not(tf.math.is_finite(global_loss)),
                                           self.first_non_finite))
        self.first_bad_label.assign(first(sums[_BAD] > 0, self.first_bad_label))


class TrainSteps:
    """Compiled steps of one model under one strategy.

    Args:
        model: a ``SegNet`` (``keras_model``, ``num_classes``, ``ignore_label``,
            ``cross_entropy_terms``, ``regularization_loss``, ``loss_from_terms``,
            ``mask_from_logits``), built in ``strategy.scope()``.
        optimizer: the Keras optimizer (built in the same scope). ``FusedMomentumSGD``, alone or
            in a ``LossScaleOptimizer``, takes the gradients summed; Keras' own optimizers sum
            the replicas' gradients themselves, so with clipping or loss scaling (which need
            the sum first) the gradients cross the replicas twice for them.
        strategy: the distribution strategy.
        clip_norm: clip the summed (global) gradient to this norm; None = no clipping.
        jit_compile: compile the replica step and the validation step with XLA. Several
            replicas need GPUs for it (TensorFlow sums over CPU replicas through a host-side
            merge that XLA cannot hold).
    """

    def __init__(self, model: Any, optimizer: Any, strategy: tf.distribute.Strategy, *,
                 clip_norm: float | None, jit_compile: bool = False) -> None:
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.clip_norm = clip_norm
        self.jit_compile = bool(jit_compile)
        self.num_replicas = int(strategy.num_replicas_in_sync)
        # Replicas of this process (all of them but under multi-worker training).
        self.local_replicas = (len(strategy.extended.worker_devices)
                               if self.num_replicas > 1 else 1)
        self.num_classes = int(model.num_classes)
        self.ignore_label = int(model.ignore_label)
        # The optimizer that updates the weights (a LossScaleOptimizer's inner one).
        self._updater = getattr(optimizer, "inner_optimizer", optimizer)
        self._takes_sums = hasattr(self._updater, "summed_gradients")
        self._loss_scaled = hasattr(optimizer, "dynamic_scale")
        if self.jit_compile:
            _check_xla_can_compile(model, strategy)
        with strategy.scope():
            self.totals = Totals(self.num_classes)
        compiled = dict(jit_compile=True) if self.jit_compile else None
        self._replica_train = (tf.function(self._replica_step, **compiled) if compiled
                               else self._replica_step)
        self._replica_masks = (tf.function(self._replica_predict, reduce_retracing=True,
                                           **compiled) if compiled else self._replica_predict)
        self._train = tf.function(self._train_steps)
        self._predict = tf.function(self._distributed_predict, reduce_retracing=True)

    # -- training --------------------------------------------------------------------------------

    def run(self, iterator: Any, num_steps: int) -> tf.Tensor:
        """Up to ``num_steps`` steps from ``iterator`` in one compiled call -> their global
        losses (float32, one per step taken; fewer when the data ran out). No host sync:
        the returned tensor is read whenever the caller chooses."""
        return self._train(iterator, tf.constant(num_steps, tf.int64))

    def _train_steps(self, iterator: Any, num_steps: tf.Tensor) -> tf.Tensor:
        losses = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for i in tf.range(num_steps):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            images, labels = batch.get_value()
            per_replica = self.strategy.run(self._replica_train, args=(images, labels))
            # Every replica returns the same global loss: take the first, no reduction needed.
            losses = losses.write(tf.cast(i, tf.int32),
                                  self.strategy.experimental_local_results(per_replica)[0])
        return losses.stack()

    def _replica_step(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        model = self.model
        variables = model.keras_model.trainable_variables
        labels = tf.cast(labels, tf.int64)                                   # (b, H, W)
        with tf.GradientTape() as tape:
            logits = model.keras_model(tf.cast(images, tf.float32), training=True)  # (b,H,W,C)
            ce_sum, count = model.cross_entropy_terms(labels, logits)
            regularization = tf.cast(model.regularization_loss(), tf.float32)
            sums = self._sum(tf.stop_gradient(step_statistics(
                labels, logits, ce_sum, count, num_classes=self.num_classes,
                ignore_label=self.ignore_label)))
            loss = model.loss_from_terms(ce_sum, tf.cast(sums[_COUNT], tf.float32),
                                         regularization / self.num_replicas)
            # Loss scaling (fp16): identity for every optimizer but a LossScaleOptimizer.
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        # A variable the loss does not reach gets None; leave it out of the update.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        self._update([g for g, _ in pairs], [v for _, v in pairs])
        global_loss = model.loss_from_terms(sums[_CE_SUM], sums[_COUNT],
                                            tf.cast(regularization, tf.float64))
        self.totals.add(sums, global_loss)
        return tf.cast(global_loss, tf.float32)

    def _sum(self, values: Any) -> Any:
        """``values`` summed over the replicas (as they are on one)."""
        if self.num_replicas == 1:
            return values
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                              values)

    def _update(self, gradients: list, variables: list) -> None:
        """Sum the replicas' gradients once, clip the sum, apply it.

        The sum comes first because the clip is for the global gradient, not a replica's share,
        and because the loss scaler (fp16) must see the same gradients on every replica when it
        decides whether they are finite (else one replica could apply while another skips)."""
        optimizer, clip_norm = self.optimizer, self.clip_norm
        resummed = not self._takes_sums and self.num_replicas > 1
        if not resummed or clip_norm is not None or self._loss_scaled:
            gradients = self._sum(gradients)
        factor = None
        if clip_norm is not None and self._loss_scaled:
            # The clip norm is for the true gradient: clip at the norm times the loss scale
            # (the loss scaler unscales next, and skips the step if they are not finite).
            scale = tf.cast(optimizer.dynamic_scale, tf.float32)
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm * scale)
        elif clip_norm is not None and hasattr(optimizer, "learning_rate_factor"):
            # The update takes the scale through its learning rate (sgd.py): one pass over
            # the gradients fewer than scaling them.
            factor = clip_scale(gradients, clip_norm)
        elif clip_norm is not None:
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
        if resummed and (clip_norm is not None or self._loss_scaled):
            # Keras' optimizers sum the replicas' gradients as they apply them.
            gradients = [g / self.num_replicas for g in gradients]
        with contextlib.ExitStack() as stack:
            if self._takes_sums:
                stack.enter_context(self._updater.summed_gradients())
            if factor is not None:
                stack.enter_context(optimizer.learning_rate_factor(factor))
            optimizer.apply_gradients(zip(gradients, variables))

    # -- inference -------------------------------------------------------------------------------

    def predict_masks(self, images: np.ndarray) -> np.ndarray:
        """Inference-mode class masks (n, H, W) uint8 of a host batch (n, H, W, 3), spread over
        this worker's replicas. A batch whose size is not a multiple of their count is padded
        (repeating its last image) and the padding's predictions dropped: CPU convolutions
        reject empty batches. (No collective: every worker predicts its own share.)"""
        count = len(images)
        if count == 0:
            return np.zeros(images.shape[:3], np.uint8)
        padding = -count % self.local_replicas
        if padding:
            images = np.concatenate([images, np.repeat(images[-1:], padding, axis=0)])
        return self._predict(self.distribute_arrays(images)).numpy()[:count]

    def _distributed_predict(self, images: Any) -> tf.Tensor:
        per_replica = self.strategy.run(self._replica_masks, args=(images,))
        return tf.concat(self.strategy.experimental_local_results(per_replica), axis=0)

    def _replica_predict(self, images: tf.Tensor) -> tf.Tensor:
        logits = self.model.keras_model(tf.cast(images, tf.float32), training=False)
        return self.model.mask_from_logits(logits)

    def distribute_arrays(self, images: np.ndarray) -> Any:
        """A host batch -> per-replica values of this worker: its local replica i gets the
        i-th of ``np.array_split(images, local replicas)`` (concatenating the local results
        restores the order)."""
        if self.num_replicas == 1:
            return tf.convert_to_tensor(images)
        parts = np.array_split(images, self.local_replicas)

        def value_fn(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
            return tf.constant(parts[context.replica_id_in_sync_group % self.local_replicas])

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    @property
    def state_variables(self) -> Sequence[tf.Variable]:
        return self.totals.variables
