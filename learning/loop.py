"""The training loop, top to bottom, and the checkpointer that makes it resumable.

``TrainingLoop.run`` reads as the algorithm (the tutorial's, plus resume)::

    position = restore the run folder's resume state, or epoch 1 step 0
    for each epoch up to num_epochs:
        train_one_epoch: compiled calls of steps_per_execution steps on the prefetched batches;
            every log_every steps read the device totals (progress, NaN/label checks,
            TensorBoard); on SIGINT/SIGTERM or every checkpoint_every minutes, save a mid-epoch
            resume state (a stop then raises TrainingInterrupted)
        validate: the validation set through the evaluators (the EMA weights if enabled)
        end_epoch: best score? -> plateau rule -> history, curves, TensorBoard, previews;
            resume state, then the best model (background writer, in that order)

Numbers for one step, the device totals and the train score's definition: learning/steps.py.
The input pipelines and their resume positions: learning/feed.py. The files: run_folder.py.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.errors import GCNError, TrainingError
from learning.checkpoint import CheckpointError
from learning.cluster import Cluster, agree, broadcast_bytes, broadcast_variables, sum_over_workers
from learning.config import OptimConfig
from learning.feed import TrainFeed
from learning.previews import EpochPreviews, preview_summary_image, write_preview
from learning.run_folder import RunFolder
from learning.schedule import BestScore, PlateauSchedule
from learning.signals import StopSignals
from learning.steps import TrainSteps
from learning.utils import plot_learning_curve

__all__ = ["TrainingLoop", "Checkpointer", "NonFiniteLossError", "BadLabelError",
           "TrainingInterrupted", "epoch_seed", "read_values"]

logger = logging.getLogger(__name__)

# The learning curve is redrawn at most this often (and always at the end of a run and when it
# stops): matplotlib takes ~0.25 s of Python per drawing, which competes with the training
# steps for the interpreter and the cores; on short epochs (11 s in benchmarks/train_speed.py)
# drawing after each one cost ~4% of the run. TensorBoard has the same curves live.
CURVE_EVERY_SECONDS = 60.0

# Settings that do not change what a run computes: a resumed run may use other values.
_RESUMABLE = ("num_epochs", "eval_batch_size", "steps_per_execution", "checkpoint_every",
              "log_every")


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite; the run folder keeps the last good results.

    Attributes: ``epoch`` (1-based), ``step`` (1-based within the epoch), ``global_step``,
    ``loss``, ``learning_rate``, ``save_dir``, ``results`` (the ``train(details=True)`` dict up
    to the failure, the non-finite step loss included).
    """

    def __init__(self, *, epoch: int, step: int, global_step: int, loss: float,
                 learning_rate: float, save_dir: Any, best_epoch: int | None,
                 best_score: float, results: dict[str, Any]) -> None:
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.loss, self.learning_rate, self.save_dir = loss, learning_rate, save_dir
        self.results = results
        kept = (f"the best model (epoch {best_epoch}, score {best_score:.6f})"
                if best_epoch is not None else "no best model yet")
        super().__init__(
            f"training loss became {loss} at epoch {epoch}, step {step} (global step "
            f"{global_step}) with learning rate {learning_rate:.3g}; {kept}, the history and "
            f"the last resume state (if one was written) are kept in {save_dir}. Try a lower "
            f"learning rate (--lr, e.g. {learning_rate / 10:.3g}) or gradient clipping "
            f"(--clip-norm, e.g. 1.0)")


class BadLabelError(TrainingError, ValueError):
    """A training batch held label values that are neither a class nor the ignore value."""


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM stopped the run after a step; its resume state is on disk."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def epoch_seed(seed: int, epoch: int, step: int = 0) -> int:
    """A 31-bit seed for the global generators, fixed by (seed, epoch[, step])."""
    entropy = [seed, epoch] if step == 0 else [seed, epoch, step]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def seed_host_generators(seed: int) -> None:
    """Seed Python's and NumPy's global generators (for user code that draws from them).

    Not TensorFlow's global seed: ``tf.random.set_seed`` (and so ``keras.utils.set_random_seed``)
    clears TensorFlow's kernel cache, so the next call of the compiled training step is
    instantiated and optimised again and runs slowly for a while: set at every epoch start, it
    made the epochs of benchmarks/train_speed.py 1.4-2.2x longer. The project's randomness
    does not depend on it (DataSet and the streaming pipeline use their own seeded generators;
    the model's weights are seeded once, before it is built)."""
    random.seed(seed)
    np.random.seed(seed)


