"""What a format reader hands to the shared builder: images with their shapes in drawing order,
the labels in their natural class order, and every shape or image left out, with the reason.

Readers (``coco.py``, ``labelme.py``, ``cvat.py``) only parse; ``build.py`` resolves classes,
draws (``raster.py``), copies and writes.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np

from common.errors import DataError
from datasets.convert.raster import Geometry

__all__ = ["AnnotationFileError", "Shape", "ImageRecord", "Annotations", "SkipReason",
           "ShapeError", "Skips", "parse_number", "parse_points"]

logger = logging.getLogger(__name__)


class AnnotationFileError(DataError, ValueError):
    """An annotation file that cannot be read at all (not JSON/XML, not the expected format):
    the message names the file."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """One drawable annotation: its tool label, its geometry, where it came from (for the
    report), and ``ignore`` when it marks pixels to ignore (a COCO crowd region)."""

    label: str
    geometry: Geometry
    where: str
    ignore: bool = False


@dataclasses.dataclass
class ImageRecord:
    """One image of the annotation file.

    Attributes:
        name: the image file's name in the output ``images/`` folder (a base name).
        where: names the image in messages (its file name, a LabelMe file).
        size: ``(height, width)`` the annotation file records, or None when it records none.
        shapes: in drawing order: a later shape is drawn over an earlier one.
        path: the image file to copy, or None when ``data`` holds its bytes.
        data: the image file's bytes when embedded in the annotation (LabelMe ``imageData``).
    """

    name: str
    where: str
    size: Optional[tuple[int, int]]
    shapes: list[Shape]
    path: Optional[Path] = None
    data: Optional[bytes] = None


@dataclasses.dataclass
class Annotations:
    """A reader's result: ``labels`` in their natural class order (COCO: category id order;
    CVAT: the task's label list; LabelMe: sorted names), and the images."""

    labels: tuple[str, ...]
    images: list[ImageRecord]


class SkipReason(str, enum.Enum):
    """Why an image or a shape is not in the output (the value is the report's short name)."""

    # images
    IMAGE_MISSING = "image-missing"
    REFERENCED_TWICE = "referenced-twice"
    SAME_STEM = "same-stem"
    HIDDEN_NAME = "hidden-name"
    UNSUPPORTED_IMAGE = "unsupported-image"
    UNREADABLE_IMAGE = "unreadable-image"
    SIZE_MISMATCH = "size-mismatch"
    EXIF_ROTATED = "exif-rotated"
    EMPTY_IMAGE = "empty-image"
    NOT_LABELME = "not-labelme"
    # shapes
    UNKNOWN_IMAGE = "unknown-image"
    UNKNOWN_CATEGORY = "unknown-category"
    UNKNOWN_LABEL = "unknown-label"
    DEGENERATE = "degenerate"
    MALFORMED_SHAPE = "malformed-shape"
    BAD_RLE = "bad-rle"
    NO_SEGMENTATION = "no-segmentation"
    POINT = "point"
    UNSUPPORTED_SHAPE = "unsupported-shape"
    OUTSIDE = "outside-image"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    SkipReason.IMAGE_MISSING: "image file not found (nor embedded in the annotation)",
    SkipReason.REFERENCED_TWICE: "the same image is annotated twice (all its entries skipped)",
    SkipReason.SAME_STEM: "two images share a stem (a.jpg, a.png) and would share one mask",
    SkipReason.HIDDEN_NAME: "file name starts with '.': the readers skip hidden files",
    SkipReason.UNSUPPORTED_IMAGE: "not a .jpg/.jpeg/.png image (the readers take only these)",
    SkipReason.UNREADABLE_IMAGE: "empty, not JPEG/PNG, damaged header, or over --max-pixels",
    SkipReason.SIZE_MISMATCH: "the image's size differs from the size the annotation records",
    SkipReason.EXIF_ROTATED: "EXIF orientation tag: the tool drew on the turned picture, the "
                             "project reads the stored grid; save it turned and convert again",
    SkipReason.EMPTY_IMAGE: "no labelled pixel (--skip-empty)",
    SkipReason.NOT_LABELME: "JSON file without a LabelMe 'shapes' list",
    SkipReason.UNKNOWN_IMAGE: "annotation of an image id that is not in 'images'",
    SkipReason.UNKNOWN_CATEGORY: "category id not in 'categories'",
    SkipReason.UNKNOWN_LABEL: "label not among the classes (--classes, or the task's labels)",
    SkipReason.DEGENERATE: "polygon with fewer than 3 points, or a shape of no extent",
    SkipReason.MALFORMED_SHAPE: "coordinates missing, not numbers, or of the wrong count",
    SkipReason.BAD_RLE: "RLE or mask bitmap unreadable, or not of its recorded size",
    SkipReason.NO_SEGMENTATION: "COCO annotation without a segmentation (a box only)",
    SkipReason.POINT: "point or points: no area to fill",
    SkipReason.UNSUPPORTED_SHAPE: "shape type not drawn (tag, skeleton, cuboid, unknown type)",
    SkipReason.OUTSIDE: "covers no pixel centre of the image (outside it, or too thin)",
}


class ShapeError(ValueError):
    """A shape that cannot be drawn, found when it is drawn (a bitmap decoded lazily)."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Skips:
    """The images and the shapes left out, by reason, each named by where it came from."""

    def __init__(self) -> None:
        self.images: dict[SkipReason, list[str]] = {}
        self.shapes: dict[SkipReason, list[str]] = {}

    def image(self, reason: SkipReason, where: str, detail: str = "") -> None:
        self.images.setdefault(reason, []).append(where)
        logger.debug("skipped image %s: %s%s", where, reason.value,
                     f" ({detail})" if detail else "")

    def shape(self, reason: SkipReason, where: str, detail: str = "") -> None:
        self.shapes.setdefault(reason, []).append(where)
        logger.debug("skipped shape %s: %s%s", where, reason.value,
                     f" ({detail})" if detail else "")


def parse_number(value: object) -> float:
    """A finite JSON/XML coordinate as float; ValueError for anything else (bools included)."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def parse_points(values: object) -> np.ndarray:
    """``[[x, y], ...]`` (LabelMe) or a flat ``[x0, y0, x1, y1, ...]`` (COCO) -> ``(n, 2)``
    float array; ValueError when malformed (odd count, not numbers)."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"expected a list of coordinates, got {type(values).__name__}")
    if values and isinstance(values[0], (list, tuple)):
        if any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in values):
            raise ValueError("every point must be [x, y]")
        flat = [c for point in values for c in point]
    else:
        flat = list(values)
        if len(flat) % 2:
            raise ValueError(f"{len(flat)} coordinates: an x without its y")
    # JSON numbers arrive as int or float (bool is an int subclass: refused by the exact type).
    if not all(type(c) is float or type(c) is int for c in flat):
        raise ValueError("coordinates must be numbers")
    points = np.array(flat, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise ValueError("coordinates must be finite")
    return points
