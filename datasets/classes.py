"""Class names, their drawing colours, per-class loss weights and the ``classes.json`` file.

One home for what a class is called and how it looks, so that train.py, test.py, draw.py and
the data tools agree:

* ``PET_CLASS_NAMES`` ``("background", "cat", "dog")``: the tutorial's classes (label 0, 1, 2).
* ``BACKGROUND_CLASS`` (0): the data layer pads labels with class 0 when an image is smaller
  than the training size, whatever the mask format (trimap, index or palette masks), so
  class 0 should be the background, as in the trimaps and in Pascal VOC.
* ``parse_class_names("background,cat,dog")`` (the ``--classes`` option) and
  ``validate_class_names``: names are non-empty, unique, at least two of them.
* ``check_class_count(names, num_classes)``: names and ``--num-classes`` given together must
  agree (the options, and names from a palette file or ``classes.json``).
* ``resolve_class_names(names, num_classes)``: what to call the classes of a model or a data
  set that does not record names (a model saved before names were saved, or built without
  them): the pet names for 3 classes, else ``background, class_1, ..., class_<C-1>``; class 0
  is "background" because the data layer pads masks with class 0 (docs/design.md).
* ``class_colors(names)``: class index -> RGB drawing colour. A class named ``cat`` or ``dog``
  keeps the tutorial's colour, a class named ``background`` gets none (drawn untouched), and
  every other class ``i`` gets ``palette_color(i)``: a fixed, deterministic colour that is
  never the cat or dog colour.
* ``parse_class_weights`` (the ``--class-weights`` option): none, auto or one weight per class.
* ``write_classes_file`` / ``read_classes_file``: ``classes.json`` beside ``images/`` and
  ``masks/`` names the classes of an index-mask folder.

Models and the learning code do not import this module: class names reach them as plain data
(``SegNet(class_names=...)``, saved in ``model_config.json``); drawing code receives the colour
table from the caller.
"""
from __future__ import annotations

import colorsys
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from common.errors import ConfigError, DataError
from common.files import atomic_write_json

__all__ = [
    "PET_CLASS_NAMES", "IGNORE_LABEL", "BACKGROUND_CLASS", "BACKGROUND_NAMES", "PET_COLORS",
    "CLASSES_FILE_NAME",
    "parse_class_names", "validate_class_names", "generic_class_names", "resolve_class_names",
    "check_class_count",
    "palette_color", "class_colors", "parse_class_weights", "write_classes_file",
    "read_json_file", "read_classes_file",
]

PET_CLASS_NAMES: tuple[str, ...] = ("background", "cat", "dog")
# The label value of pixels that belong to no class (the trimaps' "unknown" band, a VOC
# outline): the loss and the metrics skip them. Class indices are 0..C-1 < IGNORE_LABEL.
IGNORE_LABEL = 255
# The class of padded label pixels (datasets.loading.LABEL_FILL), in every mask format.
BACKGROUND_CLASS = 0

# Names (compared case-insensitively) that mean "nothing here": drawn without colour. VOC's
# label tools call it "_background_".
BACKGROUND_NAMES = ("background", "_background_")

# The tutorial's drawing colours (RGB), by class name.
PET_COLORS: dict[str, tuple[int, int, int]] = {"cat": (0, 102, 66), "dog": (155, 10, 116)}

# The classes file written beside images/ and masks/ (datasets.synthetic --classes N writes it).
CLASSES_FILE_NAME = "classes.json"
CLASSES_FILE_FORMAT = 1

