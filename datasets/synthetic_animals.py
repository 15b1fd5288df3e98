"""The silhouettes of the synthetic animals: ``animal_layers`` draws one animal of `SPECIES` as
a body mask and a mask of its dark eyes and nose; colour and texture come later
(``datasets/synthetic_render.py``).

Cats have pointed ears, a round face, a long thin raised tail; dogs have floppy ears, a snout
and a short thick tail. The other species (multi-class scenes only) differ as clearly in shape:
a bird's beak and tail fan, a fish's forked tail and fin, a rabbit's long ears, a snake's wave.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["SPECIES", "animal_layers"]

# The multi-class scenes (--num-classes C): class 0 is background, class i >= 1 is
# SPECIES[i - 1]; the pets are the first two.
SPECIES = ("cat", "dog", "bird", "fish", "rabbit", "snake")


class _Frame:
    """The animal's own frame, in body lengths, with the body centred at the origin and facing
    right, mapped onto an image of ``height`` x ``width`` (size, facing, tilt and position are
    drawn from ``rng``). The drawing methods fill 1 into a uint8 mask of the image."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.length = min(height, width) * rng.uniform(0.6, 0.85)     # body length in pixels
        self.facing = 1.0 if rng.random() < 0.5 else -1.0
        self.tilt = math.radians(rng.uniform(-15, 15))
        # Like most pet photos: the animal near the centre (spread 12% of the side), kept mostly
        # inside the image (it spans about 1.3 body lengths).
        margin_x, margin_y = 0.45 * self.length, 0.35 * self.length
        self.cx = float(np.clip(rng.normal(width / 2, 0.12 * width),
                                min(margin_x, width / 2), max(width - margin_x, width / 2)))
        self.cy = float(np.clip(rng.normal(height / 2, 0.12 * height),
                                min(margin_y, height / 2), max(height - margin_y, height / 2)))

    def place(self, x: float, y: float) -> tuple[int, int]:
        """Frame units (body lengths) -> integer pixel coordinates."""
        x *= self.facing * self.length
        y *= self.length
        cos_t, sin_t = math.cos(self.tilt), math.sin(self.tilt)
        return (int(round(self.cx + x * cos_t - y * sin_t)),
                int(round(self.cy + x * sin_t + y * cos_t)))

    def ellipse(self, mask: np.ndarray, centre: tuple[float, float], axes: tuple[float, float],
                angle: float = 0.0) -> None:
        size = (max(1, int(axes[0] * self.length)), max(1, int(axes[1] * self.length)))
        angle_px = math.degrees(self.tilt) + (angle if self.facing > 0 else 180 - angle)
        cv2.ellipse(mask, self.place(*centre), size, angle_px, 0, 360, 1, -1)

    def polygon(self, mask: np.ndarray, points: list[tuple[float, float]]) -> None:
        cv2.fillPoly(mask, [np.array([self.place(*p) for p in points], np.int32)], 1)

    def curve(self, mask: np.ndarray, points: list[tuple[float, float]],
              thickness: float) -> None:
        pts = np.array([self.place(*p) for p in points], np.int32)
        cv2.polylines(mask, [pts], False, 1, max(1, int(thickness * self.length)))


