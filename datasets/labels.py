"""Mask formats: what the values of a mask file mean, and how they become class-index labels.

Every reader of the project turns a mask into the one label convention of docs/design.md:
uint8 ``(h, w)`` class indices ``0..C-1``, ``IGNORE_LABEL`` (255) for pixels that count nowhere.
Three mask formats are read (``--label-format``); ``auto`` picks one from the first masks of a
folder (``detect_label_format``):

``trimap``   the Oxford-IIIT Pet trimaps: 1 animal, 2 background, 3 unknown (-> ignore). The
             animal's class comes from the **file name** (capital first letter = cat, else dog:
             ``datasets/oxford.py``), so the classes are always background, cat, dog.
``index``    one channel (8 or 16 bit; 3 equal channels are accepted, as for trimaps): value
             ``i`` is class ``i`` for ``i < C``, 255 is ignore. What Model Garden,
             segmentation_models or a labelme export call a class-index mask.
``palette``  colour masks: an RGB PNG, or a paletted PNG (colour type 3) as Pascal VOC ships
             (OpenCV expands the palette, so both arrive as colours). A ``Palette`` maps each
             class's colour to its index and any number of colours to ignore (VOC's (224, 224,
             192) outline). Without a palette file the standard VOC colour map of the C classes
             is used (``default_palette``): the colours VOC, SBD and most annotation tools give
             class ``i``. ``datasets/palettes/voc.json`` is the VOC table with its 21 names.

A palette file is JSON (the same shape as a ``classes.json``, plus colours)::

    {"classes": ["background", "aeroplane", ...],     (optional: names of the classes)
     "colors": [[0, 0, 0], [128, 0, 0], ...],          (RGB of class 0, 1, ...)
     "ignore_colors": [[224, 224, 192]]}               (optional: colours that mean ignore)

Values outside the declared classes (an index >= C, a colour not in the table, a trimap value
other than 1, 2, 3) are a ``DataFormatError`` naming the file and the values; so is a mask whose
layout is not the folder's format (a colour mask among index masks, a single-channel mask among
colour masks): one folder holds one format. The readers refuse such a mask before training, as
they refuse a bad trimap; only files that cannot be decoded at all are skipped and counted.

Padding (``datasets.loading.LABEL_FILL``) fills labels with class 0, the background: index and
palette data should keep class 0 for background, as the trimaps and VOC do.

``LabelFormat`` is the resolved description a reader needs: the kind, the class names (so the
class count) and, for ``palette``, the table. It is plain data, hashable, and round-trips
through JSON (``to_dict`` / ``from_dict``): train.py saves it in the run's config.json, so
test.py and draw.py read data the way the model was trained.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import ConfigError, DataError
from datasets.classes import (IGNORE_LABEL, PET_CLASS_NAMES, read_json_file,
                              validate_class_names)
from datasets.decode import MAX_PIXELS, UnreadableFileError, check_header, decode_unchanged, \
    read_file
from datasets.headers import PNG_PALETTE, png_color_type
from datasets.oxford import (TRIMAP_BACKGROUND, TRIMAP_FOREGROUND, TRIMAP_UNKNOWN, TRIMAP_VALUES,
                             breed_of)

__all__ = [
    "LABEL_FORMATS", "FORMAT_KINDS", "TRIMAP", "PALETTES_DIR", "VOC_PALETTE_FILE",
    "VOC_IGNORE_COLOR", "DETECT_SAMPLE", "DataFormatError", "Palette", "LabelFormat",
    "voc_colormap", "default_palette", "read_palette_file", "decode_trimap", "read_trimap",
    "check_trimap_values", "decode_mask", "read_mask", "mask_to_label", "detect_label_format",
]

logger = logging.getLogger(__name__)

LABEL_FORMATS = ("auto", "trimap", "index", "palette")     # the --label-format choices
FORMAT_KINDS = ("trimap", "index", "palette")               # what "auto" resolves to

PALETTES_DIR = Path(__file__).resolve().parent / "palettes"
VOC_PALETTE_FILE = PALETTES_DIR / "voc.json"
# Pascal VOC draws object outlines and "difficult" regions in this colour (palette index 255).
VOC_IGNORE_COLOR = (224, 224, 192)
# How many masks (the first ones, in file-name order) "auto" looks at.
DETECT_SAMPLE = 16

RGB = tuple[int, int, int]


class DataFormatError(DataError, ValueError):
    """A file is readable but wrong: a mask that does not hold the declared format's values or
    layout, or does not match its image; two images that would share one mask or output file."""


# ---------------------------------------------------------------------------------------------
# Palettes (colour -> class tables)
# ---------------------------------------------------------------------------------------------

def _pack(rgb: Sequence[int]) -> int:
    """RGB -> one int (r << 16 | g << 8 | b), the key of the colour tables."""
    return (int(rgb[0]) << 16) | (int(rgb[1]) << 8) | int(rgb[2])


def _unpack(key: int) -> RGB:
    return (key >> 16) & 255, (key >> 8) & 255, key & 255


def _colour(value: Any, where: str) -> RGB:
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                    for c in value)):
        raise ConfigError(f"{where}: a colour is 3 integers in [0, 255] (R, G, B), got {value!r}")
    return int(value[0]), int(value[1]), int(value[2])


@dataclasses.dataclass(frozen=True)
class Palette:
    """A colour -> class table: ``colors[i]`` is the RGB colour of class ``i``; the
    ``ignore_colors`` become ``IGNORE_LABEL``. All colours are different. ``class_names`` (one
    per colour) when the palette file names its classes; ``source`` names the file in messages.
    """

    colors: tuple[RGB, ...]
    ignore_colors: tuple[RGB, ...] = ()
    class_names: tuple[str, ...] | None = None
    source: str = "palette"

    def __post_init__(self) -> None:
        where = self.source
        colors = tuple(_colour(c, f"{where}: colors") for c in self.colors)
        ignore = tuple(_colour(c, f"{where}: ignore_colors") for c in self.ignore_colors)
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "ignore_colors", ignore)
        if not 2 <= len(colors) < IGNORE_LABEL:
            raise ConfigError(f"{where}: a palette needs between 2 and {IGNORE_LABEL - 1} class "
                              f"colours, got {len(colors)}")
        seen: dict[RGB, str] = {}
        for what, colour in [(f"class {i}", c) for i, c in enumerate(colors)] + \
                            [("ignore", c) for c in ignore]:
            if colour in seen:
                raise ConfigError(f"{where}: colour {list(colour)} is given twice ({seen[colour]} "
                                  f"and {what}); every colour must mean one thing")
            seen[colour] = what
        if self.class_names is not None:
            names = validate_class_names(self.class_names, source=f"{where}: classes")
            if len(names) != len(colors):
                raise ConfigError(f"{where}: {len(names)} class names for {len(colors)} "
                                  f"colours; give one colour per class")
            object.__setattr__(self, "class_names", names)

    @property
    def num_classes(self) -> int:
        return len(self.colors)

    def to_labels(self, rgb: np.ndarray, source: str) -> np.ndarray:
        """Colours ``(h, w, 3)`` uint8 RGB -> uint8 labels ``(h, w)``.

        Raises:
            DataFormatError: colours that are neither a class's nor an ignore colour, named
                with their pixel counts, with the file (`source`) and the palette.
        """
        keys = ((rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
                | rgb[..., 2])                                              # (h, w)
        found, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
        table = {_pack(c): i for i, c in enumerate(self.colors)}
        table.update({_pack(c): IGNORE_LABEL for c in self.ignore_colors})
        values = np.array([table.get(int(k), -1) for k in found], np.int64)   # per colour
        unknown = np.flatnonzero(values < 0)
        if unknown.size:
            shown = ", ".join(f"{list(_unpack(int(found[i])))} ({int(counts[i])} px)"
                              for i in unknown[:8])
            more = f" and {unknown.size - 8} more" if unknown.size > 8 else ""
            raise DataFormatError(
                f"mask {source} has {unknown.size} colour(s) that are not in the palette "
                f"{self.source}: {shown}{more}; add them to the palette file (--palette), or "
                f"check that the masks are palette masks (--label-format)")
        return values.astype(np.uint8)[inverse].reshape(rgb.shape[:2])

    def to_dict(self) -> dict[str, Any]:
        """The palette-file document (JSON-ready)."""
        document: dict[str, Any] = {}
        if self.class_names is not None:
            document["classes"] = list(self.class_names)
        document["colors"] = [list(c) for c in self.colors]
        document["ignore_colors"] = [list(c) for c in self.ignore_colors]
        return document

    @classmethod
    def from_dict(cls, document: Any, *, source: str) -> "Palette":
        """Build from a palette-file document; ConfigError naming `source` when malformed."""
        if not isinstance(document, dict) or not isinstance(document.get("colors"), list):
            raise ConfigError(f'{source}: expected a JSON object with a "colors" list (one '
                              f'[R, G, B] per class), e.g. {{"classes": ["background", "cat"], '
                              f'"colors": [[0, 0, 0], [128, 0, 0]], "ignore_colors": '
                              f'[[224, 224, 192]]}}')
        ignore = document.get("ignore_colors", [])
        names = document.get("classes")
        if not isinstance(ignore, list) or (names is not None and not isinstance(names, list)):
            raise ConfigError(f'{source}: "ignore_colors" and "classes" must be lists')
        return cls(colors=tuple(document["colors"]), ignore_colors=tuple(ignore),
                   class_names=None if names is None else tuple(names), source=source)


def voc_colormap(num_classes: int) -> tuple[RGB, ...]:
    """The Pascal VOC colour map: the colour of class ``i`` spreads the bits of ``i`` over the
    channels, from the most significant bit down (bit 0 -> red, 1 -> green, 2 -> blue, then the
    next three bits one place lower), so class 1 is (128, 0, 0), 2 (0, 128, 0), 15 (192, 128,
    128). VOC, SBD and many annotation tools colour class indices this way."""
    colours = []
    for index in range(int(num_classes)):
        rgb = [0, 0, 0]
        bits = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


def default_palette(num_classes: int) -> Palette:
    """The palette used without a palette file: the VOC colour map of `num_classes` classes,
    VOC's outline colour as ignore."""
    return Palette(colors=voc_colormap(num_classes), ignore_colors=(VOC_IGNORE_COLOR,),
                   source=f"the default VOC colour map of {num_classes} classes (no --palette)")


