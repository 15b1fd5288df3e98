"""A preemptible job restarts train.py with the same command: a SIGTERM at any moment (reading
the data, building the model, opening the folder, the first compiled step) ends with one line
and exit code 143, and ``--resume`` (on a missing folder, on a folder without a resume state, on
a run with one) always takes the run to its end, with the history of an uninterrupted run.

train.py runs in this process through its command boundary (``common.cli.run``), as `python
train.py` calls it; the signal is sent by the process to itself from inside the phase.
"""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest
from commands import root_logger_restored
from tiny import TinyGCN, swap_gcn

import train
from common.cli import run
from common.errors import EXIT_SIGTERM
from datasets.synthetic_dataset import generate_pets
from learning.run_folder import RunFolder
from learning.steps import TrainSteps


@pytest.fixture
def restore_logging():
    """train.main points the root logger at its console and train.log: undo it after."""
    with root_logger_restored():
        yield


def command(monkeypatch, capsys, *argv: object) -> tuple[int, str]:
    """``python train.py ARGV`` -> (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, argv)])
    with pytest.raises(SystemExit) as exited:
        run(train.main)
    return exited.value.code, capsys.readouterr().err


def sigterm_inside(monkeypatch, owner: object, name: str) -> None:
    """The next call of ``owner.name`` sends SIGTERM to this process first (once)."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        monkeypatch.setattr(owner, name, real)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def assert_stopped(code: int, stderr: str, *fragments: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == EXIT_SIGTERM and "Traceback" not in stderr and len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_sigterm_in_every_phase_then_the_same_resume_command_completes_the_run(
        tmp_path, monkeypatch, capsys, restore_logging):
    import datasets.check
    import datasets.sources

    swap_gcn(monkeypatch)
    generate_pets(tmp_path / "pets", num_images=10, test_fraction=0.0, min_size=60,
                  max_size=72, seed=2)
    options = ("--data", tmp_path / "pets" / "train", "--image-size", 64, "--epochs", 2,
               "--batch-size", 2, "--val-fraction", 0.2, "--pretrain", "none", "--lr", 0.01,
               "--clip-norm", 1.0, "--bn-momentum", 0.9, "--log-every", 1)
    folder = tmp_path / "run"
    restart = (*options, "--save-dir", folder, "--resume")   # the job's one restart command

    sigterm_inside(monkeypatch, datasets.check, "check_examples")
    line = assert_stopped(*command(monkeypatch, capsys, *options, "--save-dir", folder),
                          "stopped by SIGTERM while reading the data",
                          "no resume state was written yet")
    assert not folder.exists(), line

    sigterm_inside(monkeypatch, TinyGCN, "_build_model")
    code, stderr = command(monkeypatch, capsys, *restart)
    assert_stopped(code, stderr, "while building the model")
    assert f"nothing to resume in {folder}: starting a new run there" in stderr

    sigterm_inside(monkeypatch, datasets.sources, "training_sources")
    assert_stopped(*command(monkeypatch, capsys, *restart),
                   "while reading the training images", "no resume state was written yet")
    assert (folder / RunFolder.CONFIG).is_file() and not (folder / RunFolder.STATE).exists()

    sigterm_inside(monkeypatch, TrainSteps, "run")      # lands before the first trace
    code, stderr = command(monkeypatch, capsys, *restart)
    assert "holds no resume state (the run stopped before its first one): starting it again " \
           "with its saved settings" in stderr
    assert_stopped(code, stderr, "at epoch 1, step 1", "--resume --save-dir")

    code, stderr = command(monkeypatch, capsys, *restart)
    assert code == 0, stderr
    straight = tmp_path / "straight"
    code, stderr = command(monkeypatch, capsys, *options, "--save-dir", straight)
    assert code == 0, stderr
    resumed, expected = (json.loads((path / RunFolder.HISTORY_JSON).read_text())
                         for path in (folder, straight))
    assert len(resumed["step_losses"]) == len(expected["step_losses"]) == 8
    assert resumed["step_losses"] == pytest.approx(expected["step_losses"], rel=1e-4)
    assert [row["eval_accuracy"] for row in resumed["epochs"]] == pytest.approx(
        [row["eval_accuracy"] for row in expected["epochs"]], rel=1e-4)