def animal_layers(rng: np.random.Generator, height: int, width: int,
                  species: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw one animal of `SPECIES` (the pets: cat or dog). Returns (silhouette uint8 {0, 1}
    (H, W), dark eyes/nose uint8 mask), built from ellipses, polygons and thick curves in the
    animal's own frame (`_Frame`)."""
    frame = _Frame(rng, height, width)
    body = np.zeros((height, width), np.uint8)
    details = np.zeros((height, width), np.uint8)
    if species in ("cat", "dog"):
        head = _pet(species, rng, frame, body, details)
    else:
        head = _other_animal(species, rng, frame, body)
    for side in (-0.05, 0.07) if species != "snake" else (0.0,):           # eyes
        frame.ellipse(details, (head[0] + side, head[1] - 0.02), (0.022, 0.022))
    details &= body
    return body, details


def _pet(species: str, rng: np.random.Generator, frame: _Frame, body: np.ndarray,
         details: np.ndarray) -> tuple[float, float]:
    """A cat or a dog into ``body`` (a dog's nose into ``details``). Returns the head centre."""
    cat = species == "cat"
    fatness = rng.uniform(0.85, 1.15)
    frame.ellipse(body, (0.0, 0.0), (0.42, 0.23 * fatness))                   # torso
    head = (0.44, -0.2)
    head_r = 0.16 if cat else 0.17
    frame.ellipse(body, head, (head_r, head_r * (0.95 if cat else 1.05)))    # head
    leg_w = 0.07 if cat else 0.09
    for lx in (-0.3, -0.18, 0.2, 0.3):                                         # legs
        frame.curve(body, [(lx, 0.05), (lx + rng.uniform(-0.04, 0.04), 0.34)], leg_w)

    if cat:
        for side in (-1, 1):                                                   # pointed ears
            ex = head[0] + side * 0.09
            frame.polygon(body, [(ex - 0.065, head[1] - 0.08), (ex + 0.065, head[1] - 0.1),
                                 (ex + side * 0.03, head[1] - 0.3)])
        sway = rng.uniform(-0.1, 0.1)                                          # long raised tail
        frame.curve(body, [(-0.38, -0.05), (-0.55, -0.15), (-0.62 + sway, -0.35),
                           (-0.55 + sway, -0.5)], 0.05)
    else:
        frame.ellipse(body, (head[0] + 0.17, head[1] + 0.06), (0.13, 0.085))   # snout
        for side in (-1, 1):                                                   # floppy ears
            frame.ellipse(body, (head[0] + side * 0.15, head[1] + 0.08), (0.05, 0.14),
                          angle=side * 20)
        frame.curve(body, [(-0.38, -0.05), (-0.5, -0.18)], 0.09)                # short thick tail
        frame.ellipse(details, (head[0] + 0.29, head[1] + 0.04), (0.03, 0.025))  # nose
    return head


def _other_animal(species: str, rng: np.random.Generator, frame: _Frame,
                  body: np.ndarray) -> tuple[float, float]:
    """The animals of the multi-class scenes besides cats and dogs, into ``body``. Returns the
    head centre."""
    if species == "bird":
        frame.ellipse(body, (0.0, 0.0), (0.3, 0.17), angle=-15)                # body
        head = (0.3, -0.2)
        frame.ellipse(body, head, (0.12, 0.12))                                # head
        frame.polygon(body, [(0.38, -0.25), (0.38, -0.15), (0.58, -0.2)])      # beak
        frame.polygon(body, [(-0.22, -0.04), (-0.55, -0.2 + rng.uniform(-0.05, 0.05)),
                             (-0.55, 0.12)])                                   # tail fan
        for lx in (-0.04, 0.08):                                               # thin legs
            frame.curve(body, [(lx, 0.12), (lx, 0.36)], 0.025)
    elif species == "fish":
        frame.ellipse(body, (0.0, 0.0), (0.42, 0.17 * rng.uniform(0.9, 1.2)))  # body
        head = (0.3, -0.02)
        frame.polygon(body, [(-0.34, 0.0), (-0.62, -0.24), (-0.52, 0.0),
                             (-0.62, 0.24)])                                   # forked tail
        frame.polygon(body, [(-0.12, -0.14), (0.08, -0.15), (-0.06, -0.32)])   # dorsal fin
    elif species == "rabbit":
        frame.ellipse(body, (0.0, 0.0), (0.3, 0.22))                           # round body
        head = (0.3, -0.2)
        frame.ellipse(body, head, (0.13, 0.12))                                # head
        for side in (-1, 1):                                                   # long upright ears
            frame.ellipse(body, (head[0] + side * 0.05, head[1] - 0.25), (0.04, 0.17),
                          angle=side * 8)
        frame.ellipse(body, (-0.32, -0.05), (0.08, 0.08))                      # puffy tail
        for lx in (-0.15, 0.18):                                               # short legs
            frame.curve(body, [(lx, 0.1), (lx + 0.05, 0.3)], 0.08)
    elif species == "snake":
        phase = rng.uniform(0, 2 * math.pi)
        xs = np.linspace(-0.55, 0.4, 24)
        frame.curve(body, [(float(x), 0.12 * math.sin(phase + 9 * x)) for x in xs], 0.09)
        head = (0.46, 0.12 * math.sin(phase + 9 * 0.4))
        frame.ellipse(body, head, (0.1, 0.07))                                 # head
    else:
        raise ValueError(f"unknown species {species!r}; known: {', '.join(SPECIES)}")
    return head
