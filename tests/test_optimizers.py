"""The trainers' front door: argument checks, a finished run's folder and what it holds, the
snapshots its writes are made from and their pacing (curve interval, one state queued at a time),
EMA, warm-up, streaming data, a non-finite loss. (The plateau rule: test_schedule.py; one step
on several replicas and the device train score: test_steps.py; resume and faults:
test_loop.py.)
"""
from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import ConfigError
from datasets.data import DataSet
from learning import checkpoint
from learning import outputs as outputs_module
from learning.checkpoint import CheckpointError, load_state
from learning.evaluators import AccuracyEvaluator, MeanIoUEvaluator
from learning.state import read_values
from learning.steps import TrainSteps
from learning.optimizers import (LAST_STATE_NAME, BadLabelError, MomentumOptimizer,
                                 NonFiniteLossError, TrainingInterrupted)
from learning.run_folder import RunFolder
from learning.sgd import FusedMomentumSGD
from models.nn import SegNet
from tiny import POISON_VALUE, NanSegNet, tiny_data, tiny_model, weights_of

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


def test_bad_arguments_are_clear_errors_before_anything_runs():
    images, labels = tiny_data(4)
    with pytest.raises(ValueError, match="4 examples, fewer than batch_size=8"):
        MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator())
    one_hot = np.eye(3, dtype=np.float32)[labels % 3]
    with pytest.raises(ValueError, match="from_one_hot"):
        MomentumOptimizer(tiny_model(), DataSet(images, one_hot), AccuracyEvaluator(),
                          batch_size=2)
    with pytest.raises(ValueError, match="unbatched"):
        MomentumOptimizer(tiny_model(), tf.data.Dataset.from_tensor_slices(images),
                          AccuracyEvaluator(), batch_size=2)
    with pytest.raises(ValueError, match=r"--decay \(learning_rate_decay\) must be in"):
        MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator(),
                          batch_size=2, learning_rate_decay=0.0)


def test_a_label_outside_the_classes_stops_training_naming_the_epoch_and_step(tmp_path):
    images, labels = tiny_data(4)
    labels[1, 5, 5] = 7
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator(),
                            batch_size=4, num_epochs=1)
    with pytest.raises(BadLabelError, match=r"epoch 1, step 1: .* neither a class in \[0, 3\)"):
        opt.train(tmp_path, verbose=False)


# ----------------------------------------------------------------------------------------------
# A finished run: the files of the run folder and what they hold.
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("run")
    train_images, train_labels = tiny_data(12, seed=1, unknown_rows=3)
    val_images, val_labels = tiny_data(5, seed=2, unknown_rows=3)
    model = tiny_model()
    opt = MomentumOptimizer(model, DataSet(train_images, train_labels, seed=3),
                            AccuracyEvaluator(), DataSet(val_images, val_labels), batch_size=4,
                            num_epochs=2, init_learning_rate=0.05, eval_batch_size=2,
                            extra_evaluators=[MeanIoUEvaluator(num_classes=3)], seed=0,
                            log_every=2)
    results = opt.train(save_dir, details=True, verbose=False)
    return save_dir, results, opt, (val_images, val_labels)


