"""CVAT for images 1.1 XML (``annotations.xml``) -> ``Annotations``.

* Labels: the task's (or project's, or job's) ``<meta>`` label list in its order, leaving out
  labels that only tag images or mark points (type ``tag``, ``points``, ``skeleton``, or a
  skeleton's parts); without a label list, the labels of the drawn shapes, sorted.
* ``<image name= width= height=>``: ``name`` is looked up under ``--images`` (as given, else by
  its base name); width and height are the recorded size.
* Shapes are drawn by ``z_order`` (higher on top, as CVAT shows them), then in file order:
  ``polygon``, ``box`` (``rotation`` in degrees, clockwise, about its centre), ``polyline``
  (``line_width`` pixels wide), ``ellipse`` (``cx cy rx ry rotation``), and ``mask``: CVAT's
  run-length encoding, the ``rle`` run lengths over the ``width x height`` box at
  ``left, top``, row by row, starting with a run of background. ``points`` have no area;
  ``tag``, ``skeleton`` and ``cuboid`` are not drawn (both counted).
* A "CVAT for video" export (``<track>`` elements instead of ``<image>``) is refused: export
  the task as "CVAT for images 1.1".
"""
from __future__ import annotations

import logging
import posixpath
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.convert.raster import Bitmap, Ellipse, Geometry, Polygons, Polyline, box_polygon
from datasets.convert.records import (AnnotationFileError, Annotations, ImageRecord, Shape,
                                      ShapeError, SkipReason, Skips, parse_number)

__all__ = ["read_cvat", "decode_cvat_rle"]

logger = logging.getLogger(__name__)

_DRAWN = ("polygon", "box", "polyline", "ellipse", "mask")
_NOT_CLASSES = ("tag", "points", "skeleton")


def read_cvat(path: str | Path, *, images_dir: str | Path, skips: Skips,
              line_width: float) -> Annotations:
    """Read a CVAT for images 1.1 XML file; see the module docstring.

    Raises:
        AnnotationFileError: not well-formed XML, not a CVAT annotations file, a video export,
            an image without a name.
    """
    path, images_dir = Path(path), Path(images_dir)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise AnnotationFileError(f"{path} is not well-formed XML: {error}") from None
    if root.tag != "annotations":
        raise AnnotationFileError(f"{path}: not a CVAT XML file (its root element is "
                                  f"<{root.tag}>, expected <annotations>)")
    image_elements = root.findall("image")
    if not image_elements and root.find("track") is not None:
        raise AnnotationFileError(f"{path} is a 'CVAT for video' export (tracks); export the "
                                  f"task as 'CVAT for images 1.1'")
    images = []
    for index, element in enumerate(image_elements):
        name = element.get("name")
        if not name:
            raise AnnotationFileError(f"{path}: <image> number {index + 1} has no name")
        images.append(_image(element, name, images_dir, skips, line_width))
    labels = _declared_labels(root)
    if labels is None:
        labels = tuple(sorted({shape.label for record in images for shape in record.shapes}))
    logger.info("%s: %d images, labels: %s", path, len(images), ", ".join(labels))
    return Annotations(labels=labels, images=images)


def _declared_labels(root: ElementTree.Element) -> Optional[tuple[str, ...]]:
    meta = root.find("meta")
    if meta is None:
        return None
    names: list[str] = []
    found = False
    for labels in meta.iter("labels"):
        for label in labels.findall("label"):
            found = True
            name = (label.findtext("name") or "").strip()
            if (not name or name in names or (label.findtext("type") or "") in _NOT_CLASSES
                    or (label.findtext("parent") or "").strip()):
                continue
            names.append(name)
    return tuple(names) if found else None


