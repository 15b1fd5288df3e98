"""Is bfloat16 native on this CPU? One 3x3 convolution, forward and backward, in both precisions.

    python benchmarks/bf16_conv.py

On a CPU with AVX512-BF16 or AMX, oneDNN runs bfloat16 convolutions natively and they take
less time than float32 ones; without them TensorFlow emulates bfloat16 and the same work takes
many times longer (9.0x on a 2-core AMD EPYC with AVX2, 2026-12-03). That is why
benchmarks/demo_quality.py and `make demo` train in float32 where /proc/cpuinfo shows neither
flag, and why train_speed.py's bf16 ratios mean something only on such a CPU.
Interleaved rounds (fp32, bf16, fp32, ...); prints the median time per pass and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import tensorflow as tf


@tf.function
def forward_backward(images: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """The kernel's gradient of a sum of squares of one 'SAME' convolution."""
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        outputs = tf.nn.conv2d(images, kernel, strides=1, padding="SAME")   # (N, H, W, C)
        loss = tf.reduce_sum(tf.square(tf.cast(outputs, tf.float32)))
    return tape.gradient(loss, kernel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--passes", type=int, default=5, help="passes per round (default 5)")
    args = parser.parse_args()
    images = tf.random.normal([8, 64, 64, 64], seed=1)     # batch 8, 64x64, 64 channels
    kernel = tf.random.normal([3, 3, 64, 64], seed=2)
    inputs = {"fp32": (images, kernel),
              "bf16": (tf.cast(images, tf.bfloat16), tf.cast(kernel, tf.bfloat16))}
    for pair in inputs.values():                            # trace and warm up both
        forward_backward(*pair).numpy()
    seconds: dict[str, list[float]] = {name: [] for name in inputs}
    for _ in range(args.rounds):
        for name, pair in inputs.items():
            start = time.perf_counter()
            for _ in range(args.passes):
                forward_backward(*pair).numpy()
            seconds[name].append((time.perf_counter() - start) / args.passes)
    ratios = [b / a for a, b in zip(seconds["fp32"], seconds["bf16"])]
    print(f"fp32 {statistics.median(seconds['fp32']) * 1e3:.1f} ms, bf16 "
          f"{statistics.median(seconds['bf16']) * 1e3:.1f} ms per pass; bf16 / fp32 time "
          f"{statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
