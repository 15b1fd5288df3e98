"""What a labelled folder holds, before training on it: ``python -m datasets.check <folder>``.

The most common complaint about segmentation training is a model that predicts only
background. The usual cause is a label encoding the user did not expect (masks saved as 0/255,
colours read as indices, a class count that does not match), and it shows in the numbers long
before any training: this check prints them.

    python -m datasets.check data/voc/train --palette datasets/palettes/voc.json --image-size 512

It reports:

* the label format (given, or what ``auto`` decided and why) and the classes;
* the raw mask values found (pixel counts per value; per colour for palette masks);
* a per-class pixel histogram at full resolution (``datasets.statistics.LabelHistogram``):
  pixels, share of the labelled pixels, images containing the class, and the ignored share;
* the image sizes (from the file headers) against ``--image-size``: how many are cropped,
  padded (with background), or both;
* every image/mask pair with a problem (unreadable file, a mask of another size, values or a
  layout that do not fit the format), one line each; the check goes on past them;
* loud warnings: a class without pixels, every labelled pixel background, mostly ignored pixels.

train.py runs it at its start on a sample of the training masks (``TRAIN_SAMPLE``, spread
evenly over the sorted names) and logs a short summary and the warnings. The sample is stated;
``--sample N`` does the same here (default: every pair).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections import Counter
from typing import Any, Sequence

import numpy as np

from common.cli import HelpFormatter, add_debug_flag, run, setup_logging, size_argument
from common.errors import ConfigError
from datasets.classes import parse_class_names
from datasets.decode import MAX_PIXELS, UnreadableFileError, read_image_header
from datasets.examples import Example, list_examples
from datasets.label_format import resolve_label_format
from datasets.labels import (LABEL_FORMATS, DataFormatError, LabelFormat, detect_label_format,
                             mask_to_label)
from datasets.loading import read_example_mask
from datasets.oxford import breed_of
from datasets.statistics import LabelHistogram

__all__ = ["TRAIN_SAMPLE", "MOSTLY_IGNORED", "CheckReport", "sample_examples", "check_examples",
           "check_folder", "main"]

logger = logging.getLogger(__name__)

# Masks train.py checks at its start (spread over the training split); a few seconds at most.
TRAIN_SAMPLE = 200
# A warning when at least this share of all mask pixels is ignored.
MOSTLY_IGNORED = 0.5
# Raw values / colours listed in the report (the most frequent ones).
_SHOWN_VALUES = 12


def sample_examples(examples: Sequence[Example], sample: int | None) -> list[Example]:
    """``sample`` examples spread evenly over the list (all when ``sample`` is None or not
    smaller): sorted names group classes (Oxford's capitalised cat breeds come first), so the
    first ones alone would miss classes."""
    if sample is None or sample >= len(examples):
        return list(examples)
    if sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {sample}")
    indices = np.unique(np.linspace(0, len(examples) - 1, int(sample)).round().astype(int))
    return [examples[i] for i in indices]


@dataclasses.dataclass
class CheckReport:
    """The numbers of a data check (``check_examples``); ``lines()`` prints them."""

    where: str
    label_format: LabelFormat
    decided: str                        # why this format: "--label-format index" or auto's reason
    num_examples: int                   # pairs listed
    checked: int                        # pairs looked at (the sample)
    histogram: LabelHistogram           # labels at full resolution
    values: Counter                     # raw mask value (int, or RGB tuple) -> pixels
    sizes: list[tuple[int, int]]        # (h, w) of each checked image, from its header
    image_size: tuple[int, int] | None
    problems: list[tuple[str, str]]     # (image name, what is wrong)
    names_by_letter: int = 0            # trimaps: names classed by their first letter only

    def size_counts(self) -> dict[str, int]:
        """How the checked images fit ``image_size``: exact, cropped (a side larger, none
        smaller), padded (a side smaller, none larger), both."""
        counts = {"exact": 0, "cropped": 0, "padded": 0, "both": 0}
        if self.image_size is None:
            return counts
        height, width = self.image_size
        for h, w in self.sizes:
            larger, smaller = h > height or w > width, h < height or w < width
            counts["both" if larger and smaller else "cropped" if larger
                   else "padded" if smaller else "exact"] += 1
        return counts

    def warnings(self) -> list[str]:
        """What is likely to make training fail or mislead (empty when all looks right)."""
        out = []
        hist, names = self.histogram, self.label_format.class_names
        labelled = int(hist.pixels.sum())
        sampled = (f"the {self.checked} checked masks" if self.checked == self.num_examples
                   else f"the {self.checked} sampled masks (of {self.num_examples})")
        if hist.num_images and labelled == 0:
            out.append(f"no labelled pixel in {sampled}: every pixel is ignored; check "
                       f"--label-format and the mask values")
        elif hist.num_images and labelled == int(hist.pixels[0]):
            out.append(f"EVERY labelled pixel of {sampled} is class 0 ({names[0]}): a model "
                       f"trained on this predicts only background. The masks were read as "
                       f"{self.label_format.kind} masks with the values "
                       f"{self._values_text(6)}; check --label-format, --palette and "
                       f"--classes (masks saved as 0/255 need their object value to be a class "
                       f"index)")
        else:
            absent = [f"{i} {name}" for i, name in enumerate(names) if hist.pixels[i] == 0]
            if absent:
                out.append(f"class(es) {', '.join(absent)} have no pixel in {sampled}: the model "
                           f"cannot learn them; check --classes / --num-classes and the mask "
                           f"values")
        if hist.total_pixels and hist.ignored_pixels / hist.total_pixels >= MOSTLY_IGNORED:
            out.append(f"{100 * hist.ignored_pixels / hist.total_pixels:.0f}% of the mask pixels "
                       f"are ignored (value 255 or an ignore colour): check the mask format")
        if self.problems:
            out.append(f"{len(self.problems)} of the {self.checked} checked pairs have problems "
                       f"(e.g. {self.problems[0][0]}: {self.problems[0][1]})")
        return out

    def _values_text(self, limit: int = _SHOWN_VALUES) -> str:
        total = sum(self.values.values()) or 1
        shown = [f"{list(v) if isinstance(v, tuple) else v} ({100 * n / total:.1f}%)"
                 for v, n in sorted(self.values.items(), key=lambda item: -item[1])[:limit]]
        more = len(self.values) - limit
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "") if shown else "none"

    def _sizes_text(self) -> str:
        if not self.sizes:
            return "no readable image"
        heights, widths = zip(*self.sizes)
        common = [f"{h}x{w} ({n})" for (h, w), n in Counter(self.sizes).most_common(3) if n > 1]
        text = (f"{len(set(self.sizes))} different, height {min(heights)}-{max(heights)}, width "
                f"{min(widths)}-{max(widths)}"
                + (f"; most common {', '.join(common)}" if common else ""))
        if self.image_size is not None:
            counts = self.size_counts()
            text += (f"; at {self.image_size[0]}x{self.image_size[1]}: {counts['exact']} exact, "
                     f"{counts['cropped']} cropped, {counts['padded']} padded with background, "
                     f"{counts['both']} cropped and padded")
        return text

    def lines(self, *, short: bool = False) -> list[str]:
        """The report, one string per line; ``short``: format, class shares and sizes only
        (train.py's log)."""
        hist, names = self.histogram, self.label_format.class_names
        checked = ("all of them" if self.checked == self.num_examples else
                   f"a sample of {self.checked} spread over the sorted names")
        labelled = int(hist.pixels.sum())
        shares = hist.shares()
        total = hist.total_pixels or 1
        head = [f"data check of {self.where}: {self.num_examples} image/mask pairs, checked "
                f"{checked}",
                f"label format: {self.label_format.describe()} [{self.decided}]"]
        if short:
            classes = ", ".join(f"{name} {100 * share:.1f}%" for name, share in zip(names, shares))
            return head + [f"class pixel shares: {classes}; ignored "
                           f"{100 * hist.ignored_pixels / total:.1f}% of all pixels",
                           f"image sizes: {self._sizes_text()}"]
        width = max(len(name) for name in names)
        rows = [f"  {i:>3} {name:<{width}} {int(hist.pixels[i]):>14,d} px "
                f"{100 * shares[i]:6.2f}%  in {int(hist.images[i])} of {hist.num_images} masks"
                for i, name in enumerate(names)]
        lines = head + [f"mask values found (share of pixels): {self._values_text()}",
                        f"classes (pixels at full resolution; shares of the {labelled:,d} "
                        f"labelled pixels):", *rows,
                        f"ignored pixels: {hist.ignored_pixels:,d} "
                        f"({100 * hist.ignored_pixels / total:.2f}% of all "
                        f"{hist.total_pixels:,d})",
                        f"image sizes (HxW): {self._sizes_text()}"]
        if self.names_by_letter:
            lines.append(f"names: {self.names_by_letter} of the {self.checked} checked names are "
                         f"not <Oxford breed>_<number>; their animal is cat or dog by the first "
                         f"letter only")
        if self.problems:
            lines.append(f"pairs with problems ({len(self.problems)}):")
            lines += [f"  {name}: {message}" for name, message in self.problems]
        else:
            lines.append("pairs with problems: none")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (train.py saves it in config.json)."""
        return {"where": self.where, "label_format": self.label_format.kind,
                "decided": self.decided, "num_examples": self.num_examples,
                "checked": self.checked, "histogram": self.histogram.summary(),
                "image_size": None if self.image_size is None else list(self.image_size),
                "size_counts": self.size_counts(), "num_problems": len(self.problems),
                "warnings": self.warnings()}


def _count_values(values: Counter, mask: np.ndarray) -> None:
    """Add the raw values of a decoded mask: ``(h, w)`` ints, or ``(h, w, 3)`` RGB colours."""
    if mask.ndim == 2:
        counts = np.bincount(mask.ravel())
        for value in np.flatnonzero(counts):
            values[int(value)] += int(counts[value])
        return
    keys = ((mask[..., 0].astype(np.uint32) << 16) | (mask[..., 1].astype(np.uint32) << 8)
            | mask[..., 2]).ravel()
    found, counts = np.unique(keys, return_counts=True)
    for key, count in zip(found.tolist(), counts.tolist()):
        values[((key >> 16) & 255, (key >> 8) & 255, key & 255)] += count


def check_examples(examples: Sequence[Example], label_format: LabelFormat, *,
                   image_size: Sequence[int] | None = None, sample: int | None = None,
                   max_pixels: int | None = MAX_PIXELS, where: str = "the data",
                   decided: str = "given", strict: bool = False) -> CheckReport:
    """Check labelled examples: read each sampled image's header and its mask (images are
    not decoded), count raw values and labels, collect the problems instead of stopping.

    Args:
        examples: labelled examples (``list_examples``).
        label_format: how to read the masks (``resolve_label_format``).
        image_size: the training size the sizes are compared with; None: no comparison.
        sample: check this many, spread evenly (``sample_examples``); None: all.
        where, decided: the folder and how the format was chosen, for the report.
        strict: raise the first mask that does not fit the format or its image (what the
            readers would refuse anyway; train.py refuses it before building anything)
            instead of listing it. Unreadable files are listed either way (readers skip them).

    Raises:
        DataFormatError: with ``strict`` only.
    """
    checked = sample_examples(examples, sample)
    histogram = LabelHistogram(label_format.num_classes)
    values: Counter = Counter()
    sizes: list[tuple[int, int]] = []
    problems: list[tuple[str, str]] = []
    for example in checked:
        try:
            header = read_image_header(example.image_path, max_pixels=max_pixels)
            sizes.append((header.height, header.width))
            mask = read_example_mask(example, (header.height, header.width),
                                     label_format=label_format, max_pixels=max_pixels)
            _count_values(values, mask)   # before the conversion: a bad value is shown too
            histogram.update(mask_to_label(mask, label_format, example.mask_path,
                                           foreground_class=example.foreground_class))
        except UnreadableFileError as error:
            problems.append((example.name, f"unreadable, would be skipped: {error}"))
        except DataFormatError as error:
            if strict:
                raise
            problems.append((example.name, str(error)))
    by_letter = (sum(breed_of(e.name) is None for e in checked)
                 if label_format.kind == "trimap" else 0)
    return CheckReport(where=where, label_format=label_format, decided=decided,
                       num_examples=len(examples), checked=len(checked), histogram=histogram,
                       values=values, sizes=sizes,
                       image_size=None if image_size is None else tuple(image_size),
                       problems=problems, names_by_letter=by_letter)


def check_folder(data_dir: str | os.PathLike, *, label_format: str = "auto",
                 palette: str | os.PathLike | None = None,
                 classes: Sequence[str] | None = None, num_classes: int | None = None,
                 image_size: Sequence[int] | None = None, sample: int | None = None,
                 max_pixels: int | None = MAX_PIXELS) -> CheckReport:
    """``check_examples`` of a folder, its format resolved as train.py resolves it
    (``resolve_label_format``; ``auto`` decided from the first masks).

    Raises what ``list_examples`` and ``resolve_label_format`` raise (a missing folder, images
    without masks, masks of mixed formats among the first ones, options that disagree).
    """
    where = os.fspath(data_dir)
    examples = list_examples(data_dir, label_format="auto")   # no name-rule warning: reported
    decided = f"--label-format {label_format}"
    if label_format == "auto":
        kind, reason = detect_label_format([e.mask_path for e in examples],
                                           max_pixels=max_pixels)
        decided = f"auto: {reason}"
        label_format = kind
    resolved = resolve_label_format(examples, label_format, classes=classes,
                                    num_classes=num_classes, palette=palette, data_dir=data_dir,
                                    max_pixels=max_pixels)
    return check_examples(examples, resolved, image_size=image_size, sample=sample,
                          max_pixels=max_pixels, where=where, decided=decided)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.check",
        description="Report what the masks of a labelled folder hold: the label format, the "
                    "values, a per-class pixel histogram, image sizes, pairs with problems.",
        formatter_class=HelpFormatter)
    parser.add_argument("folder", help="labelled folder with images/ and masks/")
    parser.add_argument("--label-format", default="auto", choices=LABEL_FORMATS,
                        help="how to read the masks (auto: decided from the first masks)")
    parser.add_argument("--palette", default=None,
                        help="palette JSON file (colour -> class) for palette masks")
    parser.add_argument("--classes", default=None,
                        help="class names in label order, e.g. background,cat,dog")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="number of classes when no names are given (default 3)")
    parser.add_argument("--image-size", type=size_argument, default=None, metavar="N|HxW",
                        help="training size to compare the image sizes with")
    parser.add_argument("--sample", type=int, default=None,
                        help="check only this many pairs, spread over the sorted names "
                             "(default: all)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="images and masks with more pixels count as unreadable")
    add_debug_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=False)
    report = check_folder(
        args.folder, label_format=args.label_format, palette=args.palette,
        classes=None if args.classes is None else parse_class_names(args.classes),
        num_classes=args.num_classes, image_size=args.image_size, sample=args.sample,
        max_pixels=args.max_pixels or None)
    for line in report.lines():
        print(line)
    for warning in report.warnings():
        print(f"WARNING: {warning}")
    return 0


if __name__ == "__main__":
    run(main)
