"""The segmentation data: files on disk -> uint8 arrays (``read_data``, ``DataSet``). The
streaming ``tf.data`` pipeline over the same files (``make_tf_dataset``) and the seeded,
shardable epoch orders are in datasets/pipeline.py.

Layout of a split folder (the tutorial's, see SPEC.md)::

    <data_dir>/images/<name>.jpg|.jpeg|.png     any case of the extension
    <data_dir>/masks/<stem>.png                 one mask per image, in one of the formats of
                                                datasets/labels.py (default: Oxford trimaps)

Every reader takes ``label_format`` (a ``datasets.labels.LabelFormat``; None = ``TRIMAP``, the
pet layout); ``resolve_label_format`` turns ``--label-format auto|trimap|index|palette`` and the
class options into one, deciding ``auto`` from the first masks.

Data flow, one example (``load_example`` is the only place where this logic lives; ``read_data``
and ``make_tf_dataset`` both call it)::

    images/<name>  --load_image (datasets/decode.py)-->  uint8 RGB (h, w, 3), stored grid
                   --crop_shape/padding(fill 0)-->  (H, W, 3)
    masks/<stem>.png --read_mask (datasets/labels.py), size checked-->  mask as stored
                   --mask_to_label, every value checked-->  uint8 (h, w): class indices, 255 ignore
                   --crop_shape/padding(fill 0 = background)-->  (H, W)

For trimaps the animal's class comes from the first letter of the file name: uppercase = cat
(Oxford capitalises cat breeds), anything else = dog (``datasets/oxford.py``); names that are
not ``<Oxford breed>_<number>`` are counted and reported once. The rule applies to trimaps
only: index and palette masks carry their classes in their values.

What goes wrong with files, and what happens (the README's table lists every case):

- a file that cannot be decoded (empty, truncated, not a JPEG/PNG/BMP, over the pixel limit):
  ``UnreadableFileError``; readers **skip** the example and report the count once;
- a mask that does not fit its format or its image (trimap values outside {1, 2, 3}, an index
  >= C, a colour not in the palette, a layout other than the folder's, another size):
  ``DataFormatError`` naming the files, before any batch is made (``make_tf_dataset`` checks
  every mask when the pipeline is built);
- missing folders, no images, images without masks: ``MissingFilesError`` naming them.

Differences from the original, all for memory: images are **uint8 RGB** (the original kept
float32 **BGR** straight from ``cv2.imread``; the model scales RGB itself), labels are **uint8
class indices with 255 = ignore** (the original kept float32 one-hot with -1 in every channel of
an unknown pixel). That is 1 MiB per 512x512 sample instead of 6 MiB; ``to_one_hot`` /
``from_one_hot`` convert to and from the original label format.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError, DataError
from datasets.classes import (BACKGROUND_CLASS, CLASSES_FILE_NAME, IGNORE_LABEL,
                              PET_CLASS_NAMES, read_classes_file, resolve_class_names)
from datasets.decode import (MAX_PIXELS, ImageTooLargeError, UnreadableFileError, decode_image,
                             read_file, read_image_header)
from datasets.labels import (LABEL_FORMATS, TRIMAP, DataFormatError, LabelFormat, Palette,
                             check_trimap_values, decode_trimap, default_palette,
                             detect_label_format, mask_to_label, read_mask, read_palette_file,
                             read_trimap)
from datasets.oxford import (TRIMAP_BACKGROUND, TRIMAP_FOREGROUND, TRIMAP_UNKNOWN, TRIMAP_VALUES,
                             breed_of, is_cat_name)
from datasets.utils import as_size, crop_shape, padding

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Constants shared with the rest of the project (docs/design.md)
# ---------------------------------------------------------------------------------------------

CLASS_NAMES = PET_CLASS_NAMES   # datasets/classes.py: class names, colours, weights
CAT_CLASS, DOG_CLASS = 1, 2     # BACKGROUND_CLASS (0) comes from datasets/classes.py
NUM_CLASSES = len(CLASS_NAMES)

# Files of images/ that are read (compared lower-case, so ".JPG" counts too).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGES_DIR, MASKS_DIR, MASK_EXTENSION = "images", "masks", ".png"

# Padding values: images get black borders; labels get class 0, background, in every mask
# format (datasets/classes.py), so the padded border is background in the loss and in the
# accuracy, as in the original (which padded trimaps with 2, their background value).
IMAGE_FILL = 0
MASK_FILL = TRIMAP_BACKGROUND   # the same fill in trimap values

_LAYOUT_HINT = ("expected layout: <data_dir>/images/<name>.jpg|.jpeg|.png and, for labelled "
                "data, <data_dir>/masks/<name>.png (trimap, index or palette masks)")

# (image (H, W, 3) uint8, label (H, W) uint8 or None, rng) -> (image, label), shapes unchanged.
AugmentFn = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator],
                     "tuple[np.ndarray, np.ndarray | None]"]


__all__ = [
    "IGNORE_LABEL", "CLASS_NAMES", "BACKGROUND_CLASS", "CAT_CLASS", "DOG_CLASS", "NUM_CLASSES",
    "IMAGE_EXTENSIONS", "IMAGES_DIR", "MASKS_DIR", "MASK_EXTENSION", "TRIMAP_FOREGROUND",
    "TRIMAP_BACKGROUND", "TRIMAP_UNKNOWN", "TRIMAP_VALUES", "IMAGE_FILL", "MASK_FILL",
    "MAX_PIXELS", "UnreadableFileError", "ImageTooLargeError", "MissingFilesError",
    "DataFormatError", "ClassMismatchError", "Example", "foreground_class", "list_examples",
    "check_unique_stems", "load_image", "decode_trimap", "read_trimap", "check_trimap_values",
    "LabelFormat", "TRIMAP", "LABEL_FORMATS", "resolve_label_format", "read_example_mask",
    "load_example", "load_label", "iter_labels", "read_data", "load_examples",
    "validate_examples", "check_model_classes", "to_one_hot", "from_one_hot", "DataSet",
]


class MissingFilesError(DataError, FileNotFoundError):
    """A folder, the images in it, or the masks of some images are missing (all are named)."""


class ClassMismatchError(DataError, ValueError):
    """A model's classes are not the classes of the data it is given."""


