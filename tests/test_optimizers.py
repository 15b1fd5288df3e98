"""The training loop: plateau rule, replica equivalence, run-folder outputs, resume, failures.

Every model here is a two-convolution SegNet on 64x64 images (no BatchNorm, so one step on two
replicas must equal one step on one device), trained for a few steps.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import shutil
from typing import ClassVar

import keras
import numpy as np
import pytest
import tensorflow as tf

from datasets.data import DataSet
from learning import checkpoint
from learning.checkpoint import CheckpointError, load_state
from learning.evaluators import AccuracyEvaluator, MeanIoUEvaluator
from learning.optimizers import LAST_STATE_NAME, MomentumOptimizer, NonFiniteLossError
from models.nn import SegNet

SIZE = 64
IGNORE = 255


class TinySegNet(SegNet):
    """RGB -> 3x3 conv (4 filters, ReLU) -> 1x1 conv logits. No BatchNorm, no dropout."""

    def _build_model(self) -> keras.Model:
        images = keras.Input((None, None, 3), name="images")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
        logits = keras.layers.Conv2D(self.num_classes, 1, name="logits")(x)
        return keras.Model(images, logits, name=self.name)


def tiny_model(seed: int = 7, num_classes: int = 3) -> TinySegNet:
    keras.utils.set_random_seed(seed)   # same initial weights for the same seed
    return TinySegNet((SIZE, SIZE, 3), num_classes, weight_decay=1e-3)


def tiny_data(n: int, seed: int = 0, unknown_rows: int = 0):
    """Random images; labels = a learnable function of the pixel, plus an ignored band."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = (images[..., 0] > 100).astype(np.uint8) + (images[..., 1] > 180)
    labels[:, :unknown_rows] = IGNORE
    return images, labels


