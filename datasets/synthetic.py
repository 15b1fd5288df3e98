"""Synthetic pets: an offline stand-in for the Oxford-IIIT Pet data, in exactly its layout.

Nothing can be downloaded in CI, so the demo, the tests and the benchmarks train on images drawn
here. They follow the real data set's conventions to the letter, so every other module treats
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

What tells a cat from a dog is shape and texture, never colour: both draw their fur colours from
the same palette, and the background uses that palette too. Cats have pointed ears, a round face,
a long thin raised tail and tabby stripes; dogs have floppy ears, a snout, a short thick tail and
patches. Some backgrounds also carry striped or spotted rectangles, so texture alone does not
say where the animal is.

Every image depends only on ``(seed, index)``, so a data set is reproducible and a larger one
starts with the same images as a smaller one. The test images are chosen by the project's one
seeded split (``datasets.split.seeded_split`` on the names).

The data set is built in a hidden folder next to ``<out>`` and swapped in when complete; it
carries a marker file (``synthetic_pets.json``), and ``--overwrite`` replaces only a folder that
has one, so it can never delete prepared real data or any other folder.

Run ``python -m datasets.synthetic --help`` for the options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from common.cli import HelpFormatter, add_debug_flag, run
from common.errors import ConfigError
from common.files import staged_dir
from datasets.classes import IGNORE_LABEL, write_classes_file
from datasets.oxford import CAT_BREEDS, DOG_BREEDS
from datasets.oxford import TRIMAP_BACKGROUND as BACKGROUND
from datasets.oxford import TRIMAP_FOREGROUND as FOREGROUND
from datasets.oxford import TRIMAP_UNKNOWN as UNKNOWN
from datasets.split import seeded_split

logger = logging.getLogger(__name__)

# Written into every data set this module makes: the mark that lets --overwrite replace it.
MARKER_FILE = "synthetic_pets.json"
WRITER = "python -m datasets.synthetic"

# The multi-class scenes (--classes N): class 0 is background, class i >= 1 is SPECIES[i - 1];
# their masks are class indices with this value on the outline band (the loss ignores it).
SPECIES = ("cat", "dog", "bird", "fish", "rabbit", "snake")
# Fur pattern of each species (shape tells them apart; texture helps a little, as in photos).
_TEXTURES = {"cat": "stripes", "dog": "spots", "bird": "plain", "fish": "scales",
             "rabbit": "plain", "snake": "stripes"}

# Least RGB distance between an animal's base fur colour and the background behind it.
MIN_CONTRAST = 60.0

# Fur and background colours (RGB) come from one shared palette, so colour carries no class.
_PALETTE = np.array([
    (201, 120, 52),   # ginger
    (120, 78, 44),    # brown
    (60, 45, 35),     # dark brown
    (128, 128, 128),  # grey
    (40, 40, 42),     # black
    (225, 205, 170),  # cream
    (236, 236, 230),  # white
    (170, 140, 100),  # fawn
    (90, 110, 140),   # blue-grey
    (110, 140, 90),   # olive (rare for fur, common for backgrounds)
], dtype=np.float32)


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


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

def _pick_colour(rng: np.random.Generator) -> np.ndarray:
    """A palette colour with some jitter, float32 RGB in [0, 255]."""
    base = _PALETTE[rng.integers(len(_PALETTE))]
    return np.clip(base * rng.uniform(0.8, 1.2) + rng.normal(0, 12, 3), 0, 255)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int,
                  channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1], shape (height, width, channels): a small random grid
    upsampled bicubically, i.e. blobs about height/cells pixels across."""
    grid = rng.uniform(-1, 1, (cells, cells, channels)).astype(np.float32)
    up = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(up.reshape(height, width, channels), -1, 1)


