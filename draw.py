"""Draw a trained model's predicted masks over a folder of unlabelled images.

    python draw.py --images <folder> --model runs/<name> --out <folder>

Every .jpg/.jpeg/.png in the folder (any case of the extension; or in its images/ subfolder)
is predicted at its own resolution and written to --out under its own name, with the mask drawn
over it, in a colour per class (with a legend unless the classes are background/cat/dog); the
raw class-index masks go to <out>/masks/<stem>.png (e.g. 0 background, 1 cat, 2 dog).
A file that cannot be decoded is skipped with a warning and counted; it never stops the batch.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Sequence

from common.cli import HelpFormatter, add_debug_flag, quiet_tensorflow, run, setup_logging
from common.errors import EXIT_NO_RESULT, EXIT_OK
from datasets.decode import MAX_PIXELS
from models.inference_options import add_inference_options, inference_options

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Predict and draw cat/dog masks over every image of a folder.",
        formatter_class=HelpFormatter)
    parser.add_argument("--images", required=True,
                        help="folder of .jpg/.jpeg/.png images (or one with an images/ subfolder)")
    parser.add_argument("--model", required=True, help="run folder written by train.py")
    parser.add_argument("--out", default=None, help="output folder (default: <images>/draws)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass (images of equal frame size share one; "
                             "in --mode tiles: windows of one large image)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="opacity of the mask colour over the image")
    parser.add_argument("--no-masks", action="store_true",
                        help="do not write the raw class-index masks")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="skip (and count) images with more pixels than this, read from "
                             "their header before decoding")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    add_inference_options(parser)
    add_debug_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = inference_options(args)   # a ConfigError names every bad option
    setup_logging(verbose=not args.quiet)
    # The input checks first: they need no TensorFlow, so a refusal takes a second, not ten.
    from common.files import check_output_dir, check_writable_dir
    from datasets.examples import IMAGES_DIR, check_unique_stems, list_examples
    from learning.run_info import read_run_labels

    examples = list_examples(args.images, no_label=True)
    out_dir = args.out or os.path.join(args.images, "draws")
    mask_dir = None if args.no_masks else os.path.join(out_dir, "masks")
    # Drawings are named like the images, so --out must not be their folder; a subfolder of a
    # plain folder of photos is fine (folders are listed without recursion: never read back).
    plain_folder = not os.path.isdir(os.path.join(args.images, IMAGES_DIR))
    check_output_dir(out_dir, [os.path.dirname(examples[0].image_path)],
                     subfolders=("masks",) if mask_dir else (), nested_ok=plain_folder)
    if mask_dir:
        check_unique_stems([e.name for e in examples], where=args.images,
                           consequence="would write the same masks/<stem>.png")
    check_writable_dir(out_dir)
    run_labels = read_run_labels(args.model)   # class names and colours of the run

    # Heavy imports after the checks, so --help, usage errors and refusals are instant.
    quiet_tensorflow()
    from learning.inference import predict_and_draw
    from models.nn import SegNet

    model = SegNet.load(args.model)
    start = time.time()
    # Decoding runs ahead and drawings are written behind, in background threads, while the
    # model predicts batches of images that share a frame size (learning/inference.py).
    result = predict_and_draw(model, examples, out_dir=out_dir, colors=run_labels.colors,
                              class_names=run_labels.class_names, legend=run_labels.legend,
                              alpha=args.alpha, mask_dir=mask_dir, options=options,
                              max_pixels=args.max_pixels)
    seconds = time.time() - start

    drawn = result.num_drawn
    print(f"Drew {drawn} of {len(examples)} images from {args.images} into {out_dir}/"
          + (f" (raw masks in {mask_dir}/)" if mask_dir else ""))
    speed = result.num_predicted / max(seconds, 1e-9)
    print(f"--mode {options.mode}, --tta {options.tta}: {speed:.2f} images/s ({seconds:.1f} s, "
          f"with the drawings)")
    if result.skipped:
        print(f"Skipped {len(result.skipped)} unreadable file(s): "
              + ", ".join(name for name, _ in result.skipped))
    return EXIT_OK if drawn else EXIT_NO_RESULT


if __name__ == "__main__":
    run(main)
