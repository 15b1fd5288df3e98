"""Nothing lost: SIGTERM in the middle of an epoch (or of the validation), then resume, ends
with the history of an uninterrupted run; periodic mid-epoch states; a kill between the resume
state and the best model is repaired; a first epoch killed before any state leaves a reusable
folder.

The runs train a tiny model in this process (a real SIGTERM, handled by the loop); the signal
comes from the train data itself at a chosen ``next_batch`` call, so it lands in the epoch the
test wants (batches are drawn by a background thread, so the exact step varies: the resume must
be exact wherever it lands).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from common.errors import EXIT_SIGTERM
from datasets.data import DataSet
from learning.checkpoint import load_state
from learning.evaluators import AccuracyEvaluator, MeanIoUEvaluator
from learning.optimizers import MomentumOptimizer, TrainingInterrupted
from learning.run_folder import RunFolder
from models.nn import SegNet
from tiny import noise_data, tiny_model, weights_of

class SignalAt(DataSet):
    """Sends SIGTERM to this process at the ``at``-th next_batch call (0: never)."""

    def __init__(self, images, labels, at, seed):
        super().__init__(images, labels, seed=seed)
        self.at, self.calls = at, 0

    def next_batch(self, batch_size, shuffle=True):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().next_batch(batch_size, shuffle)


class SignalOnValidation(MeanIoUEvaluator):
    """Sends SIGTERM at its ``at``-th update: inside a validation pass."""

    def __init__(self, at):
        super().__init__(3)
        self.at, self.updates = at, 0

    def update(self, y_true, y_pred):
        self.updates += 1
        if self.updates == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        super().update(y_true, y_pred)


def tiny_run(mode: str, folder: Path, at: int = 0, **extra) -> dict:
    """A three-epoch run (4 steps of 2 per epoch, EMA, warm-up across epochs 1-2): ``mode``
    "train" signals at the ``at``-th batch, "validation" at the ``at``-th validation batch,
    "resume" continues the folder's run; returns the results (TrainingInterrupted escapes)."""
    images, labels = noise_data(8, seed=4)
    val = noise_data(4, seed=5)
    iou = SignalOnValidation(at) if mode == "validation" else MeanIoUEvaluator(3)
    options = dict(batch_size=2, eval_batch_size=2, num_epochs=3, init_learning_rate=0.2,
                   learning_rate_patience=1, learning_rate_decay=0.5, score_threshold=1.0,
                   seed=3, warmup_steps=5, ema_momentum=0.5, log_every=1)
    options.update(extra)
    opt = MomentumOptimizer(tiny_model(seed=1),
                            SignalAt(images, labels, at if mode == "train" else 0, seed=11),
                            AccuracyEvaluator(), DataSet(*val), extra_evaluators=[iou],
                            **options)
    return opt.train(folder, details=True, verbose=False, resume=mode == "resume")


def stopped_run(mode: str, folder: Path, at: int, **extra) -> str:
    with pytest.raises(TrainingInterrupted) as caught:
        tiny_run(mode, folder, at, **extra)
    assert caught.value.exit_code == EXIT_SIGTERM
    return str(caught.value)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    return folder, tiny_run("none", folder)


