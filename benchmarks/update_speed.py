"""The weight update alone: Keras' SGD against the loop's fused one (learning/sgd.py).

    python benchmarks/update_speed.py                # GCN 128x128, 3 classes, 7 rounds
    python benchmarks/update_speed.py --rounds 12 --precision bf16

One update of all the GCN's trainable weights (25 M) from fixed gradients, with clipping to a
global norm (as the demo recipe trains), three ways, each a compiled function:

* keras: ``keras.optimizers.SGD(momentum=0.9, global_clipnorm=...)``, what ``model.fit`` runs;
* clip+fused: ``tf.clip_by_global_norm`` on the gradients, then the fused momentum kernel
  (the loop's update until 2026-12-02);
* fused: the fused kernel with the clip scale in its learning rate
  (``learning_rate_factor``; the loop's update now, learning/steps.py).

A round times ``--updates`` calls of each, interleaved (keras, clip+fused, fused, keras, ...);
the script prints the milliseconds per update of each round, the per-round ratios against
keras, their median and range, and the median saving as a share of a training step's time
when ``--step-ms`` (a step's milliseconds, e.g. from benchmarks/train_speed.py) is given.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
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

from learning.precision import POLICIES  # noqa: E402
from learning.sgd import FusedMomentumSGD  # noqa: E402
from learning.steps import clip_scale  # noqa: E402
from models.nn import GCN  # noqa: E402

CLIP_NORM = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="input size of the GCN")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=10, help="updates per method per round")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="Keras policy of the model (its weights are float32 either way)")
    parser.add_argument("--step-ms", type=float, default=None,
                        help="a training step's milliseconds, to print the saving as its share")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(POLICIES.get(args.precision, "float32"))
    keras.utils.set_random_seed(1)
    model = GCN((args.size, args.size, 3), 3, pretrain="none")
    variables = model.keras_model.trainable_variables
    rng = np.random.default_rng(0)
    # Gradients of a norm well above the clip norm, so that clipping is active.
    gradients = [tf.constant(rng.normal(0.0, 1e-2, v.shape).astype(np.float32))
                 for v in variables]
    print(f"GCN {args.size}x{args.size}: {len(variables)} weights, "
          f"{sum(int(np.prod(v.shape)) for v in variables) / 1e6:.1f} M values, gradient norm "
          f"{float(tf.linalg.global_norm(gradients)):.1f} (clip {CLIP_NORM}); "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")

    def optimizer(cls, **extra):
        built = cls(0.01, momentum=0.9, **extra)
        built.build(variables)
        return built

    keras_sgd = optimizer(keras.optimizers.SGD, global_clipnorm=CLIP_NORM)
    clip_fused, folded = optimizer(FusedMomentumSGD), optimizer(FusedMomentumSGD)

    def keras_update(grads):
        keras_sgd.apply(grads, variables)

    def clip_then_fused(grads):
        clipped, _ = tf.clip_by_global_norm(grads, CLIP_NORM)
        clip_fused.apply_gradients(zip(clipped, variables))

    def fused(grads):
        with folded.learning_rate_factor(clip_scale(grads, CLIP_NORM)):
            folded.apply_gradients(zip(grads, variables))

    methods = {"keras": keras_update, "clip+fused": clip_then_fused, "fused": fused}
    compiled = {name: tf.function(fn) for name, fn in methods.items()}
    for fn in compiled.values():                        # trace and warm up
        fn(gradients)
        fn(gradients)
    ms: dict[str, list[float]] = {name: [] for name in compiled}
    for round_ in range(1, args.rounds + 1):
        for name, fn in compiled.items():
            start = time.perf_counter()
            for _ in range(args.updates):
                fn(gradients)
            variables[-1].numpy()                       # wait for the last update
            ms[name].append((time.perf_counter() - start) / args.updates * 1000)
        print(f"  round {round_}: " + "  ".join(f"{n} {v[-1]:5.1f} ms" for n, v in ms.items()),
              flush=True)
    print("\n| update | ms, median (range) | / keras, median (range) |")
    print("| --- | --- | --- |")
    for name, values in ms.items():
        ratios = [a / b for a, b in zip(values, ms["keras"])]
        print(f"| {name} | {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}) "
              f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
    if args.step_ms:
        saved = statistics.median([k - f for k, f in zip(ms["keras"], ms["fused"])])
        print(f"\nfused saves {saved:.1f} ms per update against keras: {saved / args.step_ms:.1%} "
              f"of a {args.step_ms:.0f} ms step")


if __name__ == "__main__":
    main()
