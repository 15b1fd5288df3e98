"""LabelMe JSON files (one per image) -> ``Annotations``.

* The files: the ``*.json`` directly in the source folder (or one file), sorted by name; a JSON
  file without a ``shapes`` list is not a LabelMe file and is skipped (counted).
* The image: ``imageData`` when embedded (the very picture LabelMe showed, EXIF rotation
  already applied; saved under the ``imagePath`` stem with the extension of its format), else
  ``imagePath`` relative to the JSON file, else ``--images/<its base name>``; none of them ->
  the file is skipped as image-missing. ``imageHeight`` / ``imageWidth`` are the recorded size.
* Shapes, in file order (LabelMe draws later shapes on top): ``polygon`` (>= 3 points),
  ``rectangle`` (2 corners), ``circle`` (centre and a point on the circle), ``line`` (2
  points) and ``linestrip`` (>= 2) drawn ``line_width`` pixels wide, ``mask`` (a base64 PNG
  covering the pixel box between its 2 points, inclusive, as LabelMe stores it); ``point`` and
  ``points`` have no area and are skipped (counted); ``group_id``, ``flags`` and
  ``description`` are ignored.
* Labels: the labels of the drawn shapes over all files, sorted by name.
"""
from __future__ import annotations

import base64
import binascii
import logging
import posixpath
from pathlib import Path
from typing import Any, Optional

import numpy as np

from datasets.classes import read_json_file
from datasets.convert.raster import Bitmap, Ellipse, Geometry, Polygons, Polyline, box_polygon
from datasets.convert.records import (AnnotationFileError, Annotations, ImageRecord, Shape,
                                      ShapeError, SkipReason, Skips, parse_points)
from datasets.decode import UnreadableFileError, decode_unchanged
from datasets.headers import JPEG, PNG, read_header

__all__ = ["read_labelme", "DEFAULT_SHAPE_TYPE"]

logger = logging.getLogger(__name__)

# LabelMe files written before shape_type existed hold polygons only.
DEFAULT_SHAPE_TYPE = "polygon"
_EXTENSIONS = {JPEG: ".jpg", PNG: ".png"}


