"""Training speed: the project's loop against a bare compiled step and Keras' model.fit.

    python benchmarks/train_speed.py                  # fp32 and bf16, 128 px, batch 8, 320 images
                                                      # (fp32 alone without native bfloat16)
    python benchmarks/train_speed.py --rounds 6 --precisions fp32
    python benchmarks/train_speed.py --rounds 6 --precisions fp32 --jit-compile   # + XLA

The same GCN (random init, 3 classes) on the same pre-loaded uint8 data, three ways:

* loop: ``MomentumOptimizer.train`` on a ``DataSet``, ONE run of warm-up + rounds epochs
  without validation (the train score selects the best model, so every improving epoch saves
  a best model), with all its per-epoch writes (resume state, best model, history,
  TensorBoard, and the learning curve whenever the run redraws it: after the first epoch, then
  when the last drawing is a minute old, and at the end). A loop round is one epoch of that
  run, from its first step to the first step of the next: its steps, its end-of-epoch work on
  the main thread (host snapshots, history, TensorBoard) and, running alongside its steps as
  in any run, the previous epoch's background writes, plus whatever of those writes is still
  unfinished when the epoch ends (waited for, and charged to the round). The bare and fit
  epochs of a round run between two loop epochs, with no writes of the loop in flight: the
  loop's writes go to its writer thread when its next epoch starts.
* bare: a ``tf.function`` step (forward, masked loss + weight decay, gradients clipped to a
  global norm, Keras' SGD with momentum) over batches already on the device as tensors, no
  strategy, no metrics: the step a user writes by hand. (The loop's optimizer is Keras' SGD
  with each weight's momentum update in one fused kernel and the clip scale taken through its
  learning rate, learning/sgd.py; ``--steps`` shows what that and the loop's other parts are
  worth apart, benchmarks/update_speed.py the update alone.)
* fit: Keras ``model.fit`` on a ``tf.data`` pipeline of the same arrays (batched, prefetched),
  the model's own loss (masked cross-entropy + weight decay, as the loop and bare train), SGD
  with momentum and the same global norm clipping; its epochs are timed by a callback (see
  ``Fit``). (Until 2026-12-02 fit trained Keras'
  ``SparseCategoricalCrossentropy(ignore_class=255)`` without the weight decay, less work than
  the other two: the decay, then a square-and-sum, cost the bare step about 10% in bf16.)
* steps (with ``--steps``): where the loop's time goes. The loop's own compiled steps
  (``learning/steps.py``: device statistics included) with the loop's optimizer
  (``learning/sgd.py``) on its own feed (``learning/feed.py`` over the ``DataSet``), one epoch
  per call, without the loop around them: no schedule, no end-of-epoch work, no writes.
  loop / steps is the loop's bookkeeping and writes; steps / bare is the fused update, the
  step's statistics and the feed.
* loop-xla and fit-xla (with ``--jit-compile``): the loop with ``--jit-compile on`` (its replica
  step and validation step compiled by XLA, learning/steps.py) and ``model.fit`` with
  ``jit_compile=True``. The XLA loop is a second run in a thread of its own, driven one epoch
  per round (``LoopInThread``), so its epochs interleave with the others as theirs do.

All three clip the gradient to a global norm of 5, as the demo recipe does: on random labels an
unclipped step at this rate turns the loss into NaN within a few steps.

The machine is shared and noisy, so the three run in interleaved rounds (loop, bare, fit, loop,
bare, fit, ...) after one warm-up round each, and the script prints each round's images/s, the
per-round ratios loop/bare and loop/fit, and their median and range.
"""
from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.cli import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from datasets.data import DataSet  # noqa: E402
from learning.evaluators import AccuracyEvaluator  # noqa: E402
from learning.feed import TrainFeed  # noqa: E402
from learning.loop import Trainer  # noqa: E402
from learning.optimizers import MomentumOptimizer  # noqa: E402
from learning.precision import (NATIVE_BFLOAT16_CPU_FLAGS, POLICIES,  # noqa: E402
                                emulated_bfloat16_warning)
from learning.run_folder import RunFolder  # noqa: E402
from learning.sgd import FusedMomentumSGD  # noqa: E402
from learning.steps import TrainSteps  # noqa: E402
from models.nn import GCN  # noqa: E402

IGNORE = 255
CLIP_NORM = 5.0


def make_data(num: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (num, size, size), dtype=np.uint8)
    labels[:, :4] = IGNORE
    return images, labels


def build(size: int) -> GCN:
    keras.utils.set_random_seed(1)
    return GCN((size, size, 3), 3, pretrain="none", bn_momentum=0.9)


