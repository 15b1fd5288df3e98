"""Training speed: the project's loop against a bare compiled step and Keras' model.fit.

    python benchmarks/train_speed.py                  # fp32 and bf16, 128 px, batch 8, 320 images
    python benchmarks/train_speed.py --rounds 6 --precisions fp32

The same GCN (random init, 3 classes) on the same pre-loaded uint8 data, three ways:

* loop: ``MomentumOptimizer.train`` on a ``DataSet``, one epoch per round, without validation
  (the train score selects the best model, so every improving epoch saves a best model), with
  its per-epoch writes (resume state, best model, history, curve, TensorBoard). A round is the
  wall time of ``train()`` continuing the run by one epoch, minus the time it spends reloading
  the resume state (a cost of this measurement, not of an epoch), and it includes waiting for
  the epoch's background writes: the pessimistic measure.
* bare: a ``tf.function`` step (forward, masked loss + weight decay, gradients, SGD with
  momentum) over batches already on the device as tensors, no strategy, no metrics.
* fit: Keras ``model.fit`` on a ``tf.data`` pipeline of the same arrays (batched, prefetched),
  masked sparse cross-entropy (``ignore_class=255``), SGD with momentum.

The machine is shared and noisy, so the three run in interleaved rounds (loop, bare, fit, loop,
bare, fit, ...) after one warm-up round each, and the script prints each round's images/s, the
per-round ratios loop/bare and loop/fit, and their median and range.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.cli import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from datasets.data import DataSet  # noqa: E402
from learning import loop as loop_module  # noqa: E402
from learning.evaluators import AccuracyEvaluator  # noqa: E402
from learning.optimizers import MomentumOptimizer  # noqa: E402
from models.nn import GCN  # noqa: E402

IGNORE = 255


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
    """The project's loop, continued by one epoch per round."""

    def __init__(self, images, labels, args, folder: Path) -> None:
        self.model = build(args.size)
        self.optimizer = MomentumOptimizer(
            self.model, DataSet(images, labels, seed=0), AccuracyEvaluator(), None,
            batch_size=args.batch, num_epochs=1, init_learning_rate=0.01, clip_norm=5.0,
            steps_per_execution=args.steps_per_execution, seed=0)
        self.folder = folder
        self.epochs = 0
        self.restore_seconds = 0.0
        real_restore = loop_module.TrainingLoop._restore

        def timed_restore(loop) -> None:   # measured, then subtracted from the round
            start = time.perf_counter()
            real_restore(loop)
            self.restore_seconds += time.perf_counter() - start

        loop_module.TrainingLoop._restore = timed_restore

    def epoch(self) -> float:
        self.epochs += 1
        self.optimizer.config = dataclasses.replace(self.optimizer.config,
                                                    num_epochs=self.epochs)
        self.restore_seconds = 0.0
        start = time.perf_counter()
        self.optimizer.train(self.folder, verbose=False, resume=self.epochs > 1)
        return time.perf_counter() - start - self.restore_seconds


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
        self.sgd.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def epoch(self) -> float:
        start = time.perf_counter()
        for images, labels in self.batches:
            loss = self.step(images, labels)
        float(loss)                               # wait for the last step
        return time.perf_counter() - start


class Fit:
    """Keras model.fit on a tf.data pipeline."""

    def __init__(self, images, labels, args) -> None:
        self.model = build(args.size)
        self.model.keras_model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                            ignore_class=IGNORE))
        self.dataset = (tf.data.Dataset.from_tensor_slices((images, labels))
                        .map(lambda x, y: (tf.cast(x, tf.float32), y))
                        .batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    def epoch(self) -> float:
        start = time.perf_counter()
        self.model.keras_model.fit(self.dataset, epochs=1, verbose=0)
        return time.perf_counter() - start


def measure(precision: str, args, images, labels, workdir: Path) -> dict[str, list[float]]:
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16"
                                            else "float32")
    methods = {"loop": Loop(images, labels, args, workdir / f"run-{precision}"),
               "bare": Bare(images, labels, args), "fit": Fit(images, labels, args)}
    for method in methods.values():         # warm-up: tracing, first allocations
        method.epoch()
    rates: dict[str, list[float]] = {name: [] for name in methods}
    images_per_epoch = (len(images) // args.batch) * args.batch
    for round_index in range(args.rounds):
        for name, method in methods.items():
            rates[name].append(images_per_epoch / method.epoch())
        print(f"  {precision} round {round_index + 1}: " + "  ".join(
            f"{name} {values[-1]:6.1f} img/s" for name, values in rates.items()), flush=True)
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
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    images, labels = make_data(args.images, args.size)
    print(f"GCN {args.size}x{args.size}, batch {args.batch}, {args.images} images per epoch, "
          f"{args.rounds} interleaved rounds after a warm-up, steps per execution "
          f"{args.steps_per_execution}; TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        for precision in args.precisions.split(","):
            rates = measure(precision, args, images, labels, Path(tmp))
            vs_bare = [a / b for a, b in zip(rates["loop"], rates["bare"])]
            vs_fit = [a / b for a, b in zip(rates["loop"], rates["fit"])]
            rows.append((precision, *(statistics.median(rates[n]) for n in ("loop", "bare",
                                                                             "fit")),
                         summary(vs_bare), summary(vs_fit)))
    print("\n| precision | loop img/s | bare img/s | fit img/s | loop / bare, median (range) "
          "| loop / fit, median (range) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for precision, loop_rate, bare_rate, fit_rate, vs_bare, vs_fit in rows:
        print(f"| {precision} | {loop_rate:.1f} | {bare_rate:.1f} | {fit_rate:.1f} | {vs_bare} "
              f"| {vs_fit} |")


if __name__ == "__main__":
    main()
