"""The tutorial's trainers: ``Optimizer`` (base) and ``MomentumOptimizer`` (SGD with momentum
and the plateau learning-rate decay), with the original's names and constructor.

They are front doors: the constructor checks its arguments once (``learning.config.OptimConfig``)
and builds the pieces, ``train`` runs them::

    OptimConfig       the hyperparameters, validated            learning/config.py
    Keras optimizer   SGD(momentum) on a WarmupRate schedule     here (_build_optimizer),
                      its updates fused                        learning/sgd.py
    PlateauSchedule   warm-up + the plateau rule; BestScore      learning/schedule.py
    TrainFeed         train data -> prefetched replica batches   learning/feed.py
    TrainSteps        compiled steps, device-side totals         learning/steps.py
    RunFolder         files, lock, background writes            learning/run_folder.py
    TrainingLoop      the loop, resume, checkpoints              learning/loop.py

Loss normalisation over replicas: each replica computes the cross-entropy *sum* of its pixels
and divides by the number of valid pixels of the *global* batch (an all-reduce of the counts),
plus ``regularization_loss() / num_replicas``; Keras sums the replicas' gradients, so the update
equals the single-device update on the same global batch. Gradient clipping (``clip_norm``)
acts on that summed gradient.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from datasets.classes import class_colors, resolve_class_names
from learning.checkpoint import CheckpointError
from learning.cluster import Cluster, cluster_from_environment
from learning.config import OptimConfig
from learning.evaluators import Evaluator, StreamingEvaluator
from learning.feed import TrainData, TrainFeed, check_element_spec, check_index_labels
from learning.loop import (BadLabelError, NonFiniteLossError, TrainingInterrupted, read_values,
                           TrainingLoop, Checkpointer)
from learning.previews import EpochPreviews
from learning.run_folder import RunFolder
from learning.schedule import BestScore, PlateauSchedule, device_rate
from learning.sgd import FusedMomentumSGD
from learning.steps import TrainSteps

__all__ = [
    "Optimizer",
    "MomentumOptimizer",
    "NonFiniteLossError",
    "BadLabelError",
    "TrainingInterrupted",
    "CheckpointError",
    "LAST_STATE_NAME",
]

logger = logging.getLogger(__name__)

LAST_STATE_NAME = RunFolder.STATE
_DEFAULT = OptimConfig()
_HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(OptimConfig))


class Optimizer(ABC):
    """Base class of the gradient-descent trainers.

    Subclasses provide the Keras optimizer (``_build_optimizer``).

    Args:
        model: a ``models.nn.SegNet`` (uses ``keras_model``, ``num_classes``, ``ignore_label``,
            ``cross_entropy_terms``, ``regularization_loss``, ``save``, ``clone``,
            ``get_config``). With a distribution ``strategy`` it must have been built inside
            ``strategy.scope()``.
        train_set: DataSet, callable epoch -> tf.data.Dataset, or tf.data.Dataset
            (learning/feed.py).
        evaluator: the score that selects the best model and drives the schedule.
        val_set: DataSet-like (``images``, ``labels``) or tf.data.Dataset of (image, label);
            None scores the train set (the train score: learning/steps.py).
        batch_size ... seed: the hyperparameters, documented with their defaults in
            ``learning.config.OptimConfig`` (the tutorial's eight come first).
        extra_evaluators: more validation scores to log (e.g. ``MeanIoUEvaluator``); names
            must differ from each other and from ``evaluator``'s.
        strategy: a ``tf.distribute.Strategy``; None = the current (default: one device).
    """

    def __init__(
        self,
        model: Any,
        train_set: TrainData,
        evaluator: Evaluator,
        val_set: Any = None,
        *,
        batch_size: int = _DEFAULT.batch_size,
        num_epochs: int = _DEFAULT.num_epochs,
        init_learning_rate: float = _DEFAULT.init_learning_rate,
        momentum: float = _DEFAULT.momentum,
        learning_rate_patience: int = _DEFAULT.learning_rate_patience,
        learning_rate_decay: float = _DEFAULT.learning_rate_decay,
        eps: float = _DEFAULT.eps,
        score_threshold: float = _DEFAULT.score_threshold,
        nesterov: bool = _DEFAULT.nesterov,
        warmup_steps: int = _DEFAULT.warmup_steps,
        schedule: str = _DEFAULT.schedule,                # [schedule]
        clip_norm: float | None = _DEFAULT.clip_norm,
        ema_momentum: float | None = _DEFAULT.ema_momentum,
        eval_batch_size: int | None = _DEFAULT.eval_batch_size,
        steps_per_execution: int = _DEFAULT.steps_per_execution,
        checkpoint_every: float = _DEFAULT.checkpoint_every,
        log_every: int = _DEFAULT.log_every,
        seed: int = _DEFAULT.seed,
        extra_evaluators: Sequence[Evaluator] = (),
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        arguments = locals()
        self.config = OptimConfig(**{name: arguments[name] for name in _HYPERPARAMETERS})
        self.model = model
        self.evaluator = evaluator
        self.val_set = val_set
        self.extra_evaluators = tuple(extra_evaluators)
        self.strategy = strategy if strategy is not None else tf.distribute.get_strategy()
        self.num_replicas = int(self.strategy.num_replicas_in_sync)
        # Under MultiWorkerMirroredStrategy: this process's place (TF_CONFIG); only the chief
        # writes the run folder.
        self.cluster = (cluster_from_environment() if isinstance(
            self.strategy, tf.distribute.MultiWorkerMirroredStrategy) else Cluster())
        self._check_arguments()
        self._check_model_in_strategy_scope()

        config = self.config
        # [schedule] the feed first: an annealing schedule needs its steps per epoch.
        self._feed = TrainFeed(train_set, config.batch_size, self.num_replicas,
                               num_workers=self.cluster.num_workers,
                               worker_index=self.cluster.worker_index)
        with self.strategy.scope():
            # The plateau rate, set by the host once per epoch; the warm-up ramp is computed
            # from it on the device, step by step (learning/schedule.py).
            self.base_rate = tf.Variable(config.init_learning_rate, dtype=tf.float32,
                                         trainable=False, name="base_learning_rate")
            inner = self._build_optimizer(device_rate(       # [schedule] --schedule's rate
                self.base_rate, schedule=config.schedule, warmup_steps=config.warmup_steps,
                num_epochs=config.num_epochs, steps_per_epoch=self._feed.steps_per_epoch))
            self._keras_optimizer = inner
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                # float16 gradients underflow: Keras' dynamic loss scaling (the step skips
                # updates whose gradients overflow and halves the scale).
                self._keras_optimizer = keras.optimizers.LossScaleOptimizer(inner)
            if config.ema_momentum is not None and not inner.use_ema:
                # The averaging lives in the Keras optimizer: a subclass that forgot the EMA
                # arguments would evaluate raw weights under an "EMA" label.
                raise ConfigError(f"{type(self).__name__}._build_optimizer ignores ema_momentum: "
                                  f"pass **self._ema_arguments() to the Keras optimizer")
            # Create the slot variables now: the resume state restores into them.
            self._keras_optimizer.build(model.keras_model.trainable_variables)
        # Their values at the start of a run (zeros, but the loss scale's 2**15): a new run
        # starts from these, whatever a previous train() left in them.
        self._initial_slots = [np.array(v.numpy()) for v in self._keras_optimizer.variables]
        self._steps = TrainSteps(model, self._keras_optimizer, self.strategy,
                                 clip_norm=config.clip_norm)
        self.train_set = train_set
        self.schedule = PlateauSchedule(
            config.init_learning_rate, patience=config.learning_rate_patience,
            decay=config.plateau_decay,  # [schedule] 1 under an annealing schedule
            eps=config.eps, warmup_steps=config.warmup_steps)
        self.best = BestScore(evaluator, config.score_threshold)
        self._loop: TrainingLoop | None = None
        self._writer: Any = None

    @classmethod
    def from_config(cls, model: Any, train_set: TrainData, evaluator: Evaluator,
                    val_set: Any, config: OptimConfig, *,
                    extra_evaluators: Sequence[Evaluator] = (),
                    strategy: tf.distribute.Strategy | None = None) -> "Optimizer":
        """Build from a validated ``OptimConfig`` (train.py's path)."""
        return cls(model, train_set, evaluator, val_set, **dataclasses.asdict(config),
                   extra_evaluators=extra_evaluators, strategy=strategy)

    def _check_arguments(self) -> None:
        config = self.config
        if config.batch_size % self.num_replicas:
            raise ConfigError(
                f"batch_size={config.batch_size} must be a multiple of the {self.num_replicas} "
                f"replicas of the distribution strategy (each gets batch_size / replicas)")
        if self.cluster.distributed:
            for evaluator in (self.evaluator, *self.extra_evaluators):
                if type(evaluator).totals is StreamingEvaluator.totals or not isinstance(
                        evaluator, StreamingEvaluator):
                    raise ConfigError(
                        f"{type(evaluator).__name__} cannot be summed over workers (it needs "
                        f"totals()/set_totals()): multi-worker validation adds every worker's "
                        f"share")
        names = [e.name for e in (self.evaluator, *self.extra_evaluators)]
        if len(set(names)) != len(names):
            raise ConfigError(f"evaluator names must be unique (they name history columns), "
                              f"got {names}")
        if self.val_set is None and self.evaluator.name not in ("accuracy", "mean_iou"):
            raise ConfigError(
                f"without a val_set the train score selects the best model, and the device "
                f"computes 'accuracy' and 'mean_iou' only; {self.evaluator.name!r} needs a "
                f"val_set")
        if self.val_set is not None and not isinstance(self.val_set, tf.data.Dataset):
            if not (hasattr(self.val_set, "images") and hasattr(self.val_set, "labels")):
                raise ConfigError(
                    f"val_set must have .images and .labels (a DataSet) or be a "
                    f"tf.data.Dataset of (image, label), got {type(self.val_set).__name__}")
            check_index_labels(np.asarray(self.val_set.images), self.val_set.labels, "val_set")
        elif self.val_set is not None:
            check_element_spec(self.val_set, "val_set")

    def _check_model_in_strategy_scope(self) -> None:
        variables = self.model.keras_model.variables
        outside = [v.path for v in variables
                   if not self.strategy.extended.variable_created_in_scope(
                       getattr(v, "value", v))]
        if outside:
            raise ConfigError(
                f"{len(outside)} model variables (e.g. {outside[0]}) were not created under the "
                f"distribution strategy's scope: build the model inside `with strategy.scope():` "
                f"and pass the same strategy to the optimizer")

    # -- hooks -----------------------------------------------------------------------------------

    @abstractmethod
    def _build_optimizer(self, learning_rate: keras.optimizers.schedules.LearningRateSchedule
                         ) -> keras.optimizers.Optimizer:
        """The Keras optimizer that applies the gradients (built inside the strategy scope),
        on the ``learning_rate`` schedule, constructed with ``**self._ema_arguments()``."""

    def _ema_arguments(self) -> dict[str, Any]:
        """Keras optimizer arguments for ``ema_momentum`` (none when it is off)."""
        if self.config.ema_momentum is None:
            return {}
        return {"use_ema": True, "ema_momentum": self.config.ema_momentum}

    # -- the original's attributes -------------------------------------------------------------

    @property
    def curr_learning_rate(self) -> float:
        return self.schedule.learning_rate

    @property
    def num_bad_epochs(self) -> int:
        return self.schedule.num_bad_epochs

    @property
    def best_score(self) -> float:
        return self.best.score

    @property
    def best_epoch(self) -> int | None:
        return self.best.epoch

    @property
    def curr_epoch(self) -> int:
        """The next epoch to run (1-based)."""
        return self._loop.epoch if self._loop is not None else 1

    @property
    def history(self) -> list[dict[str, Any]]:
        return self._loop.history if self._loop is not None else []

    @property
    def step_losses(self) -> list[float]:
        return self._loop.step_losses if self._loop is not None else []

    # -- training --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """With ``ema_momentum``: the model holds the moving average of its trainable weights
        inside the block (for evaluation and saving), its raw weights again after it."""
        if self.config.ema_momentum is None:
            yield
            return
        variables = self.model.keras_model.trainable_variables
        raw = read_values(variables)              # no copy: see read_values
        self._keras_optimizer.finalize_variable_values(variables)  # Keras: weights <- average
        try:
            yield
        finally:
            for variable, value in zip(variables, raw):
                variable.assign(value)

    def _archive_writer(self) -> Any:
        """The writer of the best models (built once: it saves a template archive)."""
        if self._writer is None:
            self._writer = self.model.archive_writer()
        return self._writer

    def _epoch_previews(self) -> EpochPreviews | None:
        """What draws previews/epoch_NNN.png: fixed validation examples in the model's class
        colours (None without a validation set)."""
        if self.val_set is None:
            return None
        if isinstance(self.val_set, tf.data.Dataset):
            count = int(self.val_set.cardinality())
            num_examples = count if count >= 0 else None     # unknown/infinite: the first ones
        else:
            num_examples = len(self.val_set.images)
        names = resolve_class_names(self.model.class_names, self.model.num_classes)
        return EpochPreviews(num_examples, colors=class_colors(names), class_names=names,
                             ignore_label=self.model.ignore_label)

    def _state_groups(self) -> dict[str, Any]:
        return {"model": lambda: list(self.model.keras_model.variables),
                "optimizer": lambda: list(self._keras_optimizer.variables),
                "totals": lambda: list(self._steps.state_variables)}

    def train(self, save_dir: str | Path | RunFolder, details: bool = False,
              verbose: bool = True, resume: bool = False) -> dict[str, Any] | None:
        """Train up to ``num_epochs``; keep the best model in ``save_dir``.

        Args:
            save_dir: the run folder (learning/run_folder.py; created if needed; the original
                defaulted to /tmp), or an already opened ``RunFolder``. A folder that holds a
                run (a resume state) is only continued with ``resume``.
            details: return the results dict (else None, as the original).
            verbose: log one INFO line per epoch and show a progress bar on a terminal
                (quiet when stdout is not a TTY); False logs the lines at DEBUG.
            resume: continue from the folder's resume state: model and optimizer variables,
                the position (epoch and step, possibly mid-epoch), learning rate and warm-up
                position, bad-epoch count, best score, history, data order, device totals.

        Returns:
            With ``details``: ``step_losses`` (every step), ``step_scores`` (train score per
            epoch), ``eval_scores`` (main validation score per epoch, if ``val_set``),
            ``extra_eval_scores`` ({name: per epoch}), ``learning_rates`` (used in each epoch),
            ``epochs`` (the history rows, with ``seconds``), ``best_score``, ``best_epoch``.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (the folder keeps the last good state).
            BadLabelError: a batch held labels outside [0, num_classes) and not ignored.
            TrainingInterrupted: SIGINT/SIGTERM; the resume state of the last step is on disk.
            CheckpointError: ``resume`` with an unreadable or mismatching state.
            RunFolderError: nothing to resume, a run already in the folder, a live run there.
        """
        owned = not isinstance(save_dir, RunFolder)
        run = (RunFolder(save_dir, is_chief=self.cluster.is_chief).open(resume=resume)
               if owned else save_dir)
        if not resume:
            self.schedule = PlateauSchedule(
                self.config.init_learning_rate, patience=self.config.learning_rate_patience,
                decay=self.config.plateau_decay, eps=self.config.eps,  # [schedule]
                warmup_steps=self.config.warmup_steps)
            self.best = BestScore(self.evaluator, self.config.score_threshold)
            for variable, value in zip(self._keras_optimizer.variables, self._initial_slots):
                variable.assign(value)
        self._loop = TrainingLoop(
            model=self.model, feed=self._feed, steps=self._steps, config=self.config,
            schedule=self.schedule, best=self.best, base_rate=self.base_rate,
            evaluator=self.evaluator, extra_evaluators=self.extra_evaluators,
            val_set=self.val_set, run=run,
            checkpointer=Checkpointer(run, self.model, self._state_groups(),
                                      self._archive_writer() if run.is_chief else None),
            averaged_weights=self._averaged_weights, cluster=self.cluster,
            training_config={"optimizer": type(self).__name__,
                             "evaluator": self.evaluator.name,
                             **dataclasses.asdict(self.config)},
            verbose=verbose, progress=verbose and sys.stdout.isatty(),
            previews=self._epoch_previews() if run.is_chief else None)
        start = time.time()
        with _closing(run, owned):
            self._loop.run_epochs(resume)
        (logger.info if verbose else logger.debug)(
            "training done in %.1f s; best %s %.6f at epoch %s", time.time() - start,
            self.evaluator.name, self.best.score, self.best.epoch)
        if self.best.epoch is None:
            logger.warning("no epoch beat the worst score %s: no best model was saved in %s",
                           self.evaluator.worst_score, run.path)
        return self._loop.results() if details else None


@contextlib.contextmanager
def _closing(run: RunFolder, owned: bool) -> Iterator[None]:
    """Finish the run folder's background writes after the loop, also when it failed (then a
    failed write is logged, not raised over the loop's own error)."""
    try:
        yield
    except BaseException:
        try:
            run.close() if owned else run.flush()
        except Exception as error:  # noqa: BLE001 - the loop's error is the one to report
            logger.error("while stopping, a background write failed: %s", error)
        raise
    run.close() if owned else run.flush()


class MomentumOptimizer(Optimizer):
    """Stochastic gradient descent with momentum (0.9) and the tutorial's plateau decay.

    (The original class of this name built Adam; this one is what its name says.) Keras' SGD
    keeps ``v <- momentum * v - lr * g; w <- w + v`` (optionally Nesterov), which equals TF1's
    MomentumOptimizer while the learning rate is constant.

    Plateau rule, after each epoch's bookkeeping: if ``num_bad_epochs > learning_rate_patience``
    the rate becomes ``lr * learning_rate_decay`` unless that changes it by no more than ``eps``,
    and the bad-epoch count restarts either way (learning/schedule.py).
    """

    def _build_optimizer(self, learning_rate: keras.optimizers.schedules.LearningRateSchedule
                         ) -> keras.optimizers.Optimizer:
        # Keras' SGD, the update of each weight in one fused kernel (learning/sgd.py).
        return FusedMomentumSGD(learning_rate=learning_rate, momentum=self.config.momentum,
                                nesterov=self.config.nesterov, **self._ema_arguments())
