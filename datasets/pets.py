"""Oxford-IIIT Pet archives -> the tutorial's ``data/catdog`` layout: the command line
(``python -m datasets.pets``).

The archives missing from ``--download-dir`` are downloaded first; then ``prepare_pets`` builds
``<out>/{train,test}/{images,masks}`` and the summary table is printed. One module per job:

- ``datasets/pets_archives.py``: the archives' names, URL and MD5, downloads, the annotations;
- ``datasets/pets_images.py``: ``images.tar.gz`` -> the kept images (the per-image checks);
- ``datasets/pets_prepare.py``: ``prepare_pets``, the splits and the staged output folder;
- ``datasets/pets_report.py``: the skip and re-encoding reasons, ``PrepareReport``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from common.cli import HelpFormatter, add_debug_flag, run
from common.files import check_replaceable
from datasets.decode import MAX_PIXELS
from datasets.download import TerminalProgressBar
from datasets.pets_archives import ANNOTATIONS_ARCHIVE, BASE_URL, IMAGES_ARCHIVE, fetch_archive
from datasets.pets_prepare import REPORT_FILE, SPLITS, WRITER, prepare_pets

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.pets",
        description="Turn the official Oxford-IIIT Pet archives into the tutorial's layout "
                    "<out>/{train,test}/{images/<name>.jpg,masks/<name>.png}. Archives missing "
                    "from --download-dir are downloaded (and MD5-checked) first.",
        formatter_class=HelpFormatter)
    src = parser.add_argument_group("archives")
    src.add_argument("--images-archive", type=Path, default=None,
                     help=f"local {IMAGES_ARCHIVE} (not verified, never downloaded); "
                          f"default: <download-dir>/{IMAGES_ARCHIVE}")
    src.add_argument("--annotations-archive", type=Path, default=None,
                     help=f"local {ANNOTATIONS_ARCHIVE} (not verified, never downloaded); "
                          f"default: <download-dir>/{ANNOTATIONS_ARCHIVE}")
    src.add_argument("--download-dir", type=Path, default=Path("data/downloads"),
                     help="where the archives are, or are downloaded to when missing")
    src.add_argument("--base-url", default=BASE_URL,
                     help="where to download the archives from (a mirror must serve the "
                          "official files, or use --no-verify)")
    src.add_argument("--no-verify", action="store_true",
                     help="skip the MD5 check of the archives in --download-dir (warns)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("data/catdog"), help="output folder")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing output folder written by this command")
    out.add_argument("--split", choices=SPLITS, default="random",
                     help="random: seeded --test-fraction of the kept images; official: "
                          "annotations/trainval.txt and test.txt")
    out.add_argument("--test-fraction", type=float, default=0.1,
                     help="share of kept images in the test set (--split random)")
    out.add_argument("--seed", type=int, default=0, help="seed of the random split")
    out.add_argument("--max-side", type=int, default=600,
                     help="drop images whose larger side is this many pixels or more "
                          "(the tutorial removed 600 and above)")
    out.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                     help="never decode an image with more pixels than this (checked from "
                          "its header)")
    out.add_argument("--jpeg-quality", type=int, default=95,
                     help="quality of the images that must be re-encoded (PNG, grayscale, "
                          "CMYK...); valid JPEGs are copied unchanged")
    out.add_argument("--examples", type=int, default=3,
                     help="example names shown per reason in the summary")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG lists every skipped file with the reason")
    add_debug_flag(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: resolve (download) the archives, prepare, print the summary table.
    Errors are raised (``python -m datasets.pets`` reports them through ``common.cli.run``:
    one line, exit code 2)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    # Before any download: a refused output folder should not cost an 800 MB transfer.
    check_replaceable(args.out, marker=REPORT_FILE, overwrite=args.overwrite, writer=WRITER)
    archives = {}
    for name, given in ((IMAGES_ARCHIVE, args.images_archive),
                        (ANNOTATIONS_ARCHIVE, args.annotations_archive)):
        if given is not None:
            archives[name] = given  # the user's file: used as is
            continue
        bar = TerminalProgressBar(name) if sys.stderr.isatty() else None
        try:
            archives[name] = fetch_archive(name, args.download_dir, base_url=args.base_url,
                                           verify=not args.no_verify, progress=bar)
        finally:
            if bar is not None:
                bar.close()
    report = prepare_pets(
        archives[IMAGES_ARCHIVE], archives[ANNOTATIONS_ARCHIVE], args.out,
        max_side=args.max_side, test_fraction=args.test_fraction, seed=args.seed,
        split=args.split, overwrite=args.overwrite, jpeg_quality=args.jpeg_quality,
        max_pixels=args.max_pixels)
    print(report.summary(examples=args.examples))
    return 0


if __name__ == "__main__":
    run(main)
