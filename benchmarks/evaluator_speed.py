"""Pixel-accuracy speed: our vectorised AccuracyEvaluator vs the tutorial's literal per-image loop.

Both are timed in this one run, on the same random test-set-sized data (default: 480 images of
512x512, 3 classes, ~10% unknown pixels), and must agree to 1e-12. Printed:

* reference: one-hot float32 labels + float32 probabilities (the only form it understands),
  per image: argmax, np.where, np.delete, sklearn.metrics.accuracy_score;
* ours on the same one-hot/probability arrays (same work, vectorised);
* ours on uint8 index labels + uint8 index predictions (what the streaming evaluation in
  learning/optimizers.py feeds it; the goal is >= 20x here).

Run:  .venv/bin/python benchmarks/evaluator_speed.py [--num-images 480] [--size 512] [--repeats 3]
(about 3.5 GB of RAM at the default size; the reference is timed once, ours best of --repeats).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

try:
    from sklearn.metrics import accuracy_score     # what the tutorial called
except ImportError:
    sys.exit("benchmarks/evaluator_speed.py times the tutorial's loop, which calls scikit-learn's "
             "accuracy_score; the project does not install it: .venv/bin/python -m pip install "
             "scikit-learn")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from learning.evaluators import AccuracyEvaluator  # noqa: E402

IGNORE = 255


def reference_accuracy(one_hot_labels: np.ndarray, scores: np.ndarray) -> float:
    """The tutorial's definition, followed literally (per image, np.delete + accuracy_score)."""
    per_image = []
    for t, p in zip(one_hot_labels, scores):
        unknown = np.where(t[..., 0].reshape(-1) == -1)[0]
        true_cls = np.delete(t.argmax(axis=-1).reshape(-1), unknown)
        pred_cls = np.delete(p.argmax(axis=-1).reshape(-1), unknown)
        per_image.append(accuracy_score(true_cls, pred_cls))
    return sum(per_image) / len(per_image)


def make_data(num_images: int, size: int, num_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=(num_images, size, size), dtype=np.uint8)
    labels[rng.random((num_images, size, size), dtype=np.float32) < 0.1] = IGNORE
    # Predictions right on ~85% of the pixels, as a half-trained model would be.
    preds = labels.copy()
    wrong = (rng.random((num_images, size, size), dtype=np.float32) < 0.15) | (labels == IGNORE)
    preds[wrong] = rng.integers(0, num_classes, size=int(wrong.sum()), dtype=np.uint8)

    one_hot = np.zeros((num_images, size, size, num_classes), dtype=np.float32)
    probs = np.full((num_images, size, size, num_classes), 0.1, dtype=np.float32)
    for c in range(num_classes):
        one_hot[..., c] = labels == c
        probs[..., c] += 0.7 * (preds == c)
    one_hot[labels == IGNORE] = -1.0
    return labels, preds, one_hot, probs


def best_time(fn, repeats: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=480)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labels, preds, one_hot, probs = make_data(args.num_images, args.size, args.num_classes,
                                              args.seed)
    evaluator = AccuracyEvaluator(ignore_label=IGNORE)

    t_ref, ref = best_time(lambda: reference_accuracy(one_hot, probs), 1)
    t_same, same = best_time(lambda: evaluator.score(one_hot, probs), args.repeats)
    t_index, index = best_time(lambda: evaluator.score(labels, preds), args.repeats)
    for name, value in (("one-hot/probs", same), ("index", index)):
        if abs(value - ref) > 1e-12:
            raise SystemExit(f"MISMATCH: ours ({name}) {value!r} vs reference {ref!r}")

    print(f"{args.num_images} images of {args.size}x{args.size}, {args.num_classes} classes; "
          f"accuracy {ref:.6f} (all three agree to 1e-12)")
    print(f"reference (one-hot labels, probabilities), per-image loop: {t_ref:8.3f} s")
    print(f"ours      (one-hot labels, probabilities), vectorised:     {t_same:8.3f} s   "
          f"speed-up x{t_ref / t_same:.1f}")
    print(f"ours      (uint8 index labels, index predictions):         {t_index:8.3f} s   "
          f"speed-up x{t_ref / t_index:.1f}")


if __name__ == "__main__":
    main()