class Loop:
    """The project's loop: one run of ``MomentumOptimizer.train`` whose epochs are the rounds.
    ``run`` calls ``between(round seconds)`` at every epoch boundary after the warm-up epoch,
    in the thread that runs it, and ``before()`` (if given) at every epoch start, just before
    the previous epoch's writes go to the writer thread.

    The optimizer builds its ``Trainer`` inside ``train``, so a Loop reaches it through two
    class-level patches, in place while any Loop runs: ``Trainer.train_one_epoch`` (sent to
    the Loop whose model the trainer trains) and ``RunFolder.in_background`` (held by the Loop
    whose folder it writes). Two Loops may be under way at once, one of them in a thread of its
    own (``LoopInThread``): they take turns, an epoch at a time."""

    _running: dict[int, "Loop"] = {}            # id(model) -> the Loop whose run is under way
    _lock = threading.Lock()

    def __init__(self, images, labels, args, folder: Path, jit_compile: str = "off") -> None:
        self.model = build(args.size)
        self.optimizer = MomentumOptimizer(
            self.model, DataSet(images, labels, seed=0), AccuracyEvaluator(), None,
            batch_size=args.batch, num_epochs=1 + args.rounds, init_learning_rate=0.01,
            clip_norm=CLIP_NORM, steps_per_execution=args.steps_per_execution, seed=0,
            jit_compile=jit_compile)
        self.folder = folder
        self.run_folder: RunFolder | None = None
        self.held: list[Callable] = []          # writes of the epoch that just ended
        self.epoch_start: list[float] = []

    def run(self, between: Callable[[float], None],
            before: Callable[[], None] | None = None) -> None:
        self.between, self.before = between, before
        # Opened here, not by train(): train() then ends with a flush, not a close, and the
        # last epoch's held writes run after its clock has stopped, as every epoch's do.
        self.run_folder = RunFolder(self.folder).open(resume=False)
        Loop._start(self)
        try:
            self.optimizer.train(self.run_folder, verbose=False)
            seconds = time.perf_counter() - self.epoch_start[-1]
        finally:
            Loop._end(self)
            for job in self.held:
                _REAL_IN_BACKGROUND(self.run_folder, job)
            self.held.clear()
            self.run_folder.close()
        between(seconds)

    def train_one_epoch(self, trainer: Trainer, stop) -> None:
        if self.epoch_start:                    # an epoch of the run just ended
            trainer.run_folder.flush()          # the writes before it: charged to it
            seconds = time.perf_counter() - self.epoch_start[-1]
            if len(self.epoch_start) > 1:       # not the warm-up epoch
                self.between(seconds)
        if self.before is not None:
            self.before()
        for job in self.held:                   # now they run alongside this epoch
            _REAL_IN_BACKGROUND(trainer.run_folder, job)
        self.held.clear()
        self.epoch_start.append(time.perf_counter())
        _REAL_TRAIN_ONE_EPOCH(trainer, stop)

    @classmethod
    def _start(cls, loop: "Loop") -> None:
        with cls._lock:
            if not cls._running:
                RunFolder.in_background = cls._hold
                Trainer.train_one_epoch = cls._dispatch
            cls._running[id(loop.model)] = loop

    @classmethod
    def _end(cls, loop: "Loop") -> None:
        with cls._lock:
            del cls._running[id(loop.model)]
            if not cls._running:
                RunFolder.in_background = _REAL_IN_BACKGROUND
                Trainer.train_one_epoch = _REAL_TRAIN_ONE_EPOCH

    @staticmethod
    def _hold(run: RunFolder, job: Callable) -> None:
        owner = next((loop for loop in Loop._running.values() if loop.run_folder is run), None)
        if owner is None:
            _REAL_IN_BACKGROUND(run, job)
        else:
            owner.held.append(job)

    @staticmethod
    def _dispatch(trainer: Trainer, stop) -> None:
        owner = Loop._running.get(id(trainer.state.model))
        if owner is None:
            _REAL_TRAIN_ONE_EPOCH(trainer, stop)
        else:
            owner.train_one_epoch(trainer, stop)


_REAL_IN_BACKGROUND = RunFolder.in_background
_REAL_TRAIN_ONE_EPOCH = Trainer.train_one_epoch


