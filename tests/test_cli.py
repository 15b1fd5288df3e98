"""common/cli.py: the command-line boundary every command shares (exit codes, one-line errors,
--debug)."""
from __future__ import annotations

import argparse
import errno
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import tensorflow as tf

from common.cli import DEBUG_HINT, describe_error, parse_size, run, size_argument
from common.errors import (EXIT_BUG, EXIT_ERROR, EXIT_NO_RESULT, EXIT_OK, EXIT_SIGINT,
                           EXIT_SIGTERM, EXIT_SYSTEM, ConfigError, DataError, TrainingError)

ROOT = Path(__file__).resolve().parents[1]


class _Stopped(TrainingError):
    """What the training engine raises on SIGTERM: its own exit code."""

    exit_code = EXIT_SIGTERM


def _run(monkeypatch, capsys, outcome, *argv, known=tuple):
    """run() a main that returns or raises ``outcome``; -> (exit code, stderr, argv seen)."""
    seen = []

    def main(args):
        seen.append(list(args))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(sys, "argv", ["cmd", *argv])
    with pytest.raises(SystemExit) as exit_info:
        run(main, known)
    return exit_info.value.code, capsys.readouterr().err, seen[0]


@pytest.mark.parametrize("returned, code", [(None, EXIT_OK), (0, EXIT_OK),
                                            (EXIT_NO_RESULT, EXIT_NO_RESULT)])
def test_the_return_value_of_main_is_the_exit_code(monkeypatch, capsys, returned, code):
    assert _run(monkeypatch, capsys, returned)[:2] == (code, "")


@pytest.mark.parametrize("error, code, line", [
    (DataError("no images in 'x/images'"), EXIT_ERROR, "error: no images in 'x/images'\n"),
    (ConfigError("--lr must be > 0\nsecond line"), EXIT_ERROR,
     "error: --lr must be > 0 second line\n"),
    (_Stopped("stopped by SIGTERM after epoch 3; resume with --resume"), EXIT_SIGTERM,
     "error: stopped by SIGTERM after epoch 3; resume with --resume\n"),
    (OSError(errno.ENOSPC, "No space left on device", "runs/a/best_model.keras"), EXIT_SYSTEM,
     f"error: [Errno 28] No space left on device: 'runs/a/best_model.keras' ({DEBUG_HINT})\n"),
    (MemoryError(), EXIT_SYSTEM, f"error: out of memory: a Python allocation failed "
                                 f"({DEBUG_HINT})\n"),
    (cv2.error("OpenCV(5.0.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to "
               "allocate 90000000000 bytes"), EXIT_SYSTEM,
     "error: out of memory in OpenCV: OpenCV(5.0.0) alloc.cpp:73: error: (-4:Insufficient "
     f"memory) Failed to allocate 90000000000 bytes ({DEBUG_HINT})\n"),
    (tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape"
                                      "[8,256,2048,2048]\n\t [[{{node conv}}]]"), EXIT_SYSTEM,
     "error: out of memory in TensorFlow: OOM when allocating tensor with shape"
     f"[8,256,2048,2048] ({DEBUG_HINT})\n"),
])
def test_expected_failures_are_one_line_with_their_exit_code(monkeypatch, capsys, error, code,
                                                             line):
    assert _run(monkeypatch, capsys, error)[:2] == (code, line)


def test_ctrl_c_is_one_word_and_exit_130(monkeypatch, capsys):
    assert _run(monkeypatch, capsys, KeyboardInterrupt())[:2] == (EXIT_SIGINT, "interrupted\n")


@pytest.mark.parametrize("bug", [ValueError("operands could not be broadcast"),
                                 KeyError("logits"), cv2.error("(-215:Assertion failed)"),
                                 TypeError("unsupported operand")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    # Even a ValueError: no built-in class means "bad input" any more.
    assert describe_error(bug) == (EXIT_BUG, None)
    monkeypatch.setattr(sys, "argv", ["cmd"])
    with pytest.raises(type(bug)):
        run(lambda args: (_ for _ in ()).throw(bug))


def test_known_errors_of_a_command_are_one_line(monkeypatch, capsys):
    code, err, _ = _run(monkeypatch, capsys, ValueError("--val-fraction must be in [0, 1)"),
                        known=lambda: (ValueError,))
    assert (code, err) == (EXIT_ERROR, "error: --val-fraction must be in [0, 1)\n")


def test_debug_is_taken_out_of_argv_and_adds_the_traceback(monkeypatch, capsys):
    code, err, seen = _run(monkeypatch, capsys, DataError("bad mask"), "--data", "x",
                           "--debug")
    assert seen == ["--data", "x"]
    assert code == EXIT_ERROR and err.startswith("Traceback (most recent call last)")
    assert err.endswith("error: bad mask\n")
    code, err, _ = _run(monkeypatch, capsys, DataError("bad mask"), "--data", "x")
    assert err == "error: bad mask\n"


def test_a_bug_exits_1_with_the_full_traceback_in_a_real_process():
    program = ("import sys; from common.cli import run\n"
               "def main(argv):\n    raise ValueError('a NumPy bug, not bad input')\n"
               "run(main)\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == EXIT_BUG
    assert "Traceback" in result.stderr and "ValueError: a NumPy bug" in result.stderr
    assert "error: " not in result.stderr


@pytest.mark.parametrize("text, size", [("512", (512, 512)), ("384x512", (384, 512)),
                                        ("64X96", (64, 96))])
def test_an_image_size_is_n_or_height_x_width(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text, message", [
    ("a", "expected N or HxW, got 'a'"),
    ("64x64x3", "expected N or HxW with positive sides, got '64x64x3'"),
    ("0", "expected N or HxW with positive sides, got '0'"),
    ("64x-1", "expected N or HxW with positive sides, got '64x-1'")])
def test_a_bad_image_size_is_named_in_the_usage_error(text, message, capsys):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(text)
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=size_argument)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--image-size", text])
    assert exit_info.value.code == EXIT_ERROR
    assert f"argument --image-size: {message}" in capsys.readouterr().err
