"""Synthetic photos: an animal of ``datasets/synthetic_animals.py`` painted onto a textured
scene, with its mask. ``render_pet`` draws a cat or a dog with a trimap (the pets);
``render_scene`` one or two animals of any species with an index mask (multi-class scenes).

What tells a cat from a dog is shape and texture, never colour: both draw their fur colours from
the same palette, and the background uses that palette too. Cats wear tabby stripes, dogs
patches. Some backgrounds also carry striped or spotted rectangles, so texture alone does not
say where the animal is. The outline band of every mask (the trimaps' "unknown", the index
masks' ignore value) is a few pixels wide, as in the real annotations.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from datasets.classes import IGNORE_LABEL
from datasets.oxford import TRIMAP_BACKGROUND as BACKGROUND
from datasets.oxford import TRIMAP_FOREGROUND as FOREGROUND
from datasets.oxford import TRIMAP_UNKNOWN as UNKNOWN
from datasets.synthetic_animals import animal_layers

__all__ = ["MIN_CONTRAST", "render_pet", "render_scene"]

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
    fur = (base * (1 - strength * pattern[..., None])
           + pattern_colour * strength * pattern[..., None])
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
    silhouette, details = animal_layers(rng, height, width, species)
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
    """Draw a multi-class scene: one or two animals (`synthetic_animals.SPECIES`) on a textured
    background.

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
        part, part_details = animal_layers(rng, bottom - top, right - left, species)
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
