"""The training loop, top to bottom: ``Trainer.run`` reads as the algorithm (the tutorial's,
plus resume)::

    restore the run folder's resume state (with --resume), or start at epoch 1, step 0
    for each epoch up to num_epochs, unless --early-stop has ended the run:
        train_one_epoch: compiled calls of steps_per_execution steps on the prefetched batches;
            every log_every steps read the device totals (progress, NaN/label checks) and, under
            multi-worker training, agree on stopping; on SIGINT/SIGTERM or every
            checkpoint_every minutes save a mid-epoch resume state (a stop then raises
            TrainingInterrupted)
        validate (Validator): the validation set through the evaluators (EMA weights if on)
        end_epoch: best score? -> plateau rule, early stop -> resume state, best model ->
            history, curve, TensorBoard, previews

Everything the loop changes lives in one ``TrainState`` (learning/state.py), which the
``Checkpointer`` saves and restores as a whole (learning/checkpoint.py). One step's numbers and
the device totals: learning/steps.py. The input pipelines and their positions: learning/feed.py.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.errors import TrainingError
from learning.cluster import Cluster, agree, sum_over_workers
from learning.config import OptimConfig
from learning.evaluators import MeanIoUEvaluator
from learning.signals import StopSignals, TrainingInterrupted

__all__ = ["Trainer", "Validator", "NonFiniteLossError", "BadLabelError",
           "TrainingInterrupted", "epoch_seed"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite; the run folder keeps the last good results.

    Attributes: ``epoch`` (1-based), ``step`` (1-based within the epoch), ``global_step``,
    ``loss``, ``learning_rate``, ``save_dir``, ``results`` (the ``train(details=True)`` dict up
    to the failure, the non-finite step loss included).
    """

    def __init__(self, *, epoch: int, step: int, global_step: int, loss: float,
                 learning_rate: float, save_dir: Any, best: Any, results: dict[str, Any]) -> None:
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.loss, self.learning_rate, self.save_dir = loss, learning_rate, save_dir
        self.results = results
        kept = (f"the best model (epoch {best.epoch}, score {best.score:.6f})"
                if best.epoch is not None else "no best model yet")
        super().__init__(
            f"training loss became {loss} at epoch {epoch}, step {step} (global step "
            f"{global_step}) with learning rate {learning_rate:.3g}; {kept}, the history and "
            f"the last resume state (if one was written) are kept in {save_dir}. Try a lower "
            f"learning rate (--lr, e.g. {learning_rate / 10:.3g}) or gradient clipping "
            f"(--clip-norm, e.g. 1.0)")


class BadLabelError(TrainingError, ValueError):
    """A training batch held label values that are neither a class nor the ignore value."""