def test_run_folder_files_and_history_agree_with_results(finished_run):
    save_dir, results, opt, _ = finished_run
    for name in ("best_model.keras", "model_config.json", "last_state.npz", "history.csv",
                 "history.json", "learning_curve.png", "learning_curve.svg", "config.json"
                 if False else "history.csv"):
        assert (save_dir / name).is_file(), name
    assert not glob.glob(str(save_dir / ".*.tmp*"))

    assert len(results["step_losses"]) == 2 * 3            # 12 // 4 steps, 2 epochs
    with open(save_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, epoch_losses, train, evals, iou in zip(
            rows, np.split(np.array(results["step_losses"]), 2), results["step_scores"],
            results["eval_scores"], results["extra_eval_scores"]["mean_iou"]):
        assert float(row["loss"]) == pytest.approx(epoch_losses.mean(), rel=1e-12)
        assert float(row["train_accuracy"]) == pytest.approx(train, rel=1e-12)
        assert 0 < float(row["train_mean_iou"]) < 1
        assert float(row["eval_accuracy"]) == pytest.approx(evals, rel=1e-12)
        assert float(row["eval_mean_iou"]) == pytest.approx(iou, rel=1e-12)
        assert float(row["lr"]) == 0.05 and float(row["seconds"]) > 0
    document = json.loads((save_dir / "history.json").read_text())
    assert document["step_losses"] == pytest.approx(results["step_losses"])
    assert document["best_epoch"] == results["best_epoch"] == opt.best_epoch
    saved = json.loads((save_dir / "model_config.json").read_text())
    assert saved["training"] == {"epoch": results["best_epoch"], "evaluator": "accuracy",
                                 "accuracy": results["best_score"]}


def test_the_best_model_on_disk_is_the_best_epochs_model(finished_run):
    save_dir, results, opt, (val_images, val_labels) = finished_run
    assert results["best_epoch"] == 2                       # so it holds the final weights
    loaded = SegNet.load(save_dir)
    for got, want in zip(weights_of(loaded), weights_of(opt.model)):
        np.testing.assert_array_equal(got, want)


def test_eval_scores_are_those_of_the_models_own_predictions(finished_run):
    _, results, opt, (val_images, val_labels) = finished_run
    # After the last epoch the model holds epoch 2's weights: its own predict() must give the
    # logged epoch-2 validation scores (streamed in batches of 2 over the 5 images).
    masks = opt.model.predict(val_images, batch_size=5, output="mask")
    assert AccuracyEvaluator().score(val_labels, masks) == pytest.approx(
        results["eval_scores"][-1], abs=1e-12)
    assert MeanIoUEvaluator().score(val_labels, masks) == pytest.approx(
        results["extra_eval_scores"]["mean_iou"][-1], abs=1e-12)


def test_tensorboard_holds_the_logged_scalars(finished_run):
    save_dir, results, _, _ = finished_run
    found: dict[str, dict[int, float]] = {}
    for path in glob.glob(str(save_dir / "tensorboard" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                if array.ndim == 0:    # the scalars (the previews are images)
                    found.setdefault(value.tag, {})[event.step] = float(array)
    assert found["step/loss"] == pytest.approx(dict(enumerate(results["step_losses"], 1)))
    assert found["epoch/eval_mean_iou"] == pytest.approx(
        dict(enumerate(results["extra_eval_scores"]["mean_iou"], 1)))
    assert found["epoch/learning_rate"] == pytest.approx({1: 0.05, 2: 0.05})


@pytest.mark.parametrize("sgd_class", [keras.optimizers.SGD, FusedMomentumSGD])
def test_snapshots_keep_their_values_while_training_changes_the_variables(sgd_class):
    # The resume state and best model are written from read_values' arrays (no copy) on the
    # writer thread while the next steps update the same variables in place (the fused kernel
    # of learning/sgd.py too: TensorFlow's training ops copy a buffer that is still shared).
    model = tiny_model()
    variables = model.keras_model.trainable_variables
    sgd = sgd_class(0.1, momentum=0.9)
    sgd.build(variables)
    snapshot = read_values([*model.keras_model.weights, *sgd.variables])
    expected = [np.array(v.numpy()) for v in [*model.keras_model.weights, *sgd.variables]]
    for _ in range(2):                                  # momentum slots and weights change
        sgd.apply_gradients([(tf.ones_like(v), v) for v in variables])
    now = [np.array(v.numpy()) for v in [*model.keras_model.weights, *sgd.variables]]
    assert sum(not np.array_equal(a, b) for a, b in zip(now, expected)) >= 2 * len(variables)
    for got, want in zip(snapshot, expected):
        np.testing.assert_array_equal(got, want)


def test_the_learning_curve_is_drawn_at_most_every_interval_and_at_the_end(
        tmp_path, monkeypatch):
    drawn = []                                          # epochs shown by each drawing
    monkeypatch.setattr(outputs_module, "plot_learning_curve",
                        lambda exp_idx, losses, scores, **kw: drawn.append(len(scores)))
    images, labels = tiny_data(4)

    def train(folder, interval, stop_in_epoch=0):
        class StopIn(DataSet):          # SIGTERM while drawing the batch of that epoch
            def next_batch(self, batch_size, shuffle=True):
                self.calls = getattr(self, "calls", 0) + 1
                if self.calls == stop_in_epoch:
                    os.kill(os.getpid(), signal.SIGTERM)
                return super().next_batch(batch_size, shuffle)

        monkeypatch.setattr(outputs_module, "CURVE_EVERY_SECONDS", interval)
        drawn.clear()
        opt = MomentumOptimizer(tiny_model(), StopIn(images, labels), AccuracyEvaluator(),
                                batch_size=4, num_epochs=3)
        opt.train(tmp_path / folder, verbose=False)
        return list(drawn)

    assert train("often", 0.0) == [1, 2, 3]
    assert train("rarely", 3600.0) == [3]               # the end of the run only
    with pytest.raises(TrainingInterrupted):
        train("stopped", 3600.0, stop_in_epoch=3)
    assert drawn == [2]                                 # the stop draws what it skipped


def test_a_resume_state_is_queued_only_after_the_previous_writes_are_done(tmp_path,
                                                                          monkeypatch):
    # Bounds the host memory of queued snapshots to one state's worth on a busy machine.
    monkeypatch.setattr(outputs_module, "CURVE_EVERY_SECONDS", 0.0)
    monkeypatch.setattr(outputs_module, "plot_learning_curve",
                        lambda *args, **kwargs: time.sleep(0.3))      # a slow write
    waiting, saving = [], []
    real_save, real_in_background = checkpoint.Checkpointer.save, RunFolder.in_background

    def save(checkpointer, data_state):
        saving.append(True)
        try:
            real_save(checkpointer, data_state)
        finally:
            saving.clear()

    def in_background(run, job):
        if saving:                          # the resume state's write is being queued
            waiting.append(run.pending_writes)
        real_in_background(run, job)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    monkeypatch.setattr(RunFolder, "in_background", in_background)
    images, labels = tiny_data(4)
    MomentumOptimizer(tiny_model(), DataSet(images, labels), AccuracyEvaluator(), batch_size=4,
                      num_epochs=3).train(tmp_path, verbose=False)
    assert waiting == [0, 0, 0]


def test_a_crash_in_the_middle_of_a_save_leaves_the_previous_state_loadable(
        finished_run, tmp_path, monkeypatch):
    save_dir, _, _, _ = finished_run
    path = tmp_path / LAST_STATE_NAME
    shutil.copy(save_dir / LAST_STATE_NAME, path)
    before = path.read_bytes()
    arrays, meta = load_state(path)

    real_write = checkpoint._write_npz

    def write_half_then_fail(fileobj, arrays):
        import io
        buffer = io.BytesIO()
        real_write(buffer, arrays)
        fileobj.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(checkpoint, "_write_npz", write_half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save_state(path, arrays, {**meta, "position": {"epoch": 99}})
    assert path.read_bytes() == before
    arrays, meta = load_state(path)
    assert meta["position"] == {"epoch": 3, "step": 0, "pass_done": False}
    assert len(arrays["step_losses"]) == 6
    assert os.listdir(tmp_path) == [LAST_STATE_NAME]       # the partial temp file is gone


def test_the_state_file_is_the_npz_numpy_writes_member_for_member():
    import io
    import zipfile

    arrays = {"model/0000": np.arange(12, dtype=np.float32).reshape(3, 4),
              "model/0001": np.array(7, np.int64),                   # a 0-d variable
              "empty": np.zeros((0, 5), np.float64), "flags": np.array([True, False]),
              "half": np.linspace(0, 1, 5).astype(np.float16),
              "transposed": np.arange(6.0).reshape(2, 3).T}          # not C-contiguous
    ours, numpy_own = io.BytesIO(), io.BytesIO()
    checkpoint._write_npz(ours, arrays)
    np.savez(numpy_own, **arrays)
    ours.seek(0)
    with np.load(ours, allow_pickle=False) as npz:       # reads every member: CRCs checked
        assert sorted(npz.files) == sorted(arrays)
        for name, value in arrays.items():
            assert npz[name].dtype == value.dtype and npz[name].shape == value.shape
            np.testing.assert_array_equal(npz[name], value)
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(numpy_own) as b:
        for name in set(arrays) - {"transposed"}:        # (numpy keeps that one in F order)
            assert a.read(f"{name}.npy") == b.read(f"{name}.npy"), name
        assert a.getinfo("model/0000.npy").compress_type == zipfile.ZIP_STORED


def test_a_torn_state_file_is_a_clear_error(tmp_path):
    path = tmp_path / LAST_STATE_NAME
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="not a readable resume state"):
        load_state(path)


def test_resume_with_another_model_or_no_state_is_a_clear_error(finished_run, tmp_path):
    save_dir, _, _, _ = finished_run
    images, labels = tiny_data(4)
    labels[labels == 2] = 1
    other = MomentumOptimizer(tiny_model(num_classes=2), DataSet(images, labels),
                              AccuracyEvaluator(), batch_size=2, num_epochs=3)
    with pytest.raises(CheckpointError, match=r"differing: num_classes"):
        other.train(save_dir, resume=True, verbose=False)
    with pytest.raises(Exception, match="not found"):
        other.train(tmp_path / "empty", resume=True, verbose=False)


def rates_used_by(opt, folder, monkeypatch) -> list[float]:
    """Train ``opt`` one step per call; the rate each step applied: the optimizer's schedule
    at its own update counter, read before the step."""
    used, run = [], TrainSteps.run

    def spy(steps, iterator, num_steps):
        used.append(float(steps.optimizer._get_current_learning_rate()))
        return run(steps, iterator, num_steps)

    monkeypatch.setattr(TrainSteps, "run", spy)
    opt.train(folder, verbose=False)
    return used


def test_warmup_ramps_the_learning_rate_per_step_then_holds_it(tmp_path, monkeypatch):
    images, labels = tiny_data(6)
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            batch_size=2, num_epochs=3, init_learning_rate=0.4, warmup_steps=4)
    used = rates_used_by(opt, tmp_path, monkeypatch)
    # 3 steps per epoch; steps 1-4 ramp 0.1, 0.2, 0.3, 0.4 (into epoch 2), then 0.4.
    assert used == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])