def noise_data(n: int, seed: int):
    """Labels independent of the images: scores stay near chance (no epoch doubles them)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (n, SIZE, SIZE), dtype=np.uint8)
    labels[:, :4] = IGNORE
    return images, labels


def weights_of(model: SegNet) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.keras_model.trainable_variables]


# ----------------------------------------------------------------------------------------------
# Plateau rule and best-model bookkeeping, driven with a hand-written score sequence.
# ----------------------------------------------------------------------------------------------
def test_plateau_rule_decays_and_saves_on_the_specified_epochs():
    images, labels = tiny_data(4)
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator(),
                            batch_size=2, init_learning_rate=1.0, learning_rate_patience=2,
                            learning_rate_decay=0.1, eps=1e-8, score_threshold=1e-4)
    scores = [0.5, 0.6, 0.6, 0.55, 0.6, 0.6001, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    improved, rates, bad = [], [], []
    for score in scores:
        improved.append(opt._judge_epoch(score))
        rates.append(opt.curr_learning_rate)
        bad.append(opt.num_bad_epochs)
        opt.curr_epoch += 1
    # 0.6 is not > 0.6 * 1.0001; 0.6001 is > 0.60006. Bad counts 1, 2, 3 > patience -> decay.
    assert improved == [True, True, False, False, False, True, True,
                        False, False, False, False, False, False]
    assert rates == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001])
    assert bad == [0, 0, 1, 2, 0, 0, 0, 1, 2, 0, 1, 2, 0]
    assert opt.best_score == 0.7 and opt.best_epoch == 7


def test_plateau_rule_skips_a_decay_smaller_than_eps_but_restarts_the_count():
    images, labels = tiny_data(4)
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator(),
                            batch_size=2, init_learning_rate=1e-8, learning_rate_patience=0,
                            learning_rate_decay=0.1, eps=1e-8)
    assert opt._judge_epoch(0.5) is True
    for _ in range(3):
        assert opt._judge_epoch(0.5) is False
        # 1e-8 - 1e-9 = 9e-9 is not > eps: the rate stays, the bad count restarts.
        assert opt.curr_learning_rate == 1e-8 and opt.num_bad_epochs == 0


# ----------------------------------------------------------------------------------------------
# One step on two logical CPUs == one step on one device (same global batch).
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_cpus():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.mark.parametrize("clip_norm", [None, 0.05])
def test_two_replicas_make_the_same_step_as_one_device(two_cpus, clip_norm):
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

    results = {}
    for name, strategy in (("one", None), ("two", two_cpus)):
        with (strategy or tf.distribute.get_strategy()).scope():
            model = tiny_model()
        np.testing.assert_array_equal(weights_of(model)[0], w0[0])
        opt = MomentumOptimizer(model, DataSet(images, labels), AccuracyEvaluator(),
                                batch_size=4, init_learning_rate=lr, clip_norm=clip_norm,
                                strategy=strategy)
        opt._keras_optimizer.learning_rate = lr
        step_loss, predictions, batch_labels = opt._train_step(
            *opt._distribute_arrays(images, labels))
        results[name] = (float(step_loss), weights_of(model), predictions.numpy(),
                         batch_labels.numpy())

    for name in ("one", "two"):
        step_loss, weights, predictions, batch_labels = results[name]
        assert step_loss == pytest.approx(float(loss), rel=1e-5)
        for got, want in zip(weights, expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(batch_labels, labels)   # replica outputs in batch order
        assert predictions.shape == labels.shape and predictions.dtype == np.uint8
    if clip_norm is not None:
        moved = np.sqrt(sum(np.sum((w - v) ** 2) for w, v in zip(results["two"][1], w0)))
        assert moved == pytest.approx(lr * clip_norm, rel=1e-4)  # the global gradient was clipped


def test_two_replica_evaluation_pads_the_short_last_batch(two_cpus):
    images, labels = tiny_data(5, seed=8, unknown_rows=5)
    with two_cpus.scope():
        model = tiny_model()
    expected = model.predict(images, batch_size=5, output="mask")   # one device, one batch
    for val_set in (DataSet(images, labels), tf.data.Dataset.from_tensor_slices((images, labels))):
        opt = MomentumOptimizer(model, DataSet(images, labels), AccuracyEvaluator(), val_set,
                                batch_size=2, eval_batch_size=3, strategy=two_cpus,
                                extra_evaluators=[MeanIoUEvaluator()])
        # Batches of 3 and 2 images: the 3 is padded to 4 for the two replicas, then trimmed.
        batches = list(opt._eval_batches())
        assert [len(p) for _, p in batches] == [3, 2]
        np.testing.assert_array_equal(np.concatenate([p for _, p in batches]), expected)
        np.testing.assert_array_equal(np.concatenate([t for t, _ in batches]), labels)
        scores = opt._evaluate()
        assert scores["accuracy"] == AccuracyEvaluator().score(labels, expected)
        assert scores["mean_iou"] == MeanIoUEvaluator().score(labels, expected)


def test_model_built_outside_the_strategy_scope_is_a_clear_error(two_cpus):
    images, labels = tiny_data(4)
    with pytest.raises(ValueError, match=r"not created under the distribution strategy"):
        MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator(),
                          batch_size=4, strategy=two_cpus)
    with two_cpus.scope():
        model = tiny_model()
    with pytest.raises(ValueError, match=r"batch_size=3 must be a multiple of the 2 replicas"):
        MomentumOptimizer(model, DataSet(images, labels), AccuracyEvaluator(), batch_size=3,
                          strategy=two_cpus)


def test_bad_train_data_is_a_clear_error():
    images, labels = tiny_data(4)
    with pytest.raises(ValueError, match="4 examples, fewer than batch_size=8"):
        MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator())
    one_hot = np.eye(3, dtype=np.float32)[labels % 3]
    with pytest.raises(ValueError, match="from_one_hot"):
        MomentumOptimizer(tiny_model(), DataSet(images, one_hot), AccuracyEvaluator(),
                          batch_size=2)
    bad = labels.copy()
    bad[1, 5, 5] = 7
    opt = MomentumOptimizer(tiny_model(), DataSet(images, bad), AccuracyEvaluator(),
                            batch_size=4, num_epochs=1)
    with pytest.raises(ValueError, match=r"epoch 1, step 1: .*labels must be < num_classes=3"):
        opt._train_epoch(1, None, progress=False)
    with pytest.raises(ValueError, match="unbatched"):
        MomentumOptimizer(tiny_model(), tf.data.Dataset.from_tensor_slices(images),
                          AccuracyEvaluator(), batch_size=2)


# ----------------------------------------------------------------------------------------------
# A finished run: the files of the run folder and what they hold.
# ----------------------------------------------------------------------------------------------
class SpyAccuracy(AccuracyEvaluator):
    """Records every score() call (the per-batch train scores; evaluation streams instead)."""

    calls: ClassVar[list[tuple[int, float]]] = []   # class attribute: survives deepcopy

    def score(self, y_true, y_pred):
        value = super().score(y_true, y_pred)
        SpyAccuracy.calls.append((len(y_true), value))
        return value


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    SpyAccuracy.calls.clear()
    save_dir = tmp_path_factory.mktemp("run")
    train_images, train_labels = tiny_data(12, seed=1, unknown_rows=3)
    val_images, val_labels = tiny_data(5, seed=2, unknown_rows=3)
    model = tiny_model()
    opt = MomentumOptimizer(model, DataSet(train_images, train_labels, seed=3), SpyAccuracy(),
                            DataSet(val_images, val_labels), batch_size=4, num_epochs=2,
                            init_learning_rate=0.05, eval_batch_size=2,
                            extra_evaluators=[MeanIoUEvaluator(num_classes=3)], seed=0)
    results = opt.train(save_dir, details=True, verbose=False)
    return save_dir, results, opt, (val_images, val_labels), list(SpyAccuracy.calls)


def test_run_folder_files_and_history_agree_with_results(finished_run):
    save_dir, results, opt, _, _ = finished_run
    for name in ("best_model.keras", "model_config.json", "last_state.npz", "history.csv",
                 "history.json", "learning_curve.png", "learning_curve.svg"):
        assert (save_dir / name).is_file(), name
    assert not glob.glob(str(save_dir / ".*.tmp"))

    assert len(results["step_losses"]) == 2 * 3            # 12 // 4 steps, 2 epochs
    with open(save_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, epoch_losses, train, evals, iou in zip(
            rows, np.split(np.array(results["step_losses"]), 2), results["step_scores"],
            results["eval_scores"], results["extra_eval_scores"]["mean_iou"]):
        assert float(row["loss"]) == pytest.approx(epoch_losses.mean(), rel=1e-12)
        assert float(row["train_accuracy"]) == pytest.approx(train, rel=1e-12)
        assert float(row["eval_accuracy"]) == pytest.approx(evals, rel=1e-12)
        assert float(row["eval_mean_iou"]) == pytest.approx(iou, rel=1e-12)
        assert float(row["lr"]) == 0.05
    document = json.loads((save_dir / "history.json").read_text())
    assert document["step_losses"] == pytest.approx(results["step_losses"])
    assert document["best_epoch"] == results["best_epoch"] == opt.best_epoch


def test_train_score_is_the_mean_over_the_epochs_batches(finished_run):
    _, results, _, _, calls = finished_run
    assert [n for n, _ in calls] == [4] * 6               # one score() per step, full batches
    per_epoch = np.array([value for _, value in calls]).reshape(2, 3).mean(axis=1)
    np.testing.assert_allclose(results["step_scores"], per_epoch, rtol=0, atol=1e-15)


def test_eval_scores_are_those_of_the_models_own_predictions(finished_run):
    _, results, opt, (val_images, val_labels), _ = finished_run
    # After the last epoch the model holds epoch 2's weights: its own predict() must give the
    # logged epoch-2 validation scores (streamed in batches of 2 over the 5 images).
    masks = opt.model.predict(val_images, batch_size=5, output="mask")
    assert AccuracyEvaluator().score(val_labels, masks) == pytest.approx(
        results["eval_scores"][-1], abs=1e-12)
    assert MeanIoUEvaluator().score(val_labels, masks) == pytest.approx(
        results["extra_eval_scores"]["mean_iou"][-1], abs=1e-12)
    # The same scores from a tf.data validation set.
    opt.val_set = tf.data.Dataset.from_tensor_slices((val_images, val_labels))
    scores = opt._evaluate()
    assert scores["accuracy"] == pytest.approx(results["eval_scores"][-1], abs=1e-12)


def test_tensorboard_holds_the_logged_scalars(finished_run):
    save_dir, results, _, _, _ = finished_run
    found: dict[str, dict[int, float]] = {}
    for path in glob.glob(str(save_dir / "tensorboard" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                found.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    assert found["step/loss"] == pytest.approx(dict(enumerate(results["step_losses"], 1)))
    assert found["epoch/eval_mean_iou"] == pytest.approx(
        dict(enumerate(results["extra_eval_scores"]["mean_iou"], 1)))
    assert found["epoch/learning_rate"] == pytest.approx({1: 0.05, 2: 0.05})


# ----------------------------------------------------------------------------------------------
# Resume state: crash-safe writes, mismatches, and the exact continuation of a run.
# ----------------------------------------------------------------------------------------------
def test_a_crash_in_the_middle_of_a_save_leaves_the_previous_state_loadable(
        finished_run, tmp_path, monkeypatch):
    save_dir, _, opt, _, _ = finished_run
    path = tmp_path / LAST_STATE_NAME
    shutil.copy(save_dir / LAST_STATE_NAME, path)
    before = path.read_bytes()

    real_write = checkpoint._write_npz

    def write_half_then_fail(fileobj, arrays):
        import io
        buffer = io.BytesIO()
        real_write(buffer, arrays)
        fileobj.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(checkpoint, "_write_npz", write_half_then_fail)
    opt.curr_epoch, saved_epoch = 99, opt.curr_epoch
    try:
        with pytest.raises(OSError, match="simulated"):
            opt._save_state(path)
    finally:
        opt.curr_epoch = saved_epoch
    assert path.read_bytes() == before
    arrays, meta = load_state(path)
    assert meta["epoch"] == 2 and len(arrays["step_losses"]) == 6
    assert os.listdir(tmp_path) == [LAST_STATE_NAME]       # the partial temp file is gone


def test_a_torn_state_file_is_a_clear_error(tmp_path):
    path = tmp_path / LAST_STATE_NAME
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="not a readable resume state"):
        load_state(path)


def test_resume_with_another_model_or_no_state_is_a_clear_error(finished_run, tmp_path):
    save_dir, _, _, _, _ = finished_run
    images, labels = tiny_data(4)
    labels[labels == 2] = 1
    other = MomentumOptimizer(tiny_model(num_classes=2), DataSet(images, labels),
                              AccuracyEvaluator(), batch_size=2, num_epochs=3)
    with pytest.raises(CheckpointError, match=r"differing: num_classes"):
        other.train(save_dir, resume=True, verbose=False)
    with pytest.raises(CheckpointError, match="not found"):
        other.train(tmp_path / "empty", resume=True, verbose=False)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_run(tmp_path):
    train_images, train_labels = noise_data(8, seed=4)
    val_images, val_labels = noise_data(4, seed=5)

    def make(num_epochs: int) -> MomentumOptimizer:
        # A fresh model each time (as a restarted process would build it); the resumed one
        # gets different initial weights on purpose: the state must overwrite them.
        return MomentumOptimizer(
            tiny_model(seed=num_epochs), DataSet(train_images, train_labels, seed=11),
            AccuracyEvaluator(), DataSet(val_images, val_labels), batch_size=4,
            num_epochs=num_epochs, init_learning_rate=0.2, learning_rate_patience=1,
            learning_rate_decay=0.5, score_threshold=1.0, seed=3,
            warmup_steps=5)  # 2 steps per epoch: the warm-up crosses the interruption

    straight = make(4)
    straight.model.keras_model.set_weights(tiny_model(seed=1).keras_model.get_weights())
    expected = straight.train(tmp_path / "straight", details=True, verbose=False)

    first = make(2)
    first.model.keras_model.set_weights(tiny_model(seed=1).keras_model.get_weights())
    first.train(tmp_path / "resumed", verbose=False)
    resumed = make(4)
    got = resumed.train(tmp_path / "resumed", details=True, verbose=False, resume=True)

    # score_threshold=1.0: only epoch 1 improves (noise labels never double the accuracy);
    # with patience 1, epoch 3 is the second bad epoch in a row -> the rate halves for epoch 4,
    # which needs the bad count of epoch 2 carried over the interruption.
    assert expected["learning_rates"] == pytest.approx([0.2, 0.2, 0.2, 0.1])
    assert got["learning_rates"] == expected["learning_rates"]
    assert got["best_score"] == expected["best_score"] and got["best_epoch"] == 1
    assert got["step_losses"] == pytest.approx(expected["step_losses"], rel=1e-6)
    assert got["eval_scores"] == pytest.approx(expected["eval_scores"], rel=1e-6)
    for a, b in zip(weights_of(resumed.model), weights_of(straight.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(got["epochs"]) == 4 and resumed.curr_epoch == 5


def test_warmup_ramps_the_learning_rate_per_step_then_holds_it(tmp_path):
    images, labels = tiny_data(6)
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            batch_size=2, num_epochs=3, init_learning_rate=0.4, warmup_steps=4)
    used = []
    step = opt._train_step

    def spy(images, labels):
        used.append(float(opt._keras_optimizer.learning_rate.numpy()))
        return step(images, labels)

    opt._train_step = spy
    opt.train(tmp_path, verbose=False)
    # 3 steps per epoch; steps 1-4 ramp 0.1, 0.2, 0.3, 0.4 (into epoch 2), then 0.4.
    assert used == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])


@pytest.mark.parametrize("replicas", [1, 2])
def test_ema_weights_are_evaluated_and_saved_while_training_continues_from_raw(
        tmp_path, two_cpus, replicas):
    images, labels = tiny_data(4)
    strategy = two_cpus if replicas == 2 else None
    with (strategy or tf.distribute.get_strategy()).scope():
        model = tiny_model()
    opt = MomentumOptimizer(model, DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            DataSet(images, labels), batch_size=2, num_epochs=1, momentum=0.0,
                            init_learning_rate=0.5, ema_momentum=0.25, strategy=strategy)
    raw_after_step = []
    step = opt._train_step

    def spy(images, labels):
        result = step(images, labels)
        raw_after_step.append(weights_of(opt.model))
        return result

    opt._train_step = spy
    opt.train(tmp_path, verbose=False)
    w1, w2 = raw_after_step
    # The first step sets the average to the weights, the second mixes: 0.25 * w1 + 0.75 * w2.
    saved = weights_of(SegNet.load(tmp_path))
    for got, a, b in zip(saved, w1, w2):
        np.testing.assert_allclose(got, 0.25 * a + 0.75 * b, rtol=1e-5, atol=1e-6)
        assert not np.allclose(a, b)
    for got, raw in zip(weights_of(opt.model), w2):  # training goes on from the raw weights
        np.testing.assert_array_equal(got, raw)


def test_a_subclass_that_drops_ema_momentum_is_refused():
    class PlainSGD(MomentumOptimizer):
        def _build_optimizer(self):
            return keras.optimizers.SGD(learning_rate=self.init_learning_rate)

    images, labels = tiny_data(2)
    with pytest.raises(ValueError, match=r"PlainSGD._build_optimizer ignores ema_momentum"):
        PlainSGD(tiny_model(), DataSet(images, labels), AccuracyEvaluator(), batch_size=2,
                 ema_momentum=0.9)


# ----------------------------------------------------------------------------------------------
# tf.data sources and a non-finite loss.
# ----------------------------------------------------------------------------------------------
def test_streaming_train_data_is_batched_full_batches_only_per_epoch(tmp_path):
    images, labels = tiny_data(10, seed=6)
    requested = []

    def epoch_data(epoch_index: int) -> tf.data.Dataset:
        requested.append(epoch_index)
        order = np.random.default_rng(epoch_index).permutation(10)
        return tf.data.Dataset.from_tensor_slices((images[order], labels[order]))

    opt = MomentumOptimizer(tiny_model(), epoch_data, AccuracyEvaluator(), batch_size=4,
                            num_epochs=2, init_learning_rate=0.05)
    results = opt.train(tmp_path, details=True, verbose=False)
    assert requested == [0, 1]
    assert [row["steps"] for row in results["epochs"]] == [2, 2]   # 10 // 4, remainder dropped
    # Without a validation set the train score drives model selection.
    assert "eval_scores" not in results
    assert results["best_score"] == results["step_scores"][results["best_epoch"] - 1]
    assert results["best_score"] * (1 + 1e-4) >= max(results["step_scores"])


class PoisonableSegNet(TinySegNet):
    """Regularisation loss + a variable the test sets to NaN to make the loss non-finite."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.poison = tf.Variable(0.0, trainable=False)

    def regularization_loss(self):
        return super().regularization_loss() + self.poison


