"""Draw a trained model's predicted masks over a folder of unlabelled images.

    python draw.py --images <folder> --model runs/<name> --out <folder>

Every .jpg/.jpeg/.png in the folder (any case of the extension; or in its images/ subfolder)
is predicted at its own resolution and written to --out under its own name, with the mask drawn
over it; the raw class-index masks go to <out>/masks/<stem>.png (0 background, 1 cat, 2 dog).
A file that cannot be decoded is skipped with a warning and counted; it never stops the batch.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from learning.cli import HelpFormatter, quiet_tensorflow, run, setup_logging

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Predict and draw cat/dog masks over every image of a folder.",
        formatter_class=HelpFormatter)
    parser.add_argument("--images", required=True,
                        help="folder of .jpg/.jpeg/.png images (or one with an images/ subfolder)")
    parser.add_argument("--model", required=True, help="run folder written by train.py")
    parser.add_argument("--out", default=None, help="output folder (default: <images>/draws)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass (images of equal padded size share one)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="opacity of the mask colour over the image")
    parser.add_argument("--no-masks", action="store_true",
                        help="do not write the raw class-index masks")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    quiet_tensorflow()
    setup_logging(verbose=not args.quiet)
    # Heavy imports after argument parsing, so --help and usage errors are instant.
    from datasets.data import list_examples
    from learning.inference import load_model, predict_and_draw

    examples = list_examples(args.images, no_label=True)
    loaded = load_model(args.model)
    out_dir = args.out or os.path.join(args.images, "draws")
    mask_dir = None if args.no_masks else os.path.join(out_dir, "masks")

    # Decoding runs ahead and drawings are written behind, in background threads, while the
    # model predicts batches of images that share a padded size.
    result = predict_and_draw(loaded.model, examples, out_dir=out_dir, colors=loaded.colors,
                              alpha=args.alpha, mask_dir=mask_dir, batch_size=args.batch_size)

    print(f"Drew {result.num_drawn} of {len(examples)} images from {args.images} into {out_dir}/"
          + (f" (raw masks in {mask_dir}/)" if mask_dir else ""))
    if result.skipped:
        print(f"Skipped {len(result.skipped)} unreadable file(s): "
              + ", ".join(name for name, _ in result.skipped))
    return 0 if result.num_drawn else 1


if __name__ == "__main__":
    run(main)
