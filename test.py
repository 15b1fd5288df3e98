"""Score a trained model on a labelled folder and draw its predictions (the tutorial's test.py).

    python test.py --data data/catdog/test --model runs/<name>

1. Load the model saved by train.py (its size, classes and how its masks were read - the label
   format, the palette - come from the run folder: learning/run_info.py).
2. Score it the original's way: every image cropped/padded to the training size, pixel
   accuracy = mean over images of the share of correct non-unknown pixels (the tutorial
   reports 0.9556 this way), plus mean IoU, per-class IoU, the confusion matrix and the
   boundary F-score (outlines within a few pixels; learning/evaluators.py).
3. Predict every image again with a mask of its own full size, in --mode full, resize or tiles
   (docs/inference.md; --tta flip averages with the mirror image; images of equal frame size
   share a batch, files are decoded ahead and drawings written behind in background threads:
   learning/inference.py), score that too, with its speed, and draw the predicted mask over
   the image into <data>/draws/ (or --out), one file per image, named like the image.
   --save-masks also writes the raw class-index masks as PNG.
4. Write one summary sheet, <out>/summary_sheet.png: the best and the worst images by pixel
   accuracy, prediction next to the truth, with their scores.
5. Write everything measured to <out>/metrics.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from typing import Sequence

from common.cli import HelpFormatter, add_debug_flag, quiet_tensorflow, run, setup_logging
from datasets.decode import MAX_PIXELS
from models.inference_options import add_inference_options, inference_options

logger = logging.getLogger("test")

# The summary sheet of the full-resolution pass: its best and worst images by pixel accuracy.
SHEET_NAME = "summary_sheet.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score a trained GCN on a labelled folder (images/ + masks/) and draw its "
                    "predicted masks.",
        formatter_class=HelpFormatter)
    parser.add_argument("--data", default="data/catdog/test",
                        help="labelled folder with images/ and masks/")
    parser.add_argument("--model", required=True,
                        help="run folder written by train.py (holds model_config.json and "
                             "best_model.keras)")
    parser.add_argument("--out", default=None,
                        help="where drawings and metrics.json go (default: <data>/draws)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images (in --mode tiles: windows of one large image) per forward "
                             "pass")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="opacity of the mask colour over the image")
    parser.add_argument("--save-masks", action="store_true",
                        help="also write raw class-index masks to <out>/masks/<name>.png")
    parser.add_argument("--no-draw", action="store_true",
                        help="only score (skips the full-resolution pass and the drawings)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="skip (and count) images with more pixels than this, read from "
                             "their header before decoding")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    add_inference_options(parser)
    add_debug_flag(parser)
    return parser


def format_confusion(matrix, names: Sequence[str]) -> str:
    """Rows: truth, columns: prediction, in pixels."""
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["truth \\ predicted".ljust(width) + "".join(n.rjust(width) for n in names)]
    for name, row in zip(names, matrix):
        lines.append(name.ljust(width) + "".join(f"{int(v):>{width}d}" for v in row))
    return "\n".join(lines)


def boundary_line(result: dict) -> str:
    return (f"Boundary F (within {result['boundary_tolerance_px']} px): "
            f"{result['boundary_f']:.4f}   per class: "
            + ", ".join(f"{n} {v:.4f}" for n, v in result["per_class_boundary_f"].items()))


def full_resolution_pass(model, examples, args: argparse.Namespace, options, run_labels, *,
                         out_dir: str, mask_dir: str | None) -> tuple[dict, str | None]:
    """Predict, score and draw every example with a mask of its own size (`options`: the
    mode); the drawings are written in the background while the model runs. Returns the
    scores (with the options and images/s) and the summary sheet's path (None: no sheet)."""
    from common.files import atomic_write_bytes
    from learning.inference import TestScores, predict_and_draw
    from learning.previews import encode_png

    names = list(run_labels.class_names)
    full = TestScores(model.num_classes, ignore_label=model.ignore_label)
    start = time.time()
    predict_and_draw(model, examples, out_dir=out_dir, colors=run_labels.colors,
                     class_names=names, legend=run_labels.legend, alpha=args.alpha,
                     mask_dir=mask_dir, options=options, with_labels=True,
                     label_format=run_labels.label_format, max_pixels=args.max_pixels,
                     on_prediction=full.add)
    seconds = time.time() - start
    result = full.result(f"a mask of each image's own size, --mode {options.mode}"
                         + (", flip averaged" if options.tta == "flip" else ""), names)
    result.update(inference=dataclasses.asdict(options),
                  images_per_second=round(len(examples) / max(seconds, 1e-9), 2))
    picture = full.sheet.render(colors=run_labels.colors, class_names=names, alpha=args.alpha,
                                title="best and worst test images by pixel accuracy")
    if picture is None:
        return result, None
    sheet_path = os.path.join(out_dir, SHEET_NAME)
    atomic_write_bytes(sheet_path, encode_png(picture))
    return result, sheet_path


