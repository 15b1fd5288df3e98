"""The three inference modes (and flip averaging) on photos at the training scale and at 4x it.

A model trained on the demo recipe (`make demo`: synthetic pets of 80-96 px in 96x96 frames)
scores two test sets, each image predicted with a mask of its own size:

* normal: the demo's own test set (`data/synthetic/test`, what make demo scores);
* 4x: a synthetic test set drawn by the same rules (`datasets.synthetic_dataset.generate_pets`) with
  sides of 4x the demo's (320-384 px, another seed), written to --large-data if absent:
  every pet is 4x larger than any the model saw in training.

For each set, every mode (full, resize, tiles at each --tile-overlaps) is run with and without
flip averaging, through test.py's loop (`learning.inference.predict_examples`: decoding
included; scoring after the clock stops). Printed: pixel accuracy (mean over images, as
test.py), mean IoU, boundary F (`learning.evaluators.BoundaryFEvaluator`, default tolerance)
and images/s (median and range over --rounds rounds; each round runs every configuration once, the
order rotating, after one untimed warm-up pass over the first images of each set that traces
the shapes).

Run:  .venv/bin/python benchmarks/scale_modes.py [--model runs/demo] [--rounds 2]
      [--normal-data data/synthetic/test] [--large-data data/synthetic_x4]
      [--tile-overlaps 0.5] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.examples import list_examples  # noqa: E402
from datasets.synthetic_dataset import generate_pets  # noqa: E402
from learning.evaluators import DEFAULT_BOUNDARY_TOLERANCE  # noqa: E402
from learning.inference import TestScores, predict_examples  # noqa: E402
from learning.run_info import read_run_labels  # noqa: E402
from models.inference_options import DEFAULT_MODE, InferenceOptions  # noqa: E402
from models.nn import SegNet  # noqa: E402

# The demo's image sides (Makefile: DEMO_DATA_ARGS --min-size 80 --max-size 96) times 4.
LARGE_SIDES = (320, 384)
WARM_UP_IMAGES = 8


def large_test_set(root: str, num_images: int) -> str:
    """The 4x test set (written once; seed 1, so no image repeats the demo's seed-0 set)."""
    if not os.path.isdir(os.path.join(root, "test")):
        generate_pets(root, num_images=2 * num_images, test_fraction=0.5,
                      min_size=LARGE_SIDES[0], max_size=LARGE_SIDES[1], seed=1)
    return os.path.join(root, "test")


def configurations(overlaps: list[float], batch_size: int) -> list[InferenceOptions]:
    modes = [("full", None), ("resize", None)] + [("tiles", o) for o in overlaps]
    return [InferenceOptions(mode=mode, tta=tta, batch_size=batch_size,
                             **({} if overlap is None else {"tile_overlap": overlap}))
            for mode, overlap in modes for tta in ("none", "flip")]


def label(options: InferenceOptions) -> str:
    text = options.mode + (f" {options.tile_overlap:g}" if options.mode == "tiles" else "")
    return text + (" +flip" if options.tta == "flip" else "")


def run_pass(model, examples, options, label_format):
    """Predictions of every example (timed), then their scores (not timed)."""
    start = time.perf_counter()
    predictions = list(predict_examples(model, examples, options=options, with_labels=True,
                                        label_format=label_format))
    seconds = time.perf_counter() - start
    scores = TestScores(model.num_classes, ignore_label=model.ignore_label)
    for p in predictions:
        scores.update(p.label[None], p.mask[None])
    return len(predictions) / seconds, scores


def measure(model, examples, configs, rounds, label_format):
    """{config label: (scores, [images/s per round])}."""
    for options in configs:                                      # traces every shape
        run_pass(model, examples[:WARM_UP_IMAGES], options, label_format)
    results: dict[str, tuple] = {}
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for options in order:
            speed, scores = run_pass(model, examples, options, label_format)
            results.setdefault(label(options), (scores, []))[1].append(speed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo")
    parser.add_argument("--normal-data", default="data/synthetic/test")
    parser.add_argument("--large-data", default="data/synthetic_x4")
    parser.add_argument("--num-large", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tile-overlaps", type=float, nargs="+", default=[0.5])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    run_labels = read_run_labels(args.model)
    model = SegNet.load(args.model)
    sets = {"normal": args.normal_data,
            "4x": large_test_set(args.large_data, args.num_large)}
    configs = configurations(args.tile_overlaps, args.batch_size)
    print(f"model {args.model} ({model.input_shape[0]}x{model.input_shape[1]} frames), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.rounds} rounds; default mode: {DEFAULT_MODE}")
    print(f"| test set | mode | pixel accuracy | mean IoU | boundary F "
          f"({DEFAULT_BOUNDARY_TOLERANCE} px) | images/s median (range) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, folder in sets.items():
        examples = list_examples(folder, label_format=run_labels.label_format)
        results = measure(model, examples, configs, args.rounds, run_labels.label_format)
        for options in configs:
            scores, speeds = results[label(options)]
            print(f"| {name} ({len(examples)}) | {label(options)} | "
                  f"{scores.accuracy.result():.4f} | {scores.iou.result():.4f} | "
                  f"{scores.boundary.result():.4f} | {statistics.median(speeds):.2f} "
                  f"({min(speeds):.2f}-{max(speeds):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
