"""Listing a split folder: which files are the examples, and what each one is called.

Layout of a split folder (the tutorial's, see SPEC.md)::

    <data_dir>/images/<name>.jpg|.jpeg|.png     any case of the extension
    <data_dir>/masks/<stem>.png                 one mask per image, in one of the formats of
                                                datasets/labels.py (default: Oxford trimaps)

``list_examples`` checks names only (cheap): missing folders, no images and images without
masks are a ``MissingFilesError`` naming them; file contents are read by datasets/loading.py.

For trimaps the animal's class comes from the first letter of the file name: uppercase = cat
(Oxford capitalises cat breeds), anything else = dog (``datasets/oxford.py``); names that are
not ``<Oxford breed>_<number>`` are counted and reported once (``report_name_rule``). The rule
applies to trimaps only: index and palette masks carry their classes in their values.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence

from common.errors import DataError, format_list
from datasets.labels import DataFormatError, LabelFormat
from datasets.oxford import breed_of, is_cat_name

__all__ = [
    "IMAGE_EXTENSIONS", "IMAGES_DIR", "MASKS_DIR", "MASK_EXTENSION", "CAT_CLASS", "DOG_CLASS",
    "MissingFilesError", "foreground_class", "Example", "list_examples", "report_name_rule",
    "check_unique_stems",
]

logger = logging.getLogger(__name__)

# Files of images/ that are read (compared lower-case, so ".JPG" counts too).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGES_DIR, MASKS_DIR, MASK_EXTENSION = "images", "masks", ".png"

# The trimap classes of the pets (label values; BACKGROUND_CLASS, 0, is in datasets/classes.py).
CAT_CLASS, DOG_CLASS = 1, 2

_LAYOUT_HINT = ("expected layout: <data_dir>/images/<name>.jpg|.jpeg|.png and, for labelled "
                "data, <data_dir>/masks/<name>.png (trimap, index or palette masks)")


class MissingFilesError(DataError, FileNotFoundError):
    """A folder, the images in it, or the masks of some images are missing (all are named)."""


def foreground_class(name: str) -> int:
    """Class of the animal in the image called ``name``: ``CAT_CLASS`` if its first letter is
    uppercase (``Abyssinian_1.jpg``), else ``DOG_CLASS`` (``beagle_1.jpg``, also ``1.jpg``)."""
    return CAT_CLASS if is_cat_name(name) else DOG_CLASS


@dataclasses.dataclass(frozen=True)
class Example:
    """One image file and its mask.

    Attributes:
        name: the image's file name inside ``images/``, extension included
            (``"Bombay_217.jpg"``): unique within a folder, used to name outputs.
        image_path: path of the image.
        mask_path: path of ``masks/<stem>.png``, or None for unlabelled data.
    """

    name: str
    image_path: str
    mask_path: str | None = None

    @property
    def stem(self) -> str:
        """The file name without its extension (``"Bombay_217"``), also the mask's stem."""
        return os.path.splitext(self.name)[0]

    @property
    def foreground_class(self) -> int:
        """``CAT_CLASS`` or ``DOG_CLASS`` from the first letter of the name."""
        return foreground_class(self.name)


def _image_names(folder: str) -> list[str]:
    """Sorted (code point order) names of the image files directly in ``folder``."""
    return sorted(
        entry.name for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".")
        and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)


def list_examples(data_dir: str | os.PathLike, no_label: bool = False, *,
                  label_format: LabelFormat | str | None = None) -> list[Example]:
    """List the examples of a split folder, sorted by image file name, and check the layout.

    Images are the files of ``<data_dir>/images`` whose extension is one of
    ``IMAGE_EXTENSIONS`` in any case, sorted with ``sorted`` (code point order: upper-case
    names first); hidden files (``._*`` macOS junk, ``.DS_Store``) and folders are ignored, as
    ``glob('*.jpg')`` did in the original. Unless ``no_label``, every image ``<stem>.<ext>``
    needs ``<data_dir>/masks/<stem>.png`` with exactly that spelling: a mask whose name differs
    only in case is not a match (it would silently break on case-sensitive file systems), and
    the error says so. Masks without an image are ignored with one warning (their count).
    For trimaps (``label_format`` None, ``TRIMAP`` or ``"trimap"``), images whose names are not
    ``<Oxford breed>_<number>`` get one warning with their count, since their class comes from
    the first letter of the name only; for ``"auto"`` ``resolve_label_format`` gives it when it
    decides on trimaps; index and palette masks do not use names.

    With ``no_label`` only, a folder without ``images/`` that holds the images itself (a plain
    folder of photos for draw.py) is read as is.

    Only names are checked here (cheap); file contents are checked by ``load_example`` (and, for
    a whole list at once, ``validate_examples``).

    Raises:
        MissingFilesError: no such folder, no ``images/`` folder, no images in it, no ``masks/``
            folder, or images without a mask (all of them are named). A ``FileNotFoundError``.
        DataFormatError: two images share a stem (``a.jpg`` and ``a.png``) and would share a
            mask. A ``ValueError``.
    """
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise MissingFilesError(f"data folder {data_dir!r} does not exist; {_LAYOUT_HINT}")
    images_dir = os.path.join(data_dir, IMAGES_DIR)
    if not os.path.isdir(images_dir):
        loose = _image_names(data_dir)
        if no_label and loose:
            logger.info("list_examples: no '%s' folder in %s, reading its %d images directly",
                        IMAGES_DIR, data_dir, len(loose))
            return [Example(name, os.path.join(data_dir, name), None) for name in loose]
        hint = (f"; it holds {len(loose)} image files directly: move them into {images_dir!r}"
                if loose else "")
        raise MissingFilesError(f"no '{IMAGES_DIR}' folder in {data_dir!r} (looked for "
                                f"{images_dir!r}){hint}; {_LAYOUT_HINT}")
    names = _image_names(images_dir)
    if not names:
        raise MissingFilesError(f"no images in {images_dir!r}: expected files ending in "
                                f"{', '.join(IMAGE_EXTENSIONS)} (any case); {_LAYOUT_HINT}")
    if no_label:
        return [Example(name, os.path.join(images_dir, name), None) for name in names]

    masks_dir = os.path.join(data_dir, MASKS_DIR)
    if not os.path.isdir(masks_dir):
        raise MissingFilesError(
            f"no '{MASKS_DIR}' folder in {data_dir!r} (looked for {masks_dir!r}); {_LAYOUT_HINT}. "
            f"For unlabelled images pass no_label=True")
    check_unique_stems(names, where=images_dir, consequence="would share one mask")

    examples = _paired_with_masks(names, images_dir, masks_dir)
    kind = getattr(label_format, "kind", label_format)
    if kind in (None, "trimap"):
        report_name_rule(examples, images_dir)
    return examples


