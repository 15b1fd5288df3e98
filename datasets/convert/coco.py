"""COCO instances JSON (``instances_*.json``, the export of CVAT, Label Studio, Roboflow,
makesense.ai) -> ``Annotations``.

* ``categories`` become the classes in category-id order (class 1 = the lowest id; class 0 is
  the background, named by the builder), every category, used or not, so class indices do not
  depend on which images an export holds.
* ``images``: ``file_name`` is looked up under ``--images`` (as given, else by its base name);
  ``width`` / ``height`` are the recorded size the image must have.
* ``annotations``, in file order (a later one is drawn over an earlier one): ``segmentation``
  as a list of polygons (their union), uncompressed RLE (``counts`` a list) or compressed RLE
  (``counts`` a string), both decoded by pycocotools (COCO's own mask library), column-major as
  COCO stores them. ``iscrowd`` regions are marked ignore (255) unless ``crowd_as_class``.

Structural faults (not JSON, not an object with ``images`` and ``categories`` lists, an image
or category id twice) stop with a one-line error naming the file; faults of one annotation
(unknown image or category, a polygon of fewer than 3 points, a bad RLE) skip it and count it.
"""
from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pycocotools import mask as coco_mask

from datasets.classes import read_json_file
from datasets.convert.raster import Bitmap, Polygons
from datasets.convert.records import (AnnotationFileError, Annotations, ImageRecord, Shape,
                                      ShapeError, SkipReason, Skips, parse_points)

__all__ = ["read_coco"]

logger = logging.getLogger(__name__)


def read_coco(path: str | Path, *, images_dir: str | Path, skips: Skips,
              crowd_as_class: bool = False) -> Annotations:
    """Read a COCO instances file; see the module docstring.

    Raises:
        DataError: the file is missing or not JSON (``read_json_file``).
        AnnotationFileError: not a COCO instances document, or ids repeated.
    """
    path, images_dir = Path(path), Path(images_dir)
    document = read_json_file(path, what="COCO file",
                              missing="give the instances JSON exported by the labelling tool")
    if not isinstance(document, dict) or not isinstance(document.get("images"), list) \
            or not isinstance(document.get("categories"), list):
        raise AnnotationFileError(f"{path}: not a COCO instances file (expected a JSON object "
                                  f"with 'images', 'annotations' and 'categories' lists)")
    annotations = document.get("annotations", [])
    if not isinstance(annotations, list):
        raise AnnotationFileError(f"{path}: 'annotations' must be a list")
    categories = _categories(document["categories"], path)
    images = _images(document["images"], path, images_dir, skips)
    for index, item in enumerate(annotations):
        _add_annotation(item, index, images, categories, skips, crowd_as_class)
    logger.info("%s: %d images, %d annotations, %d categories", path, len(images),
                len(annotations), len(categories))
    return Annotations(labels=tuple(categories[key] for key in sorted(categories)),
                       images=[record for record in images.values() if record is not None])


