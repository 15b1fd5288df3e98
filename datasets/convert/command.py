"""The command line of ``python -m datasets.convert``: parse, convert, print the report.

    python -m datasets.convert coco instances.json --images photos/ --out data/mine
    python -m datasets.convert labelme labelme_folder/ --out data/mine
    python -m datasets.convert cvat annotations.xml --images images/ --out data/mine

Errors are raised and reported by ``common.cli.run`` (one line, exit code 2; 4 when every
image was skipped).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from common.cli import HelpFormatter, add_debug_flag
from datasets.classes import parse_class_names
from datasets.convert.build import DEFAULT_LINE_WIDTH, FORMATS, MARKER_FILE, convert_dataset
from datasets.decode import MAX_PIXELS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.convert",
        description="Turn a labelling tool's export (COCO instances JSON, a folder of LabelMe "
                    "JSON files, CVAT for images 1.1 XML) into a data folder: images/ (copied "
                    "unchanged), masks/ (index PNGs: class index, 255 = ignore) and "
                    "classes.json. Later shapes are drawn over earlier ones (CVAT: higher "
                    "z_order on top); a pixel belongs to a shape when its centre lies inside. "
                    "See docs/labelling-tools.md.",
        formatter_class=HelpFormatter)
    parser.add_argument("format", choices=FORMATS, help="the export's format")
    parser.add_argument("source", type=Path,
                        help="the COCO .json file, the LabelMe folder (or one .json), or the "
                             "CVAT .xml file")
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of the annotated images (needed for coco and cvat; for "
                             "labelme, where to look when imagePath does not lead to the image)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the data folder to write (built aside, then moved into place)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an --out written by this command (it holds "
                             f"{MARKER_FILE})")
    classes = parser.add_argument_group("classes")
    classes.add_argument("--classes", default=None,
                         help="the classes in label order, class 0 first, e.g. "
                              "background,cat,dog (default: background, then the tool's "
                              "labels: COCO category-id order, the CVAT label list, LabelMe "
                              "names sorted); shapes of other labels are skipped")
    classes.add_argument("--background", default=None, metavar="NAME",
                         help="name of class 0 (default: background); shapes with this label "
                              "draw class 0")
    classes.add_argument("--ignore-label", action="append", default=[], metavar="NAME",
                         help="shapes with this label draw 255 (ignored by the loss and the "
                              "scores); repeat for several")
    classes.add_argument("--crowd-as-class", action="store_true",
                         help="COCO: draw iscrowd regions as their category (default: 255, "
                              "ignored)")
    drawing = parser.add_argument_group("drawing")
    drawing.add_argument("--line-width", type=float, default=DEFAULT_LINE_WIDTH,
                         help="width in pixels of LabelMe lines and CVAT polylines")
    drawing.add_argument("--skip-empty", action="store_true",
                         help="leave out images whose mask would be all background (default: "
                              "keep them as all-background examples)")
    drawing.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                         help="skip images with more pixels than this (from their header)")
    parser.add_argument("--examples", type=int, default=3,
                        help="example names shown per skip reason in the report")
    parser.add_argument("--log-level", default="WARNING",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG lists every skipped image and shape with the reason")
    add_debug_flag(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    report = convert_dataset(
        args.format, args.source, args.out, images_dir=args.images,
        classes=None if args.classes is None else parse_class_names(args.classes),
        background=args.background, ignore_labels=args.ignore_label,
        line_width=args.line_width, crowd_as_class=args.crowd_as_class,
        skip_empty=args.skip_empty, overwrite=args.overwrite,
        max_pixels=args.max_pixels or None)
    print(report.summary(examples=args.examples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