def _paired_with_masks(names: list[str], images_dir: str, masks_dir: str) -> list[Example]:
    """``list_examples``' pairing step: an ``Example`` per image name with its mask
    ``<stem>.png`` in ``masks_dir``; images without one (or with one whose name differs only
    in case) are a ``MissingFilesError`` naming them all, and masks without an image get one
    warning with their count."""
    # Exact, case-sensitive matching against the directory listing: on case-insensitive file
    # systems (macOS, Windows) os.path.exists("Bombay_1.png") is also true for "Bombay_1.PNG",
    # so a folder would load there and fail on Linux.
    mask_files = {entry.name for entry in os.scandir(masks_dir)
                  if entry.is_file() and not entry.name.startswith(".")}
    by_lower = {mask.lower(): mask for mask in mask_files}
    examples, missing = [], []
    for name in names:
        mask_name = os.path.splitext(name)[0] + MASK_EXTENSION
        if mask_name in mask_files:
            examples.append(Example(name, os.path.join(images_dir, name),
                                    os.path.join(masks_dir, mask_name)))
        elif mask_name.lower() in by_lower:
            missing.append(f"{name} (found {by_lower[mask_name.lower()]!r}, which differs only in "
                           f"case: a mask must be named exactly {mask_name!r})")
        else:
            missing.append(f"{name} (no {MASKS_DIR}/{mask_name})")
    if missing:
        raise MissingFilesError(
            f"{len(missing)} of {len(names)} images in {images_dir!r} have no mask in "
            f"{masks_dir!r}: {format_list(missing)}. Add the masks, remove those images, or pass "
            f"no_label=True")

    used = {os.path.basename(e.mask_path) for e in examples}
    orphans = sorted(m for m in mask_files
                     if m not in used and os.path.splitext(m)[1] == MASK_EXTENSION)
    if orphans:
        logger.warning("%s: %d mask(s) have no image and are ignored: %s", masks_dir,
                       len(orphans), format_list(orphans))
    return examples


def report_name_rule(examples: Sequence[Example], where: str) -> None:
    """One warning for the trimap examples whose class comes from the first letter only."""
    by_letter = [e.name for e in examples if breed_of(e.name) is None]
    if by_letter:
        logger.warning(
            "%s: %d of %d images were classed by the first letter of their name only (upper "
            "case = cat, anything else = dog): their names are not <Oxford breed>_<number>, "
            "e.g. %s", where, len(by_letter), len(examples), format_list(by_letter, 5))


def check_unique_stems(names: Iterable[str], *, where: str, consequence: str) -> None:
    """Refuse file names that share a stem (``a.jpg`` and ``a.png``): both would map to the
    same ``<stem>.png`` (one mask, or one written mask for draw.py / test.py).

    Args:
        names: file names (or ``Example.name``s).
        where: the folder, for the message.
        consequence: what would go wrong, e.g. ``"would share one mask"``.

    Raises:
        DataFormatError: naming every group of clashing names.
    """
    by_stem: dict[str, list[str]] = {}
    for name in names:
        by_stem.setdefault(os.path.splitext(name)[0], []).append(name)
    shared = [" and ".join(group) for group in by_stem.values() if len(group) > 1]
    if shared:
        raise DataFormatError(f"images in {where!r} share a stem and {consequence}: "
                              f"{format_list(shared)}; rename or remove one of each")
