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


def train(optimizer_cls, strategy=None, steps=4, factor=None, gradient_factor=1.0,
          **arguments):
    """Weights and optimizer variables after ``steps`` updates of two weights with fixed,
    step-dependent gradients times ``gradient_factor`` (a compiled step, as the training loop
    runs it); ``factor``: applied inside ``learning_rate_factor`` instead."""
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
            gradients = [tf.reshape(gradients[0], (3, 4)) * gradient_factor,
                         gradients[1] * gradient_factor]
            if factor is None:
                optimizer.apply_gradients(zip(gradients, weights))
            else:
                with optimizer.learning_rate_factor(tf.constant(factor)):
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


@pytest.mark.parametrize("arguments", [
    {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"momentum": 0.0},
], ids=["momentum", "nesterov", "no-momentum"])
def test_a_learning_rate_factor_updates_as_gradients_scaled_by_it(arguments):
    # The clip scale of learning/steps.py: lr * s on g must be Keras' update of g * s.
    want_weights, want_slots = train(keras.optimizers.SGD, gradient_factor=0.37, **arguments)
    got_weights, got_slots = train(FusedMomentumSGD, factor=0.37, **arguments)
    for got, want in zip(got_weights + got_slots, want_weights + want_slots):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    unscaled, _ = train(FusedMomentumSGD, **arguments)
    assert not np.allclose(unscaled[0], got_weights[0])   # the factor did change the update


def test_the_factor_holds_only_inside_its_block():
    weights = [keras.Variable(np.zeros(3, np.float32))]
    optimizer = FusedMomentumSGD(learning_rate=1.0, momentum=0.5)
    optimizer.build(weights)
    gradient = [(tf.ones(3), weights[0])]
    with optimizer.learning_rate_factor(tf.constant(0.25)):
        optimizer.apply_gradients(gradient)               # m = -0.25, w = -0.25
    optimizer.apply_gradients(gradient)                   # m = -0.125 - 1, w = -1.375
    np.testing.assert_allclose(weights[0].numpy(), [-1.375] * 3, rtol=1e-7)


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
