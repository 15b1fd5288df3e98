"""What a run shows of each epoch: the history files, the learning curve, TensorBoard and the
preview grid, and the ``train(details=True)`` results dict.

The curve is drawn after an epoch when ``CURVE_EVERY_SECONDS`` have passed since the last
drawing or the start of the run, and at the end of a run and when it stops: matplotlib takes a
quarter of a second of Python per drawing, which competes with the training steps for the
interpreter and the cores on short epochs, and a run shorter than the interval draws once.
TensorBoard has the same curves live. Slow writes go through the run folder's writer thread.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from learning.previews import preview_summary_image, write_preview
from learning.run_folder import RunFolder
from learning.utils import plot_learning_curve

__all__ = ["EpochOutputs", "CURVE_EVERY_SECONDS"]

logger = logging.getLogger(__name__)

CURVE_EVERY_SECONDS = 60.0


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class EpochOutputs:
    """The epoch outputs of one run folder.

    Args:
        run: the run folder (only the chief writes).
        evaluator: the main score (names the columns; its ``mode`` orients the curve).
        extra_names: the names of the other validation scores.
        has_validation: whether the epochs have validation scores.
        verbose: log the epoch lines at INFO (else DEBUG) and show a progress bar on a
            terminal.
    """

    def __init__(self, run: RunFolder, evaluator: Any, *, extra_names: Sequence[str] = (),
                 has_validation: bool, verbose: bool = True) -> None:
        self.run, self.evaluator = run, evaluator
        self.extra_names = tuple(extra_names)
        self.has_validation = has_validation
        self.log = logger.info if verbose else logger.debug
        self.progress = verbose and sys.stdout.isatty()
        self._drawn_at = time.monotonic()       # of the last drawing, or of the start
        self._stale = False                     # epochs ended since that drawing

    def results(self, state: Any) -> dict[str, Any]:
        """The ``train(details=True)`` dict of the run so far."""
        name = self.evaluator.name
        results: dict[str, Any] = {
            "step_losses": list(state.step_losses),
            "step_scores": [row[f"train_{name}"] for row in state.history],
            "learning_rates": [row["lr"] for row in state.history],
            "epochs": [dict(row) for row in state.history],
            "best_score": state.best.score,
            "best_epoch": state.best.epoch,
        }
        if self.has_validation:
            results["eval_scores"] = [row[f"eval_{name}"] for row in state.history]
            results["extra_eval_scores"] = {
                extra: [row[f"eval_{extra}"] for row in state.history]
                for extra in self.extra_names}
        return results

    def write_epoch(self, state: Any, row: dict[str, Any], preview: np.ndarray | None) -> None:
        """History, curve, TensorBoard and the preview grid (uint8 RGB) of the epoch ``row``
        (the last of ``state.history``)."""
        self.write_curves(state)
        run = self.run
        if preview is not None and run.is_chief:
            run.in_background(lambda: write_preview(run.path, row["epoch"], preview))
        epoch_losses = state.step_losses[len(state.step_losses) - row["steps"]:]
        first_step = len(state.step_losses) - len(epoch_losses)
        with run.summaries():
            for i, loss in enumerate(epoch_losses, start=first_step + 1):
                tf.summary.scalar("step/loss", loss, step=i)
            for key, value in row.items():
                if key.startswith(("train_", "eval_")) or key == "loss":
                    tf.summary.scalar(f"epoch/{key}", value, step=row["epoch"])
            tf.summary.scalar("epoch/learning_rate", row["lr"], step=row["epoch"])
            if preview is not None:
                tf.summary.image("previews", preview_summary_image(preview), step=row["epoch"])

    def write_curves(self, state: Any, *, draw: bool = False) -> None:
        """history.csv/.json now; the learning curve on the writer thread when ``draw`` or when
        the last drawing (or the start) is ``CURVE_EVERY_SECONDS`` old (else it is only marked
        stale, for ``finish``)."""
        document = {
            "evaluator": self.evaluator.name, "mode": self.evaluator.mode,
            "best_score": state.best.score, "best_epoch": state.best.epoch,
            "early_stopped": state.early_stopped,
            "epochs": state.history,
            "step_losses": [_json_float(x) for x in state.step_losses],
        }
        self.run.write_history(state.history, document)
        now = time.monotonic()
        if not (draw or now - self._drawn_at >= CURVE_EVERY_SECONDS):
            self._stale = True
            return
        self._drawn_at, self._stale = now, False
        results, run, name = self.results(state), self.run, self.evaluator.name
        run.in_background(lambda: plot_learning_curve(
            -1, results["step_losses"], results["step_scores"],
            eval_scores=results.get("eval_scores"), mode=self.evaluator.mode, img_dir=run.path,
            score_name=name, extra_eval_scores=results.get("extra_eval_scores"),
            learning_rates=results["learning_rates"]))

    def finish(self, state: Any) -> None:
        """Draw the curve if epochs ended since its last drawing."""
        if self._stale:
            self.write_curves(state, draw=True)
