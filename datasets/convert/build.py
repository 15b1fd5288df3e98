"""The shared half of every converter: classes, drawing, copying, the output folder.

``convert_dataset(format, source, out_dir, ...)`` reads the annotations with the format's
reader, then builds ``<out>/images/`` (each image file copied byte for byte),
``<out>/masks/<stem>.png`` (8-bit index masks: class index, 255 = ignore), ``classes.json``
(``datasets.classes.write_classes_file``) and ``convert_report.json``: the layout train.py,
``python -m datasets.check``, test.py and draw.py read as it is.

Classes: class 0 is the background (``background`` names it; shapes with that label draw
class 0, e.g. holes); then the reader's labels in their natural order (COCO category ids, the
CVAT label list, LabelMe names sorted), or exactly ``classes`` (``--classes``, class 0 first);
labels in ``ignore_labels`` draw 255 and are no class.

Per image, in this order (the first failing check is the reason reported): a name no other
image's stem shares; a ``.jpg/.jpeg/.png`` name, not hidden; the file found; its header
readable (``datasets.decode.check_header``: JPEG/PNG/BMP, the pixel limit); no EXIF rotation;
the size the annotation records. Then the shapes are drawn in their order (``raster.py``'s
coverage rule), each over the previous ones; a shape whose label is no class, or that covers
no pixel centre, is skipped and counted.

Safety: ``out`` may neither be, lie inside, nor contain a folder (or file) the conversion
reads; the folder is built aside and swapped in whole (``common.files.staged_dir``), and only
a folder holding ``convert_report.json`` is ever replaced (``--overwrite``). An interrupted or
failed conversion leaves ``out`` as it was.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from common.errors import EXIT_NO_RESULT, ConfigError, DataError
from common.files import atomic_write_json, check_output_dir, check_replaceable, staged_dir
from datasets.classes import IGNORE_LABEL, validate_class_names, write_classes_file
from datasets.convert.coco import read_coco
from datasets.convert.cvat import read_cvat
from datasets.convert.labelme import read_labelme
from datasets.convert.raster import coverage
from datasets.convert.records import Annotations, ImageRecord, ShapeError, SkipReason, Skips
from datasets.convert.report import ClassCounts, ConvertReport
from datasets.examples import IMAGE_EXTENSIONS, IMAGES_DIR, MASK_EXTENSION, MASKS_DIR
from datasets.decode import MAX_PIXELS, UnreadableFileError, check_header
from datasets.labels import DETECT_SAMPLE, DataFormatError, detect_label_format

__all__ = ["FORMATS", "MARKER_FILE", "WRITER", "DEFAULT_LINE_WIDTH", "NothingConvertedError",
           "resolve_classes", "convert_dataset"]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "labelme", "cvat")
MARKER_FILE = "convert_report.json"
WRITER = "python -m datasets.convert"
# Width in pixels of LabelMe lines and CVAT polylines, which record none.
DEFAULT_LINE_WIDTH = 3.0


class NothingConvertedError(DataError):
    """Every image was skipped: nothing is written (the reasons are in the message)."""

    exit_code = EXIT_NO_RESULT


def resolve_classes(labels: Sequence[str], *, classes: Optional[Sequence[str]] = None,
                    background: Optional[str] = None, ignore_labels: Sequence[str] = (),
                    source: str = "the annotations") -> tuple[tuple[str, ...], dict[str, int]]:
    """``(class names, label -> mask value)``; see the module docstring.

    Raises:
        ConfigError: ``--classes`` malformed or naming an ignored label, ``--background`` that
            is not class 0 of ``--classes``.
        DataError: the labels of ``source`` are no valid class names (empty, commas,
            surrounding spaces), or more than 254 classes.
    """
    ignore = tuple(dict.fromkeys(ignore_labels))
    if classes is not None:
        names = validate_class_names(classes, source="--classes")
        if background is not None and background != names[0]:
            raise ConfigError(f"--background {background!r} but --classes names class 0 "
                              f"{names[0]!r}: give one of them")
        both = [name for name in ignore if name in names]
        if both:
            raise ConfigError(f"--ignore-label {', '.join(both)} is also in --classes: a label "
                              f"is either a class or ignored")
    else:
        background = "background" if background is None else background
        names = (background,) + tuple(label for label in dict.fromkeys(labels)
                                      if label != background and label not in ignore)
        try:
            names = validate_class_names(names, source=f"the labels of {source}")
        except ConfigError as error:
            raise DataError(f"{error}; rename the label in the tool, or choose the classes "
                            f"with --classes") from None
    if len(names) >= IGNORE_LABEL:
        raise DataError(f"{source}: {len(names)} classes; at most {IGNORE_LABEL - 1} fit below "
                        f"the ignore value {IGNORE_LABEL}")
    values = {name: index for index, name in enumerate(names)}
    values.update({name: IGNORE_LABEL for name in ignore})
    return names, values


def _read(fmt: str, source: Path, images_dir: Optional[Path], skips: Skips, *,
          line_width: float, crowd_as_class: bool) -> Annotations:
    if fmt == "coco":
        return read_coco(source, images_dir=images_dir, skips=skips,
                         crowd_as_class=crowd_as_class)
    if fmt == "labelme":
        return read_labelme(source, images_dir=images_dir, skips=skips, line_width=line_width)
    return read_cvat(source, images_dir=images_dir, skips=skips, line_width=line_width)


def _check_arguments(fmt: str, source: Path, images_dir: Optional[Path], line_width: float,
                     max_pixels: Optional[int]) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not source.exists():
        raise DataError(f"{fmt} source {source} not found")
    if fmt != "labelme" and not source.is_file():
        raise DataError(f"{fmt} source {source} is not a file: give the exported "
                        f"{'JSON' if fmt == 'coco' else 'XML'} file")
    if images_dir is None and fmt != "labelme":
        raise ConfigError(f"{fmt}: --images is needed (the folder of the annotated images)")
    if images_dir is not None and not images_dir.is_dir():
        raise DataError(f"--images {images_dir} is not a folder")
    if not (line_width > 0 and np.isfinite(line_width)):
        raise ConfigError(f"--line-width must be a positive number of pixels, got {line_width}")
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"--max-pixels must be positive, got {max_pixels}")


def _guard_output(out: Path, inputs: Sequence[Path], *, overwrite: bool) -> None:
    check_output_dir(out, inputs, subfolders=(IMAGES_DIR, MASKS_DIR), containing_ok=False)
    check_replaceable(out, marker=MARKER_FILE, overwrite=overwrite, writer=WRITER)


def convert_dataset(fmt: str, source: str | os.PathLike, out_dir: str | os.PathLike, *,
                    images_dir: Optional[str | os.PathLike] = None,
                    classes: Optional[Sequence[str]] = None, background: Optional[str] = None,
                    ignore_labels: Sequence[str] = (), line_width: float = DEFAULT_LINE_WIDTH,
                    crowd_as_class: bool = False, skip_empty: bool = False,
                    overwrite: bool = False,
                    max_pixels: Optional[int] = MAX_PIXELS) -> ConvertReport:
    """Convert ``source`` (a COCO JSON file, a LabelMe folder or file, a CVAT XML file) into the
    data folder ``out_dir``; see the module docstring. Returns the report (also saved as
    ``<out_dir>/convert_report.json``).

    Raises:
        ConfigError: a bad argument. OutputFolderError / OutputExistsError: ``out_dir`` is
        refused. DataError: a missing source, an unreadable annotation file (one line naming
        it), bad class names. NothingConvertedError: every image was skipped.
    """
    source, out = Path(source), Path(out_dir)
    images = None if images_dir is None else Path(images_dir)
    _check_arguments(fmt, source, images, line_width, max_pixels)
    known_inputs = [p for p in (images, source if source.is_dir() else None) if p is not None]
    _guard_output(out, known_inputs + [source], overwrite=overwrite)

    skips = Skips()
    annotations = _read(fmt, source, images, skips, line_width=line_width,
                        crowd_as_class=crowd_as_class)
    names, values = resolve_classes(annotations.labels, classes=classes, background=background,
                                    ignore_labels=ignore_labels, source=str(source))
    image_folders = {record.path.parent for record in annotations.images if record.path}
    _guard_output(out, known_inputs + sorted(image_folders) + [source], overwrite=overwrite)

    with staged_dir(out, marker=MARKER_FILE, overwrite=overwrite, writer=WRITER) as work:
        (work / IMAGES_DIR).mkdir()
        (work / MASKS_DIR).mkdir()
        counts = ClassCounts()
        written, all_background = _write_images(annotations.images, work, values, skips, counts,
                                                skip_empty=skip_empty, max_pixels=max_pixels)
        if not written:
            raise NothingConvertedError(_nothing_message(source, skips))
        write_classes_file(work, names)
        report = ConvertReport(
            format=fmt, source=str(source), out_dir=str(out), class_names=names,
            ignore_labels=tuple(dict.fromkeys(ignore_labels)), written=written,
            all_background=all_background, counts=counts,
            skipped_images=_sorted(skips.images), skipped_shapes=_sorted(skips.shapes),
            settings={"images": None if images is None else str(images),
                      "classes": None if classes is None else list(classes),
                      "background": names[0], "ignore_labels": list(ignore_labels),
                      "line_width": line_width, "crowd_as_class": crowd_as_class,
                      "skip_empty": skip_empty, "max_pixels": max_pixels},
            warnings=_warnings(work, written, names, annotations.labels, ignore_labels, counts))
        atomic_write_json(work / MARKER_FILE, report.to_json())
    logger.info("%s: %d images written, %d skipped", out, len(written),
                sum(len(v) for v in skips.images.values()))
    return report


def _sorted(by_reason: dict[SkipReason, list[str]]) -> dict[SkipReason, list[str]]:
    return {reason: sorted(by_reason[reason]) for reason in SkipReason if by_reason.get(reason)}


def _nothing_message(source: Path, skips: Skips) -> str:
    reasons = ", ".join(f"{len(names)} {reason.value} (e.g. {names[0]})"
                        for reason, names in _sorted(skips.images).items())
    return (f"no image converted from {source}: "
            f"{reasons or 'it annotates no image'}; nothing was written")


def _unique_stems(records: list[ImageRecord], skips: Skips) -> list[ImageRecord]:
    """The records whose output stem no other record shares (compared without case, as a
    macOS or Windows disk would); the others are skipped, all of them."""
    by_stem: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_stem.setdefault(os.path.splitext(record.name)[0].lower(), []).append(record)
    kept = []
    for group in by_stem.values():
        if len(group) == 1:
            kept.append(group[0])
            continue
        same_file = group[0].path is not None and all(r.path == group[0].path for r in group)
        for record in group:
            skips.image(SkipReason.REFERENCED_TWICE if same_file else SkipReason.SAME_STEM,
                        record.where, " and ".join(r.where for r in group))
    return kept


def _write_images(records: list[ImageRecord], work: Path, values: dict[str, int], skips: Skips,
                  counts: ClassCounts, *, skip_empty: bool,
                  max_pixels: Optional[int]) -> tuple[list[str], int]:
    """Copy each image and write its mask; returns (names written, how many all background)."""
    written, all_background = [], 0
    for record in sorted(_unique_stems(records, skips), key=lambda r: r.name):
        checked = _read_image(record, skips, max_pixels)
        if checked is None:
            continue
        data, (height, width) = checked
        labels, shapes_drawn = _draw(record, height, width, values, skips)
        if not labels.any():
            if skip_empty:
                skips.image(SkipReason.EMPTY_IMAGE, record.where)
                continue
            all_background += 1
        ok, png = cv2.imencode(MASK_EXTENSION, labels)
        if not ok:
            raise OSError(f"OpenCV could not encode the mask of {record.where} as PNG")
        (work / IMAGES_DIR / record.name).write_bytes(data)
        (work / MASKS_DIR / (os.path.splitext(record.name)[0] + MASK_EXTENSION)).write_bytes(
            png.tobytes())
        counts.add_mask(labels, np.flatnonzero(shapes_drawn))
        counts.shapes += shapes_drawn
        written.append(record.name)
    return written, all_background


def _read_image(record: ImageRecord, skips: Skips,
                max_pixels: Optional[int]) -> Optional[tuple[bytes, tuple[int, int]]]:
    """The image's bytes and stored (height, width), or None (skipped, counted)."""
    if record.name.startswith("."):
        skips.image(SkipReason.HIDDEN_NAME, record.where)
        return None
    if os.path.splitext(record.name)[1].lower() not in IMAGE_EXTENSIONS:
        skips.image(SkipReason.UNSUPPORTED_IMAGE, record.where, record.name)
        return None
    data = record.data
    if data is None:
        try:
            data = record.path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            skips.image(SkipReason.IMAGE_MISSING, record.where, str(record.path))
            return None
    try:
        header = check_header(data, str(record.path or record.where), max_pixels=max_pixels)
    except UnreadableFileError as error:
        skips.image(SkipReason.UNREADABLE_IMAGE, record.where, error.reason)
        return None
    if header.orientation not in (None, 1):
        skips.image(SkipReason.EXIF_ROTATED, record.where, f"orientation {header.orientation}")
        return None
    if record.size is not None and record.size != (header.height, header.width):
        skips.image(SkipReason.SIZE_MISMATCH, record.where,
                    f"file {header.width}x{header.height}, annotation "
                    f"{record.size[1]}x{record.size[0]}")
        return None
    return data, (header.height, header.width)