def test_linear_schedule_anneals_per_step_and_the_plateau_rule_never_decays(tmp_path,
                                                                          monkeypatch):
    images, labels = tiny_data(6)
    # A new best must double the score, so no epoch after the first improves: with patience
    # 0 the plateau rule would halve the rate for epoch 3.
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            batch_size=2, num_epochs=3, init_learning_rate=0.4, warmup_steps=1,
                            learning_rate_patience=0, learning_rate_decay=0.5,
                            score_threshold=1.0, schedule="linear")
    used = rates_used_by(opt, tmp_path, monkeypatch)
    # 9 steps: warm-up step 0.4 * 1, then 0.4 * (1 - (s - 1) / 8) for s = 1 .. 8.
    assert used == pytest.approx([0.4] + [0.4 * (1 - k / 8) for k in range(8)])
    assert opt.curr_learning_rate == 0.4


def test_each_epochs_logged_rate_is_the_cosine_rate_its_last_step_applied(tmp_path,
                                                                         monkeypatch):
    images, labels = tiny_data(6)
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            batch_size=2, num_epochs=3, init_learning_rate=0.4, warmup_steps=1,
                            schedule="cosine")
    used = rates_used_by(opt, tmp_path, monkeypatch)
    # 3 steps per epoch, 9 in all; the last steps of the epochs are updates 2, 5 and 8
    # (0-based), at 0.4 * (1 + cos(pi * (k - 1) / 8)) / 2 after the 1-step warm-up.
    cosine = [0.4 * (1 + np.cos(np.pi * (k - 1) / 8)) / 2 for k in (2, 5, 8)]
    history = json.loads((tmp_path / "history.json").read_text())
    logged = [row["lr"] for row in history["epochs"]]
    assert logged == pytest.approx(cosine, rel=1e-5)        # float32 on the device
    # Exactly the float32 rate those steps applied (the log keeps its shortest decimal).
    assert np.float32(logged).tolist() == np.float32([used[2], used[5], used[8]]).tolist()
    with open(tmp_path / "history.csv", newline="") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == logged