def read_values(variables: Sequence[Any]) -> list[np.ndarray]:
    """The variables' values of this moment as read-only NumPy arrays, without a copy on a CPU.

    A read of a TensorFlow variable is a tensor that shares the variable's buffer, and the
    variable's next update writes to a fresh buffer when its old one is still shared (copy on
    write): so these arrays keep this moment's values while training goes on, and only the
    variables that change are ever copied, by TensorFlow, inside the next step. (Copying
    with ``np.array(v.numpy())`` copied every value twice: 0.3 s of the main thread per epoch
    for the GCN's 190 MB of model and optimizer state.)"""
    return [np.asarray(tf.convert_to_tensor(v)) for v in variables]


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _normalised(config: Any) -> Any:
    """A config as it looks after a JSON round trip (tuples -> lists), for comparison."""
    return json.loads(json.dumps(config))


class Checkpointer:
    """Resume states and best models: host snapshots taken between steps, written by the run
    folder's background thread (the state before the best model it refers to).

    The best model is written from its host snapshot by the model's ``archive_writer()``
    (models/saving.py) on the writer thread, so the training model is free as soon as its
    values are copied. ``best_model.keras`` records its epoch in model_config.json; a resume
    whose state says the best epoch is its own last epoch but whose best model is older
    (killed between the two writes) writes it again.
    """

    def __init__(self, run: RunFolder, model: Any, groups: dict[str, Callable[[], list]],
                 archive_writer: Any) -> None:
        self.run = run
        self.model = model
        self.groups = groups                # name -> () -> its variables, in a fixed order
        self._writer = archive_writer       # None on the workers that do not write

    def snapshot(self, group: str) -> list[np.ndarray]:
        return read_values(self.groups[group]())

    def snapshot_weights(self) -> list[np.ndarray]:
        """The model's weights in ``keras_model.weights`` order (what an archive holds)."""
        return read_values(self.model.keras_model.weights)

    def save_state(self, meta: dict[str, Any], step_losses: Sequence[float]) -> None:
        if not self.run.is_chief:
            return
        arrays: dict[str, np.ndarray] = {"step_losses": np.asarray(step_losses, np.float64)}
        names: dict[str, list[str]] = {}
        for group, variables in self.groups.items():
            names[group] = [getattr(v, "path", v.name) for v in variables()]
            for i, value in enumerate(self.snapshot(group)):
                arrays[f"{group}/{i:04d}"] = value
        self.run.save_state(arrays, {**meta, "variable_names": names})

    def save_best(self, weights: list[np.ndarray] | None, info: dict[str, Any]) -> None:
        writer, run = self._writer, self.run
        if not run.is_chief:
            return
        self.run.in_background(lambda: writer.write(run.path, RunFolder.BEST_MODEL, weights,
                                                    info=info))

    def best_model_epoch(self) -> int | None:
        """The epoch of the best model on disk (from its model_config.json), if any."""
        path = self.run.file(self.model.CONFIG_FILE)
        if not self.run.file(RunFolder.BEST_MODEL).is_file() or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("training", {}).get("epoch")
        except (OSError, ValueError):
            return None

    def restore(self, meta_check: Callable[[dict[str, Any]], None]) -> tuple[dict, list[float]]:
        """Load the state into the variables -> (its meta, the step losses)."""
        arrays, meta = self.run.load_state()
        path = self.run.file(RunFolder.STATE)
        meta_check(meta)
        for group, variables in self.groups.items():
            variables = variables()
            saved_names = meta["variable_names"].get(group, [])
            saved = [arrays[f"{group}/{i:04d}"] for i in range(len(saved_names))]
            shapes_now = [tuple(v.shape) for v in variables]
            if shapes_now != [a.shape for a in saved]:
                mismatch = next(
                    (f"#{i}: saved {n} {a.shape} vs current {tuple(v.shape)}"
                     for i, (n, a, v) in enumerate(zip(saved_names, saved, variables))
                     if tuple(v.shape) != a.shape), "different variable counts")
                raise CheckpointError(
                    f"cannot resume from {path}: its {len(saved)} {group} variables do not "
                    f"match the current {len(variables)} ({mismatch})")
            for variable, value in zip(variables, saved):
                variable.assign(value)
        return meta, arrays["step_losses"].tolist()


