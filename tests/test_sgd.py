"""The fused momentum SGD: Keras' SGD values step by step (plain, Nesterov, no momentum, EMA),
one fused kernel per weight in the compiled step, Keras' variables and config. (Two replicas:
tests/test_optimizers.py trains MomentumOptimizer, which builds it, on two logical CPUs; a
second MirroredStrategy of its own here clashed with the other modules' collective keys.)"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from learning.sgd import FusedMomentumSGD


def train(optimizer_cls, strategy=None, steps=4, **arguments):
    """Weights and optimizer variables after ``steps`` updates of two weights with fixed,
    step-dependent gradients (a compiled step, as the training loop runs it)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        weights = [keras.Variable(np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)),
                   keras.Variable(np.float32([0.5, -0.25]))]
        optimizer = optimizer_cls(learning_rate=0.1, **arguments)
        optimizer.build(weights)

    @tf.function
    def step(scale):
        def replica_step():
            gradients = [tf.sin(tf.range(12, dtype=tf.float32) * scale) * 0.5 - 0.1,
                         tf.constant([1.0, -2.0]) * scale]
            gradients = [tf.reshape(gradients[0], (3, 4)), gradients[1]]
            optimizer.apply_gradients(zip(gradients, weights))
        strategy.run(replica_step)

    for i in range(steps):
        step(tf.constant(0.3 * (i + 1)))
    return ([np.array(w.numpy()) for w in weights],
            [np.array(v.numpy()) for v in optimizer.variables])


@pytest.mark.parametrize("arguments", [
    {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.0},
    {"momentum": 0.5, "use_ema": True, "ema_momentum": 0.8},
], ids=["momentum", "nesterov", "no-momentum", "ema"])
def test_the_fused_updates_equal_keras_sgd_step_by_step(arguments):
    keras_weights, keras_slots = train(keras.optimizers.SGD, **arguments)
    fused_weights, fused_slots = train(FusedMomentumSGD, **arguments)
    assert len(fused_slots) == len(keras_slots)          # the same variables, same order
    for got, want in zip(fused_weights + fused_slots, keras_weights + keras_slots):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    start = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    assert not np.allclose(fused_weights[0], start)      # the updates did happen


def _op_types(optimizer_cls, **arguments) -> list[str]:
    weights = [keras.Variable(np.ones((3, 4), np.float32)), keras.Variable(np.ones(2, np.float32))]
    optimizer = optimizer_cls(learning_rate=0.1, **arguments)
    optimizer.build(weights)
    step = tf.function(lambda: optimizer.apply_gradients(
        [(tf.ones_like(w), w) for w in weights]))
    graph = step.get_concrete_function().graph
    ops = [op.type for op in graph.get_operations()]
    for function in graph.as_graph_def().library.function:    # ops inside control flow
        ops += [node.op for node in function.node_def]
    return ops


def test_each_weight_is_updated_by_one_fused_kernel_in_the_compiled_step():
    fused = _op_types(FusedMomentumSGD, momentum=0.9)
    assert fused.count("ResourceApplyKerasMomentum") == 2
    assert _op_types(keras.optimizers.SGD, momentum=0.9).count("ResourceApplyKerasMomentum") == 0
    # Without momentum there is nothing to fuse: Keras' own update.
    assert _op_types(FusedMomentumSGD, momentum=0.0).count("ResourceApplyKerasMomentum") == 0


def test_the_optimizer_keeps_keras_config_and_round_trips():
    optimizer = FusedMomentumSGD(learning_rate=0.05, momentum=0.8, nesterov=True)
    config = optimizer.get_config()
    assert config == {**keras.optimizers.SGD(learning_rate=0.05, momentum=0.8,
                                             nesterov=True).get_config(), "name": config["name"]}
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is FusedMomentumSGD and again.get_config() == config