def _draw(record: ImageRecord, height: int, width: int, values: dict[str, int],
          skips: Skips) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 label mask of the record's shapes, each drawn over the earlier ones, and the
    shapes drawn per label value."""
    labels = np.zeros((height, width), np.uint8)
    drawn = np.zeros(256, np.int64)
    for shape in record.shapes:
        value = IGNORE_LABEL if shape.ignore else values.get(shape.label)
        if value is None:
            skips.shape(SkipReason.UNKNOWN_LABEL, shape.where, repr(shape.label))
            continue
        try:
            region = coverage(shape.geometry, height, width)
        except ShapeError as error:
            skips.shape(error.reason, shape.where, str(error))
            continue
        if region is None:
            skips.shape(SkipReason.OUTSIDE, shape.where)
            continue
        top, left, block = region
        labels[top:top + block.shape[0], left:left + block.shape[1]][block] = value
        drawn[value] += 1
    return labels, drawn


def _warnings(work: Path, written: list[str], names: tuple[str, ...], labels: Sequence[str],
              ignore_labels: Sequence[str], counts: ClassCounts) -> list[str]:
    """What the user should know before training: classes without pixels, unused
    --ignore-label names, masks that --label-format auto would not read as index masks."""
    warnings = []
    empty = [name for index, name in enumerate(names) if index and not counts.pixels[index]]
    if empty:
        warnings.append(f"class(es) without any pixel in the masks: {', '.join(empty)}")
    unused = [name for name in dict.fromkeys(ignore_labels) if name not in labels]
    if unused:
        warnings.append(f"--ignore-label {', '.join(unused)}: no shape has this label")
    first = [work / MASKS_DIR / (os.path.splitext(name)[0] + MASK_EXTENSION)
             for name in written[:DETECT_SAMPLE]]
    try:
        kind, _ = detect_label_format(first)
    except (ConfigError, DataFormatError):
        kind = "ambiguous"
    if kind != "index":
        warnings.append("the first masks hold only the values 1-3 (no background), which "
                        "--label-format auto takes for Oxford trimaps: pass --label-format "
                        "index to train.py, test.py and python -m datasets.check")
    return warnings
