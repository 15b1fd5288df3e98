"""The synthetic pets data set on disk (``generate_pets``), in exactly the Oxford-IIIT Pet layout,
or multi-class scenes with index masks.

The pets follow the real data set's conventions to the letter, so every other module treats
them exactly like the real thing::

    <out>/train/images/Abyssinian_3.jpg   <out>/train/masks/Abyssinian_3.png
    <out>/train/images/beagle_7.jpg       <out>/train/masks/beagle_7.png
    <out>/test/...                        <out>/unlabeled/*.jpg|*.PNG (optional, no masks)

* masks are trimaps: 1 = animal, 2 = background, 3 = "unknown", a thin band along the outline
  (the real trimaps have the same band, which the loss and the metrics ignore);
* cat names are capitalised breeds, dog names lower-case breeds: the class of an image comes
  from the first letter of its name, as in the original data set;
* one animal per image on a textured background; image sizes vary (odd and even, smaller and
  larger than the crop size).

Every image depends only on ``(seed, index)``, so a data set is reproducible and a larger one
starts with the same images as a smaller one. The test images are chosen by the project's one
seeded split (``datasets.split.seeded_split`` on the names).

The data set is built in a hidden folder next to ``<out>`` and swapped in when complete; it
carries a marker file (``synthetic_pets.json``), and ``overwrite`` replaces only a folder that
has one, so it can never delete prepared real data or any other folder.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from common.errors import ConfigError
from common.files import staged_dir
from datasets.classes import write_classes_file
from datasets.oxford import CAT_BREEDS, DOG_BREEDS
from datasets.split import seeded_split
from datasets.synthetic_animals import SPECIES
from datasets.synthetic_render import render_pet, render_scene

__all__ = ["MARKER_FILE", "WRITER", "SyntheticReport", "scene_class_names", "generate_pets"]

logger = logging.getLogger(__name__)

# Written into every data set this module makes: the mark that lets --overwrite replace it.
MARKER_FILE = "synthetic_pets.json"
WRITER = "python -m datasets.synthetic"


@dataclasses.dataclass(frozen=True)
class SyntheticReport:
    """What `generate_pets` wrote: counts per split and per class."""

    out_dir: str
    num_train: int
    num_test: int
    num_unlabeled: int
    num_cats: int
    num_dogs: int
    # Multi-class scenes only (num_classes given): the class names and the animals drawn per
    # class index in the labelled images (0 for background).
    class_names: tuple[str, ...] = ()
    objects_per_class: tuple[int, ...] = ()


def _image_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """One independent generator per image: (seed, stream, index) -> same picture every time."""
    return np.random.default_rng([seed, stream, index])


def _plan_names(num_images: int, cat_fraction: float, seed: int) -> list[tuple[str, str]]:
    """(species, name) per image; names count up per breed like the real files (Bengal_1, ...)."""
    rng = np.random.default_rng([seed, 0])
    counters: dict[str, int] = {}
    plan = []
    for _ in range(num_images):
        species = "cat" if rng.random() < cat_fraction else "dog"
        breeds = CAT_BREEDS if species == "cat" else DOG_BREEDS
        breed = breeds[rng.integers(len(breeds))]
        counters[breed] = counters.get(breed, 0) + 1
        plan.append((species, f"{breed}_{counters[breed]}"))
    return plan


def scene_class_names(num_classes: int) -> tuple[str, ...]:
    """The classes of the multi-class scenes: background, then the first C-1 of `SPECIES`."""
    if not 2 <= int(num_classes) <= len(SPECIES) + 1:
        raise ConfigError(f"num_classes must be in [2, {len(SPECIES) + 1}] (background and up to "
                         f"{len(SPECIES)} animals: {', '.join(SPECIES)}), got {num_classes!r}")
    return ("background",) + SPECIES[:int(num_classes) - 1]


def _scene_content(rng: np.random.Generator, num_classes: int) -> tuple[str, ...]:
    """The animals of one scene: one or two (even odds), each of a uniformly drawn class."""
    count = 1 if rng.random() < 0.5 else 2
    return tuple(SPECIES[int(rng.integers(num_classes - 1))] for _ in range(count))


def _plan_scenes(num_images: int, num_classes: int, seed: int) -> list[tuple[tuple[str, ...], str]]:
    """(animals, name) per image of the multi-class set; neutral names (scene_0001, ...), as
    the class comes from the index mask, not from the name."""
    rng = np.random.default_rng([seed, 0])
    return [(_scene_content(rng, num_classes), f"scene_{i + 1:04d}") for i in range(num_images)]


def _render(rng: np.random.Generator, height: int, width: int, content: str | tuple[str, ...],
            num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A pet photo and its trimap (`num_classes` None), or a scene and its index mask."""
    if num_classes is None:
        return render_pet(rng, height, width, content)  # type: ignore[arg-type]
    return render_scene(rng, height, width, [(s, SPECIES.index(s) + 1) for s in content])


def _write_image(path: Path, image_rgb: np.ndarray, quality: int) -> None:
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"could not write {path}")


