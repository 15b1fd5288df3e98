"""How a SegNet predicts an image of any size: the modes, their options and their one set of
defaults, shared by the Python API (`models.predict`), test.py and draw.py.

No TensorFlow here: the scripts build their parsers from this module, so `--help` and usage
errors stay instant. The modes (docs/inference.md):

    full    the whole image at once, padded to a multiple of 32 (`models.nn.inference_padding`)
    resize  shrunk so that its larger side is the training frame's larger side (an image that
            fits the frame keeps its size), or scaled by --scale; predicted; the class
            probabilities resized back to the image's size, then argmax
    tiles   windows of the training size, `tile_overlap` apart, blended with Gaussian weights
            (`models.predict.tile_weights`), `batch_size` windows per forward pass: memory
            grows with the image's own arrays only
"""
from __future__ import annotations

import argparse
import dataclasses
import math

from common.errors import ConfigError

__all__ = ["MODES", "TTA_CHOICES", "DEFAULT_MODE", "DEFAULT_TILE_OVERLAP", "InferenceOptions",
           "add_inference_options", "inference_options"]

MODES = ("full", "resize", "tiles")
TTA_CHOICES = ("none", "flip")
# Chosen by benchmarks/scale_modes.py (benchmarks/RESULTS.md, docs/inference.md): the only mode
# that keeps its scores on photos at 4x the training scale, and it costs nothing at the
# training scale.
DEFAULT_MODE = "resize"
# Neighbouring windows share half a window (nnU-Net's step of 0.5).
DEFAULT_TILE_OVERLAP = 0.5


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """How to predict one image of any size.

    mode: one of `MODES`.
    scale: resize mode only: the factor applied to the image; None: an image larger than the
        training frame is shrunk so that its larger side is the frame's larger side, one that
        fits keeps its size.
    tile_overlap: tiles mode: the share of a window that its neighbour covers, in [0, 1).
    tta: "flip" averages the probabilities of the image and of its horizontal mirror.
    batch_size: images (tiles in tiles mode) per forward pass.
    tile_size: tiles mode: the window `(H, W)`; None: the model's training size (its
        `input_shape`, read from the run folder). Sides must be multiples of 32, at least 64
        (checked against the model's rule where it is used, `models.predict`).
    """

    mode: str = DEFAULT_MODE
    scale: float | None = None
    tile_overlap: float = DEFAULT_TILE_OVERLAP
    tta: str = "none"
    batch_size: int = 8
    tile_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.tta not in TTA_CHOICES:
            problems.append(f"--tta must be one of {', '.join(TTA_CHOICES)}, got {self.tta!r}")
        if self.scale is not None:
            if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale)
                    and self.scale > 0):
                problems.append(f"--scale must be a number > 0 (1 keeps the image's size), got "
                                f"{self.scale!r}")
            elif self.mode != "resize":
                problems.append(f"--scale applies to --mode resize only (the mode is "
                                f"{self.mode!r})")
        if not (isinstance(self.tile_overlap, (int, float))
                and 0.0 <= self.tile_overlap < 1.0):
            problems.append(f"--tile-overlap must be in [0, 1) (0.5: each window shares half "
                            f"of itself with the next), got {self.tile_overlap!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            problems.append(f"--batch-size must be an integer >= 1, got {self.batch_size!r}")
        if self.tile_size is not None and (
                len(tuple(self.tile_size)) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool)
                           for s in self.tile_size)):
            problems.append(f"tile_size must be two integers (H, W), got {self.tile_size!r}")
        if problems:
            raise ConfigError("; ".join(problems))


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """The options of `InferenceOptions` that a user types (test.py, draw.py; their
    `--batch-size` is the script's own). The training size comes from the run folder."""
    group = parser.add_argument_group(
        "images of any size (docs/inference.md)")
    group.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                       help="full: the whole image at once (memory grows with the image); "
                            "resize: scaled to the training size, the class probabilities "
                            "scaled back; tiles: windows of the training size blended, memory "
                            "bounded")
    group.add_argument("--scale", type=float, default=None, metavar="F",
                       help="--mode resize: multiply the image's sides by F (default: shrink "
                            "a larger image so that its larger side is the training frame's)")
    group.add_argument("--tile-overlap", type=float, default=DEFAULT_TILE_OVERLAP,
                       metavar="R",
                       help="--mode tiles: share of a window covered by the next, in [0, 1)")
    group.add_argument("--tta", choices=TTA_CHOICES, default="none",
                       help="flip: average the probabilities of each image and its mirror "
                            "(twice the work)")


def inference_options(args: argparse.Namespace) -> InferenceOptions:
    """The parsed options of `add_inference_options` (plus --batch-size), checked:
    `ConfigError` names every bad one."""
    return InferenceOptions(mode=args.mode, scale=args.scale, tile_overlap=args.tile_overlap,
                            tta=args.tta, batch_size=args.batch_size)
