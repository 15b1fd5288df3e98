"""What ``python -m datasets.pets`` kept and left out, and why: the skip and re-encoding reasons,
``PrepareReport`` (saved as ``prepare_report.json``, printed as a table) and ``reason_table``,
the table's layout (``python -m datasets.convert`` prints its skips the same way)."""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Optional

from datasets.oxford import is_cat_name

__all__ = ["MAX_MEMBER_BYTES", "SkipReason", "Conversion", "PrepareReport", "reason_table"]

# No image or trimap of the data set comes near this; a bigger member is not read into memory.
MAX_MEMBER_BYTES = 256 * 1024 * 1024


class SkipReason(str, enum.Enum):
    """Why an archive member did not become an example (the value is the short name used in
    the summary table and in ``prepare_report.json``)."""

    UNSAFE_MEMBER = "unsafe-member"
    NOT_REGULAR_FILE = "not-regular-file"
    MACOS_JUNK = "macos-junk"
    NOT_JPEG = "not-jpeg"
    DUPLICATE = "duplicate"
    NO_TRIMAP = "no-trimap"
    MEMBER_TOO_BIG = "member-too-big"
    TOO_LARGE = "too-large"
    OVER_PIXEL_LIMIT = "over-pixel-limit"
    UNDECODABLE = "undecodable"
    BAD_TRIMAP = "bad-trimap"
    TRIMAP_SIZE_MISMATCH = "trimap-size-mismatch"
    NOT_IN_SPLIT_LISTS = "not-in-split-lists"

    @property
    def description(self) -> str:
        return _SKIP_DESCRIPTIONS[self]


_SKIP_DESCRIPTIONS = {
    SkipReason.UNSAFE_MEMBER: "absolute path, '..', link leaving the archive, or device file",
    SkipReason.NOT_REGULAR_FILE: "link inside the archive (links are not followed)",
    SkipReason.MACOS_JUNK: "macOS '._' resource-fork file",
    SkipReason.NOT_JPEG: "name does not end in .jpg (e.g. the .mat files)",
    SkipReason.DUPLICATE: "same name seen earlier in the archive (first one kept)",
    SkipReason.NO_TRIMAP: "no annotations/trimaps/<name>.png",
    SkipReason.MEMBER_TOO_BIG: f"file larger than {MAX_MEMBER_BYTES >> 20} MiB, not read",
    SkipReason.TOO_LARGE: "larger side >= max_side",
    SkipReason.OVER_PIXEL_LIMIT: "more pixels than --max-pixels (not decoded)",
    SkipReason.UNDECODABLE: "empty, not a JPEG/PNG/BMP, truncated or damaged",
    SkipReason.BAD_TRIMAP: "trimap unreadable, not one channel (or 3 equal), or values not 1/2/3",
    SkipReason.TRIMAP_SIZE_MISMATCH: "trimap height/width differ from the image's",
    SkipReason.NOT_IN_SPLIT_LISTS: "in neither trainval.txt nor test.txt (--split official)",
}


class Conversion(str, enum.Enum):
    """Why a kept image was re-encoded instead of copied byte for byte."""

    PNG = "png"
    GRAYSCALE = "grayscale"
    CMYK = "cmyk"
    EXIF_ORIENTATION = "exif-orientation"
    OTHER_FORMAT = "other-format"

    @property
    def description(self) -> str:
        return _CONVERSION_DESCRIPTIONS[self]


_CONVERSION_DESCRIPTIONS = {
    Conversion.PNG: "PNG data behind a .jpg name",
    Conversion.GRAYSCALE: "single-channel JPEG",
    Conversion.CMYK: "4-channel (CMYK/YCCK) JPEG",
    Conversion.EXIF_ORIENTATION: "EXIF rotation tag (stored pixel grid kept, tag dropped)",
    Conversion.OTHER_FORMAT: "BMP data, or a 12-bit/arithmetic/lossless JPEG",
}


@dataclasses.dataclass
class PrepareReport:
    """What `prepare_pets` wrote and what it left out, and why.

    ``train`` / ``test`` are sorted image names (file stems). ``converted`` maps the name of
    each re-encoded image to the reason. ``skipped`` maps a reason to the sorted archive member
    names it applies to (e.g. ``"images/Abyssinian_100.mat"``).
    """

    out_dir: Path
    split: str
    seed: Optional[int]
    test_fraction: Optional[float]
    max_side: int
    train: list[str]
    test: list[str]
    converted: dict[str, Conversion]
    skipped: dict[SkipReason, list[str]]

    @property
    def num_kept(self) -> int:
        return len(self.train) + len(self.test)

    @property
    def num_skipped(self) -> int:
        return sum(len(names) for names in self.skipped.values())

    def to_json(self) -> dict:
        """A JSON-serialisable dict (what ``prepare_report.json`` holds)."""
        return {
            "out_dir": str(self.out_dir),
            "split": self.split,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "max_side": self.max_side,
            "counts": {
                "train": len(self.train),
                "test": len(self.test),
                "converted": len(self.converted),
                "skipped": {reason.value: len(names) for reason, names in self.skipped.items()},
            },
            "train": self.train,
            "test": self.test,
            "converted": {name: conv.value for name, conv in sorted(self.converted.items())},
            "skipped": {reason.value: names for reason, names in self.skipped.items()},
        }

    def summary(self, examples: int = 3) -> str:
        """A human-readable table: kept per split (cats / dogs), re-encoded and skipped files
        per reason with a count and up to ``examples`` names each."""
        if self.split == "random":
            how = f"random split, test_fraction={self.test_fraction}, seed={self.seed}"
        else:
            how = "official split (trainval.txt / test.txt)"
        lines = [f"Oxford-IIIT Pet -> {self.out_dir} ({how}, max_side={self.max_side})"]
        lines.append(f"kept {self.num_kept} images:")
        for split_name, names in (("train", self.train), ("test", self.test)):
            cats = sum(1 for name in names if is_cat_name(name))
            lines.append(f"  {split_name:<6}{len(names):>6}  ({cats} cats, "
                         f"{len(names) - cats} dogs)")

        by_conversion: dict[Conversion, list[str]] = {}
        for name, conv in sorted(self.converted.items()):
            by_conversion.setdefault(conv, []).append(name)
        rows_conv = [(conv.value, conv.description, names)
                     for conv, names in sorted(by_conversion.items(), key=lambda kv: kv[0].value)]
        rows_skip = [(reason.value, reason.description.replace("max_side", f"{self.max_side} px"),
                      names) for reason, names in self.skipped.items()]
        width = max((len(key) for key, _, _ in rows_conv + rows_skip), default=0)
        lines.append(f"re-encoded to 3-channel JPEG: {len(self.converted)} of them")
        lines.extend(reason_table(rows_conv, examples, width))
        lines.append(f"skipped {self.num_skipped} archive members:")
        lines.extend(reason_table(rows_skip, examples, width))
        return "\n".join(lines)


def reason_table(rows: list[tuple[str, str, list[str]]], examples: int,
                 width: int) -> list[str]:
    """Rows ``reason  count  description``, then ``e.g. a, b, c (+n more)`` below (also the
    skip tables of ``python -m datasets.convert``)."""
    if not rows:
        return ["  (none)"]
    out = []
    for key, description, names in rows:
        shown = ", ".join(names[:examples])
        more = f" (+{len(names) - examples} more)" if len(names) > examples else ""
        out.append(f"  {key:<{width}} {len(names):>6}  {description}")
        if examples > 0:
            out.append(f"  {'':<{width}} {'':>6}  e.g. {shown}{more}")
    return out
