"""What the parts of a training step cost, and the step's statistics as a share of it, with and
without XLA, before and after the statistics moved to float32 one-hot products.

    python benchmarks/step_cost.py                       # GCN at 128 and 256 px, batch 8
    python benchmarks/step_cost.py --sizes 128 --rounds 7

Each variant is one compiled function on one fixed batch (random init, random labels with an
ignored band), timed ``--steps`` calls at a time; the variants run in interleaved rounds after
one warm-up call each (which traces and, with XLA, compiles). The chain adds the step's parts
one by one, as learning/steps.py runs them on one device:

* fwd+loss: forward pass (training mode), ``cross_entropy_terms``, weight decay, the loss;
* +stats: and the step's statistics (``step_statistics``: counts, per-image accuracies,
  confusion matrix);
* +grad: and the gradients of the loss;
* +update: and the clip scale and the fused momentum update (``FusedMomentumSGD``): the
  whole replica step;
* stats alone: the statistics of fixed logits, nothing else.

"after" is the statistics of learning/steps.py; "before" is the statistics as they were until
2026-12-05 (int32 labels, a float64 ``tf.math.bincount``, kept below as ``old_statistics``),
which XLA cannot compile (bincount's size must be a compile-time constant), so "before" runs
without XLA only. The statistics' share is (+stats - fwd+loss) / +update of the same chain,
and stats alone / +update; both are printed per round as medians and ranges. Before timing,
the script checks that both statistics give the same numbers on its batch.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.train_speed import make_data, summary  # noqa: E402  (quiets TF)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from learning.sgd import FusedMomentumSGD  # noqa: E402
from learning.steps import clip_scale, step_statistics  # noqa: E402
from models.nn import GCN  # noqa: E402

tf.get_logger().setLevel("ERROR")    # one retracing warning per chain: each is traced once

CLIP_NORM = 5.0
IGNORE = 255
PARTS = ("fwd+loss", "+stats", "+grad", "+update")


def old_statistics(labels: tf.Tensor, logits: tf.Tensor, ce_sum: tf.Tensor, count: tf.Tensor,
                   *, num_classes: int, ignore_label: int) -> tf.Tensor:
    """The step's statistics before 2026-12-05, op for op (the "before" of this benchmark):
    bad labels turned ignored, int32 maps, a float64 bincount of truth * C + prediction."""
    labels = tf.cast(labels, tf.int32)
    bad = tf.logical_and(tf.not_equal(labels, ignore_label),
                         tf.logical_or(labels < 0, labels >= num_classes))
    labels = tf.where(bad, ignore_label, labels)
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    correct = tf.logical_and(valid, tf.equal(labels, predictions))
    valid_per_image = tf.reduce_sum(tf.cast(valid, tf.float64), axis=[1, 2])
    correct_per_image = tf.reduce_sum(tf.cast(correct, tf.float64), axis=[1, 2])
    scored = valid_per_image > 0
    accuracy_sum = tf.reduce_sum(tf.where(
        scored, correct_per_image / tf.maximum(valid_per_image, 1.0), 0.0))
    pairs = tf.where(valid, labels * num_classes + predictions, num_classes * num_classes)
    confusion = tf.math.bincount(tf.reshape(pairs, [-1]), minlength=num_classes ** 2 + 1,
                                 maxlength=num_classes ** 2 + 1, dtype=tf.float64)
    head = tf.stack([tf.cast(count, tf.float64), tf.cast(ce_sum, tf.float64), accuracy_sum,
                     tf.reduce_sum(tf.cast(scored, tf.float64)),
                     tf.reduce_sum(tf.cast(bad, tf.float64))])
    return tf.concat([head, confusion[:-1]], axis=0)


class Chain:
    """The step's parts up to ``part`` for one GCN, one statistics function, XLA or not."""

    def __init__(self, model: GCN, part: str, statistics_fn: Callable | None, jit: bool) -> None:
        self.model, self.part, self.statistics_fn = model, part, statistics_fn
        self.optimizer = FusedMomentumSGD(1e-4, momentum=0.9)
        self.optimizer.build(model.keras_model.trainable_variables)
        self.function = tf.function(self._step, jit_compile=jit)

    def _step(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        model, variables = self.model, self.model.keras_model.trainable_variables
        with tf.GradientTape() as tape:
            logits = model.keras_model(tf.cast(images, tf.float32), training=True)
            ce_sum, count = model.cross_entropy_terms(labels, logits)
            loss = model.loss_from_terms(ce_sum, count, model.regularization_loss())
            if self.statistics_fn is not None:
                sums = tf.stop_gradient(self.statistics_fn(
                    labels, logits, ce_sum, count, num_classes=3, ignore_label=IGNORE))
                loss += 0.0 * tf.cast(sums[0], tf.float32)      # the loss waits for them
        if self.part in ("fwd+loss", "+stats"):
            return loss
        gradients = tape.gradient(loss, variables)
        if self.part == "+grad":
            return loss + 0.0 * tf.add_n([tf.reduce_sum(g[..., :1]) for g in gradients])
        with self.optimizer.summed_gradients(), self.optimizer.learning_rate_factor(
                clip_scale(gradients, CLIP_NORM)):
            self.optimizer.apply_gradients(zip(gradients, variables))
        return loss


def variants(model: GCN, logits: tf.Tensor) -> dict[str, Callable]:
    """name -> a compiled function of (images, labels)."""
    found: dict[str, Callable] = {}
    for jit in (False, True):
        xla = " xla" if jit else ""
        for when, stats in (("after", step_statistics), ("before", old_statistics)):
            if jit and when == "before":
                continue                    # bincount: not compilable
            for part in PARTS:
                if part == "fwd+loss" and when == "before":
                    continue                # no statistics in it: the same as "after"
                chain = Chain(model, part, None if part == "fwd+loss" else stats, jit)
                found[f"{part} {when}{xla}" if part != "fwd+loss" else part + xla] = (
                    chain.function)
            alone = tf.function(lambda images, labels, stats=stats: stats(
                labels, logits, tf.constant(0.0), tf.constant(1.0), num_classes=3,
                ignore_label=IGNORE), jit_compile=jit)
            found[f"stats alone {when}{xla}"] = alone
    return found


def measure(size: int, args: argparse.Namespace) -> None:
    images, labels = make_data(args.batch, size)
    labels[0, 5, :3] = 7                                 # a few bad labels, counted by both
    keras.utils.set_random_seed(1)
    model = GCN((size, size, 3), 3, pretrain="none", bn_momentum=0.9)
    images, labels = tf.constant(images), tf.constant(labels)
    logits = model.keras_model(tf.cast(images, tf.float32), training=True)
    # Compiled: called eagerly, cross_entropy_terms refuses the bad labels.
    ce_sum, count = tf.function(model.cross_entropy_terms)(labels, logits)
    before = old_statistics(labels, logits, ce_sum, count, num_classes=3, ignore_label=IGNORE)
    after = step_statistics(labels, logits, ce_sum, count, num_classes=3, ignore_label=IGNORE)
    same = np.array_equal(before.numpy(), after.numpy())
    print(f"\nGCN {size}x{size}, batch {args.batch}: statistics before == after on this batch: "
          f"{same}", flush=True)
    if not same:
        raise SystemExit(f"the statistics differ: before {before.numpy()}, after {after.numpy()}")
    functions = variants(model, logits)
    for function in functions.values():      # warm-up: tracing, XLA compilation
        function(images, labels).numpy()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(args.rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                result = function(images, labels)
            result.numpy()
            times[name].append((time.perf_counter() - start) / args.steps * 1000.0)
        print(f"  round {round_index + 1}: " + ", ".join(
            f"{name} {values[-1]:.0f}" for name, values in times.items()) + " ms", flush=True)
    report(times)


def report(times: dict[str, list[float]]) -> None:
    print("\n| variant | ms per call, median (range) |\n| --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} ({min(values):.1f}-"
              f"{max(values):.1f}) |")
    print("\n| statistics as a share of the step | by the chain: (+stats - fwd+loss) / "
          "+update | alone: stats alone / +update |\n| --- | --- | --- |")
    for when, xla in (("before", ""), ("after", ""), ("after", " xla")):
        step = times[f"+update {when}{xla}"]
        chain = [(s - f) / u for s, f, u in zip(times[f"+stats {when}{xla}"],
                                                 times[f"fwd+loss{xla}"], step)]
        alone = [a / u for a, u in zip(times[f"stats alone {when}{xla}"], step)]
        print(f"| {when}{' (XLA)' if xla else ''} | {summary(chain)} | {summary(alone)} |")
    whole = [a / b for a, b in zip(times["+update after"], times["+update before"])]
    xla = [a / b for a, b in zip(times["+update after xla"], times["+update after"])]
    print(f"\nwhole step after / before (no XLA): {summary(whole)}; with XLA / without "
          f"(after): {summary(xla)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", default="128,256", help="comma-separated input sizes")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="calls per variant per round")
    args = parser.parse_args()
    print(f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs; "
          f"{args.rounds} interleaved rounds of {args.steps} calls per variant")
    for size in (int(s) for s in args.sizes.split(",")):
        measure(size, args)


if __name__ == "__main__":
    main()