class PoisoningDataSet(DataSet):
    """Poisons the model on the n-th call of next_batch (epoch 2, step 2 with 2 steps/epoch)."""

    def __init__(self, images, labels, model, at_call):
        super().__init__(images, labels, seed=0)
        self.model, self.at_call, self.num_calls = model, at_call, 0

    def next_batch(self, batch_size, shuffle=True):
        self.num_calls += 1
        if self.num_calls == self.at_call:
            self.model.poison.assign(float("nan"))
        return super().next_batch(batch_size, shuffle)


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_run(tmp_path):
    keras.utils.set_random_seed(0)
    model = PoisonableSegNet((SIZE, SIZE, 3), 3)
    images, labels = tiny_data(8, seed=7)
    opt = MomentumOptimizer(model, PoisoningDataSet(images, labels, model, at_call=4),
                            AccuracyEvaluator(), batch_size=4, num_epochs=3,
                            init_learning_rate=0.01)
    with pytest.raises(NonFiniteLossError) as caught:
        opt.train(tmp_path, verbose=False)
    error = caught.value
    assert (error.epoch, error.step, error.global_step) == (2, 2, 4)
    message = str(error)
    for part in ("epoch 2, step 2", "best model (epoch 1", "--lr", "--clip-norm", str(tmp_path)):
        assert part in message
    assert np.isnan(error.results["step_losses"][-1]) and len(error.results["step_losses"]) == 4
    assert (tmp_path / "best_model.keras").is_file()
    document = json.loads((tmp_path / "history.json").read_text())
    assert len(document["epochs"]) == 1 and document["step_losses"][3] is None
    _, meta = load_state(tmp_path / LAST_STATE_NAME)
    assert meta["epoch"] == 1                              # the last good end-of-epoch state