def read_palette_file(path: str | os.PathLike) -> Palette:
    """Read a palette JSON file (see the module docstring).

    Raises:
        DataError: missing, unreadable or not JSON.
        ConfigError: malformed content (named).
    """
    document = read_json_file(path, what="palette file",
                              missing=f"give a JSON colour table (--palette); the VOC table is "
                                      f"{VOC_PALETTE_FILE}")
    return Palette.from_dict(document, source=str(path))


# ---------------------------------------------------------------------------------------------
# The resolved format
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LabelFormat:
    """How to read a folder's masks: ``kind`` (trimap, index or palette), the ``class_names``
    (label ``i`` is ``class_names[i]``) and, for palette masks, the ``palette``.

    Hashable and comparable (the streaming pipeline caches its checks by it). ``TRIMAP`` is the
    pet layout; build the others with ``LabelFormat("index", names)`` or
    ``LabelFormat("palette", names, palette)``.
    """

    kind: str
    class_names: tuple[str, ...]
    palette: Palette | None = None

    def __post_init__(self) -> None:
        if self.kind not in FORMAT_KINDS:
            raise ConfigError(f"label format must be one of {', '.join(FORMAT_KINDS)}, got "
                              f"{self.kind!r}")
        names = validate_class_names(self.class_names)
        object.__setattr__(self, "class_names", names)
        if len(names) >= IGNORE_LABEL:
            raise ConfigError(f"at most {IGNORE_LABEL - 1} classes fit below the ignore value "
                              f"{IGNORE_LABEL}, got {len(names)}")
        if self.kind == "trimap" and len(names) != len(PET_CLASS_NAMES):
            raise ConfigError(f"trimap masks hold {len(PET_CLASS_NAMES)} classes (background, "
                              f"then cat and dog by the file-name rule), got {len(names)} class "
                              f"names: {', '.join(names)}")
        if self.kind == "palette":
            if self.palette is None:
                raise ConfigError("palette masks need a palette (colour -> class table)")
            if self.palette.num_classes != len(names):
                raise ConfigError(f"the palette {self.palette.source} has "
                                  f"{self.palette.num_classes} class colours but there are "
                                  f"{len(names)} classes ({', '.join(names)}); give one colour "
                                  f"per class (--palette) or as many classes (--classes / "
                                  f"--num-classes)")
        elif self.palette is not None:
            raise ConfigError(f"a palette applies to palette masks only, not to {self.kind} masks")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        """One line for logs: ``index masks (...), 5 classes (background, cat, ...)``."""
        if self.kind == "trimap":
            what = ("Oxford trimaps (1 animal, 2 background, 3 unknown; cat or dog from the "
                    "first letter of the name)")
        elif self.kind == "index":
            what = f"index masks (value = class, {IGNORE_LABEL} = ignore)"
        else:
            what = f"palette masks (colours from {self.palette.source})"
        return f"{what}, {self.num_classes} classes ({', '.join(self.class_names)})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "class_names": list(self.class_names),
                "palette": None if self.palette is None else
                dict(self.palette.to_dict(), source=self.palette.source)}

    @classmethod
    def from_dict(cls, document: Any, *, source: str) -> "LabelFormat":
        """Inverse of ``to_dict``; ConfigError naming `source` when malformed."""
        if not isinstance(document, dict) or not isinstance(document.get("class_names"), list):
            raise ConfigError(f"{source}: expected a label format with 'kind' and "
                              f"'class_names', got {document!r}")
        palette = document.get("palette")
        if palette is not None:
            palette = Palette.from_dict(palette, source=str(palette.get("source", source))
                                        if isinstance(palette, dict) else source)
        try:
            return cls(str(document.get("kind")), tuple(document["class_names"]), palette)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


