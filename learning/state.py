"""``TrainState``: everything a training run is, in one object that is saved, restored and sent
to the other workers as a whole (Model Garden's checkpoint of the whole train state).

::

    TrainState
      model, optimizer           the network and the Keras optimizer (weights, slots, counter)
      totals                     the device-side sums of the current epoch (learning/steps.py)
      base_rate                  the plateau rate the device-side warm-up ramps to
      rate                       the optimizer's device-side rate schedule, on base_rate
      schedule, best, early_stop the host-side rules (learning/schedule.py)
      epoch, step, pass_done     the position: steps done in epoch ``epoch`` (1-based); the
                                 epoch's pass is over once ``pass_done``
      history, step_losses       one row per finished epoch; every step's loss
      early_stopped              the epoch after which --early-stop ended the run, or None

Variables travel as arrays (``variable_groups``), the rest as one JSON document
(``host_state`` / ``load_host_state``). The train data's position is the feed's; the
checkpointer stores it beside (learning/checkpoint.py).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf

from learning.schedule import BestScore, EarlyStop, PlateauSchedule, WarmupRate

__all__ = ["TrainState", "read_values"]


def read_values(variables: Sequence[Any]) -> list[np.ndarray]:
    """The variables' values of this moment as read-only NumPy arrays, without a copy on a CPU.

    A read of a TensorFlow variable is a tensor that shares the variable's buffer, and the
    variable's next update writes to a fresh buffer when its old one is still shared (copy on
    write): so these arrays keep this moment's values while training goes on, and only the
    variables that change are ever copied, by TensorFlow, inside the next step."""
    return [np.asarray(tf.convert_to_tensor(v)) for v in variables]


class TrainState:
    """The state of one run (see the module docstring)."""

    def __init__(self, *, model: Any, optimizer: Any, totals: Any, base_rate: tf.Variable,
                 rate: WarmupRate, schedule: PlateauSchedule, best: BestScore,
                 early_stop: EarlyStop) -> None:
        self.model, self.optimizer, self.totals = model, optimizer, totals
        self.base_rate, self.rate = base_rate, rate
        self.schedule, self.best, self.early_stop = schedule, best, early_stop
        self.epoch, self.step, self.pass_done = 1, 0, False
        self.history: list[dict[str, Any]] = []
        self.step_losses: list[float] = []
        self.early_stopped: int | None = None

    def variable_groups(self) -> dict[str, list[Any]]:
        """The variables by group, each in a fixed order (the resume state's layout)."""
        return {"model": list(self.model.keras_model.variables),
                "optimizer": list(self.optimizer.variables),
                "totals": list(self.totals.variables)}

    def host_state(self) -> dict[str, Any]:
        """Everything but the variables, as plain JSON values."""
        return {
            "position": {"epoch": self.epoch, "step": self.step, "pass_done": self.pass_done},
            "schedule": self.schedule.get_state(),
            "best": self.best.get_state(),
            "early_stop": self.early_stop.get_state(),
            "early_stopped": self.early_stopped,
            "history": self.history,
        }

    def load_host_state(self, meta: dict[str, Any], step_losses: Sequence[float]) -> None:
        position = meta["position"]
        self.epoch, self.step = int(position["epoch"]), int(position["step"])
        self.pass_done = bool(position["pass_done"])
        self.schedule.set_state(meta["schedule"])
        self.best.set_state(meta["best"])
        # (States written before early stopping existed have no counter: it starts at 0.)
        self.early_stop.set_state(meta.get("early_stop") or {"bad_epochs": 0})
        self.early_stopped = meta.get("early_stopped")
        self.history = list(meta["history"])
        self.step_losses = list(step_losses)
        self.base_rate.assign(self.schedule.learning_rate)

    @property
    def optimizer_steps(self) -> int:
        """Updates applied so far (the optimizer's counter, which the warm-up reads)."""
        return int(self.optimizer.iterations.numpy())

    def applied_rate(self) -> float:
        """The rate of the optimizer's last update: the device rate at that update's 0-based
        counter (the base rate, the warm-up and an annealing included), as the shortest decimal
        of its float32 value (0.05, not 0.05000000074505806)."""
        last = max(self.optimizer_steps - 1, 0)
        return float(str(self.rate(tf.constant(last, tf.int64)).numpy()))

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """With an EMA optimizer (``use_ema``): the model holds the moving average of its
        trainable weights inside the block (for evaluation and saving), its raw weights again
        after it. Without EMA, nothing changes."""
        # (Under fp16 the optimizer is a LossScaleOptimizer around the one that averages.)
        averaging = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        if not averaging.use_ema:
            yield
            return
        variables = self.model.keras_model.trainable_variables
        raw = read_values(variables)              # no copy: see read_values
        averaging.finalize_variable_values(variables)  # Keras: weights <- average
        try:
            yield
        finally:
            for variable, value in zip(variables, raw):
                variable.assign(value)