def assert_same_run(got: dict, expected: dict, got_dir: Path, expected_dir: Path) -> None:
    assert got["learning_rates"] == expected["learning_rates"]
    assert got["best_epoch"] == expected["best_epoch"] and got["best_score"] == pytest.approx(
        expected["best_score"], rel=1e-6)
    assert got["step_losses"] == pytest.approx(expected["step_losses"], rel=1e-5)
    assert got["eval_scores"] == pytest.approx(expected["eval_scores"], rel=1e-6)
    assert got["step_scores"] == pytest.approx(expected["step_scores"], rel=1e-6)
    for key in ("improved", "lr_decayed", "num_bad_epochs", "steps"):
        assert [r[key] for r in got["epochs"]] == [r[key] for r in expected["epochs"]], key
    # The final weights and optimizer slots (EMA included) agree too.
    got_arrays, _ = load_state(got_dir / RunFolder.STATE)
    expected_arrays, _ = load_state(expected_dir / RunFolder.STATE)
    for name, value in expected_arrays.items():
        np.testing.assert_allclose(got_arrays[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_reference_run_decays_across_epochs(straight):
    _, results = straight
    # score_threshold=1.0: only epoch 1 improves (noise labels never double the accuracy);
    # with patience 1 the second bad epoch (3) halves the rate for... the run's end: the decay
    # is visible in the epoch rows, and the warm-up (5 steps) crosses epoch 1 -> 2: epoch 1's
    # last step (the 4th) applied 0.2 * 4 / 5, the rate an epoch logs.
    assert results["learning_rates"] == pytest.approx([0.16, 0.2, 0.2])
    assert [r["lr_decayed"] for r in results["epochs"]] == [False, False, True]
    assert results["best_epoch"] == 1


@pytest.mark.parametrize("at_call, epoch", [(2, 1), (6, 2)])
def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_history(
        tmp_path, straight, at_call, epoch):
    message = stopped_run("train", tmp_path, at=at_call)
    assert "stopped by SIGTERM at epoch" in message and "--resume" in message
    _, meta = load_state(tmp_path / RunFolder.STATE)
    position = meta["position"]
    assert position["epoch"] == epoch and position["step"] >= 1      # mid-epoch
    assert len(meta["history"]) == epoch - 1
    assert_same_run(tiny_run("resume", tmp_path), straight[1], tmp_path, straight[0])


def test_sigterm_during_validation_resumes_with_the_validation(tmp_path, straight):
    # 2 validation batches per epoch: the 3rd update is epoch 2's first batch; the loop
    # checks the stop request before the second.
    stopped_run("validation", tmp_path, at=3)
    _, meta = load_state(tmp_path / RunFolder.STATE)
    assert meta["position"] == {"epoch": 2, "step": 4, "pass_done": True}
    assert_same_run(tiny_run("resume", tmp_path), straight[1], tmp_path, straight[0])


def test_periodic_mid_epoch_states_resume_exactly(tmp_path, straight):
    # checkpoint_every ~ 0: a state after every compiled call. Stop the run by SIGTERM in
    # epoch 2, then resume from the *periodic* state written one call before the stop.
    stopped_run("train", tmp_path, at=7, checkpoint_every=1e-9)
    assert_same_run(tiny_run("resume", tmp_path, checkpoint_every=1e-9), straight[1],
                    tmp_path, straight[0])


def test_a_kill_between_the_state_and_its_best_model_is_repaired_on_resume(tmp_path):
    # One epoch: state (epoch 1) then best model (epoch 1). Simulate a kill between the two
    # by removing the best model; the resume writes it from the state.
    tiny_run("none", tmp_path, num_epochs=1)
    expected = (tmp_path / RunFolder.BEST_MODEL).read_bytes()
    (tmp_path / RunFolder.BEST_MODEL).unlink()
    tiny_run("resume", tmp_path, num_epochs=1)
    assert (tmp_path / RunFolder.BEST_MODEL).is_file()
    repaired = weights_of(SegNet.load(tmp_path))
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / RunFolder.BEST_MODEL).write_bytes(expected)
    (tmp_path / "original" / "model_config.json").write_bytes(
        (tmp_path / "model_config.json").read_bytes())
    for got, want in zip(repaired, weights_of(SegNet.load(tmp_path / "original"))):
        np.testing.assert_array_equal(got, want)      # the EMA weights of epoch 1, again
    config = json.loads((tmp_path / "model_config.json").read_text())
    assert config["training"]["epoch"] == 1


def test_a_first_epoch_killed_before_any_state_leaves_a_reusable_folder(tmp_path):
    # What a SIGKILL during the first epoch leaves: the lock file (its flock dies with the
    # process: here the descriptor is closed without unlocking), the attempt's settings and
    # log, no resume state.
    killed = RunFolder(tmp_path).open(resume=False)
    killed.write_json(RunFolder.CONFIG, {"attempt": 1})
    (tmp_path / RunFolder.LOG).write_text("started\n")
    os.close(killed._lock_fd)
    assert (tmp_path / RunFolder.LOCK).exists() and not (tmp_path / RunFolder.STATE).exists()
    with pytest.raises(Exception, match="stopped before writing its first resume state"):
        tiny_run("resume", tmp_path)                # from Python, resume needs a state
    tiny_run("none", tmp_path)                      # a new run takes the folder
    assert (tmp_path / RunFolder.STATE).is_file()
    assert not (tmp_path / RunFolder.CONFIG).exists()  # the attempt's leftovers are cleared
