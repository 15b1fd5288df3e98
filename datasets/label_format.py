"""The label format and the classes of a labelled folder, decided once from the command-line
options, the folder's files and its first masks (``resolve_label_format``), and the check that
a model's classes are the data's (``check_model_classes``).

Every reader takes the result (a ``datasets.labels.LabelFormat``; None = ``TRIMAP``, the pet
layout): ``--label-format auto|trimap|index|palette`` and the class options become one, ``auto``
decided from the first masks.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from common.errors import ConfigError, DataError
from datasets.classes import (CLASSES_FILE_NAME, IGNORE_LABEL, PET_CLASS_NAMES,
                              check_class_count, read_classes_file, resolve_class_names)
from datasets.decode import MAX_PIXELS
from datasets.examples import Example, report_name_rule
from datasets.labels import (LABEL_FORMATS, TRIMAP, LabelFormat, Palette, default_palette,
                             detect_label_format, read_palette_file)

__all__ = ["ClassMismatchError", "resolve_label_format", "check_model_classes"]

logger = logging.getLogger(__name__)


class ClassMismatchError(DataError, ValueError):
    """A model's classes are not the classes of the data it is given."""


def resolve_label_format(examples: Sequence[Example],
                         label_format: LabelFormat | str = "auto", *,
                         classes: Sequence[str] | None = None, num_classes: int | None = None,
                         palette: Palette | str | os.PathLike | None = None,
                         data_dir: str | os.PathLike | None = None,
                         max_pixels: int | None = MAX_PIXELS) -> LabelFormat:
    """The ``LabelFormat`` of a labelled folder from the command-line options.

    Args:
        examples: the folder's examples (``list_examples``); ``auto`` looks at their first
            masks (``datasets.labels.detect_label_format``) and logs what it decided.
        label_format: ``auto``, ``trimap``, ``index`` or ``palette`` (a ``LabelFormat`` is
            returned as it is).
        classes: class names (``--classes``), label i = ``classes[i]``.
        num_classes: ``--num-classes``; None: the number of names.
        palette: a palette file (``--palette``) or a ``Palette``; palette masks only. Without
            one, palette masks use ``datasets.labels.default_palette`` (the VOC colour map).
        data_dir: the folder; its ``classes.json`` (``datasets.classes``) names the classes of
            index and palette masks when neither ``classes`` nor the palette file does.

    The class names come from one place, the first of: ``classes``, the palette file's
    names, ``<data_dir>/classes.json``; else ``resolve_class_names(None, n)`` for ``n`` =
    ``num_classes``, the palette's colour count, or 3 (the pet names for 3 classes). When
    names are given, ``num_classes`` (if given) must equal their count. Trimaps always have 3
    classes (background, cat, dog; names may be changed). For trimaps decided by ``auto``, the
    names that follow only the first-letter rule are reported once (``list_examples`` does it
    for an explicit ``trimap``).

    Raises:
        ConfigError: an unknown format, a palette for other masks, counts that disagree,
            ambiguous masks for ``auto``.
        DataFormatError: ``auto`` found masks of different formats.
        DataError: no labelled example, an unreadable palette or classes file.
    """
    if isinstance(label_format, LabelFormat):
        return label_format
    if label_format not in LABEL_FORMATS:
        raise ConfigError(f"--label-format must be one of {', '.join(LABEL_FORMATS)}, got "
                          f"{label_format!r}")
    labelled = [e for e in examples if e.mask_path is not None]
    where = os.fspath(data_dir) if data_dir is not None else "the data"
    kind = label_format
    if label_format == "auto":
        if not labelled:
            raise DataError(f"--label-format auto needs labelled examples (masks) in {where}")
        kind, reason = detect_label_format([e.mask_path for e in labelled],
                                           max_pixels=max_pixels)
        logger.info("%s: label format %s (--label-format auto: %s)", where, kind, reason)
    table = palette if palette is None or isinstance(palette, Palette) \
        else read_palette_file(palette)
    if table is not None and kind != "palette":
        raise ConfigError(f"--palette {table.source} is a colour table for palette masks, but "
                          f"the masks of {where} are {kind} masks; leave --palette out, or give "
                          f"--label-format palette")
    names, names_from = _class_names(kind, classes, num_classes, table, data_dir)
    if kind == "palette" and table is None:
        table = default_palette(len(names))
    result = LabelFormat(kind, tuple(names), table if kind == "palette" else None)
    if kind == "trimap" and label_format == "auto":
        report_name_rule(labelled, where)
    logger.info("%s: %s%s", where, result.describe(),
                f" (names from {names_from})" if names_from else "")
    return result


def _class_names(kind: str, classes: Sequence[str] | None, num_classes: int | None,
                 table: Palette | None, data_dir: str | os.PathLike | None,
                 ) -> tuple[tuple[str, ...], str | None]:
    """``resolve_label_format``'s class step: the class names and where they come from (None:
    made up from the count), by the order of precedence its docstring gives; names given
    must agree with ``num_classes``."""
    names_from, names = None, None
    folder_classes = None if data_dir is None else Path(data_dir) / CLASSES_FILE_NAME
    if classes is not None:
        names_from, names = "--classes", tuple(classes)
    elif table is not None and table.class_names is not None:
        names_from, names = f"the palette {table.source}", table.class_names
    elif kind != "trimap" and folder_classes is not None and folder_classes.is_file():
        described = read_classes_file(folder_classes)
        if described["ignore_label"] != IGNORE_LABEL:
            raise ConfigError(f"{folder_classes} gives ignore_label {described['ignore_label']}, "
                              f"but masks mark ignored pixels with {IGNORE_LABEL}: re-save the "
                              f"masks with {IGNORE_LABEL} there and drop ignore_label")
        names_from, names = str(folder_classes), described["classes"]
    if names is None:
        count = num_classes if num_classes is not None else (
            table.num_classes if table is not None else len(PET_CLASS_NAMES))
        names = resolve_class_names(None, count)
    else:
        check_class_count(names, num_classes, names_from=names_from)
    return tuple(names), names_from


def check_model_classes(num_classes: int, *, model: str, data: str,
                        label_format: LabelFormat | None = None) -> None:
    """Refuse to score a model whose classes are not the data's.

    The data's classes are those of ``label_format`` (None: the pet layout's
    ``PET_CLASS_NAMES``, background, cat, dog). A model with fewer classes cannot predict some of
    them; one with more would be scored on classes that the data never holds (their IoU is
    meaningless), so both are errors.

    Raises:
        ClassMismatchError: naming the model, the data and both class counts.
    """
    names = (label_format or TRIMAP).class_names
    if num_classes != len(names):
        raise ClassMismatchError(
            f"the model in {model} predicts {num_classes} classes, but the labels of {data} "
            f"have {len(names)} ({', '.join(names)}): score it on data of its own "
            f"classes, or use a model trained on this layout")
