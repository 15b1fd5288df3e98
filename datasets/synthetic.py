"""Synthetic pets: an offline stand-in for the Oxford-IIIT Pet data, in exactly its layout: the
command line (``python -m datasets.synthetic``).

Nothing can be downloaded in CI, so the demo, the tests and the benchmarks train on images drawn
here. One module per job:

- ``datasets/synthetic_animals.py``: the animals' silhouettes (``SPECIES``);
- ``datasets/synthetic_render.py``: colours, textures, scenes and masks (``render_pet``,
  ``render_scene``);
- ``datasets/synthetic_dataset.py``: the data set on disk (``generate_pets``: names, splits,
  staged output folder, marker file).

Run ``python -m datasets.synthetic --help`` for the options.
"""
from __future__ import annotations

import argparse

from common.cli import HelpFormatter, add_debug_flag, run
from datasets.synthetic_animals import SPECIES
from datasets.synthetic_dataset import MARKER_FILE, generate_pets

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; errors are raised (``python -m datasets.synthetic`` reports them
    through ``common.cli.run``: one line, exit code 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic",
        description="Write a synthetic cats-vs-dogs data set in the Oxford-IIIT Pet layout.",
        formatter_class=HelpFormatter)
    parser.add_argument("--out", default="data/synthetic", help="output root folder")
    parser.add_argument("--num-images", type=int, default=500, help="labelled images")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of labelled images written to test/")
    parser.add_argument("--min-size", type=int, default=96, help="smallest image side")
    parser.add_argument("--max-size", type=int, default=180, help="largest image side")
    parser.add_argument("--cat-fraction", type=float, default=0.5, help="probability of a cat")
    parser.add_argument("--num-unlabeled", type=int, default=12,
                        help="extra images without masks in unlabeled/ (for draw.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an existing data set written by this command (it holds "
                             f"{MARKER_FILE})")
    parser.add_argument("--num-classes", type=int, default=None, metavar="C",
                        help=f"write multi-class scenes instead of the pets: one or two animals "
                             f"per image from background + the first C-1 of "
                             f"{', '.join(SPECIES)} (C in 2..{len(SPECIES) + 1}), index masks "
                             f"(class indices, 255 on outlines) and classes.json")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    report = generate_pets(args.out, num_images=args.num_images,
                           test_fraction=args.test_fraction, min_size=args.min_size,
                           max_size=args.max_size, cat_fraction=args.cat_fraction,
                           num_unlabeled=args.num_unlabeled, seed=args.seed,
                           overwrite=args.overwrite, num_classes=args.num_classes)
    if report.class_names:
        counts = ", ".join(f"{n} {name}" for name, n in
                           zip(report.class_names[1:], report.objects_per_class[1:]))
        print(f"Synthetic scenes in {report.out_dir}: {report.num_train} train, "
              f"{report.num_test} test, {report.num_unlabeled} unlabeled; "
              f"{len(report.class_names)} classes ({', '.join(report.class_names)}), index "
              f"masks, classes.json in train/ and test/; animals drawn: {counts}")
        return 0
    print(f"Synthetic pets in {report.out_dir}: {report.num_train} train, {report.num_test} test, "
          f"{report.num_unlabeled} unlabeled ({report.num_cats} cats, {report.num_dogs} dogs)")
    return 0


if __name__ == "__main__":
    run(main)