class TrainingLoop:
    """One training run of a model in a run folder (built by ``Optimizer.train``)."""

    def __init__(self, *, model: Any, feed: TrainFeed, steps: TrainSteps, config: OptimConfig,
                 schedule: PlateauSchedule, best: BestScore, base_rate: tf.Variable,
                 evaluator: Any, extra_evaluators: Sequence[Any], val_set: Any,
                 run: RunFolder, checkpointer: Checkpointer, averaged_weights: Callable,
                 training_config: dict[str, Any], verbose: bool, progress: bool,
                 cluster: Cluster = Cluster(), previews: EpochPreviews | None = None) -> None:
        self.model, self.feed, self.steps, self.config = model, feed, steps, config
        self.schedule, self.best, self.base_rate = schedule, best, base_rate
        self.evaluator, self.extra_evaluators = evaluator, tuple(extra_evaluators)
        self.val_set, self.run, self.checkpointer = val_set, run, checkpointer
        self.averaged_weights = averaged_weights
        self.cluster = cluster
        self.previews = previews              # None: no previews (no validation set, a worker)
        self.training_config = training_config
        self.log = logger.info if verbose else logger.debug
        self.progress = progress
        self.history: list[dict[str, Any]] = []
        self.step_losses: list[float] = []
        self.epoch, self.step = 1, 0          # the position: steps done in epoch `epoch`
        self.pass_done = False                # all of the epoch's steps were taken
        self._pending: list[tf.Tensor] = []   # step losses not yet read from the device
        self._last_state_time = time.monotonic()
        self._curve_drawn_at: float | None = None     # monotonic time of the last drawing
        self._curve_stale = False                     # epochs ended since that drawing

    # -- the loop --------------------------------------------------------------------------------

    def run_epochs(self, resume: bool) -> None:
        if resume:
            self._restore()
        with StopSignals() as stop:
            self.log("training %d epochs from epoch %d (%s steps per epoch, batch %d over %d "
                     "replica(s)), run folder %s", self.config.num_epochs, self.epoch,
                     self.feed.steps_per_epoch or "?", self.config.batch_size,
                     self.steps.num_replicas, self.run.path)
            while self.epoch <= self.config.num_epochs:
                epoch_start = time.time()
                if self.step == 0 and not self.pass_done:
                    seed_host_generators(epoch_seed(self.config.seed, self.epoch))
                    self.steps.totals.reset()
                if not self.pass_done:
                    self.train_one_epoch(stop)
                scores = self.validate(stop)
                self.end_epoch(scores, time.time() - epoch_start)
                stopping, _ = self._agreed(stop)
                if stopping and self.epoch <= self.config.num_epochs:
                    self._interrupt(stop, f"after epoch {self.epoch - 1}")
        self._draw_curve_if_stale()
        self.run.flush()

    def train_one_epoch(self, stop: StopSignals) -> None:
        """The epoch's remaining steps; returns when its data ran out."""
        self.base_rate.assign(self.schedule.learning_rate)
        known = self.feed.steps_per_epoch
        dataset = self.feed.epoch(self.epoch - 1, self.step)
        iterator = iter(self._distribute(dataset))
        bar = keras.utils.Progbar(known, verbose=1 if self.progress else 0, unit_name="step")
        last_read = self.step
        while known is None or self.step < known:
            wanted = self.config.steps_per_execution
            if known is not None:
                wanted = min(wanted, known - self.step)
            losses = self.steps.run(iterator, wanted)
            self._pending.append(losses)
            taken = int(losses.shape[0])    # host-side shape: no wait for the device
            self.step += taken
            if taken < wanted:
                break
            due = (self.config.checkpoint_every > 0 and time.monotonic() - self._last_state_time
                   >= 60.0 * self.config.checkpoint_every)
            stopping, due = self._agreed(stop, due)
            if stopping or due:
                self._save_mid_epoch(stop, stopping)
            elif self.step - last_read >= self.config.log_every:
                self._read_totals()
                last_read = self.step
                bar.update(self.step, values=[("loss", self.step_losses[-1])])
        self.pass_done = True
        totals = self._read_totals()
        if totals["steps"] == 0:
            raise TrainingError(f"epoch {self.epoch}: the train data gave no full batch of "
                                f"{self.config.batch_size} examples")
        bar.update(self.step, values=[("loss", self.step_losses[-1])], finalize=True)

    def validate(self, stop: StopSignals) -> dict[str, float]:
        """{evaluator name: score} of the validation set ({} without one). Runs with the
        averaged weights when EMA is on (they are also what ``end_epoch`` saves)."""
        if self.val_set is None:
            return {}
        evaluators = (self.evaluator, *self.extra_evaluators)
        for evaluator in evaluators:
            evaluator.reset()
        if self.previews is not None:
            self.previews.start()
        with self.averaged_weights():
            for labels, images in self._val_batches():
                # (Workers hold shares of different sizes: they agree once, after the pass.)
                if stop.requested and not self.cluster.distributed:
                    break
                predictions = self.steps.predict_masks(images)
                for evaluator in evaluators:
                    evaluator.update(labels, predictions)
                if self.previews is not None:
                    self.previews.add(images, labels, predictions)
        if self.cluster.distributed:
            # Every worker scored its share: the scores of the whole set, the same everywhere.
            for evaluator in evaluators:
                evaluator.set_totals(sum_over_workers(self.steps.strategy, evaluator.totals()))
        stopping, _ = self._agreed(stop)
        if stopping:
            # Saved with the raw weights (outside the block); the resume re-runs the validation.
            self._save_mid_epoch(stop, stopping)
        return {evaluator.name: float(evaluator.result()) for evaluator in evaluators}

    def end_epoch(self, eval_scores: dict[str, float], seconds: float) -> None:
        """Model selection, plateau rule, the epoch's row and files, the resume state."""
        totals = self.steps.totals.read()
        epoch, name = self.epoch, self.evaluator.name
        epoch_losses = self.step_losses[len(self.step_losses) - totals["steps"]:]
        train_scores = self._train_scores(totals)
        score = eval_scores[name] if eval_scores else train_scores[name]
        learning_rate = self.schedule.learning_rate     # the rate this epoch trained with
        improved = self.best.update(epoch, score)
        best_weights = None
        if improved:
            with self.averaged_weights():
                best_weights = self.checkpointer.snapshot_weights()
        decayed = self.schedule.end_epoch(improved)
        row = {
            "epoch": epoch, "steps": totals["steps"], "loss": float(np.mean(epoch_losses)),
            **{f"train_{k}": v for k, v in train_scores.items()},
            **{f"eval_{k}": v for k, v in eval_scores.items()},
            "lr": learning_rate, "improved": improved, "lr_decayed": decayed,
            "best_score": self.best.score, "num_bad_epochs": self.schedule.num_bad_epochs,
            "seconds": seconds,
        }
        self.history.append(row)
        preview = self.previews.render(epoch) if self.previews is not None else None
        data_state = self.feed.state_after(self.step)
        self.epoch, self.step, self.pass_done = epoch + 1, 0, False
        # The state first, then the best model it points at (same writer thread, in order).
        self._save_state(data_state)
        if improved:
            self.checkpointer.save_best(best_weights, {"training": {
                "epoch": epoch, name: score, "evaluator": name}})
        self._write_epoch_outputs(row, epoch_losses, preview)
        evals = "".join(f" | eval {k} {v:.6f}" for k, v in eval_scores.items())
        self.log("[epoch %d/%d] loss %.6f | train %s %.6f%s | lr %.3g | %.1f s%s%s", epoch,
                 self.config.num_epochs, row["loss"], name, train_scores[name], evals,
                 learning_rate, seconds, " | best, saved" if improved else "",
                 f" | lr -> {self.schedule.learning_rate:.3g}" if decayed else "")

    # -- pieces ----------------------------------------------------------------------------------

    def _distribute(self, dataset: tf.data.Dataset) -> Any:
        if self.steps.num_replicas == 1:
            return dataset
        return self.steps.strategy.distribute_datasets_from_function(lambda context: dataset)

    def _val_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        size = self.config.validation_batch_size
        if isinstance(self.val_set, tf.data.Dataset):
            for images, labels in self.val_set.batch(size).prefetch(2).as_numpy_iterator():
                yield labels, images
        else:
            images, labels = np.asarray(self.val_set.images), np.asarray(self.val_set.labels)
            for start in range(0, len(images), size):
                yield labels[start:start + size], images[start:start + size]

    def _read_totals(self) -> dict[str, Any]:
        """Copy the device totals and the pending step losses to the host; stop on a NaN loss
        or a bad label (naming the step). The only host sync of a training epoch."""
        totals = self.steps.totals.read()
        if self._pending:
            self.step_losses.extend(np.concatenate([t.numpy() for t in self._pending]).tolist())
            self._pending.clear()
        epoch_start = len(self.step_losses) - totals["steps"]
        if totals["first_bad_label"]:
            step = totals["first_bad_label"]
            raise BadLabelError(
                f"epoch {self.epoch}, step {step}: the batch holds label values that are "
                f"neither a class in [0, {self.model.num_classes}) nor the ignore value "
                f"{self.model.ignore_label} ({totals['bad_label_pixels']} pixel(s) by the end "
                f"of the read); check the train labels (class indices) and --num-classes")
        if totals["first_non_finite"]:
            step = totals["first_non_finite"]
            global_step = epoch_start + step
            del self.step_losses[global_step:]        # the steps after it ran on NaN weights
            self._write_curves(draw=True)
            raise NonFiniteLossError(
                epoch=self.epoch, step=step, global_step=global_step,
                loss=self.step_losses[-1], learning_rate=self.schedule.learning_rate,
                save_dir=self.run.path, best_epoch=self.best.epoch,
                best_score=self.best.score, results=self.results())
        return totals

    def _train_scores(self, totals: dict[str, Any]) -> dict[str, float]:
        """The epoch's train scores from the device totals: pixel accuracy as the original
        (mean of the batches' scores), mean IoU from the epoch's confusion matrix."""
        from learning.evaluators import MeanIoUEvaluator

        scored = totals["scored_batches"]
        accuracy = totals["batch_score_sum"] / scored if scored else 0.0
        iou = MeanIoUEvaluator(self.model.num_classes, ignore_label=self.model.ignore_label)
        iou.confusion = totals["confusion"]
        present = iou.confusion.sum() > 0
        return {"accuracy": accuracy, "mean_iou": iou.result() if present else 0.0}

    def _agreed(self, stop: StopSignals, due: bool = False) -> tuple[bool, bool]:
        """(stop now?, checkpoint now?): this process's answers, or under multi-worker
        training the OR over all workers, so that every worker stops at the same step."""
        if not self.cluster.distributed:
            return stop.requested is not None, due
        stopping, due = agree(self.steps.strategy, [stop.requested is not None, due])
        return stopping, due

    def _save_mid_epoch(self, stop: StopSignals, stopping: bool) -> None:
        """A resume state at the current step (after checking the totals); when stopping,
        wait until it is on disk and raise TrainingInterrupted."""
        self._read_totals()
        self._save_state(self.feed.state_after(self.step))
        if stopping:
            self._interrupt(stop, f"after the last step of epoch {self.epoch}" if self.pass_done
                            else f"at epoch {self.epoch}, step {self.step}")

    def _interrupt(self, stop: StopSignals, where: str) -> None:
        self._draw_curve_if_stale()
        self.run.flush()
        cause = (f"stopped by {stop.requested}" if stop.requested
                 else "stopped because another worker of the cluster was stopped")
        raise TrainingInterrupted(
            f"{cause} {where}; the run is saved in {self.run.path} ({RunFolder.STATE}); "
            f"continue with: python train.py --resume --save-dir {self.run.path}",
            exit_code=stop.exit_code)

    def _save_state(self, data_state: Any) -> None:
        """Queue the resume state of the current position; ``data_state`` is the train data's
        position after the steps taken (``TrainFeed.state_after``). The writes queued with the
        previous state must be done first: at most one state's snapshots wait in memory, even
        when the writes fall behind the epochs (a slow disk, short epochs)."""
        self.run.flush()
        meta = {
            "position": {"epoch": self.epoch, "step": self.step, "pass_done": self.pass_done},
            "schedule": self.schedule.get_state(),
            "best": self.best.get_state(),
            "history": self.history,
            "data_state": data_state,
            "model_class": type(self.model).__name__,
            "model_config": _normalised(self.model.get_config()),
            "training_config": self.training_config,
        }
        self.checkpointer.save_state(meta, self.step_losses)
        self._last_state_time = time.monotonic()

    def _restore(self) -> None:
        def check(meta: dict[str, Any]) -> None:
            saved = (meta.get("model_class"), meta.get("model_config"))
            current = (type(self.model).__name__, _normalised(self.model.get_config()))
            if saved != current:
                saved_cfg, current_cfg = saved[1] or {}, current[1]
                differing = sorted(k for k in set(saved_cfg) | set(current_cfg)
                                   if saved_cfg.get(k) != current_cfg.get(k))
                raise CheckpointError(
                    f"cannot resume from {self.run.file(RunFolder.STATE)}: it was written for a "
                    f"{saved[0]} with config {saved_cfg}, the current model is a {current[0]} "
                    f"with config {current_cfg} (differing: {', '.join(differing) or 'class'}). "
                    f"Rebuild the same model, or start a new run in another folder")

        meta, self.step_losses = self._restored_state(check)
        differences = {k: (v, self.training_config.get(k))
                       for k, v in meta["training_config"].items()
                       if k not in _RESUMABLE and self.training_config.get(k) != v}
        if differences:
            logger.warning("resume: training settings differ from the interrupted run "
                           "(saved, now): %s", differences)
        position = meta["position"]
        self.epoch, self.step = int(position["epoch"]), int(position["step"])
        self.pass_done = bool(position["pass_done"])
        self.schedule.set_state(meta["schedule"])
        self.best.set_state(meta["best"])
        self.base_rate.assign(self.schedule.learning_rate)
        self.history = list(meta["history"])
        self.feed.restore(meta["data_state"], self.step)
        if self.step and not self.pass_done:
            # Mid-epoch: the global generators continue from a seed of this exact step.
            seed_host_generators(epoch_seed(self.config.seed, self.epoch, self.step))
        self.log("resumed from %s at epoch %d, step %d (lr %.3g, best %s %.6f)",
                 self.run.file(RunFolder.STATE), self.epoch, self.step,
                 self.schedule.learning_rate, self.evaluator.name, self.best.score)
        self._repair_best_model()

    def _restored_state(self, check: Callable[[dict[str, Any]], None]
                        ) -> tuple[dict[str, Any], list[float]]:
        """The chief reads the resume state into the variables; under multi-worker training it
        then sends the values and the position to the other workers, whose --save-dir need not
        be shared (they never read it)."""
        if not self.cluster.distributed:
            return self.checkpointer.restore(check)
        strategy, chief = self.steps.strategy, self.cluster.is_chief
        document: dict[str, Any] = {}
        if chief:
            try:
                meta, losses = self.checkpointer.restore(check)
                document = {"meta": meta, "step_losses": losses}
            except GCNError as error:
                document = {"error": str(error)}
                failure = error
        payload = broadcast_bytes(strategy, json.dumps(document).encode() if chief else None,
                                  chief)
        document = json.loads(payload.decode("utf-8"))
        if "error" in document:
            if chief:
                raise failure
            raise TrainingError(f"the chief could not resume the run: {document['error']}")
        check(document["meta"])
        variables = [v for group in self.checkpointer.groups.values() for v in group()]
        broadcast_variables(strategy, variables, chief)
        return document["meta"], document["step_losses"]

    def _repair_best_model(self) -> None:
        """A kill between the state and the best model it points at: write the best now
        (the state's weights are the best epoch's when the best is the state's last epoch)."""
        if not self.run.is_chief:
            return
        best_epoch = self.best.epoch
        last_done = self.history[-1]["epoch"] if self.history else None
        if best_epoch is None or best_epoch != last_done or self.step or self.pass_done:
            return
        if self.checkpointer.best_model_epoch() == best_epoch:
            return
        logger.warning("the best model of epoch %d was not on disk (the run was stopped while "
                       "saving it): writing it from the resume state", best_epoch)
        with self.averaged_weights():
            weights = self.checkpointer.snapshot_weights()
        self.checkpointer.save_best(weights, {"training": {
            "epoch": best_epoch, self.evaluator.name: self.best.score,
            "evaluator": self.evaluator.name}})
        self.run.flush()

    # -- outputs ---------------------------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        name = self.evaluator.name
        results: dict[str, Any] = {
            "step_losses": list(self.step_losses),
            "step_scores": [row[f"train_{name}"] for row in self.history],
            "learning_rates": [row["lr"] for row in self.history],
            "epochs": [dict(row) for row in self.history],
            "best_score": self.best.score,
            "best_epoch": self.best.epoch,
        }
        if self.val_set is not None:
            results["eval_scores"] = [row[f"eval_{name}"] for row in self.history]
            results["extra_eval_scores"] = {
                e.name: [row[f"eval_{e.name}"] for row in self.history]
                for e in self.extra_evaluators}
        return results

    def _write_epoch_outputs(self, row: dict[str, Any], epoch_losses: list[float],
                             preview: np.ndarray | None) -> None:
        """History, curve, TensorBoard and the preview grid (uint8 RGB, None: no previews)."""
        self._write_curves()
        run = self.run
        if preview is not None and run.is_chief:
            run.in_background(lambda: write_preview(run.path, row["epoch"], preview))
        first_step = len(self.step_losses) - len(epoch_losses)
        with self.run.summaries():
            for i, loss in enumerate(epoch_losses, start=first_step + 1):
                tf.summary.scalar("step/loss", loss, step=i)
            for key, value in row.items():
                if key.startswith(("train_", "eval_")) or key == "loss":
                    tf.summary.scalar(f"epoch/{key}", value, step=row["epoch"])
            tf.summary.scalar("epoch/learning_rate", row["lr"], step=row["epoch"])
            if preview is not None:
                tf.summary.image("previews", preview_summary_image(preview), step=row["epoch"])

    def _draw_curve_if_stale(self) -> None:
        if self._curve_stale:
            self._write_curves(draw=True)

    def _write_curves(self, draw: bool = False) -> None:
        """history.csv/.json now; the learning curve on the writer thread when ``draw``, at the
        first call, or when the last drawing is ``CURVE_EVERY_SECONDS`` old (else it is only
        marked stale, for ``_draw_curve_if_stale``)."""
        name = self.evaluator.name
        document = {
            "evaluator": name, "mode": self.evaluator.mode,
            "best_score": self.best.score, "best_epoch": self.best.epoch,
            "epochs": self.history,
            "step_losses": [_json_float(x) for x in self.step_losses],
        }
        self.run.write_history(self.history, document)
        now = time.monotonic()
        if not (draw or self._curve_drawn_at is None
                or now - self._curve_drawn_at >= CURVE_EVERY_SECONDS):
            self._curve_stale = True
            return
        self._curve_drawn_at, self._curve_stale = now, False
        results = self.results()
        run = self.run
        self.run.in_background(lambda: plot_learning_curve(
            -1, results["step_losses"], results["step_scores"],
            eval_scores=results.get("eval_scores"), mode=self.evaluator.mode, img_dir=run.path,
            score_name=name, extra_eval_scores=results.get("extra_eval_scores"),
            learning_rates=results["learning_rates"]))
