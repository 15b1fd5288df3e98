"""The learning-rate schedule: a linear warm-up, then the tutorial's plateau decay; and the
best-score bookkeeping that drives both model selection and the plateau rule.

Two halves, because they run in two places:

* ``PlateauSchedule`` (host, once per epoch): the rate of the next epoch from whether this one
  improved. The original rule: an improving epoch resets the bad-epoch count, any other adds
  one; when the count exceeds ``patience`` the rate is multiplied by ``decay`` unless that
  changes it by no more than ``eps``, and the count restarts either way.
* ``WarmupRate`` (device, every step): a Keras ``LearningRateSchedule`` that the optimizer calls
  with its own step counter, so the warm-up ramp needs no host round trip per step and resumes
  exactly (the counter is an optimizer variable, saved in the resume state):
  ``rate(step) = base * min(1, (step + 1) / warmup_steps)``, ``base`` being the plateau rate.

``AnnealedRate`` (device, every step) is the opt-in alternative to the plateau rule
(``--schedule cosine`` or ``linear``): the same warm-up, then the rate falls from ``base`` to 0
over the run's remaining steps along a half cosine or a straight line; the plateau rule then
keeps its bookkeeping but never decays (``OptimConfig.plateau_decay``). A short run ends at a
small rate whatever its validation scores did, where the plateau rule needs bad epochs first.

``BestScore`` keeps the best score and its epoch with the evaluator's relative threshold
(``is_better``). ``EarlyStop`` (``--early-stop N``) ends a run after N epochs in a row without a
new best, counted like the plateau rule's bad epochs but never reset by a decay, and only once
the warm-up is over. All four have ``get_state``/``set_state`` (plain JSON values).
"""
from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from common.errors import ConfigError
from learning.config import SCHEDULES

__all__ = ["PlateauSchedule", "BestScore", "EarlyStop", "WarmupRate", "AnnealedRate",
           "device_rate"]


class PlateauSchedule:
    """The tutorial's plateau decay of the learning rate, plus the warm-up length it feeds.

    Args:
        init_learning_rate: the rate of the first epoch.
        patience: bad epochs tolerated; the rate decays when the count *exceeds* it.
        decay: factor applied on a plateau, in (0, 1].
        eps: a decay that changes the rate by no more than this is skipped.
        warmup_steps: steps of the linear warm-up at the start of the run (0 = none).
    """

    def __init__(self, init_learning_rate: float, *, patience: int, decay: float, eps: float,
                 warmup_steps: int = 0) -> None:
        self.init_learning_rate = float(init_learning_rate)
        self.patience = int(patience)
        self.decay = float(decay)
        self.eps = float(eps)
        self.warmup_steps = int(warmup_steps)
        self.learning_rate = self.init_learning_rate
        self.num_bad_epochs = 0

    def end_epoch(self, improved: bool) -> bool:
        """Count the epoch as good or bad, decay on a plateau; returns whether the rate
        changed (the next epoch trains with ``learning_rate``)."""
        self.num_bad_epochs = 0 if improved else self.num_bad_epochs + 1
        if self.num_bad_epochs <= self.patience:
            return False
        self.num_bad_epochs = 0
        decayed = self.learning_rate * self.decay
        if self.learning_rate - decayed > self.eps:
            self.learning_rate = decayed
            return True
        return False

    def rate_at(self, step: int) -> float:
        """The rate the optimizer uses for the ``step``-th update of the run (1-based),
        as ``WarmupRate`` computes it on the device."""
        if self.warmup_steps and step <= self.warmup_steps:
            return self.learning_rate * step / self.warmup_steps
        return self.learning_rate

    def get_state(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "num_bad_epochs": self.num_bad_epochs}

    def set_state(self, state: dict[str, Any]) -> None:
        self.learning_rate = float(state["learning_rate"])
        self.num_bad_epochs = int(state["num_bad_epochs"])


class BestScore:
    """The best score so far and its epoch, by the evaluator's relative ``is_better``."""

    def __init__(self, evaluator: Any, score_threshold: float) -> None:
        self.evaluator = evaluator
        self.score_threshold = float(score_threshold)
        self.score = float(evaluator.worst_score)
        self.epoch: int | None = None

    def update(self, epoch: int, score: float) -> bool:
        """Record ``score`` of ``epoch``; True if it is a new best."""
        if not self.evaluator.is_better(score, self.score, score_threshold=self.score_threshold):
            return False
        self.score, self.epoch = float(score), int(epoch)
        return True

    def get_state(self) -> dict[str, Any]:
        return {"best_score": self.score, "best_epoch": self.epoch}

    def set_state(self, state: dict[str, Any]) -> None:
        self.score = float(state["best_score"])
        self.epoch = None if state["best_epoch"] is None else int(state["best_epoch"])