def _categories(items: list, path: Path) -> dict[int, str]:
    """Category id -> name."""
    categories: dict[int, str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not _is_int(item.get("id")) \
                or not isinstance(item.get("name"), str):
            raise AnnotationFileError(f"{path}: categories[{index}] needs an integer 'id' and "
                                      f"a 'name', got {str(item)[:80]}")
        if item["id"] in categories:
            raise AnnotationFileError(f"{path}: category id {item['id']} appears twice "
                                      f"({categories[item['id']]!r} and {item['name']!r})")
        categories[item["id"]] = item["name"]
    return categories


def _images(items: list, path: Path, images_dir: Path,
            skips: Skips) -> dict[Any, Optional[ImageRecord]]:
    """Image id -> record (None for an image skipped here: its annotations are dropped)."""
    records: dict[Any, Optional[ImageRecord]] = {}
    by_file: dict[str, list[Any]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("file_name"), str) \
                or not isinstance(item.get("id"), (int, str)) or isinstance(item["id"], bool):
            raise AnnotationFileError(f"{path}: images[{index}] needs an 'id' and a "
                                      f"'file_name', got {str(item)[:80]}")
        if item["id"] in records:
            raise AnnotationFileError(f"{path}: image id {item['id']!r} appears twice: its "
                                      f"annotations cannot be told apart")
        file_name = item["file_name"]
        size = None
        if _is_int(item.get("height")) and _is_int(item.get("width")):
            size = (int(item["height"]), int(item["width"]))
        records[item["id"]] = ImageRecord(
            name=posixpath.basename(file_name.replace("\\", "/")), where=file_name, size=size,
            shapes=[], path=_find(images_dir, file_name))
        by_file.setdefault(file_name, []).append(item["id"])
    for file_name, ids in by_file.items():
        if len(ids) > 1:
            skips.image(SkipReason.REFERENCED_TWICE, file_name, f"image ids {ids}")
            for image_id in ids:
                records[image_id] = None
    return records


def _find(images_dir: Path, file_name: str) -> Path:
    """``--images/<file_name>``, else ``--images/<base name>`` (exports that record a
    subfolder the user did not keep)."""
    given = images_dir / file_name
    if given.is_file():
        return given
    return images_dir / posixpath.basename(file_name.replace("\\", "/"))


def _add_annotation(item: Any, index: int, images: dict[Any, Optional[ImageRecord]],
                    categories: dict[int, str], skips: Skips, crowd_as_class: bool) -> None:
    where = f"annotation {item.get('id', index) if isinstance(item, dict) else index}"
    if not isinstance(item, dict):
        skips.shape(SkipReason.MALFORMED_SHAPE, where, "not an object")
        return
    image_id = item.get("image_id")
    if isinstance(image_id, (list, dict)) or image_id not in images:
        skips.shape(SkipReason.UNKNOWN_IMAGE, where, f"image_id {image_id!r}")
        return
    record = images[image_id]
    if record is None:
        return  # the image is skipped, and counted once
    where = f"{where} ({record.where})"
    category = item.get("category_id")
    if not _is_int(category) or category not in categories:
        skips.shape(SkipReason.UNKNOWN_CATEGORY, where, f"category_id {category!r}")
        return
    crowd = bool(item.get("iscrowd", 0))
    segmentation = item.get("segmentation")
    if isinstance(segmentation, dict):
        geometry = _rle(segmentation, record.size, where, skips)
        if geometry is not None:
            record.shapes.append(Shape(categories[category], geometry, where,
                                       ignore=crowd and not crowd_as_class))
        return
    if not segmentation:
        skips.shape(SkipReason.NO_SEGMENTATION, where)
        return
    if not isinstance(segmentation, list):
        skips.shape(SkipReason.MALFORMED_SHAPE, where, "segmentation is neither list nor RLE")
        return
    rings = []
    for part, values in enumerate(segmentation):
        try:
            ring = parse_points(values)
        except (ValueError, TypeError) as error:
            skips.shape(SkipReason.MALFORMED_SHAPE, f"{where} polygon {part}", str(error))
            continue
        if ring.shape[0] < 3:
            skips.shape(SkipReason.DEGENERATE, f"{where} polygon {part}",
                        f"{ring.shape[0]} points")
            continue
        rings.append(ring)
    if rings:
        record.shapes.append(Shape(categories[category], Polygons(tuple(rings)), where,
                                   ignore=crowd and not crowd_as_class))


def _rle(segmentation: dict, size: Optional[tuple[int, int]], where: str,
         skips: Skips) -> Optional[Bitmap]:
    """A COCO RLE (``{"size": [h, w], "counts": [...] or "..."}``) as a bitmap decoded when
    drawn; its size must be the image's."""
    rle_size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(map(_is_int, rle_size))
            and min(rle_size) > 0):
        skips.shape(SkipReason.BAD_RLE, where, f"size {rle_size!r}")
        return None
    height, width = int(rle_size[0]), int(rle_size[1])
    if size is not None and (height, width) != size:
        skips.shape(SkipReason.BAD_RLE, where,
                    f"RLE of {width}x{height} for an image of {size[1]}x{size[0]}")
        return None
    if isinstance(counts, list):
        # pycocotools does not check an uncompressed RLE's run total: a short one would be
        # padded silently.
        if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
            skips.shape(SkipReason.BAD_RLE, where, f"runs do not add up to {height}x{width}")
            return None
        compressed = coco_mask.frPyObjects({"size": [height, width], "counts": counts},
                                           height, width)
    elif isinstance(counts, str):
        compressed = {"size": [height, width], "counts": counts.encode("ascii", "replace")}
    else:
        skips.shape(SkipReason.BAD_RLE, where, "counts is neither a list nor a string")
        return None

    def decode() -> np.ndarray:
        try:
            return coco_mask.decode(compressed).astype(bool)
        except ValueError as error:  # pycocotools: "Invalid RLE mask representation"
            raise ShapeError(SkipReason.BAD_RLE, str(error)) from None

    return Bitmap(decode)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
