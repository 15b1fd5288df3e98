"""Does training repeat itself from process to process, and what does making it repeat cost?

    python benchmarks/determinism.py                       # fp32 and bf16, 2 processes each way
    python benchmarks/determinism.py --precisions fp32 --processes 3 --steps 12

Each worker is a fresh Python process that builds the same GCN (random init, seed 1, 96 px,
batch 8) and takes the same training steps on the same random data: a bare compiled step
(masked cross-entropy + weight decay, gradients clipped to a global norm of 5, Keras' SGD with
momentum: benchmarks/train_speed.py's ``Bare``, no code of the training loop). It prints every
step's loss and the median seconds of the steps after the first two.

Two ways, alternating (default, inter-op 1, default, inter-op 1, ...): TensorFlow's default
threading, and ``tf.config.threading.set_inter_op_parallelism_threads(1)`` (one op at a time,
each op still using every core). The script reports, per precision and way, whether all the
processes gave bit-identical losses, the largest relative difference, and the median step time
of each way with the ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    from common.cli import quiet_tensorflow
    quiet_tensorflow()
    import keras

    import train_speed
    from learning.precision import POLICIES

    keras.mixed_precision.set_global_policy(POLICIES.get(args.precision, "float32"))
    images, labels = train_speed.make_data(args.batch * args.steps, args.size)
    bare = train_speed.Bare(images, labels, argparse.Namespace(batch=args.batch, size=args.size))
    losses, seconds = [], []
    for batch_images, batch_labels in bare.batches:
        start = time.perf_counter()
        losses.append(float(bare.step(batch_images, batch_labels)))    # waits for the step
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"losses": losses, "step_seconds": statistics.median(seconds[2:])}))


def run_worker(args: argparse.Namespace, precision: str, inter_op: int) -> dict:
    command = [sys.executable, __file__, "--worker", "--precision", precision, "--inter-op",
               str(inter_op), "--steps", str(args.steps), "--size", str(args.size), "--batch",
               str(args.batch)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--processes", type=int, default=2, help="processes per way")
    parser.add_argument("--steps", type=int, default=8, help="training steps per process")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--inter-op", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.steps < 3:
        parser.error("--steps must be at least 3 (the first two are not timed)")
    ways = (("default threading", 0), ("inter-op 1", 1))
    print(f"GCN {args.size}x{args.size}, batch {args.batch}, {args.steps} bare steps per "
          f"process, {args.processes} processes per way (alternating), {os.cpu_count()} CPUs")
    for precision in args.precisions.split(","):
        results: dict[str, list[dict]] = {name: [] for name, _ in ways}
        for _ in range(args.processes):
            for name, inter_op in ways:
                results[name].append(run_worker(args, precision, inter_op))
        times = {}
        for name, runs in results.items():
            first = runs[0]["losses"]
            same = all(run["losses"] == first for run in runs[1:])
            worst = max(abs(a - b) / abs(b) for run in runs[1:]
                        for a, b in zip(run["losses"], first))
            times[name] = statistics.median(run["step_seconds"] for run in runs)
            last = ", ".join(f"{run['losses'][-1]:.9g}" for run in runs)
            print(f"  {precision}, {name}: losses {'identical' if same else 'DIFFER'} in "
                  f"{len(runs)} processes (largest relative difference {worst:.2e}); last "
                  f"losses {last}; median "
                  f"step {times[name] * 1000:.0f} ms", flush=True)
        print(f"  {precision}: step time inter-op 1 / default "
              f"{times['inter-op 1'] / times['default threading']:.3f}")


if __name__ == "__main__":
    main()