@pytest.mark.parametrize("replicas", [1, 2])
def test_ema_weights_are_evaluated_and_saved_while_training_continues_from_raw(
        tmp_path, two_cpus, replicas, monkeypatch):
    images, labels = tiny_data(4)
    strategy = two_cpus if replicas == 2 else None
    with (strategy or tf.distribute.get_strategy()).scope():
        model = tiny_model()
    opt = MomentumOptimizer(model, DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            DataSet(images, labels), batch_size=2, num_epochs=1, momentum=0.0,
                            init_learning_rate=0.5, ema_momentum=0.25, strategy=strategy)
    raw_after_step = []
    run = TrainSteps.run

    def spy(steps, iterator, num_steps):
        result = run(steps, iterator, num_steps)
        raw_after_step.append(weights_of(opt.model))
        return result

    monkeypatch.setattr(TrainSteps, "run", spy)
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
        def _build_optimizer(self, learning_rate):
            return keras.optimizers.SGD(learning_rate=learning_rate)

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


class PoisonedBatches(DataSet):
    """Puts NanSegNet's poison image into the batch of the ``at_call``-th ``next_batch`` call
    (epoch 2, step 2 with 2 steps per epoch): a property of the data, so the background
    thread that draws batches ahead of the step changes nothing."""

    def __init__(self, images, labels, at_call):
        super().__init__(images, labels, seed=0)
        self.at_call, self.num_calls = at_call, 0

    def next_batch(self, batch_size, shuffle=True):
        images, labels = super().next_batch(batch_size, shuffle)
        self.num_calls += 1
        if self.num_calls == self.at_call:
            images[0] = POISON_VALUE
        return images, labels


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_run(tmp_path):
    model = tiny_model(cls=NanSegNet)
    images, labels = tiny_data(8, seed=7)
    opt = MomentumOptimizer(model, PoisonedBatches(images, labels, at_call=4),
                            AccuracyEvaluator(), batch_size=4, num_epochs=3,
                            init_learning_rate=0.01, log_every=1)
    with pytest.raises(NonFiniteLossError) as caught:
        opt.train(tmp_path, verbose=False)
    error = caught.value
    assert (error.epoch, error.step, error.global_step) == (2, 2, 4)
    message = str(error)
    for part in ("epoch 2, step 2", "best model (epoch 1", "--lr", "--clip-norm", str(tmp_path)):
        assert part in message
    assert not np.isfinite(error.results["step_losses"][-1])
    assert len(error.results["step_losses"]) == 4
    assert (tmp_path / "best_model.keras").is_file()
    document = json.loads((tmp_path / "history.json").read_text())
    assert len(document["epochs"]) == 1 and document["step_losses"][3] is None
    _, meta = load_state(tmp_path / LAST_STATE_NAME)
    assert meta["position"]["epoch"] == 2 and meta["position"]["step"] == 0   # end of epoch 1