TRIMAP = LabelFormat("trimap", PET_CLASS_NAMES)


# ---------------------------------------------------------------------------------------------
# Decoding and converting masks
# ---------------------------------------------------------------------------------------------

_TRIMAP_MEANING = (f"{TRIMAP_FOREGROUND}=foreground, {TRIMAP_BACKGROUND}=background, "
                   f"{TRIMAP_UNKNOWN}=unknown")


def _one_channel(mask: np.ndarray, source: str, expected: str) -> np.ndarray:
    """A decoded mask as one channel ``(h, w)``: 3 equal channels are accepted (a gray mask
    saved as RGB); anything else names the file and what the folder's masks are."""
    if mask.ndim == 3:  # (h, w, c)
        channels = mask.shape[2]
        equal = all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, channels))
        if channels not in (1, 3) or not equal:
            colour = " (a colour or palette mask)" if channels in (3, 4) and not equal else ""
            raise DataFormatError(
                f"mask {source} has {channels} channels"
                f"{'' if equal else ' with different contents'}{colour}, but {expected}")
        mask = mask[..., 0]
    if mask.dtype.kind != "u":
        raise DataFormatError(f"mask {source} has pixel type {mask.dtype}; expected an 8- or "
                              f"16-bit PNG")
    return mask


def decode_trimap(buffer: np.ndarray | bytes, source: str, *,
                  max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode mask bytes into a 2-D trimap ``(h, w)`` (uint8, or uint16 for 16-bit PNGs),
    without converting any value; a 3-channel mask is accepted if its channels are equal (a
    trimap saved as RGB). Values are checked by ``check_trimap_values``.

    Raises:
        UnreadableFileError: the bytes cannot be decoded (skipped by the readers).
        DataFormatError: unequal channels, 2 or 4 channels, or a non-integer pixel type.
    """
    mask = decode_unchanged(buffer, source, max_pixels=max_pixels)
    return _one_channel(mask, source, f"a trimap must be a single-channel PNG (or 3 equal "
                                      f"channels) with values {_TRIMAP_MEANING}")


def read_trimap(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """``decode_trimap`` of a file."""
    path = os.fspath(path)
    return decode_trimap(read_file(path), path, max_pixels=max_pixels)


def check_trimap_values(trimap: np.ndarray, source: str) -> None:
    """Raise ``DataFormatError`` if ``trimap`` holds values other than 1, 2, 3 (checked on the
    whole mask, not only the cropped part: stray values anywhere mean a broken or foreign
    mask). The message names the file, the stray values and every value found."""
    counts = np.bincount(trimap.ravel())  # uint8/uint16 -> at most 65536 bins, O(pixels)
    found = np.flatnonzero(counts)
    unexpected = [int(v) for v in found if v not in TRIMAP_VALUES]
    if unexpected:
        raise DataFormatError(
            f"mask {source} has values {unexpected} outside the trimap values {_TRIMAP_MEANING} "
            f"(values found: {[int(v) for v in found]})")


def decode_mask(buffer: np.ndarray | bytes, source: str, label_format: LabelFormat, *,
                max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode mask bytes as stored in ``label_format``'s layout, values not yet converted:
    ``(h, w)`` uint8/uint16 for trimap and index masks, ``(h, w, 3)`` uint8 RGB for palette
    masks (a paletted PNG's colours; an alpha channel is dropped).

    Raises:
        UnreadableFileError: the bytes cannot be decoded (readers skip the example).
        DataFormatError: the layout is not the format's (a colour mask among index masks, a
            single-channel mask among palette masks), named with the file.
    """
    if label_format.kind == "trimap":
        return decode_trimap(buffer, source, max_pixels=max_pixels)
    mask = decode_unchanged(buffer, source, max_pixels=max_pixels)
    if label_format.kind == "index":
        return _one_channel(mask, source, "the masks of this folder are read as index masks "
                                          "(one channel, value = class): use one format per "
                                          "folder, or --label-format palette for colour masks")
    # palette: OpenCV gives a paletted PNG as BGR (BGRA with a transparency chunk).
    if mask.ndim != 3 or mask.shape[2] not in (3, 4):
        channels = 1 if mask.ndim == 2 else mask.shape[2]
        raise DataFormatError(
            f"mask {source} has {channels} channel(s), but the masks of this folder are read as "
            f"palette masks (RGB or paletted PNG, colour = class): use one format per folder, "
            f"or --label-format index for single-channel masks")
    if mask.dtype != np.uint8:
        raise DataFormatError(f"mask {source} has {mask.dtype} colours; palette masks must be "
                              f"8-bit")
    return np.ascontiguousarray(mask[..., 2::-1])   # (h, w, 3) BGR(A) -> RGB


def read_mask(path: str | os.PathLike, label_format: LabelFormat, *,
              max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """``decode_mask`` of a file."""
    path = os.fspath(path)
    return decode_mask(read_file(path), path, label_format, max_pixels=max_pixels)


def mask_to_label(mask: np.ndarray, label_format: LabelFormat, source: str, *,
                  foreground_class: int | None = None) -> np.ndarray:
    """A decoded mask (``decode_mask``) -> uint8 labels ``(h, w)``, every value checked.

    trimap: 1 -> ``foreground_class`` (cat 1 or dog 2, from the name), 2 -> 0, 3 -> 255.
    index: ``i < C`` -> ``i``, 255 -> 255. palette: ``Palette.to_labels``.

    Raises:
        DataFormatError: a value outside the format's values, naming `source` and the values.
    """
    if label_format.kind == "trimap":
        if foreground_class is None:
            raise ValueError("trimap labels need the foreground class of the file's name")
        check_trimap_values(mask, source)
        # Trimap value -> class index in one table lookup; value 0 never occurs (checked).
        table = np.array([IGNORE_LABEL, foreground_class, 0, IGNORE_LABEL], dtype=np.uint8)
        return table[mask]
    if label_format.kind == "palette":
        return label_format.palette.to_labels(mask, source)
    num_classes = label_format.num_classes
    found = np.flatnonzero(np.bincount(mask.ravel()))  # at most 65536 bins, O(pixels)
    outside = [int(v) for v in found if v >= num_classes and v != IGNORE_LABEL]
    if outside:
        raise DataFormatError(
            f"mask {source} has values {outside[:10]} outside the {num_classes} classes "
            f"0..{num_classes - 1} ({', '.join(label_format.class_names)}) and the ignore value "
            f"{IGNORE_LABEL} (values found: {[int(v) for v in found[:20]]}); give the right "
            f"--classes / --num-classes, or check --label-format")
    return mask.astype(np.uint8, copy=mask.dtype != np.uint8)


# ---------------------------------------------------------------------------------------------
# auto: which format a folder's masks are
# ---------------------------------------------------------------------------------------------

def _mask_kind(path: str, max_pixels: int | None) -> tuple[str, np.ndarray | None]:
    """What one mask looks like: ``("colour", None)`` for a paletted PNG or different colour
    channels, ``("gray", values found)`` for one channel, ``("gray3", values found)`` for 3 or
    4 channels with equal colours (a gray mask saved as RGB, or an all-black colour mask)."""
    buffer = read_file(path)
    check_header(buffer, path, max_pixels=max_pixels)
    if png_color_type(memoryview(buffer)) == PNG_PALETTE:
        return "colour", None
    mask = decode_unchanged(buffer, path, max_pixels=max_pixels)
    if mask.ndim == 2:
        return "gray", np.flatnonzero(np.bincount(mask.ravel()))
    if mask.shape[2] >= 3 and not (np.array_equal(mask[..., 0], mask[..., 1])
                                   and np.array_equal(mask[..., 0], mask[..., 2])):
        return "colour", None
    return "gray3", np.flatnonzero(np.bincount(mask[..., 0].ravel()))


def detect_label_format(mask_paths: Sequence[str | os.PathLike], *,
                        sample: int = DETECT_SAMPLE,
                        max_pixels: int | None = MAX_PIXELS) -> tuple[str, str]:
    """Decide the format of a folder's masks from the first `sample` of `mask_paths` (give
    them in file-name order): ``(kind, reason)``, the reason for the log.

    * a paletted PNG (colour type 3) or a mask with different colour channels -> ``palette``;
      then every sampled mask must be one (3 equal channels count as colour too);
    * else, values only in {1, 2, 3} and at least half of the names ``<Oxford breed>_<number>``
      -> ``trimap``; values only in {1, 2, 3} with other names is ambiguous (a ConfigError that
      asks for --label-format);
    * else ``index``.

    Masks that cannot be decoded are passed over (the readers skip and count them).

    Raises:
        DataFormatError: the sampled masks mix colour and single-channel masks (both named).
        DataError: none of the sampled masks can be decoded.
        ConfigError: trimap-like values with names that are not pet names.
    """
    paths = [os.fspath(p) for p in mask_paths]
    kinds: list[tuple[str, str, np.ndarray | None]] = []
    for path in paths[:max(1, int(sample))]:
        try:
            kinds.append((path, *_mask_kind(path, max_pixels)))
        except UnreadableFileError:
            continue
    if not kinds:
        raise DataError(f"cannot tell the mask format: none of the first {min(len(paths), sample)}"
                        f" masks can be decoded (e.g. {paths[0] if paths else 'no masks'})")
    colour = [path for path, kind, _ in kinds if kind == "colour"]
    gray = [(path, values) for path, kind, values in kinds if kind != "colour"]
    if colour:
        # Masks with 3 equal channels (e.g. an all-black RGB mask) can be colour masks too.
        single = [path for path, kind, _ in kinds if kind == "gray"]
        if single:
            raise DataFormatError(
                f"the masks mix formats: {colour[0]} is a colour (palette or RGB) mask but "
                f"{single[0]} has one channel ({len(colour)} colour and {len(single)} "
                f"single-channel among the first {len(kinds)}); one folder holds one format")
        return "palette", (f"{len(colour)} of the first {len(kinds)} masks are colour masks "
                           f"(paletted PNG or RGB)")
    values = sorted({int(v) for _, found in gray for v in found})
    if set(values) <= set(TRIMAP_VALUES):
        stems = [os.path.splitext(os.path.basename(path))[0] for path, _ in gray]
        pets = sum(breed_of(stem) is not None for stem in stems)
        if 2 * pets >= len(stems):
            return "trimap", (f"the first {len(kinds)} masks hold only the values {values} "
                              f"and {pets} of their names are Oxford pet names")
        raise ConfigError(
            f"cannot tell the mask format: the first {len(kinds)} masks (e.g. {gray[0][0]}) hold "
            f"only the values {values}, like Oxford trimaps, but their names are not Oxford pet "
            f"names (<breed>_<number>); say which it is: --label-format trimap (1 animal, 2 "
            f"background, 3 unknown; cat if the name starts with a capital) or --label-format "
            f"index (value = class)")
    shown = values if len(values) <= 12 else values[:12] + ["..."]
    return "index", (f"the first {len(kinds)} masks have one channel with values {shown}")