class LoopInThread:
    """A second ``Loop`` run in a thread of its own, one epoch per ``epoch()`` call, so that its
    epochs interleave with the first loop's rounds (its first call is its warm-up epoch). Each
    epoch counts as the first loop's do: its steps, its end-of-epoch work, and the previous
    epoch's writes, waited for at the next epoch's start."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.go = threading.Semaphore(0)
        self.events: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        def before() -> None:
            self.events.put(("ready", None))     # the previous epoch is over
            self.go.acquire()

        try:
            self.loop.run(lambda seconds: self.events.put(("seconds", seconds)), before)
        except BaseException as error:  # noqa: BLE001 - raised again in the main thread
            self.error = error
        finally:
            self.events.put(("end", None))

    def epoch(self) -> float:
        if not self.thread.is_alive():
            self.thread.start()
            self._wait()                         # its first epoch's start
        self.go.release()
        return self._wait()

    def _wait(self) -> float:
        seconds = float("nan")                   # the warm-up epoch reports none
        while True:
            kind, value = self.events.get()
            if kind == "seconds":
                seconds = value
            elif kind == "end" and self.error is not None:
                raise RuntimeError("the loop in its thread failed") from self.error
            else:
                return seconds


class Bare:
    """A compiled step on batches that are already tensors."""

    def __init__(self, images, labels, args) -> None:
        self.model = build(args.size)
        self.sgd = keras.optimizers.SGD(0.01, momentum=0.9)
        self.sgd.build(self.model.keras_model.trainable_variables)
        steps = len(images) // args.batch
        self.batches = [(tf.constant(images[i * args.batch:(i + 1) * args.batch]),
                         tf.constant(labels[i * args.batch:(i + 1) * args.batch]))
                        for i in range(steps)]
        self.step = tf.function(self._step)

    def _step(self, images, labels):
        variables = self.model.keras_model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model.keras_model(tf.cast(images, tf.float32), training=True)
            loss = self.model.loss(labels, logits)
        gradients, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), CLIP_NORM)
        self.sgd.apply_gradients(zip(gradients, variables))
        return loss

    def epoch(self) -> float:
        start = time.perf_counter()
        for images, labels in self.batches:
            loss = self.step(images, labels)
        float(loss)                               # wait for the last step
        return time.perf_counter() - start


class Steps:
    """The loop's compiled steps on the loop's feed, nothing else."""

    def __init__(self, images, labels, args) -> None:
        self.model = build(args.size)
        sgd = FusedMomentumSGD(0.01, momentum=0.9)         # what MomentumOptimizer builds
        sgd.build(self.model.keras_model.trainable_variables)
        self.steps = TrainSteps(self.model, sgd, tf.distribute.get_strategy(),
                                clip_norm=CLIP_NORM)
        self.feed = TrainFeed(DataSet(images, labels, seed=0), args.batch, 1)
        self.per_call = args.steps_per_execution
        self.epochs = 0

    def epoch(self) -> float:
        start = time.perf_counter()
        iterator = iter(self.feed.epoch(self.epochs))
        self.epochs += 1
        self.steps.totals.reset()
        losses = [self.steps.run(iterator, self.per_call)
                  for _ in range(-(-self.feed.steps_per_epoch // self.per_call))]
        self.steps.totals.read()                  # what the loop reads at the epoch's end
        for loss in losses:
            loss.numpy()
        return time.perf_counter() - start


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


class Fit:
    """Keras model.fit on a tf.data pipeline, one ``fit(epochs=1)`` call per round, timed from
    the epoch's start to its end by a callback. Not the whole call: in about half of the calls
    ``fit`` returned 10.2 s after its last step (on this machine, TF 2.21 / Keras 3.15; after
    ``on_train_end``, so in its tear-down), a cost per call that a user's ``fit(epochs=N)``
    pays once, not once per epoch (its epochs ran back to back)."""

    def __init__(self, images, labels, args, jit_compile: bool = False) -> None:
        self.model = build(args.size)
        # The model's loss, a scalar per batch (Keras' mean reduction leaves it as it is).
        self.model.keras_model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9, global_clipnorm=CLIP_NORM),
            loss=self.model.loss, jit_compile=jit_compile)
        self.dataset = (tf.data.Dataset.from_tensor_slices((images, labels))
                        .map(lambda x, y: (tf.cast(x, tf.float32), y))
                        .batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    def epoch(self) -> float:
        timer = _EpochTimer()
        self.model.keras_model.fit(self.dataset, epochs=1, verbose=0, callbacks=[timer])
        return timer.seconds


def measure(precision: str, args, images, labels, workdir: Path) -> dict[str, list[float]]:
    keras.mixed_precision.set_global_policy(POLICIES.get(precision, "float32"))
    # Every model is built before any warm-up: building one seeds TensorFlow, which empties
    # its kernel cache (the first epochs after it would be slow again).
    loop = Loop(images, labels, args, workdir / f"run-{precision}")
    others = {"bare": Bare(images, labels, args), "fit": Fit(images, labels, args)}
    if args.steps:
        others["steps"] = Steps(images, labels, args)
    xla = args.jit_compile and (precision == "fp32" or tf.config.list_physical_devices("GPU"))
    if args.jit_compile and not xla:
        print(f"  {precision}: no XLA rounds: the loop refuses --jit-compile on in mixed "
              f"precision on a CPU (XLA's CPU backend cannot compile the GCN's step then)")
    if xla:
        others["loop-xla"] = LoopInThread(Loop(images, labels, args,
                                               workdir / f"run-{precision}-xla", "on"))
        others["fit-xla"] = Fit(images, labels, args, jit_compile=True)
    for method in others.values():          # warm-up: tracing, first allocations
        method.epoch()
    rates: dict[str, list[float]] = {"loop": [], **{name: [] for name in others}}
    images_per_epoch = (len(images) // args.batch) * args.batch

    def round_done(loop_seconds: float) -> None:    # after each loop epoch: bare, fit, steps
        rates["loop"].append(images_per_epoch / loop_seconds)
        for name, method in others.items():
            rates[name].append(images_per_epoch / method.epoch())
        print(f"  {precision} round {len(rates['loop'])}: " + "  ".join(
            f"{name} {values[-1]:6.1f} img/s" for name, values in rates.items()), flush=True)

    loop.run(round_done)                    # its first epoch is its warm-up
    return rates


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--precisions", default=None,
                        help="comma-separated; default fp32,bf16, or fp32 alone on a CPU "
                             "without native bfloat16 (there bf16 times the emulation)")
    parser.add_argument("--steps", action="store_true",
                        help="also time the loop's compiled steps on its feed without the loop")
    parser.add_argument("--jit-compile", action="store_true",
                        help="also time the loop with --jit-compile on and model.fit with "
                             "jit_compile=True (XLA), in the same interleaved rounds")
    args = parser.parse_args()
    if args.precisions is None:
        slow = emulated_bfloat16_warning("bf16", len(tf.config.list_physical_devices("GPU")))
        args.precisions = "fp32" if slow else "fp32,bf16"
        if slow:
            print(f"bf16 skipped: this CPU has no native bfloat16 (no "
                  f"{' or '.join(NATIVE_BFLOAT16_CPU_FLAGS)}), so its times would be "
                  f"TensorFlow's emulation (benchmarks/bf16_conv.py); --precisions fp32,bf16 "
                  f"times it anyway")
    images, labels = make_data(args.images, args.size)
    print(f"GCN {args.size}x{args.size}, batch {args.batch}, {args.images} images per epoch, "
          f"{args.rounds} interleaved rounds after a warm-up, steps per execution "
          f"{args.steps_per_execution}; TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs")
    rows, xla_rows = [], []

    def ratio(a: str, b: str) -> str:
        return summary([x / y for x, y in zip(rates[a], rates[b])])

    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        for precision in args.precisions.split(","):
            rates = measure(precision, args, images, labels, Path(tmp))
            vs_bare = [a / b for a, b in zip(rates["loop"], rates["bare"])]
            vs_fit = [a / b for a, b in zip(rates["loop"], rates["fit"])]
            rows.append((precision, *(statistics.median(rates[n]) for n in ("loop", "bare",
                                                                             "fit")),
                         summary(vs_bare), summary(vs_fit)))
            if args.steps:
                print(f"  {precision}: steps {statistics.median(rates['steps']):.1f} img/s, "
                      f"loop / steps {ratio('loop', 'steps')}, steps / bare "
                      f"{ratio('steps', 'bare')}", flush=True)
            if "loop-xla" in rates:
                xla_rows.append((precision, statistics.median(rates["loop-xla"]),
                                 statistics.median(rates["fit-xla"]), ratio("loop-xla", "loop"),
                                 ratio("fit-xla", "fit"), ratio("loop-xla", "fit-xla")))
    print("\n| precision | loop img/s | bare img/s | fit img/s | loop / bare, median (range) "
          "| loop / fit, median (range) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for precision, loop_rate, bare_rate, fit_rate, vs_bare, vs_fit in rows:
        print(f"| {precision} | {loop_rate:.1f} | {bare_rate:.1f} | {fit_rate:.1f} | {vs_bare} "
              f"| {vs_fit} |")
    if xla_rows:
        print("\n| precision | loop XLA img/s | fit XLA img/s | loop XLA / loop | fit XLA / fit "
              "| loop XLA / fit XLA |")
        print("| --- | --- | --- | --- | --- | --- |")
        for precision, loop_rate, fit_rate, *ratios in xla_rows:
            print(f"| {precision} | {loop_rate:.1f} | {fit_rate:.1f} | " + " | ".join(ratios)
                  + " |")


if __name__ == "__main__":
    main()