@pytest.fixture
def float16_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fp16_trains_with_dynamic_loss_scaling_to_a_finite_decreasing_loss(
        tmp_path, float16_policy):
    # The CPU runs float16 convolutions (oneDNN), so this runs here rather than being skipped.
    model = tiny_model()
    assert model.keras_model.get_layer("conv").compute_dtype == "float16"
    images, labels = tiny_data(16, seed=1)
    opt = MomentumOptimizer(model, DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            batch_size=4, num_epochs=3, init_learning_rate=0.1, clip_norm=1.0)
    losses = opt.train(tmp_path, details=True, verbose=False)["step_losses"]
    keras_optimizer = opt._state.optimizer
    assert isinstance(keras_optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.all(np.isfinite(losses)) and len(losses) == 12
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05
    # The scale started at 2**15 (a new run's slots), not at 0, and steps were applied.
    assert float(keras_optimizer.dynamic_scale.numpy()) >= 2.0 ** 14
    assert int(keras_optimizer.iterations.numpy()) > 0


def test_epochs_leave_tensorflows_global_seed_and_kernel_cache_alone(tmp_path, monkeypatch):
    # tf.random.set_seed clears TensorFlow's kernel cache: called at every epoch start it made
    # each epoch re-instantiate the compiled step (1.4-2.2x longer epochs). The epoch seeds go
    # to Python's and NumPy's generators only.
    images, labels = tiny_data(8, seed=3)
    optimizer = MomentumOptimizer(tiny_model(), DataSet(images, labels, seed=0),
                                  AccuracyEvaluator(), None, batch_size=4, num_epochs=2,
                                  init_learning_rate=0.01, seed=5)
    calls = []     # (the model's weights were seeded above, before it was built)
    monkeypatch.setattr(tf.random, "set_seed", lambda seed: calls.append(seed))
    optimizer.train(tmp_path / "run", verbose=False)
    assert calls == []
    from learning.loop import epoch_seed
    expected = np.random.RandomState(epoch_seed(5, 2)).random_sample()
    assert np.random.random_sample() == expected      # epoch 2 seeded NumPy's generator


# ----------------------------------------------------------------------------------------------
# Early stopping, and the original's attributes.
# ----------------------------------------------------------------------------------------------
def _early_stopping_run(folder, stop_at_call=0, resume=False, **changes):
    """A run whose score cannot improve after epoch 1 (score_threshold 1.0: a new best must
    double the old one), so --early-stop 2 ends it after epoch 3 of 6."""
    class StopAt(DataSet):          # SIGTERM while drawing that batch (3 per epoch)
        def next_batch(self, batch_size, shuffle=True):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == stop_at_call:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().next_batch(batch_size, shuffle)

    images, labels = tiny_data(6, seed=2)
    options = dict(batch_size=2, num_epochs=6, init_learning_rate=0.05, score_threshold=1.0,
                   early_stop=2, log_every=1, seed=1)
    options.update(changes)
    opt = MomentumOptimizer(tiny_model(seed=3), StopAt(images, labels, seed=4),
                            AccuracyEvaluator(), DataSet(images, labels), **options)
    return opt, opt.train(folder, details=True, verbose=False, resume=resume)


def test_early_stop_ends_the_run_and_a_resumed_run_stops_at_the_same_epoch(tmp_path, caplog):
    with caplog.at_level("DEBUG", logger="learning"):
        _, straight = _early_stopping_run(tmp_path / "straight")
    assert [row["epoch"] for row in straight["epochs"]] == [1, 2, 3]
    assert [row["epochs_without_best"] for row in straight["epochs"]] == [0, 1, 2]
    assert json.loads((tmp_path / "straight" / "history.json").read_text())[
        "early_stopped"] == 3
    assert "early stop: 2 epochs without a new best accuracy" in caplog.text
    # Stopped by SIGTERM in epoch 2 (its 5th batch), then resumed: the same three epochs.
    with pytest.raises(TrainingInterrupted):
        _early_stopping_run(tmp_path / "resumed", stop_at_call=5)
    _, resumed = _early_stopping_run(tmp_path / "resumed", resume=True)
    assert [row["epoch"] for row in resumed["epochs"]] == [1, 2, 3]
    assert resumed["step_losses"] == pytest.approx(straight["step_losses"], rel=1e-5)
    # A run that ended early and is resumed with the same settings trains nothing more ...
    _, again = _early_stopping_run(tmp_path / "straight", resume=True)
    assert len(again["epochs"]) == 3
    # ... and epochs in the warm-up do not count: 4 steps of warm-up cover epoch 2's end.
    _, warm = _early_stopping_run(tmp_path / "warm", warmup_steps=7)
    assert [row["epochs_without_best"] for row in warm["epochs"]] == [0, 0, 1, 2]


def test_hyperparameter_attributes_take_effect_and_state_attributes_refuse_to_be_set(tmp_path):
    images, labels = tiny_data(4)
    opt = MomentumOptimizer(tiny_model(), DataSet(images, labels, seed=0), AccuracyEvaluator(),
                            batch_size=2, num_epochs=1)
    assert (opt.num_epochs, opt.batch_size, opt.curr_epoch) == (1, 2, 1)
    opt.train(tmp_path, verbose=False)
    assert opt.curr_epoch == 2 and len(opt.history) == 1
    opt.num_epochs = 3                       # the tutorial's way to extend a run
    results = opt.train(tmp_path, details=True, verbose=False, resume=True)
    assert [row["epoch"] for row in results["epochs"]] == [1, 2, 3]
    assert opt.config.num_epochs == 3 and opt.curr_epoch == 4
    with pytest.raises(ConfigError, match=r"--batch-size \(batch_size\) must be a positive"):
        opt.batch_size = 0
    assert opt.batch_size == 2
    with pytest.raises(ConfigError, match="curr_epoch is training state.*set num_epochs"):
        opt.curr_epoch = 7
    with pytest.raises(ConfigError, match="curr_learning_rate is training state"):
        opt.curr_learning_rate = 0.5


def test_one_device_strategy_trains_exactly_as_the_default_strategy(tmp_path):
    # On a GPU, --distribute none trains under OneDeviceStrategy so that the batches are
    # prefetched onto the device through the strategy's input path; here on the CPU it must
    # give the default strategy's numbers exactly.
    images, labels = tiny_data(8, seed=6)
    losses = []
    for name, strategy in (("default", None), ("one", tf.distribute.OneDeviceStrategy("/cpu:0"))):
        with (strategy or tf.distribute.get_strategy()).scope():
            model = tiny_model(seed=2)
        opt = MomentumOptimizer(model, DataSet(images, labels, seed=1), AccuracyEvaluator(),
                                batch_size=4, num_epochs=2, init_learning_rate=0.1,
                                strategy=strategy)
        losses.append(opt.train(tmp_path / name, details=True, verbose=False)["step_losses"])
    assert len(losses[0]) == 4 and losses[0] == losses[1]