# Colours of the other classes, by class index (index 0 is usually background and uncoloured,
# so it gets the entry used least). Saturated, mutually distinct hues chosen for this project;
# each is at least 100 (RGB Euclidean distance) from the cat and the dog colour and 70 from the
# others (tests/test_classes.py checks both).
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),  # 0  grey
    (230, 25, 25),    # 1  red
    (30, 90, 240),    # 2  blue
    (250, 200, 0),    # 3  yellow
    (255, 120, 0),    # 4  orange
    (0, 200, 220),    # 5  cyan
    (140, 60, 230),   # 6  violet
    (120, 230, 60),   # 7  lime
    (250, 110, 190),  # 8  pink
    (130, 70, 10),    # 9  brown
    (0, 0, 128),      # 10 navy
    (255, 240, 160),  # 11 cream
    (255, 0, 255),    # 12 magenta
    (160, 160, 40),   # 13 olive
    (128, 0, 0),      # 14 maroon
    (190, 170, 255),  # 15 lavender
    (255, 255, 255),  # 16 white
    (0, 0, 0),        # 17 black
    (170, 255, 195),  # 18 mint
    (0, 255, 140),    # 19 spring green
    (90, 160, 255),   # 20 sky blue
    (255, 170, 90),   # 21 apricot
    (255, 80, 80),    # 22 salmon
    (200, 255, 0),    # 23 chartreuse
)
# Least distance a generated colour (index >= len(_PALETTE)) keeps from cat and dog.
_MIN_PET_DISTANCE = 60.0
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def validate_class_names(names: Iterable[str], *, source: str = "class names") -> tuple[str, ...]:
    """The names as a tuple, or ConfigError: each a non-empty string without surrounding
    spaces or commas, all different, at least two. `source` names the option or file."""
    names = tuple(names)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{source}: every class needs a non-empty name, got {list(names)!r}")
        if name != name.strip() or "," in name:
            raise ConfigError(f"{source}: class name {name!r} must not contain commas or start "
                              f"or end with spaces")
    if len(names) < 2:
        raise ConfigError(f"{source}: at least 2 classes are needed (e.g. background,object), "
                          f"got {list(names)!r}")
    seen: set[str] = set()
    repeated = sorted({name for name in names if name in seen or seen.add(name)})
    if repeated:
        raise ConfigError(f"{source}: class names must be unique; repeated: {', '.join(repeated)}")
    return names


def parse_class_names(text: str, *, option: str = "--classes") -> tuple[str, ...]:
    """``"background,cat,dog"`` -> ``("background", "cat", "dog")``; spaces around names are
    dropped; class i is the i-th name (label value i in the masks)."""
    return validate_class_names((part.strip() for part in str(text).split(",")), source=option)


def generic_class_names(num_classes: int) -> tuple[str, ...]:
    """``("background", "class_1", ..., "class_<C-1>")``: names for unnamed classes."""
    if int(num_classes) < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes!r}")
    return ("background",) + tuple(f"class_{i}" for i in range(1, int(num_classes)))


def resolve_class_names(names: Sequence[str] | None, num_classes: int) -> tuple[str, ...]:
    """The names to show for `num_classes` classes: `names` when recorded (checked against the
    count), else the pet names for 3 classes (every model saved before names were recorded is
    a pet model) and generic names otherwise."""
    if names is not None:
        names = validate_class_names(names)
        if len(names) != int(num_classes):
            raise ConfigError(f"{len(names)} class names ({', '.join(names)}) for a model of "
                              f"{num_classes} classes: give one name per class")
        return names
    if int(num_classes) == len(PET_CLASS_NAMES):
        return PET_CLASS_NAMES
    return generic_class_names(num_classes)


def check_class_count(names: Sequence[str], num_classes: int | None, *,
                      names_from: str = "--classes", count_from: str = "--num-classes") -> None:
    """The rule between class names and ``--num-classes``: the names give the count, so a count
    given as well must equal it. ``names_from`` and ``count_from`` name where each came from
    (an option, a file) in the ConfigError."""
    if num_classes is not None and num_classes != len(names):
        raise ConfigError(f"{names_from} names {len(names)} classes ({', '.join(names)}) but "
                          f"{count_from} is {num_classes}; leave --num-classes out (the names "
                          f"give the count) or make them agree")


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.dist(tuple(map(float, a)), tuple(map(float, b)))


def palette_color(index: int) -> tuple[int, int, int]:
    """The fixed colour of class `index` when it is neither cat, dog nor background.

    The first 24 come from a hand-picked table; later ones step around the hue circle by the
    golden angle (so neighbours differ most), alternating brightness, and are turned half-way
    round when they would land near the cat or dog colour. Deterministic for every index.
    """
    index = int(index)
    if index < 0:
        raise ConfigError(f"class index must be >= 0, got {index}")
    if index < len(_PALETTE):
        return _PALETTE[index]
    hue = (index * _GOLDEN) % 1.0
    value = (0.95, 0.75, 0.55)[index % 3]
    saturation = (0.9, 0.6)[index % 2]
    for turn in (0.0, 0.5, 0.25, 0.75):
        rgb = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb((hue + turn) % 1.0,
                                                                     saturation, value))
        if min(_distance(rgb, pet) for pet in PET_COLORS.values()) >= _MIN_PET_DISTANCE:
            break
    return rgb  # type: ignore[return-value]


