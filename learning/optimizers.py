"""The tutorial's trainers: ``Optimizer`` (base) and ``MomentumOptimizer`` (SGD with momentum
and the plateau learning-rate decay), with the original's names, constructor and attributes.

They are front doors. The constructor checks the hyperparameters (``learning.config.OptimConfig``)
and keeps them as attributes, as the original did: ``opt.num_epochs = 20`` is checked at once and
used by the next ``train``. ``train`` builds the pieces and runs the loop::

    Keras optimizer   SGD(momentum) on a WarmupRate schedule     _build_optimizer; learning/sgd.py
    TrainSteps        compiled steps, device-side totals         learning/steps.py
    TrainState        everything the run changes                  learning/state.py
    TrainFeed         train data -> prefetched replica batches   learning/feed.py
    Validator         the validation pass                         learning/loop.py
    Checkpointer      resume state and best model                 learning/checkpoint.py
    EpochOutputs      history, curves, TensorBoard, previews      learning/outputs.py
    Trainer           the loop                                    learning/loop.py

Loss normalisation over replicas: each replica computes the cross-entropy *sum* of its pixels
and divides by the number of valid pixels of the *global* batch (an all-reduce of the counts),
plus ``regularization_loss() / num_replicas``; the replicas' gradients are summed, so the
update equals the single-device update on the same global batch (learning/steps.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from datasets.classes import class_colors, resolve_class_names
from learning.checkpoint import CheckpointError, Checkpointer
from learning.cluster import Cluster, cluster_from_environment
from learning.config import OptimConfig, resumable_fields
from learning.evaluators import Evaluator, StreamingEvaluator
from learning.feed import TrainData, TrainFeed, check_element_spec, check_index_labels
from learning.loop import BadLabelError, NonFiniteLossError, Trainer, Validator
from learning.outputs import EpochOutputs
from learning.previews import EpochPreviews
from learning.run_folder import RunFolder
from learning.schedule import BestScore, EarlyStop, PlateauSchedule, WarmupRate, device_rate
from learning.sgd import FusedMomentumSGD
from learning.signals import TrainingInterrupted
from learning.state import TrainState
from learning.steps import TrainSteps, resolve_jit_compile

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


class _StateView:
    """An attribute of the original's that shows the state of the last ``train`` (``before``
    any train); setting it is an error that says what to set instead."""

    def __init__(self, read: Any, before: Any, hint: str) -> None:
        self.read, self.before, self.hint = read, before, hint
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, opt: Any, owner: type | None = None) -> Any:
        if opt is None:
            return self
        return self.read(opt._state) if opt._state is not None else self.before(opt)

    def __set__(self, opt: Any, value: Any) -> None:
        raise ConfigError(f"{self.name} is training state, kept by train(): {self.hint}")


class Optimizer(ABC):
    """Base class of the gradient-descent trainers.

    Subclasses provide the Keras optimizer (``_build_optimizer``).

    Args:
        model: a ``models.nn.SegNet`` (uses ``keras_model``, ``num_classes``, ``ignore_label``,
            ``cross_entropy_terms``, ``regularization_loss``, ``get_config``). With a
            distribution ``strategy`` it must have been built inside ``strategy.scope()``.
        train_set: DataSet, callable epoch -> tf.data.Dataset, or tf.data.Dataset
            (learning/feed.py).
        evaluator: the score that selects the best model and drives the schedule.
        val_set: DataSet-like (``images``, ``labels``) or tf.data.Dataset of (image, label);
            None scores the train set (the train score: learning/steps.py).
        batch_size ... early_stop: the hyperparameters, documented with their defaults in
            ``learning.config.OptimConfig`` (the tutorial's eight come first); each is also an
            attribute that may be changed before a ``train``.
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
        schedule: str = _DEFAULT.schedule,
        clip_norm: float | None = _DEFAULT.clip_norm,
        ema_momentum: float | None = _DEFAULT.ema_momentum,
        eval_batch_size: int | None = _DEFAULT.eval_batch_size,
        steps_per_execution: int = _DEFAULT.steps_per_execution,
        jit_compile: str = _DEFAULT.jit_compile,
        checkpoint_every: float = _DEFAULT.checkpoint_every,
        log_every: int = _DEFAULT.log_every,
        seed: int = _DEFAULT.seed,
        early_stop: int | None = _DEFAULT.early_stop,
        extra_evaluators: Sequence[Evaluator] = (),
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        arguments = locals()
        self.config = OptimConfig(**{name: arguments[name] for name in _HYPERPARAMETERS})
        self.model = model
        self.train_set = train_set
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
        with self.strategy.scope():
            # The EMA check, now.
            self._keras_optimizer(self._device_rate(tf.Variable(1.0, trainable=False)))
        self._state: TrainState | None = None      # the last train()'s
        self._outputs: EpochOutputs | None = None

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
        self._feed()          # checks the train data against the batch size
        _check_validation(self.evaluator, self.extra_evaluators, self.val_set,
                          distributed=self.cluster.distributed)

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

    def _device_rate(self, base_rate: tf.Variable) -> WarmupRate:
        """The device-side rate of ``--schedule`` on ``base_rate``: the warm-up, then the
        plateau rate or an annealing (learning/schedule.py)."""
        config = self.config
        return device_rate(base_rate, schedule=config.schedule, warmup_steps=config.warmup_steps,
                           num_epochs=config.num_epochs,
                           steps_per_epoch=self._feed().steps_per_epoch)

    def _keras_optimizer(self, rate: WarmupRate) -> keras.optimizers.Optimizer:
        """``_build_optimizer`` on the device-side ``rate`` (``_device_rate``), with fp16 loss
        scaling (call in the strategy's scope)."""
        config = self.config
        inner = self._build_optimizer(rate)
        if config.ema_momentum is not None and not inner.use_ema:
            # The averaging lives in the Keras optimizer: a subclass that forgot the EMA
            # arguments would evaluate raw weights under an "EMA" label.
            raise ConfigError(f"{type(self).__name__}._build_optimizer ignores ema_momentum: "
                              f"pass **self._ema_arguments() to the Keras optimizer")
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            # float16 gradients underflow: Keras' dynamic loss scaling (the step skips
            # updates whose gradients overflow and halves the scale).
            return keras.optimizers.LossScaleOptimizer(inner)
        return inner

    # -- the original's attributes: the state of the last train() ---------------------------------

    curr_learning_rate = _StateView(lambda s: s.schedule.learning_rate,
                                    lambda opt: opt.config.init_learning_rate,
                                    "set init_learning_rate for a new run")
    num_bad_epochs = _StateView(lambda s: s.schedule.num_bad_epochs, lambda opt: 0,
                                "set learning_rate_patience")
    best_score = _StateView(lambda s: s.best.score, lambda opt: opt.evaluator.worst_score,
                            "set score_threshold")
    best_epoch = _StateView(lambda s: s.best.epoch, lambda opt: None, "set score_threshold")
    curr_epoch = _StateView(lambda s: s.epoch, lambda opt: 1,
                            "set num_epochs, then train(save_dir, resume=True) runs up to it")
    history = _StateView(lambda s: s.history, lambda opt: [], "train() writes it")
    step_losses = _StateView(lambda s: s.step_losses, lambda opt: [], "train() writes it")

    # -- training --------------------------------------------------------------------------------

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
                position, bad-epoch counts, best score, history, data order, device totals.
                The current attributes apply (e.g. a larger ``num_epochs`` extends the run).

        Returns:
            With ``details``: ``step_losses`` (every step), ``step_scores`` (train score per
            epoch), ``eval_scores`` (main validation score per epoch, if ``val_set``),
            ``extra_eval_scores`` ({name: per epoch}), ``learning_rates`` (the rate of each
            epoch's last step), ``epochs`` (the history rows, with ``seconds``),
            ``best_score``, ``best_epoch``.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (the folder keeps the last good state).
            BadLabelError: a batch held labels outside [0, num_classes) and not ignored.
            TrainingInterrupted: SIGINT/SIGTERM; the resume state of the last step is on disk.
            CheckpointError: ``resume`` with an unreadable or mismatching state.
            RunFolderError: nothing to resume, a run already in the folder, a live run there.
        """
        self._check_arguments()
        owned = not isinstance(save_dir, RunFolder)
        run = (RunFolder(save_dir, is_chief=self.cluster.is_chief).open(resume=resume)
               if owned else save_dir)
        start = time.time()
        with _closing(run, owned):
            trainer = self._build_trainer(run, verbose)
            trainer.run(resume)
        state = self._state
        (logger.info if verbose else logger.debug)(
            "training done in %.1f s; best %s %.6f at epoch %s", time.time() - start,
            self.evaluator.name, state.best.score, state.best.epoch)
        if state.best.epoch is None:
            logger.warning("no epoch beat the worst score %s: no best model was saved in %s",
                           self.evaluator.worst_score, run.path)
        return self._outputs.results(state) if details else None

    def _build_trainer(self, run: RunFolder, verbose: bool) -> Trainer:
        """The pieces of one run, from the current hyperparameters."""
        config, model = self.config, self.model
        with self.strategy.scope():
            # The plateau rate, set by the host once per epoch; the warm-up ramp is computed
            # from it on the device, step by step (learning/schedule.py).
            base_rate = tf.Variable(config.init_learning_rate, dtype=tf.float32,
                                    trainable=False, name="base_learning_rate")
            rate = self._device_rate(base_rate)
            keras_optimizer = self._keras_optimizer(rate)
            # The slot variables exist before a resume state is restored into them.
            keras_optimizer.build(model.keras_model.trainable_variables)
            steps = TrainSteps(model, keras_optimizer, self.strategy, clip_norm=config.clip_norm,
                               jit_compile=resolve_jit_compile(config.jit_compile))
        self._state = state = TrainState(
            model=model, optimizer=keras_optimizer, totals=steps.totals, base_rate=base_rate,
            rate=rate,
            schedule=PlateauSchedule(
                config.init_learning_rate, patience=config.learning_rate_patience,
                decay=config.plateau_decay, eps=config.eps,
                warmup_steps=config.warmup_steps),
            best=BestScore(self.evaluator, config.score_threshold),
            early_stop=EarlyStop(config.early_stop))
        feed = self._feed()
        validator = Validator(steps, self.val_set, (self.evaluator, *self.extra_evaluators),
                              batch_size=config.validation_batch_size,
                              previews=(_epoch_previews(self.model, self.val_set)
                                        if run.is_chief else None),
                              cluster=self.cluster)
        checkpointer = Checkpointer(
            run, state, training_config={"optimizer": type(self).__name__,
                                         "evaluator": self.evaluator.name,
                                         **dataclasses.asdict(config)},
            resumable=resumable_fields(OptimConfig), cluster=self.cluster,
            strategy=self.strategy)
        self._outputs = EpochOutputs(run, self.evaluator,
                                     extra_names=[e.name for e in self.extra_evaluators],
                                     has_validation=self.val_set is not None, verbose=verbose)
        return Trainer(state, config, feed=feed, steps=steps, validator=validator,
                       checkpointer=checkpointer, outputs=self._outputs, cluster=self.cluster)

    def _feed(self) -> TrainFeed:
        return TrainFeed(self.train_set, self.config.batch_size, self.num_replicas,
                         num_workers=self.cluster.num_workers,
                         worker_index=self.cluster.worker_index)



def _epoch_previews(model: Any, val_set: Any) -> EpochPreviews | None:
    """What draws previews/epoch_NNN.png: fixed validation examples in the model's class
    colours (None without a validation set)."""
    if val_set is None:
        return None
    if isinstance(val_set, tf.data.Dataset):
        count = int(val_set.cardinality())
        num_examples = count if count >= 0 else None     # unknown/infinite: the first ones
    else:
        num_examples = len(val_set.images)
    names = resolve_class_names(model.class_names, model.num_classes)
    return EpochPreviews(num_examples, colors=class_colors(names), class_names=names,
                         ignore_label=model.ignore_label)


def _check_validation(evaluator: Evaluator, extra_evaluators: Sequence[Evaluator], val_set: Any,
                      *, distributed: bool) -> None:
    """The evaluators and the validation set fit each other and the cluster."""
    evaluators = (evaluator, *extra_evaluators)
    if distributed:
        for each in evaluators:
            if type(each).totals is StreamingEvaluator.totals or not isinstance(
                    each, StreamingEvaluator):
                raise ConfigError(
                    f"{type(each).__name__} cannot be summed over workers (it needs "
                    f"totals()/set_totals()): multi-worker validation adds every worker's share")
    names = [each.name for each in evaluators]
    if len(set(names)) != len(names):
        raise ConfigError(f"evaluator names must be unique (they name history columns), "
                          f"got {names}")
    if val_set is None:
        if evaluator.name not in ("accuracy", "mean_iou"):
            raise ConfigError(
                f"without a val_set the train score selects the best model, and the device "
                f"computes 'accuracy' and 'mean_iou' only; {evaluator.name!r} needs a val_set")
    elif isinstance(val_set, tf.data.Dataset):
        check_element_spec(val_set, "val_set")
    elif not (hasattr(val_set, "images") and hasattr(val_set, "labels")):
        raise ConfigError(f"val_set must have .images and .labels (a DataSet) or be a "
                          f"tf.data.Dataset of (image, label), got {type(val_set).__name__}")
    else:
        check_index_labels(np.asarray(val_set.images), val_set.labels, "val_set")


def _hyperparameter(name: str) -> property:
    """An attribute of the original's (``opt.num_epochs``) backed by the checked config:
    setting it checks the value at once and the next ``train`` uses it."""
    def get(self: Optimizer) -> Any:
        return getattr(self.config, name)

    def set_(self: Optimizer, value: Any) -> None:
        self.config = dataclasses.replace(self.config, **{name: value})   # ConfigError if bad

    return property(get, set_, doc=f"The ``{name}`` hyperparameter (learning/config.py).")


for _name in _HYPERPARAMETERS:
    setattr(Optimizer, _name, _hyperparameter(_name))


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