def print_report(metrics: dict, model_text: str, *, out_dir: str, mask_dir: str | None,
                 sheet_path: str | None, metrics_path: str) -> None:
    """What test.py measured (`metrics`, as written to metrics.json), for a reader."""
    size, names = metrics["image_size"], metrics["class_names"]
    result = metrics["frame"]
    print(f"Test set {metrics['data']}: {metrics['num_images']} images, model "
          f"{metrics['model']} ({model_text}, {size[0]}x{size[1]})")
    print(f"Pixel accuracy (original protocol, {size[0]}x{size[1]} frames): "
          f"{result['pixel_accuracy']:.4f}   [the tutorial reports 0.9556 on Oxford pets]")
    print(f"Mean IoU: {result['mean_iou']:.4f}   per class: " + ", ".join(
        f"{n} {v:.4f}" for n, v in result["per_class_iou"].items()))
    print(boundary_line(result))
    print("Confusion matrix (pixels, rows: truth, columns: prediction):")
    print(format_confusion(result["confusion_matrix"], names))
    if "full_resolution" in metrics:
        full_result = metrics["full_resolution"]
        options = full_result["inference"]
        print(f"At full resolution (--mode {options['mode']}, --tta {options['tta']}): pixel "
              f"accuracy {full_result['pixel_accuracy']:.4f}, mean IoU "
              f"{full_result['mean_iou']:.4f}, boundary F {full_result['boundary_f']:.4f}; "
              f"{full_result['images_per_second']:.2f} images/s (with the drawings)")
        print("  " + boundary_line(full_result))
        print(f"Drawings: {out_dir}/<image name> ({metrics['num_images']} images)"
              + (f", raw masks: {mask_dir}/" if mask_dir else ""))
        if sheet_path:
            print(f"Best and worst images: {sheet_path}")
    print(f"Metrics: {metrics_path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = inference_options(args)   # a ConfigError names every bad option
    setup_logging(verbose=not args.quiet)
    # The input checks first: they need no TensorFlow, so a refusal takes a second, not ten.
    from common.files import check_output_dir, check_writable_dir
    from datasets.examples import IMAGES_DIR, MASKS_DIR, list_examples
    from datasets.label_format import check_model_classes
    from datasets.loading import load_examples
    from datasets.split import split_leakage
    from learning.run_info import read_run_labels

    start = time.time()
    # --out on the data would overwrite it: drawings are named like the images.
    out_dir = args.out or os.path.join(args.data, "draws")
    check_output_dir(out_dir, [os.path.join(args.data, IMAGES_DIR),
                               os.path.join(args.data, MASKS_DIR)], subfolders=("masks",))
    run_labels = read_run_labels(args.model)   # label format, class names, colours of the run
    examples = list_examples(args.data, label_format=run_labels.label_format)
    leaked = split_leakage([e.name for e in examples], args.model)
    if leaked:
        logger.warning("%d of the %d test images were used for training or validation by %s "
                       "(its split.json), e.g. %s: the scores overstate the model", len(leaked),
                       len(examples), args.model, ", ".join(leaked[:5]))
    check_writable_dir(out_dir)

    # Heavy imports after the checks, so --help, usage errors and refusals are instant.
    quiet_tensorflow()
    from common.files import atomic_write_json
    from learning.inference import TestScores
    from models.nn import SegNet

    model = SegNet.load(args.model)
    check_model_classes(model.num_classes, model=args.model, data=args.data,
                        label_format=run_labels.label_format)
    size = model.input_shape[:2]
    names = list(run_labels.class_names)

    # 1. The original's protocol: crop/pad every image to the training size.
    images, labels, kept = load_examples(examples, size, where=args.data,
                                         max_pixels=args.max_pixels,
                                         label_format=run_labels.label_format)
    frame = TestScores(model.num_classes, ignore_label=model.ignore_label)
    frame.update(labels, model.predict(images, batch_size=args.batch_size, output="mask"))
    metrics = {
        "data": args.data,
        "model": args.model,
        "num_images": len(kept),
        "image_size": list(size),
        "class_names": names,
        "frame": frame.result(f"images cropped/padded to {size[0]}x{size[1]} as in training "
                              f"(the original's test protocol)", names),
    }
    del images, labels  # the full-resolution pass needs their memory

    # 2. Full resolution: a mask of every image's own size, in --mode.
    sheet_path = mask_dir = None
    if not args.no_draw:
        by_name = {e.name: e for e in examples}
        mask_dir = os.path.join(out_dir, "masks") if args.save_masks else None
        metrics["full_resolution"], sheet_path = full_resolution_pass(
            model, [by_name[name] for name in kept], args, options, run_labels,
            out_dir=out_dir, mask_dir=mask_dir)
    metrics["seconds"] = round(time.time() - start, 1)

    metrics_path = os.path.join(out_dir, "metrics.json")
    atomic_write_json(metrics_path, metrics)

    print_report(metrics, f"{type(model).__name__}, {model.num_classes} classes",
                 out_dir=out_dir, mask_dir=mask_dir, sheet_path=sheet_path,
                 metrics_path=metrics_path)
    return 0


if __name__ == "__main__":
    run(main)
