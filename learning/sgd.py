"""Keras' SGD with momentum, its update done by one fused kernel per variable, and gradient
clipping folded into the learning rate.

Keras writes the momentum update as separate element-wise ops::

    m <- m * momentum - g * lr          three ops (two products, a difference), then an assign
    w <- w + m                          (Nesterov: w <- w + m * momentum - g * lr)

and TensorFlow runs each as its own pass over the tensor (unless XLA fuses them: off by
default on CPUs, ``--jit-compile``). For the GCN's 25 M weights that is four or five passes over
100 MB of float32 per step, memory-bound on a CPU and one kernel launch per op on a GPU.
TensorFlow's ``ResourceApplyKerasMomentum`` does the same arithmetic, in the same form, in one
pass.

Clipping to a global norm scales every gradient by one number s = clip / max(norm, clip),
another pass that writes 100 MB of new gradients. The update is linear in g, so
``g * lr`` with g scaled by s is ``g * (lr * s)``: ``learning_rate_factor(s)`` hands the scale
to the update through the learning rate instead (one scalar product).
``python benchmarks/update_speed.py`` times the three ways side by side.

Under a tf.distribute strategy the training step sums the replicas' gradients itself, once,
and applies the sum inside ``summed_gradients()``, where Keras' own second sum is skipped.

The variables (``iterations``, one momentum per weight, the EMA copies) are Keras' own, in the
same order, so resume states and Keras' ``get_config`` are unchanged. Variables of another
dtype than float32/float64, and momentum 0, take Keras' path (with the factor, too).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import keras
import tensorflow as tf

__all__ = ["FusedMomentumSGD"]

_FUSED_DTYPES = ("float32", "float64")
# Factor of each thread's apply_gradients in progress: under tf.distribute.MirroredStrategy
# every replica's step is traced in a thread of its own, each with its own factor tensor.
_FACTORS = threading.local()
_SUMMED_LOCK = threading.Lock()


@keras.saving.register_keras_serializable(package="gcn")
class FusedMomentumSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` (same arguments and variables), momentum updates fused."""

    @contextlib.contextmanager
    def learning_rate_factor(self, factor: tf.Tensor) -> Iterator[None]:
        """Within the block, ``apply_gradients`` updates as if every gradient were multiplied
        by ``factor`` (a float32 scalar, e.g. a clipping scale), by using ``lr * factor``.
        Exact for SGD: every update it makes is linear in the gradient. Call it in the replica
        context, around ``apply_gradients``."""
        stack = _FACTORS.__dict__.setdefault("stack", [])
        stack.append((id(self), factor))
        try:
            yield
        finally:
            stack.pop()

    @contextlib.contextmanager
    def summed_gradients(self) -> Iterator[None]:
        """Within the block, ``apply_gradients`` takes gradients that the caller has already
        summed over the replicas of the tf.distribute strategy (to clip their global norm, say)
        and applies them as they are. Keras 3 sums them in every replica context, with no
        switch to skip it (its optimizers cannot apply in the cross-replica context of a
        MirroredStrategy either), so a caller that needs the sum first would all-reduce every
        gradient twice. A counter on the object, not a thread-local flag: a LossScaleOptimizer
        applies its inner optimizer in threads of its own, inside each replica's block."""
        with _SUMMED_LOCK:
            self._summed_depth = getattr(self, "_summed_depth", 0) + 1
        try:
            yield
        finally:
            with _SUMMED_LOCK:
                self._summed_depth -= 1

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if getattr(self, "_summed_depth", 0):
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        stack = getattr(_FACTORS, "stack", None)
        if stack and stack[-1][0] == id(self):
            # A tensor of this replica; the update's merge call hands each device its own.
            learning_rate = tf.cast(learning_rate, tf.float32) * stack[-1][1]
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        dtype = keras.backend.standardize_dtype(variable.dtype)
        if self.momentum == 0 or dtype not in _FUSED_DTYPES:
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[self._get_variable_index(variable)]
        # var is a tf.Variable here (the Keras optimizer hands over the backend variable, a
        # replica's component under a tf.distribute strategy); the momentum is a Keras
        # variable, whose handle is that of the same device's component.
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.handle,
            lr=tf.cast(learning_rate, variable.dtype), grad=tf.cast(gradient, variable.dtype),
            momentum=tf.cast(self.momentum, variable.dtype), use_locking=False,
            use_nesterov=bool(self.nesterov))