def _image(element: ElementTree.Element, name: str, images_dir: Path, skips: Skips,
           line_width: float) -> ImageRecord:
    size = None
    try:
        size = (int(element.get("height", "")), int(element.get("width", "")))
    except ValueError:
        pass
    given = images_dir / name
    path = given if given.is_file() else images_dir / posixpath.basename(name)
    record = ImageRecord(name=posixpath.basename(name), where=name, size=size, shapes=[],
                         path=path)
    drawn: list[tuple[int, Shape]] = []
    for index, child in enumerate(element):
        where = f"{name} <{child.tag}> {index}"
        if child.tag == "points":
            skips.shape(SkipReason.POINT, where)
            continue
        if child.tag not in _DRAWN:
            skips.shape(SkipReason.UNSUPPORTED_SHAPE, where)
            continue
        if not child.get("label"):
            skips.shape(SkipReason.MALFORMED_SHAPE, where, "no label")
            continue
        try:
            geometry = _geometry(child, line_width)
            z_order = int(child.get("z_order", "0"))
        except (ValueError, TypeError) as error:
            skips.shape(SkipReason.MALFORMED_SHAPE, where, str(error))
            continue
        if isinstance(geometry, SkipReason):
            skips.shape(geometry, where)
            continue
        drawn.append((z_order, Shape(child.get("label"), geometry, where)))
    # Stable: equal z-orders keep the file order.
    record.shapes = [shape for _, shape in sorted(drawn, key=lambda item: item[0])]
    return record


def _points(text: Optional[str]) -> np.ndarray:
    """``"x0,y0;x1,y1;..."`` -> ``(n, 2)`` floats."""
    pairs = [pair.split(",") for pair in (text or "").strip().split(";") if pair.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"points {text!r} are not x,y;x,y;...")
    return np.array([[parse_number(x), parse_number(y)] for x, y in pairs],
                    dtype=np.float64).reshape(-1, 2)


def _number(element: ElementTree.Element, name: str, default: Optional[str] = None) -> float:
    value = element.get(name, default)
    if value is None:
        raise ValueError(f"no {name}")
    return parse_number(value)


def _geometry(element: ElementTree.Element, line_width: float) -> Geometry | SkipReason:
    kind = element.tag
    if kind in ("polygon", "polyline"):
        points = _points(element.get("points"))
        if points.shape[0] < (3 if kind == "polygon" else 2):
            return SkipReason.DEGENERATE
        return Polygons((points,)) if kind == "polygon" else Polyline(points, line_width)
    if kind == "box":
        return Polygons((box_polygon(_number(element, "xtl"), _number(element, "ytl"),
                                     _number(element, "xbr"), _number(element, "ybr"),
                                     _number(element, "rotation", "0")),))
    if kind == "ellipse":
        return Ellipse(_number(element, "cx"), _number(element, "cy"), _number(element, "rx"),
                       _number(element, "ry"), _number(element, "rotation", "0"))
    left, top = int(element.get("left", "")), int(element.get("top", ""))
    width, height = int(element.get("width", "")), int(element.get("height", ""))
    counts = [int(run) for run in (element.get("rle") or "").replace(" ", "").split(",")
              if run]
    if width <= 0 or height <= 0 or any(run < 0 for run in counts) \
            or sum(counts) != width * height:
        return SkipReason.BAD_RLE
    return Bitmap(lambda: decode_cvat_rle(counts, height, width), top=top, left=left)


def decode_cvat_rle(counts: list[int], height: int, width: int) -> np.ndarray:
    """CVAT's mask RLE -> boolean ``(height, width)``: run lengths over the box row by row,
    alternating background and mask, starting with background (a first run of 0 when the
    first pixel is in the mask).

    Raises:
        ShapeError: the runs do not cover the box exactly.
    """
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any() or int(runs.sum()) != height * width:
        raise ShapeError(SkipReason.BAD_RLE, f"runs add up to {int(runs.sum())}, not "
                                             f"{width}x{height}")
    values = np.arange(runs.size) % 2 == 1
    return np.repeat(values, runs).reshape(height, width)
