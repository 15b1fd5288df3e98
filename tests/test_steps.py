"""The compiled steps: replica equivalence, the device-side train score and confusion matrix
against the host evaluators, bad labels and NaN losses flagged with their step, several steps
per call, the padded validation batches."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import ConfigError
from learning.evaluators import AccuracyEvaluator, confusion_matrix
from learning.sgd import FusedMomentumSGD
from learning.steps import HEAD, TrainSteps, resolve_jit_compile, step_statistics
from models.nn import SegNet
from tiny import IGNORE, NanSegNet, POISON_VALUE, tiny_data, tiny_model, weights_of


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


# -- XLA, the statistics' types and counts, one gradient all-reduce -----------------------------

def test_the_step_compiles_with_xla_and_gives_the_losses_and_totals_of_the_plain_step():
    images, labels = tiny_data(10, seed=6, unknown_rows=3)
    labels[7, 10, :3] = 5                         # bad labels in step 4, counted by both
    results = []
    for jit in (False, True):
        with tf.distribute.get_strategy().scope():
            model = tiny_model()
            optimizer = FusedMomentumSGD(0.1, momentum=0.9)
            optimizer.build(model.keras_model.trainable_variables)
        steps = TrainSteps(model, optimizer, tf.distribute.get_strategy(), clip_norm=0.5,
                           jit_compile=jit)
        losses = steps.run(batches_iterator(steps, images, labels, 2), 5).numpy()
        results.append((losses, steps.totals.read(), steps.predict_masks(images[:3])))
    (plain, plain_totals, plain_masks), (xla, xla_totals, xla_masks) = results
    assert len(xla) == 5 and not np.array_equal(xla, plain)       # XLA rounds differently
    np.testing.assert_allclose(xla, plain, rtol=1e-5)
    assert xla_totals["first_bad_label"] == plain_totals["first_bad_label"] == 4
    for key in ("steps", "scored_batches", "bad_label_pixels", "first_non_finite"):
        assert xla_totals[key] == plain_totals[key]
    np.testing.assert_array_equal(xla_totals["confusion"], plain_totals["confusion"])
    assert xla_totals["batch_score_sum"] == pytest.approx(plain_totals["batch_score_sum"],
                                                          rel=1e-12)
    np.testing.assert_array_equal(xla_masks, plain_masks)


def test_jit_compile_on_several_cpu_replicas_is_refused_in_one_line(two_cpus):
    with two_cpus.scope():
        model = tiny_model()
        optimizer = FusedMomentumSGD(0.1)
    with pytest.raises(ConfigError, match="use --jit-compile off"):
        TrainSteps(model, optimizer, two_cpus, clip_norm=None, jit_compile=True)
    assert resolve_jit_compile("auto") is False          # no GPU in the tests' process
    assert (resolve_jit_compile("on"), resolve_jit_compile("off")) == (True, False)


def test_jit_compile_on_a_cpu_in_mixed_precision_is_refused_in_one_line():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model()
        optimizer = FusedMomentumSGD(0.1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    strategy = tf.distribute.get_strategy()
    with pytest.raises(ConfigError, match=r"mixed precision \(bfloat16 computations\); use "
                                          r"--jit-compile off"):
        TrainSteps(model, optimizer, strategy, clip_norm=None, jit_compile=True)
    TrainSteps(model, optimizer, strategy, clip_norm=None, jit_compile=False)   # allowed


def numpy_statistics(labels, logits, ce_sum, count, num_classes, ignore):
    """step_statistics counted by NumPy, pixel by pixel, in float64."""
    predictions = np.argmax(logits, axis=-1)
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore)
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (labels[valid], predictions[valid]), 1.0)
    per_image_valid = valid.sum(axis=(1, 2)).astype(np.float64)
    correct = (valid & (labels == predictions)).sum(axis=(1, 2))
    scored = per_image_valid > 0
    accuracy_sum = np.sum(correct[scored] / per_image_valid[scored])
    bad = np.sum((labels != ignore) & ~valid)
    return np.concatenate([[count, ce_sum, accuracy_sum, scored.sum(), bad], confusion.ravel()])


@pytest.mark.parametrize("ignore", [255, 1], ids=["ignore-255", "ignore-a-class"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
def test_step_statistics_equal_a_numpy_count_with_ignored_and_out_of_range_labels(ignore, jit):
    rng = np.random.default_rng(11)
    num_classes = 4
    logits = rng.normal(size=(3, 20, 24, num_classes)).astype(np.float32)
    labels = rng.choice([0, 1, 2, 3, 4, 9, 200, 255], size=(3, 20, 24)).astype(np.int64)
    labels[1] = 255                       # an image without a valid pixel: not scored
    labels[2, :5] = -3                    # negative values are bad labels too
    labels[0, 0, :7] = 2                  # ...and some pixels of the last class but one
    function = tf.function(step_statistics, jit_compile=True) if jit else step_statistics
    got = function(tf.constant(labels), tf.constant(logits), tf.constant(2.5), tf.constant(7.0),
                   num_classes=num_classes, ignore_label=ignore).numpy()
    want = numpy_statistics(labels, logits, 2.5, 7.0, num_classes, ignore)
    assert got.dtype == np.float64 and got.shape == (len(HEAD) + num_classes ** 2,)
    assert want[4] > 100 and want[3] == 2           # bad pixels and one unscored image
    np.testing.assert_array_equal(got[[0, 1, 3, 4]], want[[0, 1, 3, 4]])
    np.testing.assert_array_equal(got[len(HEAD):], want[len(HEAD):])
    assert got[2] == pytest.approx(want[2], rel=1e-15)


def test_no_per_pixel_tensor_of_the_step_is_float64_or_int32():
    # GPUs keep int32 tensors in host memory and have no float64 bincount: either would copy
    # the per-pixel maps between device and host every step.
    images, labels = tiny_data(2, seed=1, unknown_rows=2)
    _, steps = make_steps(None, learning_rate=0.1, clip_norm=1.0)
    graph = tf.function(steps._replica_step).get_concrete_function(
        tf.constant(images), tf.constant(labels)).graph
    pixels = labels.size
    offenders = {(op.type, out.dtype.name) for op in graph.get_operations() for out in op.outputs
                 if out.dtype in (tf.float64, tf.int32) and out.shape.is_fully_defined()
                 and out.shape.num_elements() >= pixels}
    assert not offenders
    assert any(op.type == "BatchMatMulV2" for op in graph.get_operations())   # traced it all


def collective_sums(steps: TrainSteps, iterator) -> list[int]:
    """Sizes (elements) of the collective all-reduces the first replica runs in one traced
    call of one step."""
    graph_def = steps._train.get_concrete_function(
        iterator, tf.constant(1, tf.int64)).graph.as_graph_def(add_shapes=True)
    sizes = []
    for function in graph_def.library.function:
        nodes = {node.name: node for node in function.node_def}
        for node in function.node_def:
            if "Collective" in node.op and "Reduce" in node.op and node.device.endswith("CPU:0"):
                name, *rest = node.input[0].split(":")
                shapes = nodes[name].attr["_output_shapes"].list.shape
                shape = shapes[int(rest[-1]) if len(rest) == 2 else 0]
                sizes.append(int(np.prod([d.size for d in shape.dim])))
    return sorted(sizes)


@pytest.mark.parametrize("setting", ["none", "clip-norm", "fp16"])
def test_two_replicas_all_reduce_the_gradients_once_and_step_as_one_device(two_cpus, setting):
    images, labels = tiny_data(4, seed=2)
    labels[:2, :40] = IGNORE                     # the replicas' valid counts differ
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if setting == "fp16" else "float32")
    weights, sizes = [], None
    try:
        for strategy in (tf.distribute.get_strategy(), two_cpus):
            with strategy.scope():
                model = tiny_model()
                optimizer = FusedMomentumSGD(0.5, momentum=0.9)
                if setting == "fp16":
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                optimizer.build(model.keras_model.trainable_variables)
            steps = TrainSteps(model, optimizer, strategy,
                               clip_norm=None if setting == "none" else 0.05)
            if strategy is two_cpus:
                sizes = collective_sums(steps, batches_iterator(steps, images, labels, 4))
            steps.run(batches_iterator(steps, images, labels, 4), 1)
            weights.append(weights_of(model))
    finally:
        keras.mixed_precision.set_global_policy(policy)
    gradient_size = sum(int(np.prod(v.shape)) for v in model.keras_model.trainable_variables)
    # The step's statistics (a float64 vector) and the gradients, each once.
    assert sizes == sorted([len(HEAD) + 9, gradient_size])
    for one, two in zip(*weights):
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-5)
