"""Full-resolution inference speed: test.py's and draw.py's pass vs a bare batched predict.

On one folder of synthetic pets of mixed sizes (default: 100 images, sides 72-600 px) and one
GCN with random weights (training size 96x96, as the demo), three ways of predicting every image
at its own size are timed, in interleaved rounds (bare, test, draw, then again; the order
rotates each round) after one warm-up pass of each that traces every padded shape:

* bare: `model.predict` on the already decoded and padded batches, nothing else: what the
  model alone costs. The batches are the ones the pipeline forms (`plan_batches`), so the same
  images go through the same shapes;
* test: test.py's full-resolution pass (`predict_and_draw` with labels, scoring every image with
  `TestScores`, drawing every image as a JPEG): decoding, scoring and writing included;
* draw: draw.py's pass (`predict_and_draw` without labels, drawings and raw masks).

Printed: images/s of each per round, and the median and range over the rounds of the per-round
ratios test/bare and draw/bare (the target is >= 0.9: the model, not the files, sets the pace).

Run:  .venv/bin/python benchmarks/inference_speed.py [--num-images 100] [--rounds 4]
      [--min-size 72] [--max-size 600] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.data import list_examples, load_image  # noqa: E402
from datasets.synthetic import generate_pets  # noqa: E402
from learning.inference import (  # noqa: E402
    TestScores,
    class_names_for,
    pad_batch,
    plan_batches,
    predict_and_draw,
)
from learning.utils import DEFAULT_COLORS  # noqa: E402
from models.nn import GCN  # noqa: E402


def bare_pass(model, batches) -> None:
    for batch in batches:
        model.predict(batch, batch_size=len(batch), output="mask")


def test_pass(model, examples, out_dir, batch_size) -> None:
    scores = TestScores(model.num_classes, ignore_label=model.ignore_label)
    predict_and_draw(model, examples, out_dir=out_dir, colors=DEFAULT_COLORS,
                     batch_size=batch_size, with_labels=True, on_prediction=scores.add)
    scores.result("full resolution", class_names_for(model.num_classes))
    scores.sheet.render(colors=DEFAULT_COLORS, class_names=class_names_for(model.num_classes))


def draw_pass(model, examples, out_dir, batch_size) -> None:
    predict_and_draw(model, examples, out_dir=out_dir, colors=DEFAULT_COLORS,
                     mask_dir=os.path.join(out_dir, "masks"), batch_size=batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--min-size", type=int, default=72)
    parser.add_argument("--max-size", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="inference_speed_") as tmp:
        generate_pets(tmp, num_images=args.num_images, test_fraction=0.0,
                      min_size=args.min_size, max_size=args.max_size, seed=0)
        examples = list_examples(os.path.join(tmp, "train"))
        images = [load_image(e.image_path) for e in examples]          # (h, w, 3) each
        plan = plan_batches([image.shape[:2] for image in images], args.batch_size)
        batches = [pad_batch([images[i] for i in group])[0] for group in plan]
        pixels = sum(b.shape[0] * b.shape[1] * b.shape[2] for b in batches)
        print(f"{len(images)} images of {args.min_size}-{args.max_size} px, "
              f"{len(batches)} batches (at most {args.batch_size} of one padded size), "
              f"{pixels / len(images) / 1e3:.0f} k padded pixels per image on average")
        model = GCN((96, 96, 3), 3, pretrain="none")
        unlabelled = [e.__class__(e.name, e.image_path) for e in examples]   # no masks

        passes = {
            "bare": lambda: bare_pass(model, batches),
            "test": lambda: test_pass(model, examples, os.path.join(tmp, "test_out"),
                                      args.batch_size),
            "draw": lambda: draw_pass(model, unlabelled, os.path.join(tmp, "draw_out"),
                                      args.batch_size),
        }
        for run in passes.values():       # warm-up: trace every shape, fill the caches
            run()
        names = list(passes)
        rate = {name: [] for name in names}
        for round_index in range(args.rounds):
            order = names[round_index % 3:] + names[:round_index % 3]
            for name in order:
                start = time.perf_counter()
                passes[name]()
                rate[name].append(len(images) / (time.perf_counter() - start))
            print(f"round {round_index + 1}: " + ", ".join(
                f"{name} {rate[name][-1]:.2f} images/s" for name in names))

    print()
    print("| pass | images/s (median) | ratio to bare (median) | ratio range |")
    print("| --- | --- | --- | --- |")
    print(f"| bare batched predict | {statistics.median(rate['bare']):.2f} | 1 | |")
    for name, label in (("test", "test.py full-resolution pass"), ("draw", "draw.py pass")):
        ratios = [r / b for r, b in zip(rate[name], rate["bare"])]
        print(f"| {label} | {statistics.median(rate[name]):.2f} | "
              f"{statistics.median(ratios):.3f} | {min(ratios):.3f}-{max(ratios):.3f} |")


if __name__ == "__main__":
    main()