def read_labelme(source: str | Path, *, images_dir: Optional[str | Path], skips: Skips,
                 line_width: float) -> Annotations:
    """Read a folder of LabelMe files (or one file); see the module docstring.

    Raises:
        AnnotationFileError: no ``.json`` file in the folder.
        DataError: a file that is not readable JSON (named).
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(entry for entry in source.iterdir() if entry.suffix.lower() == ".json"
                       and entry.is_file() and not entry.name.startswith("."))
        if not files:
            raise AnnotationFileError(f"no LabelMe .json files in {source}")
    else:
        files = [source]
    images = []
    for path in files:
        record = _read_file(path, None if images_dir is None else Path(images_dir), skips,
                            line_width)
        if record is not None:
            images.append(record)
    labels = sorted({shape.label for record in images for shape in record.shapes})
    logger.info("%s: %d LabelMe files, %d with an image, labels: %s", source, len(files),
                len(images), ", ".join(labels))
    return Annotations(labels=tuple(labels), images=images)


def _read_file(path: Path, images_dir: Optional[Path], skips: Skips,
               line_width: float) -> Optional[ImageRecord]:
    document = read_json_file(path, what="LabelMe file", missing="it was listed a moment ago")
    if not isinstance(document, dict) or not isinstance(document.get("shapes"), list):
        skips.image(SkipReason.NOT_LABELME, path.name)
        return None
    image_path = document.get("imagePath") if isinstance(document.get("imagePath"), str) else ""
    stem = posixpath.splitext(posixpath.basename(image_path.replace("\\", "/")))[0] or path.stem
    record = ImageRecord(name="", where=path.name, size=_recorded_size(document), shapes=[])
    if isinstance(document.get("imageData"), str) and document["imageData"]:
        try:
            record.data = base64.b64decode(document["imageData"], validate=True)
        except (binascii.Error, ValueError):
            skips.image(SkipReason.UNREADABLE_IMAGE, path.name, "imageData is not base64")
            return None
        header = read_header(record.data)
        record.name = stem + _EXTENSIONS.get(header.format if header else "", ".unknown")
    else:
        record.path = _find_image(path, image_path, images_dir)
        if record.path is None:
            skips.image(SkipReason.IMAGE_MISSING, path.name,
                        f"imagePath {image_path!r}, no imageData")
            return None
        record.name = record.path.name
    for index, item in enumerate(document["shapes"]):
        shape = _shape(item, f"{path.name} shape {index}", skips, line_width)
        if shape is not None:
            record.shapes.append(shape)
    return record


def _recorded_size(document: dict) -> Optional[tuple[int, int]]:
    height, width = document.get("imageHeight"), document.get("imageWidth")
    if isinstance(height, int) and isinstance(width, int) and not isinstance(height, bool):
        return height, width
    return None


def _find_image(json_path: Path, image_path: str, images_dir: Optional[Path]) -> Optional[Path]:
    """``imagePath`` next to the JSON file, else its base name in ``images_dir``."""
    relative = image_path.replace("\\", "/")
    candidates = [json_path.parent / relative] if relative else []
    if images_dir is not None and relative:
        candidates.append(images_dir / posixpath.basename(relative))
    return next((c for c in candidates if c.is_file()), None)


def _shape(item: Any, where: str, skips: Skips, line_width: float) -> Optional[Shape]:
    if not isinstance(item, dict) or not isinstance(item.get("label"), str) \
            or not item["label"]:
        skips.shape(SkipReason.MALFORMED_SHAPE, where, "no label")
        return None
    kind = item.get("shape_type") or DEFAULT_SHAPE_TYPE
    if kind in ("point", "points"):
        skips.shape(SkipReason.POINT, where)
        return None
    if kind not in _NEEDED_POINTS:
        skips.shape(SkipReason.UNSUPPORTED_SHAPE, where, f"shape_type {kind!r}")
        return None
    try:
        points = parse_points(item.get("points"))
    except (ValueError, TypeError) as error:
        skips.shape(SkipReason.MALFORMED_SHAPE, where, str(error))
        return None
    least, most = _NEEDED_POINTS[kind]
    if not least <= points.shape[0] <= most:
        reason = SkipReason.DEGENERATE if points.shape[0] < least else SkipReason.MALFORMED_SHAPE
        skips.shape(reason, where, f"{kind} with {points.shape[0]} points")
        return None
    geometry = _geometry(kind, points, item.get("mask"), where, line_width)
    if geometry is None:
        skips.shape(SkipReason.BAD_RLE, where, "mask shape without a mask")
        return None
    return Shape(item["label"], geometry, where)


# shape_type -> (fewest, most) points.
_NEEDED_POINTS = {"polygon": (3, 1 << 30), "rectangle": (2, 2), "circle": (2, 2),
                  "line": (2, 2), "linestrip": (2, 1 << 30), "mask": (2, 2)}


def _geometry(kind: str, points: np.ndarray, mask: Any, where: str,
              line_width: float) -> Optional[Geometry]:
    if kind == "polygon":
        return Polygons((points,))
    if kind == "rectangle":
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return Polygons((box_polygon(x0, y0, x1, y1),))
    if kind == "circle":
        (cx, cy), edge = points
        radius = float(np.hypot(*(edge - (cx, cy))))
        return Ellipse(float(cx), float(cy), radius, radius)
    if kind in ("line", "linestrip"):
        return Polyline(points, line_width)
    if not isinstance(mask, str) or not mask:
        return None
    # LabelMe: the box corners as whole pixel indices (truncated), both inclusive.
    (left, top), (right, bottom) = points.astype(np.int64)

    def decode() -> np.ndarray:
        try:
            bitmap = decode_unchanged(base64.b64decode(mask, validate=True), where)
        except (binascii.Error, ValueError, UnreadableFileError) as error:
            raise ShapeError(SkipReason.BAD_RLE, f"mask PNG: {error}") from None
        if bitmap.ndim == 3:
            bitmap = bitmap.any(axis=2)
        if bitmap.shape != (bottom - top + 1, right - left + 1):
            raise ShapeError(SkipReason.BAD_RLE,
                             f"mask of {bitmap.shape[1]}x{bitmap.shape[0]} for a box of "
                             f"{right - left + 1}x{bottom - top + 1}")
        return bitmap != 0

    return Bitmap(decode, top=int(top), left=int(left))
