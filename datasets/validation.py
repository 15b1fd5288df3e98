"""Passes over a list of examples that read image headers and masks but never decode an image:
``validate_examples`` (what ``make_tf_dataset`` runs before its first element, so that nothing
fails while batches are read) and ``iter_labels`` (the training labels at the training size,
for statistics over data that need not fit in memory: ``--class-weights auto``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from datasets.decode import MAX_PIXELS, UnreadableFileError, read_image_header
from datasets.examples import Example
from datasets.labels import LabelFormat
from datasets.loading import fit_label, load_label, report_skipped
from datasets.utils import as_size

__all__ = ["iter_labels", "validate_examples"]

def _labels_by_header(examples: Iterable[Example], *, no_label: bool,
                      label_format: LabelFormat | None, max_pixels: int | None,
                      skipped: list[UnreadableFileError],
                      ) -> Iterator[tuple[Example, np.ndarray | None]]:
    """``(example, full-resolution label or None)`` for each example whose image header (and
    mask, unless ``no_label``) can be read, the mask checked against the size in the image's
    header; images are not decoded. Unreadable files are appended to ``skipped``."""
    for example in examples:
        try:
            header = read_image_header(example.image_path, max_pixels=max_pixels)
            label = None if no_label else load_label(
                example, (header.height, header.width), max_pixels=max_pixels,
                label_format=label_format)
        except UnreadableFileError as error:
            skipped.append(error)
            continue
        yield example, label


def validate_examples(examples: Sequence[Example], *, no_label: bool = False,
                      max_pixels: int | None = MAX_PIXELS,
                      where: str = "validate_examples",
                      label_format: LabelFormat | None = None) -> list[Example]:
    """Check a list of examples without decoding the images, and drop those a reader would
    skip: what ``make_tf_dataset`` runs before its first element, so that nothing fails while
    batches are read.

    Per example: the image's header (format and size, against ``max_pixels``); unless
    ``no_label``, the mask is decoded (masks are small) and checked for its values and against
    the image's size from the header. An image whose pixel data turns out damaged later is
    still skipped when reached.

    Returns:
        The examples that passed, in the given order; the others are reported in one warning.

    Raises:
        DataFormatError: a mask does not fit its format (``label_format``, None: trimap) or its
            image (the first one found, named).
        DataError: not one example passed.
    """
    skipped: list[UnreadableFileError] = []
    kept = [example for example, _ in _labels_by_header(
        examples, no_label=no_label, label_format=label_format, max_pixels=max_pixels,
        skipped=skipped)]
    if skipped:
        report_skipped(skipped, len(examples), where)
    return kept


def iter_labels(examples: Iterable[Example], image_size: Sequence[int], *,
                label_format: LabelFormat | None = None,
                max_pixels: int | None = MAX_PIXELS) -> Iterator[np.ndarray]:
    """The labels of ``examples`` at ``image_size``, one uint8 ``(H, W)`` array at a time,
    exactly as ``load_example`` makes them, without decoding the images (their size comes
    from the header): statistics over a training set that need not fit in memory
    (``--class-weights auto``). Unreadable files are skipped, with one warning at the end.
    """
    size = as_size(image_size, name="image_size")
    examples = list(examples)
    skipped: list[UnreadableFileError] = []
    for _, label in _labels_by_header(examples, no_label=False, label_format=label_format,
                                      max_pixels=max_pixels, skipped=skipped):
        yield fit_label(label, size)
    if skipped:
        report_skipped(skipped, len(examples), "iter_labels")
