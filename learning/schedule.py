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

``BestScore`` keeps the best score and its epoch with the evaluator's relative threshold
(``is_better``). ``EarlyStop`` (``--early-stop N``) ends a run after N epochs in a row without a
new best, counted like the plateau rule's bad epochs but never reset by a decay, and only once
the warm-up is over. All four have ``get_state``/``set_state`` (plain JSON values).
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

__all__ = ["PlateauSchedule", "BestScore", "EarlyStop", "WarmupRate"]


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
