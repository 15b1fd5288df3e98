"""Where a demo epoch's compute goes, and TensorFlow's thread settings, in interleaved rounds.

    python benchmarks/demo_speed.py --size 96 --rounds 4
    python benchmarks/demo_speed.py --size 64 --threads default 2,1 1,2 --rounds 4

Each round starts one process per thread setting (TensorFlow reads TF_NUM_INTRAOP_THREADS and
TF_NUM_INTEROP_THREADS once, at start-up), in turn: default, A, B, default, A, B, ... Each
process builds the demo's GCN (random init, float32 unless --bf16) and times, after warm-up
calls:

* train: the loop's compiled training step (learning/steps.py, the fused SGD of
  learning/sgd.py, gradients clipped to norm 5) on batches of --batch images;
* validate: the loop's validation prediction (``TrainSteps.predict_masks``) on batches of the
  same size.

It prints images/s of both per round, the per-round ratio of each setting to the default
(median and range), and the share of an epoch that validation takes for --train-images
training and --val-images validation images (the demo's 918 and 102 by default): what
validating every N epochs instead of every epoch could save, before the loop's end-of-epoch
writes (which ``python benchmarks/train_speed.py --steps`` measures).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(size: int, batch: int, steps: int, bf16: bool) -> dict[str, float]:
    """One process's numbers: images/s of training steps and of validation predictions."""
    sys.path.insert(0, ROOT)
    from common.cli import quiet_tensorflow
    quiet_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    from datasets.data import DataSet
    from learning.feed import TrainFeed
    from learning.precision import POLICIES
    from learning.schedule import WarmupRate
    from learning.sgd import FusedMomentumSGD
    from learning.steps import TrainSteps
    from models.nn import GCN

    if bf16:
        keras.mixed_precision.set_global_policy(POLICIES["bf16"])
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    count = batch * (steps + 2)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (count, size, size), dtype=np.uint8)
    model = GCN((size, size, 3), 3, pretrain="none", bn_momentum=0.9)
    strategy = tf.distribute.get_strategy()
    optimizer = FusedMomentumSGD(learning_rate=WarmupRate(tf.Variable(1e-3), 0), momentum=0.9)
    optimizer.build(model.keras_model.trainable_variables)
    train_steps = TrainSteps(model, optimizer, strategy, clip_norm=5.0)
    feed = TrainFeed(DataSet(images, labels, seed=0), batch, 1)
    iterator = iter(feed.epoch(0))
    train_steps.run(iterator, 2).numpy()                    # trace and warm up
    start = time.perf_counter()
    train_steps.run(iterator, steps).numpy()
    train_rate = batch * steps / (time.perf_counter() - start)
    batches = [images[i:i + batch] for i in range(0, batch * steps, batch)]
    np.asarray(train_steps.predict_masks(batches[0]))       # trace and warm up
    start = time.perf_counter()
    for chunk in batches:
        np.asarray(train_steps.predict_masks(chunk))
    return {"train": train_rate, "validate": batch * steps / (time.perf_counter() - start)}


def thread_env(setting: str) -> dict[str, str]:
    env = dict(os.environ)
    if setting != "default":
        intra, inter = setting.split(",")
        env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"] = intra, inter
    return env


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96, help="frame side")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", nargs="+", default=["default"], metavar="INTRA,INTER",
                        help="settings to compare ('default' is TensorFlow's own, always run)")
    parser.add_argument("--train-images", type=int, default=918)
    parser.add_argument("--val-images", type=int, default=102)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 compute")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.size, args.batch, args.steps, args.bf16)))
        return
    settings = ["default", *(s for s in args.threads if s != "default")]
    rates: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
    print(f"GCN {args.size}x{args.size}, batch {args.batch}, {args.steps} timed steps per "
          f"process, {'bf16' if args.bf16 else 'fp32'}, {os.cpu_count()} CPUs; settings "
          f"(intra,inter) {settings}, {args.rounds} interleaved rounds")
    for round_index in range(1, args.rounds + 1):
        for setting in settings:
            command = [sys.executable, __file__, "--child", "--size", str(args.size), "--batch",
                       str(args.batch), "--steps", str(args.steps), *(["--bf16"] * args.bf16)]
            output = subprocess.run(command, env=thread_env(setting), capture_output=True,
                                    text=True, check=True).stdout
            rates[setting].append(json.loads(output.strip().splitlines()[-1]))
            r = rates[setting][-1]
            print(f"  round {round_index} {setting:>8}: train {r['train']:.1f} img/s, "
                  f"validate {r['validate']:.1f} img/s", flush=True)
    print()
    for setting in settings:
        runs = rates[setting]
        shares = [args.val_images / r["validate"] / (args.train_images / r["train"]
                                                    + args.val_images / r["validate"])
                  for r in runs]
        line = (f"{setting:>8}: train {statistics.median(r['train'] for r in runs):.1f} img/s, "
                f"validate {statistics.median(r['validate'] for r in runs):.1f} img/s; "
                f"validation share of an epoch {spread(shares)}")
        if setting != "default":
            ratios = [r["train"] / d["train"] for r, d in zip(runs, rates["default"])]
            line += f"; train / default {spread(ratios)}"
        print(line)


if __name__ == "__main__":
    main()