# ---------------------------------------------------------------------------------------------
# Listing and loading single examples
# ---------------------------------------------------------------------------------------------

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


def _format_list(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


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
            f"{masks_dir!r}: {_format_list(missing)}. Add the masks, remove those images, or pass "
            f"no_label=True")

    used = {os.path.basename(e.mask_path) for e in examples}
    orphans = sorted(m for m in mask_files
                     if m not in used and os.path.splitext(m)[1] == MASK_EXTENSION)
    if orphans:
        logger.warning("%s: %d mask(s) have no image and are ignored: %s", masks_dir,
                       len(orphans), _format_list(orphans))
    kind = getattr(label_format, "kind", label_format)
    if kind in (None, "trimap"):
        _report_name_rule(examples, images_dir)
    return examples


def _report_name_rule(examples: Sequence[Example], where: str) -> None:
    """One warning for the trimap examples whose class comes from the first letter only."""
    by_letter = [e.name for e in examples if breed_of(e.name) is None]
    if by_letter:
        logger.warning(
            "%s: %d of %d images were classed by the first letter of their name only (upper "
            "case = cat, anything else = dog): their names are not <Oxford breed>_<number>, "
            "e.g. %s", where, len(by_letter), len(examples), _format_list(by_letter, 5))


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
                              f"{_format_list(shared)}; rename or remove one of each")