def _stripes(rng: np.random.Generator, height: int, width: int, period: float) -> np.ndarray:
    """Tabby-like stripes: a wavy sine pattern in [0, 1], shape (height, width)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    wobble = 0.35 * period * _smooth_noise(rng, height, width, 4)[..., 0]
    wave = np.sin(2 * math.pi * (along + wobble) / period)
    # Sharpen the sine into bands with soft edges.
    return 1.0 / (1.0 + np.exp(-4.0 * wave))


def _spots(rng: np.random.Generator, height: int, width: int, radius: float,
           count: int) -> np.ndarray:
    """Round patches in [0, 1], shape (height, width)."""
    canvas = np.zeros((height, width), np.float32)
    for _ in range(count):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (max(1, int(radius * rng.uniform(0.6, 1.4))),
                max(1, int(radius * rng.uniform(0.6, 1.4))))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1,
                    cv2.LINE_AA)
    return cv2.GaussianBlur(canvas, (0, 0), 0.6)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured scene: smooth colour gradients, a floor line, some furniture-like boxes
    (a few of them striped or spotted) and grain. Float32 RGB (height, width, 3)."""
    colour_a, colour_b = _pick_colour(rng), _pick_colour(rng)
    blend = (_smooth_noise(rng, height, width, int(rng.integers(2, 5))) + 1) / 2
    image = colour_a * blend + colour_b * (1 - blend)
    image += 25 * _smooth_noise(rng, height, width, int(rng.integers(6, 12)), 3)

    if rng.random() < 0.7:  # a floor: the lower part of the scene in another colour
        floor_y = int(height * rng.uniform(0.5, 0.85))
        image[floor_y:] = 0.4 * image[floor_y:] + 0.6 * _pick_colour(rng)

    for _ in range(int(rng.integers(0, 4))):  # boxes: cushions, furniture, rugs
        x0, y0 = int(rng.integers(width)), int(rng.integers(height))
        bw = int(rng.integers(max(2, width // 8), max(3, width // 2)))
        bh = int(rng.integers(max(2, height // 8), max(3, height // 2)))
        box = image[y0:y0 + bh, x0:x0 + bw]
        colour = _pick_colour(rng)
        texture = rng.random()
        if texture < 0.15:
            pattern = _stripes(rng, box.shape[0], box.shape[1], rng.uniform(5, 12))[..., None]
        elif texture < 0.3:
            pattern = _spots(rng, box.shape[0], box.shape[1], rng.uniform(2, 5),
                             int(rng.integers(2, 8)))[..., None]
        else:
            pattern = np.zeros(box.shape[:2] + (1,), np.float32)
        box[:] = 0.85 * colour * (1 - 0.45 * pattern) + 0.15 * box

    return image


def _animal_layers(rng: np.random.Generator, height: int, width: int,
                   species: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw one animal of `SPECIES` (the pets: cat or dog). Returns (silhouette uint8 {0, 1}
    (H, W), dark eyes/nose uint8 mask).

    The animal is built from ellipses, polygons and thick curves in a frame where the body is
    centred at the origin and faces right; `place` maps that frame onto the image.
    """
    length = min(height, width) * rng.uniform(0.6, 0.85)     # body length in pixels
    facing = 1.0 if rng.random() < 0.5 else -1.0
    tilt = math.radians(rng.uniform(-15, 15))
    cos_t, sin_t = math.cos(tilt), math.sin(tilt)
    # Like most pet photos: the animal near the centre (spread 12% of the side), kept mostly
    # inside the image (it spans about 1.3 body lengths).
    margin_x, margin_y = 0.45 * length, 0.35 * length
    cx = float(np.clip(rng.normal(width / 2, 0.12 * width),
                       min(margin_x, width / 2), max(width - margin_x, width / 2)))
    cy = float(np.clip(rng.normal(height / 2, 0.12 * height),
                       min(margin_y, height / 2), max(height - margin_y, height / 2)))

    def place(x: float, y: float) -> tuple[int, int]:
        """Frame units (body lengths) -> integer pixel coordinates."""
        x *= facing * length
        y *= length
        return (int(round(cx + x * cos_t - y * sin_t)), int(round(cy + x * sin_t + y * cos_t)))

    def ellipse(mask: np.ndarray, centre: tuple[float, float], axes: tuple[float, float],
                angle: float = 0.0) -> None:
        size = (max(1, int(axes[0] * length)), max(1, int(axes[1] * length)))
        angle_px = math.degrees(tilt) + (angle if facing > 0 else 180 - angle)
        cv2.ellipse(mask, place(*centre), size, angle_px, 0, 360, 1, -1)

    def polygon(mask: np.ndarray, points: list[tuple[float, float]]) -> None:
        cv2.fillPoly(mask, [np.array([place(*p) for p in points], np.int32)], 1)

    def curve(mask: np.ndarray, points: list[tuple[float, float]], thickness: float) -> None:
        pts = np.array([place(*p) for p in points], np.int32)
        cv2.polylines(mask, [pts], False, 1, max(1, int(thickness * length)))

    cat = species == "cat"
    body = np.zeros((height, width), np.uint8)
    details = np.zeros((height, width), np.uint8)
    if species not in ("cat", "dog"):
        head = _other_animal(species, rng, body, details, ellipse, polygon, curve)
        for side in (-0.05, 0.07) if species != "snake" else (0.0,):       # eyes
            ellipse(details, (head[0] + side, head[1] - 0.02), (0.022, 0.022))
        details &= body
        return body, details
    fatness = rng.uniform(0.85, 1.15)
    ellipse(body, (0.0, 0.0), (0.42, 0.23 * fatness))                   # torso
    head = (0.44, -0.2)
    head_r = 0.16 if cat else 0.17
    ellipse(body, head, (head_r, head_r * (0.95 if cat else 1.05)))    # head
    leg_w = 0.07 if cat else 0.09
    for lx in (-0.3, -0.18, 0.2, 0.3):                                   # legs
        curve(body, [(lx, 0.05), (lx + rng.uniform(-0.04, 0.04), 0.34)], leg_w)

    if cat:
        for side in (-1, 1):                                             # pointed ears
            ex = head[0] + side * 0.09
            polygon(body, [(ex - 0.065, head[1] - 0.08), (ex + 0.065, head[1] - 0.1),
                           (ex + side * 0.03, head[1] - 0.3)])
        sway = rng.uniform(-0.1, 0.1)                                    # long raised tail
        curve(body, [(-0.38, -0.05), (-0.55, -0.15), (-0.62 + sway, -0.35),
                     (-0.55 + sway, -0.5)], 0.05)
    else:
        ellipse(body, (head[0] + 0.17, head[1] + 0.06), (0.13, 0.085))   # snout
        for side in (-1, 1):                                             # floppy ears
            ellipse(body, (head[0] + side * 0.15, head[1] + 0.08), (0.05, 0.14),
                    angle=side * 20)
        curve(body, [(-0.38, -0.05), (-0.5, -0.18)], 0.09)                # short thick tail
        ellipse(details, (head[0] + 0.29, head[1] + 0.04), (0.03, 0.025))  # nose

    for side in (-0.05, 0.07):                                           # eyes
        ellipse(details, (head[0] + side, head[1] - 0.02), (0.022, 0.022))
    details &= body
    return body, details


def _other_animal(species: str, rng: np.random.Generator, body: np.ndarray,
                  details: np.ndarray, ellipse: Any, polygon: Any, curve: Any) -> tuple[float, float]:
    """The animals of the multi-class scenes besides cats and dogs, drawn with
    `_animal_layers`' frame helpers (body lengths, facing right). Returns the head centre."""
    if species == "bird":
        ellipse(body, (0.0, 0.0), (0.3, 0.17), angle=-15)                # body
        head = (0.3, -0.2)
        ellipse(body, head, (0.12, 0.12))                                # head
        polygon(body, [(0.38, -0.25), (0.38, -0.15), (0.58, -0.2)])      # beak
        polygon(body, [(-0.22, -0.04), (-0.55, -0.2 + rng.uniform(-0.05, 0.05)),
                       (-0.55, 0.12)])                                   # tail fan
        for lx in (-0.04, 0.08):                                          # thin legs
            curve(body, [(lx, 0.12), (lx, 0.36)], 0.025)
    elif species == "fish":
        ellipse(body, (0.0, 0.0), (0.42, 0.17 * rng.uniform(0.9, 1.2)))   # body
        head = (0.3, -0.02)
        polygon(body, [(-0.34, 0.0), (-0.62, -0.24), (-0.52, 0.0),
                       (-0.62, 0.24)])                                   # forked tail
        polygon(body, [(-0.12, -0.14), (0.08, -0.15), (-0.06, -0.32)])   # dorsal fin
    elif species == "rabbit":
        ellipse(body, (0.0, 0.0), (0.3, 0.22))                           # round body
        head = (0.3, -0.2)
        ellipse(body, head, (0.13, 0.12))                                # head
        for side in (-1, 1):                                             # long upright ears
            ellipse(body, (head[0] + side * 0.05, head[1] - 0.25), (0.04, 0.17),
                    angle=side * 8)
        ellipse(body, (-0.32, -0.05), (0.08, 0.08))                      # puffy tail
        for lx in (-0.15, 0.18):                                          # short legs
            curve(body, [(lx, 0.1), (lx + 0.05, 0.3)], 0.08)
    elif species == "snake":
        phase = rng.uniform(0, 2 * math.pi)
        xs = np.linspace(-0.55, 0.4, 24)
        curve(body, [(float(x), 0.12 * math.sin(phase + 9 * x)) for x in xs], 0.09)
        head = (0.46, 0.12 * math.sin(phase + 9 * 0.4))
        ellipse(body, head, (0.1, 0.07))                                 # head
    else:
        raise ValueError(f"unknown species {species!r}; known: {', '.join(SPECIES)}")
    return head


def _fur(rng: np.random.Generator, height: int, width: int, species: str, length: float,
         avoid: np.ndarray) -> np.ndarray:
    """Fur colour and texture, float32 RGB (height, width, 3): tabby stripes for cats, patches
    for dogs, both from the same palette with the same darkening range. The base colour is
    redrawn (a few times at most) while it is within `MIN_CONTRAST` of `avoid`, the mean
    background colour behind the animal: like most photos, the animal stands out from its
    surroundings, by an amount that says nothing about its class."""
    for _ in range(8):
        base = _pick_colour(rng)
        if np.linalg.norm(base - avoid) >= MIN_CONTRAST:
            break
    # The pattern colour is darker or lighter than the base, for both species alike.
    pattern_colour = np.clip(base * rng.choice([rng.uniform(0.35, 0.6), rng.uniform(1.4, 1.8)])
                             + rng.normal(0, 10, 3), 0, 255)
    texture = _TEXTURES[species]
    if texture == "stripes":
        pattern = _stripes(rng, height, width, period=max(5.0, rng.uniform(0.07, 0.1) * length))
    elif texture == "spots":
        pattern = _spots(rng, height, width, radius=max(2.0, rng.uniform(0.05, 0.09) * length),
                         count=int(rng.integers(15, 30) * height * width / length ** 2))
    elif texture == "scales":
        pattern = _spots(rng, height, width, radius=max(1.0, rng.uniform(0.015, 0.025) * length),
                         count=int(rng.integers(150, 250) * height * width / length ** 2))
    else:  # plain: the smooth noise below only
        pattern = np.zeros((height, width), np.float32)
    strength = rng.uniform(0.7, 0.95)
    fur = base * (1 - strength * pattern[..., None]) + pattern_colour * strength * pattern[..., None]
    fur += 15 * _smooth_noise(rng, height, width, 8, 3)
    return fur


def render_pet(rng: np.random.Generator, height: int, width: int,
               species: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic pet photo.

    Returns:
        image: uint8 RGB, shape (height, width, 3).
        trimap: uint8, shape (height, width), values 1 (animal), 2 (background), 3 (a band of
            about 2-4 px along the outline, left "unknown" as in the real annotations).
    """
    if species not in ("cat", "dog"):
        raise ValueError(f"species must be 'cat' or 'dog', got {species!r}")
    background = _background(rng, height, width)
    silhouette, details = _animal_layers(rng, height, width, species)
    image = _paint_animal(rng, background, silhouette, details, species,
                          length=min(height, width) * 0.7)
    image = _lighting_and_grain(rng, image)

    kernel = _outline_kernel(height, width)
    trimap = np.full((height, width), BACKGROUND, np.uint8)
    trimap[cv2.dilate(silhouette, kernel) > 0] = UNKNOWN
    trimap[cv2.erode(silhouette, kernel) > 0] = FOREGROUND
    return image, trimap


def _paint_animal(rng: np.random.Generator, canvas: np.ndarray, silhouette: np.ndarray,
                  details: np.ndarray, species: str, length: float) -> np.ndarray:
    """`canvas` (float32 RGB (H, W, 3)) with the animal's fur blended in where `silhouette` is
    1 (soft edges: a slightly blurred silhouette, which stays inside the outline band) and its
    eyes/nose darkened. `length` sets the fur pattern's scale."""
    height, width = silhouette.shape
    behind = canvas[silhouette.astype(bool)].mean(axis=0)
    fur = _fur(rng, height, width, species, length, avoid=behind)
    fur[details.astype(bool)] = fur[details.astype(bool)] * 0.15 + 5
    alpha = cv2.GaussianBlur(silhouette.astype(np.float32), (0, 0), 0.8)[..., None]
    return fur * alpha + canvas * (1 - alpha)


def _lighting_and_grain(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven lighting and sensor noise over a float32 RGB picture, then 8 bits."""
    height, width = image.shape[:2]
    image = image * (1 + 0.25 * _smooth_noise(rng, height, width, 2))
    image += rng.normal(0, rng.uniform(2, 7), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _outline_kernel(height: int, width: int) -> np.ndarray:
    """The structuring element whose dilation minus erosion is the "unknown" outline band:
    about 2-4 px wide, growing with the image (1 px of radius per 150 px of the shorter side)."""
    band = max(1, int(round(min(height, width) / 150)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))


def render_scene(rng: np.random.Generator, height: int, width: int,
                 objects: Sequence[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Draw a multi-class scene: one or two animals of `SPECIES` on a textured background.

    Args:
        objects: (species, class index) per animal, drawn in this order (a later one covers
            an earlier one where they overlap). With two, the image is cut across its longer
            side near the middle into two windows that overlap by a tenth of that side, and
            each animal is drawn centred in its own window.

    Returns:
        image: uint8 RGB, shape (height, width, 3).
        mask: uint8 class indices, shape (height, width): 0 background, each animal's class
            index, and `IGNORE_LABEL` (255) on the outline band of every animal (the same band
            as the trimaps' "unknown"), including where two animals meet.
    """
    if not 1 <= len(objects) <= 2:
        raise ValueError(f"a scene holds 1 or 2 animals, got {len(objects)}")
    image = _background(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    kernel = _outline_kernel(height, width)
    for (species, class_index), (top, bottom, left, right) in zip(
            objects, _scene_windows(rng, height, width, len(objects))):
        if not 1 <= int(class_index) < IGNORE_LABEL:
            raise ValueError(f"an animal's class index must be in [1, {IGNORE_LABEL}), got "
                             f"{class_index!r}")
        part, part_details = _animal_layers(rng, bottom - top, right - left, species)
        silhouette = np.zeros((height, width), np.uint8)
        details = np.zeros((height, width), np.uint8)
        silhouette[top:bottom, left:right] = part
        details[top:bottom, left:right] = part_details
        image = _paint_animal(rng, image, silhouette, details, species,
                              length=min(bottom - top, right - left) * 0.7)
        mask[cv2.dilate(silhouette, kernel) > 0] = IGNORE_LABEL
        mask[cv2.erode(silhouette, kernel) > 0] = int(class_index)
    return _lighting_and_grain(rng, image), mask


def _scene_windows(rng: np.random.Generator, height: int, width: int,
                   count: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of the window of each animal: the whole image for one, two
    overlapping halves of the longer side for two (the cut at 45-55%)."""
    if count == 1:
        return [(0, height, 0, width)]
    side = max(height, width)
    cut = int(round(side * rng.uniform(0.45, 0.55)))
    overlap = side // 20
    spans = [(0, min(side, cut + overlap)), (max(0, cut - overlap), side)]
    if width >= height:
        return [(0, height, a, b) for a, b in spans]
    return [(a, b, 0, width) for a, b in spans]


# --------------------------------------------------------------------------------------------
# Data set on disk
# --------------------------------------------------------------------------------------------

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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; errors are raised (``python -m datasets.synthetic`` reports them
    through ``common.cli.run``: one line, exit code 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic",
        description="Write a synthetic cats-vs-dogs data set in the Oxford-IIIT Pet layout.",
        formatter_class=HelpFormatter)
    parser.add_argument("--out", default="data/synthetic", help="output root folder")
    parser.add_argument("--num-images", type=int, default=500, help="labelled images")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of labelled images written to test/")
    parser.add_argument("--min-size", type=int, default=96, help="smallest image side")
    parser.add_argument("--max-size", type=int, default=180, help="largest image side")
    parser.add_argument("--cat-fraction", type=float, default=0.5, help="probability of a cat")
    parser.add_argument("--num-unlabeled", type=int, default=12,
                        help="extra images without masks in unlabeled/ (for draw.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an existing data set written by this command (it holds "
                             f"{MARKER_FILE})")
    parser.add_argument("--num-classes", type=int, default=None, metavar="C",
                        help=f"write multi-class scenes instead of the pets: one or two animals "
                             f"per image from background + the first C-1 of "
                             f"{', '.join(SPECIES)} (C in 2..{len(SPECIES) + 1}), index masks "
                             f"(class indices, 255 on outlines) and classes.json")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    report = generate_pets(args.out, num_images=args.num_images,
                           test_fraction=args.test_fraction, min_size=args.min_size,
                           max_size=args.max_size, cat_fraction=args.cat_fraction,
                           num_unlabeled=args.num_unlabeled, seed=args.seed,
                           overwrite=args.overwrite, num_classes=args.num_classes)
    if report.class_names:
        counts = ", ".join(f"{n} {name}" for name, n in
                           zip(report.class_names[1:], report.objects_per_class[1:]))
        print(f"Synthetic scenes in {report.out_dir}: {report.num_train} train, "
              f"{report.num_test} test, {report.num_unlabeled} unlabeled; "
              f"{len(report.class_names)} classes ({', '.join(report.class_names)}), index "
              f"masks, classes.json in train/ and test/; animals drawn: {counts}")
        return 0
    print(f"Synthetic pets in {report.out_dir}: {report.num_train} train, {report.num_test} test, "
          f"{report.num_unlabeled} unlabeled ({report.num_cats} cats, {report.num_dogs} dogs)")
    return 0


if __name__ == "__main__":
    run(main)
