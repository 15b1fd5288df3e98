"""Keras' SGD with momentum, its update done by one fused kernel per variable.

Keras writes the momentum update as separate element-wise ops::

    m <- m * momentum - g * lr          three ops (two products, a difference), then an assign
    w <- w + m                          (Nesterov: w <- w + m * momentum - g * lr)

and TensorFlow runs each as its own pass over the tensor (no XLA here: ``jit_compile`` is
slower on the CPUs we train on). For the GCN's 25 M weights that is four or five passes over
100 MB of float32 per step, memory-bound on a CPU and one kernel launch per op on a GPU.
TensorFlow's ``ResourceApplyKerasMomentum`` does the same arithmetic, in the same form, in one
pass: about 5% of a 128-px training step on the 2-core CPU of benchmarks/RESULTS.md.

The variables (``iterations``, one momentum per weight, the EMA copies) are Keras' own, in the
same order, so resume states and Keras' ``get_config`` are unchanged. Variables of another
dtype than float32/float64, and momentum 0, take Keras' path.
"""
from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["FusedMomentumSGD"]

_FUSED_DTYPES = ("float32", "float64")


@keras.saving.register_keras_serializable(package="gcn")
class FusedMomentumSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` (same arguments and variables), momentum updates fused."""

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