def epoch_seed(seed: int, epoch: int, step: int = 0) -> int:
    """A 31-bit seed for the global generators, fixed by (seed, epoch[, step])."""
    entropy = [seed, epoch] if step == 0 else [seed, epoch, step]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def seed_host_generators(seed: int) -> None:
    """Seed Python's and NumPy's global generators (for user code that draws from them).

    Not TensorFlow's global seed: ``tf.random.set_seed`` clears TensorFlow's kernel cache, so
    the next call of the compiled step would be instantiated and optimised again. The project's
    own randomness does not use it (the data sources have their own seeded generators; the
    weights are seeded once, before the model is built)."""
    random.seed(seed)
    np.random.seed(seed)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Validator:
    """The validation pass: the validation set through the evaluators, with the averaged
    weights when EMA is on; under multi-worker training every worker scores its share and the
    totals are summed. ``val_set``: DataSet-like (``images``, ``labels``), a tf.data.Dataset of
    (image, label), or None (no validation)."""

    def __init__(self, steps: Any, val_set: Any, evaluators: Sequence[Any], *, batch_size: int,
                 previews: Any = None, cluster: Cluster = Cluster()) -> None:
        self.steps, self.val_set, self.evaluators = steps, val_set, tuple(evaluators)
        self.batch_size, self.previews, self.cluster = batch_size, previews, cluster

    def run(self, state: Any, stop: StopSignals) -> dict[str, float]:
        """{evaluator name: score} ({} without a validation set). A stop request ends the pass
        early on one process; the caller saves and stops."""
        if self.val_set is None:
            return {}
        for evaluator in self.evaluators:
            evaluator.reset()
        if self.previews is not None:
            self.previews.start()
        with state.averaged_weights():
            for labels, images in self._batches():
                # (Workers hold shares of different sizes: they agree once, after the pass.)
                if stop.requested and not self.cluster.distributed:
                    break
                predictions = self.steps.predict_masks(images)
                for evaluator in self.evaluators:
                    evaluator.update(labels, predictions)
                if self.previews is not None:
                    self.previews.add(images, labels, predictions)
        if self.cluster.distributed:
            for evaluator in self.evaluators:
                evaluator.set_totals(sum_over_workers(self.steps.strategy, evaluator.totals()))
        return {evaluator.name: float(evaluator.result()) for evaluator in self.evaluators}

    def _batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        size = self.batch_size
        if isinstance(self.val_set, tf.data.Dataset):
            for images, labels in self.val_set.batch(size).prefetch(2).as_numpy_iterator():
                yield labels, images
        else:
            images, labels = np.asarray(self.val_set.images), np.asarray(self.val_set.labels)
            for start in range(0, len(images), size):
                yield labels[start:start + size], images[start:start + size]