def generate_pets(out_dir: str | os.PathLike, *, num_images: int = 500,
                  test_fraction: float = 0.2, min_size: int = 96, max_size: int = 180,
                  cat_fraction: float = 0.5, num_unlabeled: int = 0, seed: int = 0,
                  overwrite: bool = False, num_classes: int | None = None) -> SyntheticReport:
    """Write a synthetic pets data set in the pet layout, or multi-class scenes.

    Args:
        out_dir: root folder; gets `train/` and `test/` (each `images/` + `masks/`) and, when
            `num_unlabeled > 0`, `unlabeled/` with images only (for draw.py).
        num_images: labelled images, split into train and test.
        test_fraction: share of the labelled images put into `test/` (seeded random choice).
        min_size, max_size: each image's height and width are drawn independently from
            [min_size, max_size], so both odd and even sides occur.
        cat_fraction: probability that an image shows a cat.
        num_unlabeled: extra images like the labelled ones (same size range, so a model
            trained on the labelled ones applies), a mix of .jpg and upper-case .PNG names,
            drawn from another random stream.
        seed: everything depends on it only.
        overwrite: replace an existing data set at `out_dir`; only a folder this function wrote
            (it holds `MARKER_FILE`) is ever replaced.
        num_classes: None: the pets (trimap masks, class from the file name). C in [2, 7]:
            multi-class scenes (`render_scene`: one or two animals of the C-1 first `SPECIES`
            per image, `scene_0001.jpg` ...) with INDEX masks (0 background, i = SPECIES[i-1],
            255 on outlines) and a `classes.json` (`datasets.classes.write_classes_file`) in
            `train/` and `test/`; `cat_fraction` does not apply.

    Raises:
        ConfigError: an argument out of range.
        OutputExistsError: `out_dir` exists, is not empty, and is not replaceable.
    """
    if num_images < 1:
        raise ConfigError(f"num_images must be >= 1, got {num_images}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not 16 <= min_size <= max_size:
        raise ConfigError(f"need 16 <= min_size <= max_size, got {min_size} and {max_size}")
    if not 0.0 <= cat_fraction <= 1.0:
        raise ConfigError(f"cat_fraction must be in [0, 1], got {cat_fraction}")
    if num_classes is not None:
        scene_class_names(num_classes)     # checks the range before anything is written
    out = Path(out_dir)
    with staged_dir(out, marker=MARKER_FILE, overwrite=overwrite, writer=WRITER) as work:
        report = _write_pets(work, num_images=num_images, test_fraction=test_fraction,
                             min_size=min_size, max_size=max_size, cat_fraction=cat_fraction,
                             num_unlabeled=num_unlabeled, seed=seed, num_classes=num_classes)
        report = dataclasses.replace(report, out_dir=str(out))
        # The settings and counts, not the folder's path: equal data sets are equal byte for byte.
        marker = {"written_by": WRITER,
                  "settings": dict(num_images=num_images, test_fraction=test_fraction,
                                   min_size=min_size, max_size=max_size,
                                   cat_fraction=cat_fraction, num_unlabeled=num_unlabeled,
                                   seed=seed, num_classes=num_classes),
                  "counts": {k: v for k, v in dataclasses.asdict(report).items()
                             if k != "out_dir"}}
        (work / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    logger.info("wrote %s", report)
    return report


def _write_pets(out: Path, *, num_images: int, test_fraction: float, min_size: int,
                max_size: int, cat_fraction: float, num_unlabeled: int,
                seed: int, num_classes: int | None) -> SyntheticReport:
    """The images and masks of `generate_pets`, written into the (new, empty) folder `out`."""
    class_names = None if num_classes is None else scene_class_names(num_classes)
    plan = (_plan_names(num_images, cat_fraction, seed) if num_classes is None
            else _plan_scenes(num_images, num_classes, seed))
    _, test_names = seeded_split([name for _, name in plan], test_fraction, seed)
    test_names = set(test_names)
    test_ids = {index for index, (_, name) in enumerate(plan) if name in test_names}
    num_test = len(test_ids)
    for split in ("train", "test"):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)

    for index, (species, name) in enumerate(plan):
        rng = _image_rng(seed, index, stream=2)
        height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        image, trimap = _render(rng, height, width, species, num_classes)
        split = "test" if index in test_ids else "train"
        _write_image(out / split / "images" / f"{name}.jpg", image, int(rng.integers(80, 96)))
        cv2.imwrite(str(out / split / "masks" / f"{name}.png"), trimap)

    if num_unlabeled:
        (out / "unlabeled").mkdir(parents=True, exist_ok=True)
        for index in range(num_unlabeled):
            rng = _image_rng(seed, index, stream=3)
            species = (("cat" if rng.random() < cat_fraction else "dog") if num_classes is None
                       else _scene_content(rng, num_classes))
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            image, _ = _render(rng, height, width, species, num_classes)
            suffix = ".PNG" if index % 3 == 2 else ".jpg"
            _write_image(out / "unlabeled" / f"photo_{index:03d}{suffix}", image, 90)

    if class_names is None:
        num_cats = sum(1 for species, _ in plan if species == "cat")
        return SyntheticReport(str(out), num_images - num_test, num_test, num_unlabeled,
                               num_cats, num_images - num_cats)
    for split in ("train", "test"):
        write_classes_file(out / split, class_names)
    objects = [sum(content.count(name) for content, _ in plan) for name in class_names]
    return SyntheticReport(str(out), num_images - num_test, num_test, num_unlabeled,
                           objects[1], objects[2] if num_classes > 2 else 0,
                           class_names, tuple(objects))
