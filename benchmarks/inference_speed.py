"""Full-resolution inference speed: test.py's and draw.py's pass vs a bare batched predict.

On one folder of synthetic pets of mixed sizes (default: 100 images, sides 72-600 px) and one
GCN with random weights (training size 96x96, as the demo), three ways of predicting every image
at its own size are timed, in interleaved rounds of --chunk images (bare, test, draw on the same
images, the order rotating each round; the folder is gone through --sweeps times) after one
warm-up pass of each that traces every padded shape:

* bare: `model.predict` on the already decoded and padded batches, nothing else: what the
  model alone costs. The batches are the ones the pipeline forms (`plan_batches`), so the same
  images go through the same shapes;
* test: test.py's full-resolution pass (`predict_and_draw` with labels, scoring every image with
  `TestScores`, drawing every image as a JPEG): decoding, scoring and writing included;
* draw: draw.py's pass (`predict_and_draw` without labels, drawings and raw masks).

Printed: images/s of each per round, and the median and range over the rounds of the per-round
ratios test/bare and draw/bare (the target is >= 0.9: the model, not the files, sets the pace);
the same ratios of images per CPU second of this process (all its threads), which other
processes on a shared machine hardly move, and which count the background work in full.

Run:  .venv/bin/python benchmarks/inference_speed.py [--num-images 100] [--chunk 20]
      [--sweeps 3] [--min-size 72] [--max-size 600] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.classes import resolve_class_names  # noqa: E402
from datasets.examples import Example, list_examples  # noqa: E402
from datasets.loading import load_image  # noqa: E402
from datasets.synthetic_dataset import generate_pets  # noqa: E402
from learning.inference import (  # noqa: E402
    TestScores,
    pad_batch,
    plan_batches,
    predict_and_draw,
)
from learning.utils import DEFAULT_COLORS  # noqa: E402
from models.inference_options import InferenceOptions  # noqa: E402
from models.nn import GCN, inference_padding  # noqa: E402


def bare_pass(model, batches) -> None:
    for batch in batches:
        model.predict(batch, batch_size=len(batch), output="mask")


def test_pass(model, examples, out_dir, batch_size) -> None:
    scores = TestScores(model.num_classes, ignore_label=model.ignore_label)
    predict_and_draw(model, examples, out_dir=out_dir, colors=DEFAULT_COLORS,
                     options=InferenceOptions(mode="full", batch_size=batch_size),
                     with_labels=True, on_prediction=scores.add)
    names = resolve_class_names(model.class_names, model.num_classes)
    scores.result("full resolution", names)
    scores.sheet.render(colors=DEFAULT_COLORS, class_names=names)


def draw_pass(model, examples, out_dir, batch_size) -> None:
    predict_and_draw(model, examples, out_dir=out_dir, colors=DEFAULT_COLORS,
                     mask_dir=os.path.join(out_dir, "masks"),
                     options=InferenceOptions(mode="full", batch_size=batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--min-size", type=int, default=72)
    parser.add_argument("--max-size", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=20,
                        help="images per round: short rounds keep the three passes of a round "
                             "close in time on a shared machine")
    parser.add_argument("--sweeps", type=int, default=3,
                        help="times the whole folder is gone through (rounds = sweeps x chunks)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="inference_speed_") as tmp:
        generate_pets(tmp, num_images=args.num_images, test_fraction=0.0,
                      min_size=args.min_size, max_size=args.max_size, seed=0)
        examples = list_examples(os.path.join(tmp, "train"))
        images = [load_image(e.image_path) for e in examples]          # (h, w, 3) each
        model = GCN((96, 96, 3), 3, pretrain="none")
        chunks = []
        for start in range(0, len(examples), args.chunk):
            chunk = examples[start:start + args.chunk]
            chunk_images = images[start:start + args.chunk]
            # The batches the pipeline forms for this chunk, padded once, outside the clock.
            plan = plan_batches([image.shape[:2] for image in chunk_images], args.batch_size)
            batches = [pad_batch([chunk_images[i] for i in group])[0] for group in plan]
            unlabelled = [Example(e.name, e.image_path) for e in chunk]   # no masks
            chunks.append({
                "bare": functools.partial(bare_pass, model, batches),
                "test": functools.partial(test_pass, model, chunk,
                                          os.path.join(tmp, "test_out"), args.batch_size),
                "draw": functools.partial(draw_pass, model, unlabelled,
                                          os.path.join(tmp, "draw_out"), args.batch_size),
                "size": len(chunk), "batches": len(batches),
            })
        padded = sum(inference_padding(*image.shape[:2])[0] * inference_padding(
            *image.shape[:2])[1] for image in images)
        print(f"{len(images)} images of {args.min_size}-{args.max_size} px in "
              f"{sum(c['batches'] for c in chunks)} batches (at most {args.batch_size} of one "
              f"padded size), {padded / len(images) / 1e3:.0f} k padded pixels per image on "
              f"average; rounds of {args.chunk} images")

        names = ("bare", "test", "draw")
        for chunk in chunks:              # warm-up: trace every shape, fill the caches
            for name in names:
                chunk[name]()
        rate = {name: [] for name in names}       # images per wall-clock second
        cpu_rate = {name: [] for name in names}   # images per CPU second of this process
        for round_index in range(args.sweeps * len(chunks)):
            chunk = chunks[round_index % len(chunks)]
            order = names[round_index % 3:] + names[:round_index % 3]
            for name in order:
                wall, cpu = time.perf_counter(), time.process_time()
                chunk[name]()
                rate[name].append(chunk["size"] / (time.perf_counter() - wall))
                cpu_rate[name].append(chunk["size"] / (time.process_time() - cpu))
            print(f"round {round_index + 1}: " + ", ".join(
                f"{name} {rate[name][-1]:.2f} images/s ({cpu_rate[name][-1]:.2f} per CPU s)"
                for name in names), flush=True)

    print()
    print("Wall-clock images/s decides (what a user waits for); images per CPU second of this "
          "process\ncounts the decoding and drawing threads in full, as if nothing overlapped, "
          "and is\nhardly moved by other processes on the machine.\n")
    print("| pass | images/s (median) | ratio to bare: median (range) | per CPU s: ratio median "
          "(range) |")
    print("| --- | --- | --- | --- |")
    print(f"| bare batched predict | {statistics.median(rate['bare']):.2f} | 1 | 1 |")
    for name, label in (("test", "test.py full-resolution pass"), ("draw", "draw.py pass")):
        ratios = [r / b for r, b in zip(rate[name], rate["bare"])]
        cpu = [r / b for r, b in zip(cpu_rate[name], cpu_rate["bare"])]
        print(f"| {label} | {statistics.median(rate[name]):.2f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | "
              f"{statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f}) |")


if __name__ == "__main__":
    main()