def class_colors(names: Sequence[str]) -> dict[int, tuple[int, int, int]]:
    """Class index -> RGB drawing colour for classes called `names` (index i = names[i]).

    ``cat``/``dog`` (case-insensitive) keep the tutorial's colours; background classes are left
    out (not drawn); every other class i gets ``palette_color(i)``. For the pet names this is
    exactly ``{1: (0, 102, 66), 2: (155, 10, 116)}``. A name that repeats cat or dog (e.g.
    "Cat" and "cat") cannot occur: names are validated unique, case-sensitively, and the
    second spelling gets a palette colour.
    """
    names = validate_class_names(names)
    colors: dict[int, tuple[int, int, int]] = {}
    used_pet: set[str] = set()
    for index, name in enumerate(names):
        key = name.lower()
        if key in BACKGROUND_NAMES:
            continue
        if key in PET_COLORS and key not in used_pet:
            used_pet.add(key)
            colors[index] = PET_COLORS[key]
        else:
            colors[index] = palette_color(index)
    return colors


def parse_class_weights(text: str | Sequence[float] | None, num_classes: int, *,
                        option: str = "--class-weights") -> str | tuple[float, ...] | None:
    """The ``--class-weights`` value: None for ``none`` (or None: the unweighted loss),
    ``"auto"`` for median-frequency balancing (computed from the training labels by
    ``datasets.statistics.class_weights_from_labels``), or a tuple of `num_classes` finite
    weights >= 0, at least one of them > 0, from ``"w0,w1,..."`` or a sequence of numbers."""
    if text is None:
        return None
    if isinstance(text, str):
        word = text.strip().lower()
        if word in ("", "none"):
            return None
        if word == "auto":
            return "auto"
        try:
            values = tuple(float(part) for part in text.split(","))
        except ValueError:
            raise ConfigError(f"{option}: expected none, auto or {num_classes} comma-separated "
                              f"numbers (one per class), got {text!r}") from None
    else:
        values = tuple(float(value) for value in text)
    if len(values) != int(num_classes):
        raise ConfigError(f"{option}: {len(values)} weights for {num_classes} classes; give one "
                          f"weight per class (or auto)")
    if not all(math.isfinite(v) and v >= 0 for v in values) or not any(v > 0 for v in values):
        raise ConfigError(f"{option}: weights must be finite and >= 0 with at least one > 0, "
                          f"got {list(values)}")
    return values


def write_classes_file(folder: str | os.PathLike, names: Sequence[str], *,
                       label_format: str = "index", ignore_label: int = IGNORE_LABEL) -> Path:
    """Write ``<folder>/classes.json``: the class names of the folder's masks (value i = names[i]),
    their format and the ignore value. Atomic."""
    names = validate_class_names(names)
    document = {"format_version": CLASSES_FILE_FORMAT, "label_format": label_format,
                "classes": list(names), "ignore_label": int(ignore_label)}
    return atomic_write_json(Path(folder) / CLASSES_FILE_NAME, document)


def read_json_file(path: str | os.PathLike, *, what: str, missing: str) -> Any:
    """The JSON document of a small data-description file (a classes or palette file).

    Raises:
        DataError: naming the file: not found (with the `missing` hint), or not readable JSON.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} {path} not found: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{what} {path} is not readable JSON: {error}") from None


def read_classes_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a classes file (a folder means its ``classes.json``): a dict with ``classes`` (a
    validated tuple of names), ``label_format`` and ``ignore_label``. DataError names the file
    on anything unreadable or malformed."""
    path = Path(path)
    if path.is_dir():
        path = path / CLASSES_FILE_NAME
    document = read_json_file(path, what="classes file",
                              missing='a classes file lists the class names, e.g. '
                                      '{"classes": ["background", "cat", "dog"]}')
    if not isinstance(document, dict) or not isinstance(document.get("classes"), list):
        raise DataError(f'{path}: expected a JSON object with a "classes" list of names, e.g. '
                        f'{{"classes": ["background", "cat", "dog"]}}')
    try:
        names = validate_class_names(document["classes"], source=str(path))
    except ConfigError as error:
        raise DataError(str(error)) from None
    ignore_label = document.get("ignore_label", IGNORE_LABEL)
    if not isinstance(ignore_label, int) or not 0 <= ignore_label <= 255 \
            or ignore_label < len(names):
        raise DataError(f"{path}: ignore_label must be an integer in [{len(names)}, 255] (above "
                        f"every class index), got {ignore_label!r}")
    return {"classes": names, "label_format": str(document.get("label_format", "index")),
            "ignore_label": ignore_label}