class EarlyStop:
    """Stop after ``patience`` epochs in a row without a new best (None: never).

    Epochs that end inside the warm-up do not count: the rate is still ramping up, so a run
    cannot be judged yet.
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = None if patience is None else int(patience)
        self.bad_epochs = 0

    def end_epoch(self, improved: bool, *, warmed_up: bool) -> bool:
        """Count the epoch; True when the run should stop now."""
        if improved:
            self.bad_epochs = 0
        elif warmed_up:
            self.bad_epochs += 1
        return self.triggered

    @property
    def triggered(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def get_state(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs}

    def set_state(self, state: dict[str, Any]) -> None:
        self.bad_epochs = int(state["bad_epochs"])


@keras.saving.register_keras_serializable(package="gcn")
class WarmupRate(keras.optimizers.schedules.LearningRateSchedule):
    """``base * min(1, (step + 1) / warmup_steps)`` on the device; ``base`` is a variable the
    host sets once per epoch (the plateau rate). ``step`` is the optimizer's update counter
    (0 for the first update), so the first update uses ``base / warmup_steps``."""

    def __init__(self, base: tf.Variable, warmup_steps: int) -> None:
        self.base = base
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> tf.Tensor:
        base = tf.convert_to_tensor(self.base, tf.float32)
        if not self.warmup_steps:
            return base
        ramp = tf.cast(step + 1, tf.float32) / float(self.warmup_steps)
        return base * tf.minimum(1.0, ramp)

    def get_config(self) -> dict[str, Any]:
        return {"base": float(self.base.numpy()), "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "WarmupRate":
        return cls(tf.Variable(config["base"], dtype=tf.float32, trainable=False),
                   config["warmup_steps"])


@keras.saving.register_keras_serializable(package="gcn")
class AnnealedRate(WarmupRate):
    """``WarmupRate`` times an annealing factor that falls from 1 to 0 over the steps after
    the warm-up: ``p = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to
    [0, 1], factor ``(1 + cos(pi p)) / 2`` (``shape="cosine"``) or ``1 - p`` (``"linear"``).
    ``step`` is the optimizer's 0-based counter, so the last of ``total_steps`` updates still
    moves the weights (p < 1)."""

    SHAPES = ("cosine", "linear")

    def __init__(self, base: tf.Variable, warmup_steps: int, total_steps: int,
                 shape: str = "cosine") -> None:
        super().__init__(base, warmup_steps)
        if shape not in self.SHAPES:
            raise ConfigError(f"annealing shape must be one of {', '.join(self.SHAPES)}, got "
                              f"{shape!r}")
        if not int(total_steps) > self.warmup_steps:
            raise ConfigError(f"a {shape} schedule needs more steps than the warm-up: "
                              f"{total_steps} steps in all, {self.warmup_steps} of warm-up; "
                              f"lower --warmup-steps or train more epochs")
        self.total_steps = int(total_steps)
        self.shape = shape

    def __call__(self, step: Any) -> tf.Tensor:
        span = float(self.total_steps - self.warmup_steps)
        progress = tf.clip_by_value(
            (tf.cast(step, tf.float32) - float(self.warmup_steps)) / span, 0.0, 1.0)
        if self.shape == "cosine":
            factor = 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return super().__call__(step) * factor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "total_steps": self.total_steps, "shape": self.shape}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AnnealedRate":
        return cls(tf.Variable(config["base"], dtype=tf.float32, trainable=False),
                   config["warmup_steps"], config["total_steps"], config["shape"])


def device_rate(base: tf.Variable, *, schedule: str, warmup_steps: int, num_epochs: int,
                steps_per_epoch: int | None) -> WarmupRate:
    """The optimizer's rate for ``--schedule``: the warm-up on the plateau rate, or the
    warm-up then an annealing over ``num_epochs * steps_per_epoch`` steps (which must be
    known before the run: a train set with a length)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if schedule == "plateau":
        return WarmupRate(base, warmup_steps)
    if steps_per_epoch is None:
        raise ConfigError(f"--schedule {schedule} needs the number of steps per epoch before "
                          f"training: use in-memory training data (no --stream) or "
                          f"--schedule plateau")
    return AnnealedRate(base, warmup_steps, num_epochs * steps_per_epoch, schedule)
