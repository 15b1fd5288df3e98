"""What a conversion wrote and what it left out: ``ConvertReport``, printed as a table by
``python -m datasets.convert`` (in the style of ``python -m datasets.pets``) and saved as
``<out>/convert_report.json``, the marker that lets ``--overwrite`` replace the folder."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from datasets.classes import IGNORE_LABEL
from datasets.convert.records import SkipReason
from datasets.pets_report import reason_table

__all__ = ["ConvertReport", "ClassCounts"]


@dataclasses.dataclass
class ClassCounts:
    """Per label value (0..255): shapes drawn, pixels in the written masks, images holding
    the value."""

    shapes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(256, np.int64))
    pixels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(256, np.int64))
    images: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(256, np.int64))

    def add_mask(self, labels: np.ndarray, values: np.ndarray) -> None:
        """Count a written mask whose shapes drew only ``values`` (the rest is class 0): one
        comparison per value drawn instead of a 256-bin histogram of every pixel."""
        drawn = 0
        for value in values[values != 0]:
            pixels = int(np.count_nonzero(labels == value))
            self.pixels[value] += pixels
            self.images[value] += pixels > 0
            drawn += pixels
        self.pixels[0] += labels.size - drawn
        self.images[0] += labels.size > drawn


@dataclasses.dataclass
class ConvertReport:
    """A finished conversion. ``written`` are the image names in ``images/``; ``skipped_images``
    and ``skipped_shapes`` map a reason to where each skipped item came from."""

    format: str
    source: str
    out_dir: str
    class_names: tuple[str, ...]
    ignore_labels: tuple[str, ...]
    written: list[str]
    all_background: int
    counts: ClassCounts
    skipped_images: dict[SkipReason, list[str]]
    skipped_shapes: dict[SkipReason, list[str]]
    settings: dict[str, Any]
    warnings: list[str] = dataclasses.field(default_factory=list)

    def _rows(self) -> list[tuple[str, int]]:
        """(name, label value) of every class and of the ignore value."""
        rows = [(name, index) for index, name in enumerate(self.class_names)]
        return rows + [("(ignore)", IGNORE_LABEL)]

    def to_json(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "written_by": "python -m datasets.convert",
            "format": self.format, "source": self.source, "settings": self.settings,
            "classes": list(self.class_names), "ignore_labels": list(self.ignore_labels),
            "counts": {"images": len(self.written), "all_background": self.all_background,
                       "skipped_images": {r.value: len(v) for r, v in self.skipped_images.items()},
                       "skipped_shapes": {r.value: len(v) for r, v in self.skipped_shapes.items()}},
            "per_class": {name: {"value": value, "shapes": int(counts.shapes[value]),
                                 "pixels": int(counts.pixels[value]),
                                 "images": int(counts.images[value])}
                          for name, value in self._rows()},
            "images": self.written,
            "skipped_images": {r.value: v for r, v in self.skipped_images.items()},
            "skipped_shapes": {r.value: v for r, v in self.skipped_shapes.items()},
            "warnings": self.warnings,
        }

    def summary(self, examples: int = 3) -> str:
        """The table: images written, per class shapes / pixels / images, skipped images and
        shapes per reason (count, meaning, a few examples), warnings."""
        lines = [f"{self.format} {self.source} -> {self.out_dir}",
                 f"wrote {len(self.written)} images and masks ({self.all_background} all "
                 f"background), {len(self.class_names)} classes; later shapes drawn over "
                 f"earlier ones{' (CVAT: by z_order first)' if self.format == 'cvat' else ''}"]
        total = max(1, int(self.counts.pixels.sum()))
        width = max(len(name) for name, _ in self._rows())
        lines.append(f"  {'value':>5}  {'class':<{width}} {'shapes':>8} {'pixels':>12} "
                     f"{'share':>7} {'images':>7}")
        for name, value in self._rows():
            pixels = int(self.counts.pixels[value])
            lines.append(f"  {value:>5}  {name:<{width}} {int(self.counts.shapes[value]):>8} "
                         f"{pixels:>12} {100.0 * pixels / total:>6.2f}% "
                         f"{int(self.counts.images[value]):>7}")
        if self.ignore_labels:
            lines.append(f"  ignored (255): labels {', '.join(self.ignore_labels)}")
        for what, skipped in (("images", self.skipped_images), ("shapes", self.skipped_shapes)):
            rows = [(r.value, r.description, names) for r, names in skipped.items()]
            lines.append(f"skipped {sum(len(n) for _, _, n in rows)} {what}:")
            lines.extend(reason_table(rows, examples,
                                      max((len(key) for key, _, _ in rows), default=0)))
        lines.extend(f"WARNING: {warning}" for warning in self.warnings)
        return "\n".join(lines)