def load_image(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode an image file into uint8 **RGB** ``(h, w, 3)`` at full resolution, on its stored
    pixel grid (the EXIF orientation is ignored, as for the masks).

    This is ``datasets.decode.decode_image`` on the file's bytes: grayscale becomes 3 equal
    channels, the alpha channel of RGBA is dropped, 16-bit samples become 8-bit (``>> 8``),
    CMYK JPEGs become RGB, whatever the extension says the content is (a PNG named ``.jpg`` is
    read as a PNG). The original kept ``cv2.imread``'s BGR.

    Raises:
        UnreadableFileError: the file is empty, truncated, not a JPEG/PNG/BMP image, or over
            ``max_pixels`` pixels (``ImageTooLargeError``; checked from the header, before
            decoding).
        OSError: the file cannot be opened.
    """
    path = os.fspath(path)
    return decode_image(read_file(path), path, max_pixels=max_pixels)


def read_example_mask(example: Example, image_shape: Sequence[int] | None = None, *,
                      label_format: LabelFormat | None = None,
                      max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """The example's mask as stored (``datasets.labels.decode_mask``: values not converted),
    its layout checked against the format and its size against ``image_shape``.

    Raises:
        UnreadableFileError: the mask cannot be decoded.
        DataFormatError: no mask path, a layout that is not the format's, or a size that
            differs from ``image_shape`` (both files and sizes are named).
    """
    if example.mask_path is None:
        raise DataFormatError(f"{example.name} has no mask path: list the folder with "
                              f"list_examples(data_dir, no_label=False), or pass no_label=True")
    mask = read_mask(example.mask_path, label_format or TRIMAP, max_pixels=max_pixels)
    if image_shape is not None and mask.shape[:2] != tuple(image_shape):
        raise DataFormatError(
            f"mask {example.mask_path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its "
            f"image {example.image_path} is {image_shape[0]}x{image_shape[1]}: a mask must have "
            f"exactly its image's size")
    return mask


def _fit_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A full-resolution label cropped like its image and padded with the background class
    (for trimaps the same as padding the trimap with 2 and mapping after)."""
    return padding(crop_shape(label, size), size, fill=BACKGROUND_CLASS)


def load_example(example: Example, image_size: Sequence[int], no_label: bool = False, *,
                 max_pixels: int | None = MAX_PIXELS,
                 label_format: LabelFormat | None = None,
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Load one example at ``image_size``: the single place where the per-file logic lives.

    Args:
        example: from ``list_examples``.
        image_size: ``(H, W)``.
        no_label: skip the mask and return ``(image, None)``.
        max_pixels: the pixel limit of ``load_image`` (images and masks).
        label_format: how to read the mask (``datasets.labels.LabelFormat``); None: trimap.

    Returns:
        ``image`` uint8 RGB ``(H, W, 3)``: ``crop_shape`` then ``padding`` with 0.
        ``label`` uint8 ``(H, W)`` or None: ``load_label``, cropped like the image and padded
        with class 0 (background). For trimaps: 1 -> ``example.foreground_class``, 2 -> 0,
        3 -> ``IGNORE_LABEL``.

    Raises:
        UnreadableFileError: the image or the mask cannot be decoded (callers skip).
        DataFormatError: the mask does not fit its format (values outside the format's, a
            layout other than the folder's) or its size differs from its image's (both files
            and sizes are named); ``example`` has no mask although labels are asked for.
        ValueError, TypeError: ``image_size`` is not two positive ints.
    """
    size = as_size(image_size, name="image_size")
    full = load_image(example.image_path, max_pixels=max_pixels)     # (h, w, 3)
    image = padding(crop_shape(full, size), size, fill=IMAGE_FILL)  # (H, W, 3), a new array
    if no_label:
        return image, None
    label = load_label(example, image_shape=full.shape[:2], max_pixels=max_pixels,
                       label_format=label_format)                   # (h, w)
    return image, _fit_label(label, size)


def load_label(example: Example, image_shape: Sequence[int] | None = None, *,
               max_pixels: int | None = MAX_PIXELS,
               label_format: LabelFormat | None = None) -> np.ndarray:
    """The label of ``example`` at full resolution (no crop, no pad): uint8 ``(h, w)`` class
    indices, ``IGNORE_LABEL`` for ignored pixels (for trimaps: 0 background,
    ``example.foreground_class`` for the animal, ``IGNORE_LABEL`` for unknown).

    Args:
        example: an example with a ``mask_path``.
        image_shape: ``(h, w)`` of the decoded image, checked against the mask's size.
        max_pixels: the pixel limit for the mask.
        label_format: how to read the mask; None: trimap.

    Raises:
        UnreadableFileError: the mask cannot be decoded.
        DataFormatError: no mask path, a mask that does not fit its format, or a size that
            differs from ``image_shape`` (both files and sizes are named).
    """
    label_format = label_format or TRIMAP
    mask = read_example_mask(example, image_shape, label_format=label_format,
                             max_pixels=max_pixels)
    return mask_to_label(mask, label_format, example.mask_path,
                         foreground_class=example.foreground_class)


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
        yield _fit_label(label, size)
    if skipped:
        _report_skipped(skipped, len(examples), "iter_labels")


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
    elif num_classes is not None and num_classes != len(names):
        raise ConfigError(f"--num-classes {num_classes} but {names_from} names {len(names)} "
                          f"classes ({', '.join(names)}); leave --num-classes out (the names "
                          f"give the count) or make them agree")
    if kind == "palette" and table is None:
        table = default_palette(len(names))
    result = LabelFormat(kind, tuple(names), table if kind == "palette" else None)
    if kind == "trimap" and label_format == "auto":
        _report_name_rule(labelled, where)
    logger.info("%s: %s%s", where, result.describe(),
                f" (names from {names_from})" if names_from else "")
    return result


def check_model_classes(num_classes: int, *, model: str, data: str,
                        label_format: LabelFormat | None = None) -> None:
    """Refuse to score a model whose classes are not the data's.

    The data's classes are those of ``label_format`` (None: the pet layout's
    ``CLASS_NAMES``, background, cat, dog). A model with fewer classes cannot predict some of
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


# ---------------------------------------------------------------------------------------------
# Whole folders in memory
# ---------------------------------------------------------------------------------------------

def read_data(data_dir: str | os.PathLike, image_size: Sequence[int], no_label: bool = False,
              return_names: bool = False, *, max_pixels: int | None = MAX_PIXELS,
              label_format: LabelFormat | str | None = None,
              ) -> (tuple[np.ndarray, np.ndarray | None]
                    | tuple[np.ndarray, np.ndarray | None, list[str]]):
    """Load every example of a split folder into memory.

    Same contract as the original's ``read_data`` (all jpg/jpeg/png of ``images/`` in any case,
    masks from ``masks/<stem>.png``, images padded with 0 and masks with background, class from
    the first letter's case, unknown pixels ignored) but in the lean format of docs/design.md.
    Examples come in sorted file-name order (the original used unsorted ``glob`` order).

    Unreadable files (empty, truncated, not an image, over ``max_pixels``; image or mask) are
    **skipped**: the tutorial removed them by hand. One warning at the end gives their count and
    names, and ``names`` (with ``return_names=True``) tells which files the rows are. Every
    other problem is an error naming the file (see ``list_examples`` and ``load_example``).

    Memory: the output arrays are allocated once and filled in place (no Python list of
    arrays, no final ``np.array`` copy), so the peak is the result plus one decoded image:
    ``H*W*4`` bytes per sample (1 MiB at 512x512) against ~6.3 MB for the original float32 BGR +
    float32 one-hot (``benchmarks/memory_read_data.py`` measures both).

    Args:
        data_dir: folder with ``images/`` (and ``masks/``); with ``no_label`` also a plain
            folder of images.
        image_size: ``(H, W)`` of every output.
        no_label: read images only; ``y`` is None.
        return_names: also return the image file names, one per row.
        max_pixels: images (and masks) with more pixels are skipped without being decoded.
        label_format: None (trimaps), a ``LabelFormat``, or a ``--label-format`` name resolved
            by ``resolve_label_format`` (names and class count from the folder's
            ``classes.json`` or the defaults).

    Returns:
        ``(X, y)`` or ``(X, y, names)``: ``X`` uint8 RGB ``(N, H, W, 3)``, ``y`` uint8
        ``(N, H, W)`` class indices, 255 ignore (trimaps: 0 background, 1 cat, 2 dog), or None
        if ``no_label``; ``names`` a list of N file names such as ``"Bombay_217.jpg"``.
    """
    examples = list_examples(data_dir, no_label=no_label, label_format=label_format)
    if isinstance(label_format, str) and not no_label:
        label_format = resolve_label_format(examples, label_format, data_dir=data_dir,
                                            max_pixels=max_pixels)
    images, labels, names = load_examples(examples, image_size, no_label=no_label,
                                          where=os.fspath(data_dir), max_pixels=max_pixels,
                                          label_format=label_format)
    if return_names:
        return images, labels, names
    return images, labels


def load_examples(examples: Sequence[Example], image_size: Sequence[int], no_label: bool = False,
                  *, where: str = "load_examples", max_pixels: int | None = MAX_PIXELS,
                  label_format: LabelFormat | None = None,
                  ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Load a list of examples into memory (``read_data`` for a folder; scripts use it for
    subsets such as a train/validation split).

    Unreadable files are skipped with one warning (count and names) at the end, as in
    ``read_data``; ``where`` names the source in that warning.

    Raises:
        DataError: not one example could be decoded.
        DataFormatError: see ``load_example``.

    Returns:
        ``(X uint8 (N, H, W, 3), y uint8 (N, H, W) or None, names)``, N the readable examples.
    """
    size = as_size(image_size, name="image_size")
    height, width = size
    images = np.empty((len(examples), height, width, 3), dtype=np.uint8)
    labels = None if no_label else np.empty((len(examples), height, width), dtype=np.uint8)

    names: list[str] = []
    skipped: list[str] = []
    for example in examples:
        try:
            image, label = load_example(example, size, no_label=no_label, max_pixels=max_pixels,
                                        label_format=label_format)
        except UnreadableFileError as error:
            skipped.append(error)
            continue
        row = len(names)  # rows stay dense: a skipped file leaves no hole
        images[row] = image
        if labels is not None:
            labels[row] = label
        names.append(example.name)

    if skipped:
        _report_skipped(skipped, len(examples), where)
        # Shrink in place (realloc) instead of copying the kept rows; no views exist yet.
        images.resize((len(names), height, width, 3), refcheck=False)
        if labels is not None:
            labels.resize((len(names), height, width), refcheck=False)
    logger.info("%s: %d examples at %dx%d, %.1f MB", where, len(names), height, width,
                (images.nbytes + (0 if labels is None else labels.nbytes)) / 1e6)
    return images, labels, names


def _report_skipped(skipped: Sequence[UnreadableFileError], total: int, where: str) -> None:
    """One warning for the files a reader skipped: their count, how many were over the pixel
    limit, and their paths. Raises ``DataError`` when nothing was left."""
    too_large = sum(isinstance(error, ImageTooLargeError) for error in skipped)
    logger.warning("%s: skipped %d unreadable file(s) of %d examples%s: %s", where, len(skipped),
                   total, f" ({too_large} over the pixel limit)" if too_large else "",
                   _format_list([error.path for error in skipped], limit=50))
    if len(skipped) == total:
        raise DataError(f"none of the {total} examples in {where} could be decoded, e.g. "
                        f"{skipped[0]}")


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
        _report_skipped(skipped, len(examples), where)
    return kept


# ---------------------------------------------------------------------------------------------
# Label format converters
# ---------------------------------------------------------------------------------------------

def to_one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES,
               ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """Class indices ``(..., H, W)`` -> the original's float32 one-hot ``(..., H, W, C)`` with
    -1 in every channel of an ignored pixel.

    Raises:
        ValueError: a label is neither a class in ``[0, num_classes)`` nor ``ignore_label``.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    ignored = labels == ignore_label
    bad = ~ignored & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ValueError(f"labels hold values {np.unique(labels[bad]).tolist()} that are neither "
                         f"a class in [0, {num_classes}) nor ignore_label={ignore_label}")
    # One channel at a time: the only temporaries are (..., H, W) booleans.
    one_hot = np.empty((*labels.shape, num_classes), dtype=np.float32)
    for c in range(num_classes):
        one_hot[..., c] = labels == c
    one_hot[ignored] = -1.0
    return one_hot


def from_one_hot(one_hot: np.ndarray, ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """The original's one-hot ``(..., H, W, C)`` -> uint8 class indices ``(..., H, W)``.

    Each pixel gets the argmax of its channels (so soft probabilities work too), except pixels
    whose channels are all negative (the original's -1 marker), which get ``ignore_label``.
    """
    one_hot = np.asarray(one_hot)
    if one_hot.ndim < 1 or not 0 < one_hot.shape[-1] <= 255:
        raise ValueError(f"expected (..., C) with 1 <= C <= 255 class channels, got shape "
                         f"{one_hot.shape}")
    if not 0 <= ignore_label <= 255 or ignore_label < one_hot.shape[-1]:
        raise ValueError(f"ignore_label={ignore_label} must be a uint8 value that is not a "
                         f"class index (>= {one_hot.shape[-1]})")
    labels = one_hot.argmax(axis=-1).astype(np.uint8)
    labels[one_hot.max(axis=-1) < 0] = ignore_label
    return labels


# ---------------------------------------------------------------------------------------------
# In-memory minibatches
# ---------------------------------------------------------------------------------------------

class DataSet:
    """Minibatches from in-memory arrays, with the original's API and semantics.

    ``next_batch`` walks through a permutation of the examples; it shuffles on the first call
    and at the end of every epoch, and a batch that crosses the end of an epoch is the old
    epoch's tail followed by the new epoch's head, so every example is seen exactly once per
    epoch. (The original took the "old tail" through a view of the index array *after*
    shuffling it in place, so its boundary batches actually drew from the new order.)

    Randomness never touches NumPy's global RNG: ``seed`` feeds three independent generators,
    for the epoch order, for ``augment`` and for ``sample_batch``, so monitoring with
    ``sample_batch`` or switching augmentation on does not change the order of ``next_batch``.
    ``get_state()``/``set_state()`` capture and restore all of it for an exact resume.

    Args:
        images: ``(N, H, W, 3)`` array (uint8 RGB by convention; any dtype works).
        labels: ``(N, ...)`` array (uint8 ``(N, H, W)`` by convention) or None.
        seed: seeds the generators; None draws fresh entropy.
        augment: ``augment(image, label, rng) -> (image, label)`` applied to each example of
            each ``next_batch`` batch (not to ``sample_batch``: that one is for scoring); it
            must keep shapes and dtypes. ``label`` is None for unlabelled data.
    """

    _STATE_FORMAT = "datasets.data.DataSet/1"

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, *,
                 seed: int | None = None, augment: AugmentFn | None = None) -> None:
        if not isinstance(images, np.ndarray) or images.ndim < 1:
            raise TypeError(f"images must be a NumPy array (N, H, W, C), got "
                            f"{type(images).__name__}")
        if labels is not None and (not isinstance(labels, np.ndarray)
                                   or labels.shape[:1] != images.shape[:1]):
            raise ValueError(
                f"images and labels must have the same number of examples, got "
                f"{images.shape[0]} images and "
                f"{getattr(labels, 'shape', (None,))[0]} labels")
        self._images = images
        self._labels = labels
        self._num_examples = int(images.shape[0])
        self._augment = augment
        order_seed, augment_seed, sample_seed = np.random.SeedSequence(seed).spawn(3)
        self._order_rng = np.random.Generator(np.random.PCG64(order_seed))
        self._augment_rng = np.random.Generator(np.random.PCG64(augment_seed))
        self._sample_rng = np.random.Generator(np.random.PCG64(sample_seed))
        self._indices = np.arange(self._num_examples, dtype=np.int64)  # the epoch's order
        self._epochs_completed = 0
        self._index_in_epoch = 0

    @property
    def images(self) -> np.ndarray:
        return self._images

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def num_examples(self) -> int:
        return self._num_examples

    @property
    def epochs_completed(self) -> int:
        """Epoch boundaries crossed by ``next_batch`` so far (as in the original, the count goes
        up on the call that needs examples beyond the end)."""
        return self._epochs_completed

    def _check_batch_size(self, batch_size: int, *, replacement: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not replacement and batch_size > self._num_examples:
            raise ValueError(f"batch_size={batch_size} is larger than the data set "
                             f"({self._num_examples} examples); use at most {self._num_examples}")

    def _gather(self, indices: np.ndarray, *,
                augment: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Copy the rows ``indices`` out (fancy indexing), then augment them in place."""
        images = self._images[indices]
        labels = None if self._labels is None else self._labels[indices]
        if augment and self._augment is not None:
            for i in range(len(indices)):
                image, label = self._augment(images[i], None if labels is None else labels[i],
                                             self._augment_rng)
                if image.shape != images.shape[1:] or (
                        labels is not None and getattr(label, "shape", None) != labels.shape[1:]):
                    raise ValueError(
                        f"augment must keep shapes: got image {image.shape} and label "
                        f"{getattr(label, 'shape', None)} for inputs {images.shape[1:]} and "
                        f"{None if labels is None else labels.shape[1:]}")
                images[i] = image
                if labels is not None:
                    labels[i] = label
        return images, labels

    def next_batch(self, batch_size: int,
                   shuffle: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The next ``batch_size`` examples of the epoch order, wrapping into the next epoch.

        Returns:
            ``(images (B, ...), labels (B, ...) or None)``: copies, augmented if ``augment``.
        Raises:
            ValueError: ``batch_size`` is not in ``[1, num_examples]``.
        """
        self._check_batch_size(batch_size)
        start = self._index_in_epoch
        if self._epochs_completed == 0 and start == 0 and shuffle:
            self._order_rng.shuffle(self._indices)
        if start + batch_size > self._num_examples:
            self._epochs_completed += 1
            tail = self._indices[start:].copy()  # copy: the shuffle below works in place
            if shuffle:
                self._order_rng.shuffle(self._indices)
            self._index_in_epoch = batch_size - len(tail)
            indices = np.concatenate([tail, self._indices[:self._index_in_epoch]])
        else:
            self._index_in_epoch = start + batch_size
            indices = self._indices[start:self._index_in_epoch]
        return self._gather(indices, augment=True)

    def sample_batch(self, batch_size: int,
                     shuffle: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``batch_size`` random examples drawn with replacement (``batch_size`` may exceed
        ``num_examples``), or without ``shuffle`` the first ``batch_size`` examples. Never
        augmented; does not move ``next_batch``'s position.

        Raises:
            ValueError: ``batch_size`` < 1, or > ``num_examples`` without ``shuffle``.
        """
        self._check_batch_size(batch_size, replacement=shuffle)
        if shuffle:
            indices = self._sample_rng.integers(self._num_examples, size=batch_size)
        else:
            indices = np.arange(batch_size)
        return self._gather(indices, augment=False)

    def get_state(self) -> dict[str, Any]:
        """Everything that decides future batches, as a JSON-serialisable dict (plain ints,
        lists and strings): position, epoch count, the current order, the generators' states
        (PCG64 states are 128-bit ints, which Python's ``json`` round-trips exactly)."""
        return {
            "format": self._STATE_FORMAT,
            "num_examples": self._num_examples,
            "epochs_completed": self._epochs_completed,
            "index_in_epoch": self._index_in_epoch,
            "indices": self._indices.tolist(),
            "rng": {
                "order": self._order_rng.bit_generator.state,
                "augment": self._augment_rng.bit_generator.state,
                "sample": self._sample_rng.bit_generator.state,
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()``'s output (possibly through JSON): the batches that follow are
        exactly those that followed when the state was taken.

        Raises:
            ValueError: the state is not a DataSet state or belongs to a data set of another size.
        """
        if not isinstance(state, dict) or state.get("format") != self._STATE_FORMAT:
            raise ValueError(f"not a DataSet state (expected format {self._STATE_FORMAT!r})")
        if state["num_examples"] != self._num_examples:
            raise ValueError(f"the state is for {state['num_examples']} examples, this data set "
                             f"has {self._num_examples}")
        indices = np.asarray(state["indices"], dtype=np.int64)
        if not np.array_equal(np.sort(indices), np.arange(self._num_examples)):
            raise ValueError("the state's 'indices' is not a permutation of the examples")
        index_in_epoch = int(state["index_in_epoch"])
        if not 0 <= index_in_epoch <= self._num_examples:
            raise ValueError(f"the state's index_in_epoch={index_in_epoch} is outside "
                             f"[0, {self._num_examples}]")
        self._order_rng.bit_generator.state = state["rng"]["order"]
        self._augment_rng.bit_generator.state = state["rng"]["augment"]
        self._sample_rng.bit_generator.state = state["rng"]["sample"]
        self._indices = indices
        self._index_in_epoch = index_in_epoch
        self._epochs_completed = int(state["epochs_completed"])
