"""The compiled steps: replica equivalence, the device-side train score and confusion matrix
against the host evaluators, bad labels and NaN losses flagged with their step, several steps
per call, the padded validation batches."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from learning.evaluators import AccuracyEvaluator, confusion_matrix
from learning.sgd import FusedMomentumSGD
from learning.steps import TrainSteps
from models.nn import SegNet
from tiny import IGNORE, NanSegNet, POISON_VALUE, tiny_data, tiny_model, weights_of


@pytest.fixture(scope="module")
def two_cpus():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def make_steps(strategy, learning_rate: float, clip_norm=None, model_cls=None,
               optimizer_cls=keras.optimizers.SGD, **optimizer_arguments):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = tiny_model(cls=model_cls) if model_cls else tiny_model()
        optimizer = optimizer_cls(learning_rate, **optimizer_arguments)
        optimizer.build(model.keras_model.trainable_variables)
    return model, TrainSteps(model, optimizer, strategy, clip_norm=clip_norm)


def batches_iterator(steps: TrainSteps, images: np.ndarray, labels: np.ndarray, batch: int):
    """Global batches of `batch` in order, as the feed gives them (replica shares split)."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)
    if steps.num_replicas == 1:
        return iter(dataset)
    dataset = dataset.rebatch(batch // steps.num_replicas)
    return iter(steps.strategy.distribute_datasets_from_function(lambda _: dataset))


# Keras' SGD clips the gradients; the fused one takes the clip scale through its learning rate
# (learning/sgd.py). With momentum, a first step is w0 - lr * g all the same (m0 = 0).
@pytest.mark.parametrize("optimizer", [(keras.optimizers.SGD, {}),
                                       (FusedMomentumSGD, {"momentum": 0.9})],
                         ids=["keras-sgd", "fused-momentum"])
@pytest.mark.parametrize("clip_norm", [None, 0.05])
def test_two_replicas_make_the_same_step_as_one_device(two_cpus, clip_norm, optimizer):
    images, labels = tiny_data(4)
    # Very different valid-pixel counts per replica: the first half of the batch loses most of
    # its pixels, so averaging per replica (instead of over the global count) would differ.
    labels[:2, :48] = IGNORE
    lr = 0.5
    single = tiny_model()
    w0 = weights_of(single)
    # The single-device update computed by hand: w1 = w0 - lr * clip(grad of model.loss).
    with tf.GradientTape() as tape:
        loss = single.loss(labels, single.keras_model(images.astype(np.float32), training=True))
    grads = tape.gradient(loss, single.keras_model.trainable_variables)
    if clip_norm is not None:
        assert float(tf.linalg.global_norm(grads)) > 4 * clip_norm   # clipping is active
        grads, _ = tf.clip_by_global_norm(grads, clip_norm)
    expected = [w - lr * g.numpy() for w, g in zip(w0, grads)]

    for strategy in (None, two_cpus):
        model, steps = make_steps(strategy, lr, clip_norm, None, optimizer[0], **optimizer[1])
        np.testing.assert_array_equal(weights_of(model)[0], w0[0])
        step_losses = steps.run(batches_iterator(steps, images, labels, 4), 1).numpy()
        assert step_losses == pytest.approx([float(loss)], rel=1e-5)
        for got, want in zip(weights_of(model), expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        if clip_norm is not None:
            moved = np.sqrt(sum(np.sum((w - v) ** 2) for w, v in zip(weights_of(model), w0)))
            assert moved == pytest.approx(lr * clip_norm, rel=1e-4)  # the global gradient


@pytest.mark.parametrize("replicas", [1, 2])
def test_device_train_score_is_the_mean_over_batches_of_the_original_pixel_accuracy(
        two_cpus, replicas):
    images, labels = tiny_data(8, seed=3, unknown_rows=5)
    labels[1] = IGNORE                # an image without a valid pixel: left out of its batch
    labels[4:6] = IGNORE              # a whole batch without one: left out of the mean
    model, steps = make_steps(two_cpus if replicas == 2 else None, learning_rate=0.0)
    steps.run(batches_iterator(steps, images, labels, 2), 4)
    totals = steps.totals.read()
    # lr 0 and no BatchNorm: the step's predictions are the model's.
    predictions = model.predict(images, batch_size=8, output="mask")
    batch_scores = []
    for start in (0, 2, 6):
        batch_scores.append(AccuracyEvaluator().score(labels[start:start + 2],
                                                      predictions[start:start + 2]))
    assert totals["steps"] == 4 and totals["scored_batches"] == 3
    assert totals["batch_score_sum"] / totals["scored_batches"] == pytest.approx(
        np.mean(batch_scores), rel=0, abs=1e-15)
    np.testing.assert_array_equal(totals["confusion"],
                                  confusion_matrix(labels, predictions, 3, IGNORE))
    assert totals["first_non_finite"] == 0 and totals["first_bad_label"] == 0


def test_labels_outside_the_classes_are_counted_ignored_and_flagged_with_their_step():
    images, labels = tiny_data(6, seed=4)
    labels[3, 5, 5:9] = 7             # 4 bad pixels in the second batch of 2... (step 2)
    labels[5, 0, 0] = 3               # and 1 in the third
    model, steps = make_steps(None, learning_rate=0.0)
    losses = steps.run(batches_iterator(steps, images, labels, 2), 3).numpy()
    totals = steps.totals.read()
    assert totals["first_bad_label"] == 2 and totals["bad_label_pixels"] == 5
    assert np.all(np.isfinite(losses))                  # ignored, not a crash or a NaN
    clean = labels.copy()
    clean[clean >= 3] = IGNORE
    expected = confusion_matrix(clean, model.predict(images, output="mask"), 3, IGNORE)
    np.testing.assert_array_equal(totals["confusion"], expected)


def test_a_non_finite_loss_is_flagged_with_its_step():
    images, labels = tiny_data(6, seed=5)
    images[4] = POISON_VALUE          # third batch
    _, steps = make_steps(None, learning_rate=0.0, model_cls=NanSegNet)
    losses = steps.run(batches_iterator(steps, images, labels, 2), 3).numpy()
    assert np.isfinite(losses[:2]).all() and not np.isfinite(losses[2])
    assert steps.totals.read()["first_non_finite"] == 3


def test_several_steps_per_call_equal_single_steps_and_stop_at_the_end_of_the_data():
    images, labels = tiny_data(10, seed=6)
    model_a, steps_a = make_steps(None, learning_rate=0.1)
    iterator = batches_iterator(steps_a, images, labels, 2)
    first, second = steps_a.run(iterator, 3).numpy(), steps_a.run(iterator, 3).numpy()
    assert len(first) == 3 and len(second) == 2         # 5 batches in all
    model_b, steps_b = make_steps(None, learning_rate=0.1)
    iterator = batches_iterator(steps_b, images, labels, 2)
    one_by_one = [steps_b.run(iterator, 1).numpy()[0] for _ in range(5)]
    np.testing.assert_allclose(np.concatenate([first, second]), one_by_one, rtol=1e-6)
    for a, b in zip(weights_of(model_a), weights_of(model_b)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert steps_a.totals.read()["steps"] == 5


def test_predicted_masks_on_two_replicas_pad_the_short_batch_and_keep_the_order(two_cpus):
    images, _ = tiny_data(5, seed=8)
    model, steps = make_steps(two_cpus, learning_rate=0.0)
    expected = model.predict(images, batch_size=5, output="mask")   # one device, one batch
    got = np.concatenate([steps.predict_masks(images[:3]), steps.predict_masks(images[3:])])
    np.testing.assert_array_equal(got, expected)


class TinyBNSegNet(SegNet):
    """conv -> BatchNorm (synchronized or not) -> ReLU -> 1x1 logits: the BN of GCN's backbone
    in miniature (GCN sets the same Keras flag on each of its BatchNorms: test_nn.py)."""

    def __init__(self, *args, sync_bn: bool = False, **kwargs) -> None:
        self.sync_bn = sync_bn
        super().__init__(*args, **kwargs)

    def _build_model(self) -> keras.Model:
        images = keras.Input((None, None, 3))
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
        x = keras.layers.Conv2D(8, 3, padding="same")(x)
        x = keras.layers.BatchNormalization(momentum=0.5, synchronized=self.sync_bn)(x)
        logits = keras.layers.Conv2D(3, 1)(keras.layers.ReLU()(x))
        return keras.Model(images, logits)


def moving_statistics(strategy, sync_bn: bool, images, labels) -> list[np.ndarray]:
    """BatchNorm moving mean and variance after one step (lr 0: only the statistics move)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        keras.utils.set_random_seed(2)
        model = TinyBNSegNet((64, 64, 3), 3, sync_bn=sync_bn)
        optimizer = keras.optimizers.SGD(0.0)
        optimizer.build(model.keras_model.trainable_variables)
    steps = TrainSteps(model, optimizer, strategy, clip_norm=None)
    steps.run(batches_iterator(steps, images, labels, 4), 1)
    return [np.asarray(v.numpy()) for v in model.keras_model.non_trainable_variables]


def test_sync_bn_on_two_replicas_equals_one_device_on_the_global_batch(two_cpus):
    images, labels = tiny_data(4, seed=9)
    images[:2] //= 4                     # the two replicas' halves differ in brightness
    one = moving_statistics(None, False, images, labels)
    synced = moving_statistics(two_cpus, True, images, labels)
    per_replica = moving_statistics(two_cpus, False, images, labels)
    assert len(one) == 2                               # moving mean and variance
    for a, b in zip(one, synced):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Without it each replica's statistics come from its half: the variances differ.
    variance_one, variance_replicas = one[1], per_replica[1]
    assert np.max(np.abs(variance_one - variance_replicas) / variance_one) > 0.05