class Trainer:
    """One training run of a ``TrainState`` in a run folder (built by ``Optimizer.train``).

    Args:
        state: what the run changes (learning/state.py).
        config: the hyperparameters (``OptimConfig``).
        feed: the train data's epochs (learning/feed.py).
        steps: the compiled steps (learning/steps.py).
        validator: the validation pass.
        checkpointer: the resume state and the best model (learning/checkpoint.py).
        outputs: history, curves, TensorBoard, previews (learning/outputs.py); its ``log`` is
            the epoch lines' logger.
        cluster: this process's place among the workers.
    """

    def __init__(self, state: Any, config: OptimConfig, *, feed: Any, steps: Any,
                 validator: Validator, checkpointer: Any, outputs: Any,
                 cluster: Cluster = Cluster()) -> None:
        self.state, self.config = state, config
        self.feed, self.steps, self.validator = feed, steps, validator
        self.checkpointer, self.outputs, self.cluster = checkpointer, outputs, cluster
        self.run_folder = checkpointer.run
        self.log = outputs.log
        self._pending: list[tf.Tensor] = []      # step losses not yet read from the device
        self._started = time.monotonic()
        self._epochs_timed: list[float] = []     # seconds of the epochs of this process

    def run(self, resume: bool) -> None:
        state, config = self.state, self.config
        if resume:
            self.feed.restore(self.checkpointer.restore(), state.step)
            if state.step and not state.pass_done:   # mid-epoch: a seed of this exact step
                seed_host_generators(epoch_seed(config.seed, state.epoch, state.step))
        with StopSignals() as stop:
            self.log("training %d epochs from epoch %d (%s steps per epoch, batch %d over %d "
                     "replica(s)), run folder %s", config.num_epochs, state.epoch,
                     self.feed.steps_per_epoch or "?", config.batch_size,
                     self.steps.num_replicas, self.run_folder.path)
            while state.epoch <= config.num_epochs and not state.early_stop.triggered:
                epoch_start = time.time()
                if state.step == 0 and not state.pass_done:
                    seed_host_generators(epoch_seed(config.seed, state.epoch))
                    state.totals.reset()
                if not state.pass_done:
                    self.train_one_epoch(stop)
                scores = self.validator.run(state, stop)
                if self._agree(stop)[0]:
                    # Saved with the raw weights; the resume runs the validation again.
                    self._save_and_stop(stop, stopping=True)
                self.end_epoch(scores, time.time() - epoch_start)
                if self._agree(stop)[0] and state.epoch <= config.num_epochs:
                    self._stop(stop, f"after epoch {state.epoch - 1}")
        self.outputs.finish(state)
        self.run_folder.flush()

    def train_one_epoch(self, stop: StopSignals) -> None:
        """The epoch's remaining steps; returns when its data ran out."""
        state, config = self.state, self.config
        state.base_rate.assign(state.schedule.learning_rate)
        known = self.feed.steps_per_epoch
        iterator = iter(self.feed.distributed_epoch(state.epoch - 1, state.step,
                                                    self.steps.strategy))
        bar = keras.utils.Progbar(known, verbose=1 if self.outputs.progress else 0,
                                  unit_name="step")
        last_read = state.step
        while known is None or state.step < known:
            wanted = config.steps_per_execution
            if known is not None:
                wanted = min(wanted, known - state.step)
            losses = self.steps.run(iterator, wanted)
            self._pending.append(losses)
            taken = int(losses.shape[0])    # host-side shape: no wait for the device
            state.step += taken
            if taken < wanted:
                break
            log_point = state.step - last_read >= config.log_every
            if self.cluster.distributed and not log_point:
                continue     # workers agree at log points only: no round trip per call
            due = (config.checkpoint_every > 0 and time.monotonic() - self.checkpointer.saved_at
                   >= 60.0 * config.checkpoint_every)
            stopping, due = self._agree(stop, due)
            if stopping or due:
                self._save_and_stop(stop, stopping)      # reads the totals first
            elif log_point:
                self._read_totals()
            if stopping or due or log_point:
                last_read = state.step
                bar.update(state.step, values=[("loss", state.step_losses[-1])])
        state.pass_done = True
        if self._read_totals()["steps"] == 0:
            raise TrainingError(f"epoch {state.epoch}: the train data gave no full batch of "
                                f"{config.batch_size} examples")
        bar.update(state.step, values=[("loss", state.step_losses[-1])], finalize=True)

    def end_epoch(self, eval_scores: dict[str, float], seconds: float) -> None:
        """Model selection, plateau rule, early stop; the epoch's row, resume state and files."""
        state, config = self.state, self.config
        totals = state.totals.read()
        epoch, name = state.epoch, self.outputs.evaluator.name
        epoch_losses = state.step_losses[len(state.step_losses) - totals["steps"]:]
        train_scores = self._train_scores(totals)
        score = eval_scores[name] if eval_scores else train_scores[name]
        learning_rate = state.applied_rate()     # at the epoch's last step (device schedule)
        improved = state.best.update(epoch, score)
        decayed = state.schedule.end_epoch(improved)
        warmed_up = len(state.step_losses) >= config.warmup_steps
        state.early_stopped = epoch if state.early_stop.end_epoch(
            improved, warmed_up=warmed_up) else None
        row = {
            "epoch": epoch, "steps": totals["steps"], "loss": float(np.mean(epoch_losses)),
            **{f"train_{k}": v for k, v in train_scores.items()},
            **{f"eval_{k}": v for k, v in eval_scores.items()},
            "lr": learning_rate, "improved": improved, "lr_decayed": decayed,
            "best_score": state.best.score, "num_bad_epochs": state.schedule.num_bad_epochs,
            "epochs_without_best": state.early_stop.bad_epochs, "seconds": seconds,
        }
        state.history.append(row)
        preview = (self.validator.previews.render(epoch)
                   if self.validator.previews is not None else None)
        data_state = self.feed.state_after(state.step)
        state.epoch, state.step, state.pass_done = epoch + 1, 0, False
        # The state first, then the best model it points at (same writer thread, in order).
        self.checkpointer.save(data_state)
        if improved:
            self.checkpointer.save_best(epoch, score, name)
        self.outputs.write_epoch(state, row, preview)
        self._epochs_timed.append(seconds)
        left = (config.num_epochs - epoch) * float(np.mean(self._epochs_timed))
        evals = "".join(f" | eval {k} {v:.6f}" for k, v in eval_scores.items())
        self.log("[epoch %d/%d] loss %.6f | train %s %.6f%s | lr %.3g | %.1f s | elapsed %s, "
                 "about %s left%s%s", epoch, config.num_epochs, row["loss"], name,
                 train_scores[name], evals, learning_rate, seconds,
                 _duration(time.monotonic() - self._started), _duration(left),
                 " | best, saved" if improved else "",
                 f" | lr -> {state.schedule.learning_rate:.3g}" if decayed else "")
        if state.early_stopped is not None and epoch < config.num_epochs:
            self.log("early stop: %d epochs without a new best %s (--early-stop %d); the best "
                     "is epoch %s", state.early_stop.bad_epochs, name, config.early_stop,
                     state.best.epoch)

    # -- pieces ----------------------------------------------------------------------------------

    def _read_totals(self) -> dict[str, Any]:
        """Copy the device totals and the pending step losses to the host; stop on a NaN loss
        or a bad label (naming the step). The only host sync of a training epoch."""
        state = self.state
        totals = state.totals.read()
        if self._pending:
            state.step_losses.extend(np.concatenate([t.numpy() for t in self._pending]).tolist())
            self._pending.clear()
        self.feed.forget_before(state.step)
        model = state.model
        if totals["first_bad_label"]:
            raise BadLabelError(
                f"epoch {state.epoch}, step {totals['first_bad_label']}: the batch holds label "
                f"values that are neither a class in [0, {model.num_classes}) nor the ignore "
                f"value {model.ignore_label} ({totals['bad_label_pixels']} pixel(s) by the end "
                f"of the read); check the train labels (class indices) and --num-classes")
        if totals["first_non_finite"]:
            step = totals["first_non_finite"]
            global_step = len(state.step_losses) - totals["steps"] + step
            del state.step_losses[global_step:]     # the steps after it ran on NaN weights
            self.outputs.write_curves(state, draw=True)
            raise NonFiniteLossError(
                epoch=state.epoch, step=step, global_step=global_step,
                loss=state.step_losses[-1], learning_rate=state.schedule.learning_rate,
                save_dir=self.run_folder.path, best=state.best,
                results=self.outputs.results(state))
        return totals

    def _train_scores(self, totals: dict[str, Any]) -> dict[str, float]:
        """The epoch's train scores from the device totals: pixel accuracy as the original
        (mean of the batches' scores), mean IoU from the epoch's confusion matrix."""
        scored = totals["scored_batches"]
        accuracy = totals["batch_score_sum"] / scored if scored else 0.0
        model = self.state.model
        iou = MeanIoUEvaluator(model.num_classes, ignore_label=model.ignore_label)
        iou.confusion = totals["confusion"]
        return {"accuracy": accuracy,
                "mean_iou": iou.result() if iou.confusion.sum() > 0 else 0.0}

    def _agree(self, stop: StopSignals, due: bool = False) -> tuple[bool, bool]:
        """(stop now?, checkpoint now?): this process's answers, or under multi-worker
        training the OR over all workers, so that every worker stops at the same step."""
        if not self.cluster.distributed:
            return stop.requested is not None, due
        stopping, due = agree(self.steps.strategy, [stop.requested is not None, due])
        return stopping, due

    def _save_and_stop(self, stop: StopSignals, stopping: bool) -> None:
        """A resume state at the current step (after checking the totals); when stopping,
        wait until it is on disk and raise TrainingInterrupted."""
        self._read_totals()
        self.checkpointer.save(self.feed.state_after(self.state.step))
        if stopping:
            state = self.state
            self._stop(stop, f"after the last step of epoch {state.epoch}" if state.pass_done
                       else f"at epoch {state.epoch}, step {state.step}")

    def _stop(self, stop: StopSignals, where: str) -> None:
        self.outputs.finish(self.state)
        self.run_folder.flush()
        cause = (f"stopped by {stop.requested}" if stop.requested
                 else "stopped because another worker of the cluster was stopped")
        path = self.run_folder.path
        raise TrainingInterrupted(
            f"{cause} {where}; the run is saved in {path} ({self.run_folder.STATE}); continue "
            f"with: python train.py --resume --save-dir {path}", exit_code=stop.exit_code)
