"""The compiled training and validation steps, spread over the replicas of a tf.distribute
strategy, with the training metrics accumulated on the device.

One training step on replica r of R (images (b, H, W, 3) uint8, labels (b, H, W) uint8,
b = B / R, B the global batch)::

    labels outside [0, C) that are not the ignore value -> counted, then ignored
    logits = model(images, training=True)                          (b, H, W, C) float32
    ce_r, n_r = model.cross_entropy_terms(labels, logits)           sums over the valid pixels
    totals = all_reduce(SUM, [n_r, ce_r, per-image accuracy sum, scored images,
                              bad label pixels, confusion counts (C*C)])      one float64 vector
    loss_r = ce_r / max(n, 1) + weight_decay_loss / R               n = the global valid count
    gradients of loss_r; the strategy sums them over replicas  ->  the single-device update
    clipping: scale s = clip / max(|sum of the replicas' gradients|, clip), applied by the
              fused SGD as the learning rate lr * s (sgd.py), by other optimizers on the sums
    accumulators += (global loss, batch score, confusion, ...)      identical on every replica

So the update equals the one-device update on the same global batch, and every replica holds
the same totals: they live in mirrored variables with ``ONLY_FIRST_REPLICA`` aggregation, which
the host reads without any collective call, once per log interval or epoch, not per step.

The batch score is the original's train score of one batch: the mean over its images (with at
least one valid pixel) of each image's share of correctly classified valid pixels, made from the
training-mode predictions of the step itself, before its update. The epoch's train score is the
mean of the batch scores: exactly what the original computed with ``evaluator.score`` per batch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

__all__ = ["TrainSteps", "Totals", "clip_scale"]

_MIRRORED = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def clip_scale(gradients: Sequence[tf.Tensor], clip_norm: float) -> tf.Tensor:
    """The factor ``tf.clip_by_global_norm(gradients, clip_norm)`` multiplies the gradients
    by, in its form: ``clip_norm * min(1 / norm, 1 / clip_norm)``, NaN if the norm is not
    finite (so a non-finite gradient still poisons the step, and the loop stops on it)."""
    norm = tf.linalg.global_norm(gradients)
    norm = tf.where(tf.math.is_finite(norm), norm, float("nan"))
    return clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm)


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


class TrainSteps:
    """Compiled steps of one model under one strategy.

    Args:
        model: a ``SegNet`` (``keras_model``, ``num_classes``, ``ignore_label``,
            ``cross_entropy_terms``, ``regularization_loss``), built in ``strategy.scope()``.
        optimizer: the Keras optimizer (built in the same scope).
        strategy: the distribution strategy.
        clip_norm: clip the summed (global) gradient to this norm; None = no clipping.
    """

    def __init__(self, model: Any, optimizer: Any, strategy: tf.distribute.Strategy, *,
                 clip_norm: float | None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.clip_norm = clip_norm
        self.num_replicas = int(strategy.num_replicas_in_sync)
        # Replicas of this process (all of them but under multi-worker training).
        self.local_replicas = (len(strategy.extended.worker_devices)
                               if self.num_replicas > 1 else 1)
        self.num_classes = int(model.num_classes)
        self.ignore_label = int(model.ignore_label)
        with strategy.scope():
            self.totals = Totals(self.num_classes)
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
            per_replica = self.strategy.run(self._replica_step, args=(images, labels))
            # Every replica returns the same global loss: take the first, no reduction needed.
            losses = losses.write(tf.cast(i, tf.int32),
                                  self.strategy.experimental_local_results(per_replica)[0])
        return losses.stack()

    def _replica_step(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        keras_model = self.model.keras_model
        variables = keras_model.trainable_variables
        num_classes, ignore = self.num_classes, self.ignore_label
        labels = tf.cast(labels, tf.int32)                                   # (b, H, W)
        # A label that is neither a class nor the ignore value would make the loss op fail
        # (CPU) or return NaN (GPU) deep inside TensorFlow: count it, ignore it, and let the
        # host name the step at its next read. (No assertion: it would sync every step.)
        bad = tf.logical_and(tf.not_equal(labels, ignore),
                             tf.logical_or(labels < 0, labels >= num_classes))
        labels = tf.where(bad, ignore, labels)
        with tf.GradientTape() as tape:
            logits = keras_model(tf.cast(images, tf.float32), training=True)  # (b, H, W, C)
            ce_sum, count = self.model.cross_entropy_terms(labels, logits)
            regularization = tf.cast(self.model.regularization_loss(), tf.float32)
            predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)     # (b, H, W)
            totals = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(
                self._step_statistics(labels, predictions, ce_sum, count, bad)))
            global_count = tf.cast(totals[0], tf.float32)
            loss = ce_sum / tf.maximum(global_count, 1.0) + regularization / self.num_replicas
            # Loss scaling (fp16): identity for every optimizer but a LossScaleOptimizer.
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        # A variable the loss does not reach gets None; leave it out of the update.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        gradients, variables = [g for g, _ in pairs], [v for _, v in pairs]
        if self.clip_norm is not None and hasattr(self.optimizer, "learning_rate_factor"):
            # Clip the global gradient, not each replica's share: its norm is that of the
            # replicas' sum. The update takes the scale through its learning rate (sgd.py),
            # one pass fewer than scaling 25 M gradients; Keras sums the shares as it applies.
            summed = (context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
                      if self.num_replicas > 1 else gradients)
            with self.optimizer.learning_rate_factor(clip_scale(summed, self.clip_norm)):
                self.optimizer.apply_gradients(zip(gradients, variables))
        else:
            self._clip_and_apply(context, gradients, variables)
        global_loss = totals[1] / tf.maximum(totals[0], 1.0) + tf.cast(regularization,
                                                                        tf.float64)
        self._accumulate(totals, global_loss)
        return tf.cast(global_loss, tf.float32)

    def _clip_and_apply(self, context: Any, gradients: list, variables: list) -> None:
        """The update by any other optimizer (Keras' own, a fp16 LossScaleOptimizer): the
        clipping, if any, scales the gradients themselves."""
        loss_scaled = hasattr(self.optimizer, "dynamic_scale")     # fp16: LossScaleOptimizer
        if self.clip_norm is not None or loss_scaled:
            # Clip the global gradient, not each replica's share, and let every replica see the
            # same gradients when the loss scaler decides whether they are finite (else one
            # replica could apply while another skips): sum first. Keras sums the replicas'
            # gradients again when it applies them, hence the division by R after.
            if self.num_replicas > 1:
                gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
            if self.clip_norm is not None and loss_scaled:
                # The clip norm is for the true gradient: clip at the norm times the loss scale
                # (the loss scaler unscales next, and skips the step if they are not finite).
                scale = tf.cast(self.optimizer.dynamic_scale, tf.float32)
                gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm * scale)
            elif self.clip_norm is not None:
                # (Every pass over the gradients costs: 24 M values, memory-bound on a CPU.)
                gradients, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
            if self.num_replicas > 1:
                gradients = [g / self.num_replicas for g in gradients]
        self.optimizer.apply_gradients(zip(gradients, variables))

    def _step_statistics(self, labels: tf.Tensor, predictions: tf.Tensor, ce_sum: tf.Tensor,
                         count: tf.Tensor, bad: tf.Tensor) -> tf.Tensor:
        """This replica's share of the step's sums, as one float64 vector:
        [valid pixels, cross-entropy sum, sum of per-image accuracies, images with a valid
        pixel, bad label pixels, confusion counts (C*C, row = truth)]."""
        num_classes = self.num_classes
        valid = tf.not_equal(labels, self.ignore_label)                      # (b, H, W)
        correct = tf.logical_and(valid, tf.equal(labels, predictions))
        valid_per_image = tf.reduce_sum(tf.cast(valid, tf.float64), axis=[1, 2])    # (b,)
        correct_per_image = tf.reduce_sum(tf.cast(correct, tf.float64), axis=[1, 2])
        scored = valid_per_image > 0
        accuracy_sum = tf.reduce_sum(tf.where(
            scored, correct_per_image / tf.maximum(valid_per_image, 1.0), 0.0))
        # Pair index truth * C + prediction; ignored pixels go to an extra bin, dropped.
        pairs = tf.where(valid, labels * num_classes + predictions, num_classes * num_classes)
        confusion = tf.math.bincount(tf.reshape(pairs, [-1]), minlength=num_classes ** 2 + 1,
                                     maxlength=num_classes ** 2 + 1, dtype=tf.float64)
        head = tf.stack([tf.cast(count, tf.float64), tf.cast(ce_sum, tf.float64), accuracy_sum,
                         tf.reduce_sum(tf.cast(scored, tf.float64)),
                         tf.reduce_sum(tf.cast(bad, tf.float64))])
        return tf.concat([head, confusion[:-1]], axis=0)

    def _accumulate(self, totals: tf.Tensor, global_loss: tf.Tensor) -> None:
        t = self.totals
        step = t.steps + 1
        t.steps.assign_add(1)
        t.loss_sum.assign_add(global_loss)
        has_scored = totals[3] > 0
        t.batch_score_sum.assign_add(tf.where(has_scored, totals[2] / tf.maximum(totals[3], 1.0),
                                              0.0))
        t.scored_batches.assign_add(tf.cast(has_scored, tf.int64))
        t.confusion.assign_add(totals[5:])
        t.bad_label_pixels.assign_add(totals[4])
        first = lambda flag, variable: tf.where(  # noqa: E731 - keeps the two lines parallel
            tf.logical_and(flag, tf.equal(variable, 0)), step, variable)
        t.first_non_finite.assign(first(tf.logical_not(tf.math.is_finite(global_loss)),
                                        t.first_non_finite))
        t.first_bad_label.assign(first(totals[4] > 0, t.first_bad_label))

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
        per_replica = self.strategy.run(self._replica_predict, args=(images,))
        return tf.concat(self.strategy.experimental_local_results(per_replica), axis=0)

    def _replica_predict(self, images: tf.Tensor) -> tf.Tensor:
        logits = self.model.keras_model(tf.cast(images, tf.float32), training=False)
        return tf.cast(tf.argmax(logits, axis=-1), tf.uint8)

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
