"""Inference of a SegNet: batches of frames (`predict`) and single images of any size in three
modes (`predict_image`), with flip averaging. `SegNet.predict` / `SegNet.predict_image` are
thin delegates to these functions; `learning.inference` batches many images through the same
`prepare` -> `predict_prepared` steps, so its masks equal `predict_image`'s.

One image, `(h, w)` its size, `T = (Th, Tw)` the training size (`model.input_shape`)::

    full    image ──pad to `inference_padding(h, w)`──> network ──crop──> (h, w, C)
    resize  image ──resized by s (larger side -> max(T) if larger, or options.scale)──> (h2, w2)
                  ──pad, network, crop──> (h2, w2, C) ──resized back──> (h, w, C)
    tiles   image ≤ T: padded to T, one window (batched with other such images)
            larger: windows of T at `tile_starts` ──batch_size windows per pass──> network
                  ──each window's probabilities x `tile_weights`──> accumulator (h, w, C)
                  float32 + weight sum (h, w) float32 ──divide (or argmax)──> (h, w, C)
    then    argmax ──> (h, w) uint8 mask (in row blocks: no int64 array of the image's size)

With `tta="flip"` every forward pass also runs on the horizontal mirror of its batch, and the
mirrored-back probabilities are averaged with the plain ones.

Memory: tiles mode holds the decoded image, the accumulator and weight sum (16 bytes per pixel
with 3 classes) and the mask, plus the network's activations over `batch_size` windows; never
activations over the whole image (benchmarks/inference_memory.py measures it).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from common.errors import ConfigError
from models.inference_options import InferenceOptions
from models.nn import MIN_SIZE, SIZE_MULTIPLE, SegNet, check_output, inference_padding

__all__ = ["Prepared", "predict", "predict_image", "prepare", "pad_prepared",
           "predict_prepared", "predict_tiles", "forward", "tile_starts", "tile_weights",
           "tile_size_of", "resize_factor", "argmax_mask"]

# Rows of a probability map turned into mask rows at a time by `argmax_mask`: numpy's argmax
# returns int64, 8 bytes per pixel; in blocks it never holds one of the whole image.
_ARGMAX_ROWS = 256
# nnU-Net's Gaussian: standard deviation 1/8 of the window side.
_SIGMA_FRACTION = 1.0 / 8.0


# ---------------------------------------------------------------------------------------------
# Frames: the network on arrays whose sides are multiples of 32
# ---------------------------------------------------------------------------------------------

def predict(model: SegNet, data: Any, batch_size: int = 8, output: str = "probs") -> np.ndarray:
    """`SegNet.predict`: run the model over a whole data set, in inference mode.

    data: an object with an `.images` array (e.g. `datasets.DataSet`), an array
        `(N, h, w, 3)` of RGB 0-255 images, or a `tf.data.Dataset` of images or
        `(image, label)` tuples, batched or not (unbatched ones are batched by `batch_size`).
    output: "probs" -> softmax probabilities `(N, h, w, C)` float32;
            "mask"  -> argmax class indices `(N, h, w)` uint8.
    """
    check_output(output)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    results = [model.predict_batch(batch, output).numpy()
               for batch in _batches(data, int(batch_size))]
    if results:
        return np.concatenate(results, axis=0)
    tail = (model.num_classes,) if output == "probs" else ()
    height, width = (size or 0 for size in model.input_shape[:2])
    return np.zeros((0, height, width) + tail, np.float32 if output == "probs" else np.uint8)


def _batches(data: Any, batch_size: int) -> Iterator[Any]:
    """Yield image batches `(n, h, w, 3)` from any input `predict` accepts."""
    import tensorflow as tf   # the SegNet that calls this has loaded it already

    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, (tuple, list)):
            data = data.map(lambda *element: element[0])
            spec = spec[0]
        if spec.shape.rank == 3:
            data = data.batch(batch_size)
        elif spec.shape.rank != 4:
            raise ValueError(f"predict: dataset elements must be images (h, w, 3) or "
                             f"batches (n, h, w, 3), got element shape {spec.shape}")
        yield from data
        return
    images = data.images if hasattr(data, "images") else data
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = "; use predict_image() for one image" if images.ndim == 3 else ""
        raise ValueError(f"predict: expected RGB images of shape (N, h, w, 3), got "
                         f"{images.shape}{hint}")
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


def forward(model: Any, batch: np.ndarray, *, tta: str = "none",
            output: str = "probs") -> np.ndarray:
    """One forward pass over a batch of frames `(n, H, W, 3)`: probabilities `(n, H, W, C)`
    float32 or masks `(n, H, W)` uint8. With `tta="flip"`, the mean of the batch's
    probabilities and its mirror's, mirrored back. `model` needs only `predict`."""
    if tta == "none":
        return model.predict(batch, batch_size=len(batch), output=output)
    probs = model.predict(batch, batch_size=len(batch), output="probs")
    mirrored = model.predict(np.ascontiguousarray(batch[:, :, ::-1]), batch_size=len(batch),
                             output="probs")
    probs += mirrored[:, :, ::-1]
    probs *= 0.5
    return probs if output == "probs" else np.stack([argmax_mask(p) for p in probs])


def argmax_mask(probs: np.ndarray) -> np.ndarray:
    """Class indices `(h, w)` uint8 of scores `(h, w, C)`, `_ARGMAX_ROWS` rows at a time."""
    mask = np.empty(probs.shape[:2], np.uint8)
    for top in range(0, probs.shape[0], _ARGMAX_ROWS):
        mask[top:top + _ARGMAX_ROWS] = np.argmax(probs[top:top + _ARGMAX_ROWS], axis=-1)
    return mask


# ---------------------------------------------------------------------------------------------
# One image: prepared as a frame of the network, batched, finished
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Prepared:
    """One image made ready for a batch of frames of size `frame`: `image` (the picture the
    network sees, resized in resize mode) sits at `offset` (top, left) of the frame; the result
    goes back to `size`, the original image's (h, w)."""

    image: np.ndarray
    frame: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]

    @property
    def resized(self) -> bool:
        return self.image.shape[:2] != self.size


def _check_image(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"predict_image: expected one RGB image (h, w, 3), got {image.shape}")
    return image


def tile_size_of(model: Any, options: InferenceOptions) -> tuple[int, int]:
    """The window of tiles mode: `options.tile_size`, else the model's training size."""
    size = options.tile_size or tuple(model.input_shape[:2])
    if None in size:
        raise ConfigError(f"--mode tiles needs a window size: the model was built for any input "
                          f"size (input_shape {model.input_shape}); pass tile_size=(H, W)")
    for axis, side in zip("HW", size):
        if not isinstance(side, (int, np.integer)) or side < MIN_SIZE or side % SIZE_MULTIPLE:
            raise ConfigError(f"tile size {size[0]}x{size[1]} is not one the network can take: "
                              f"{axis}={side} must be a multiple of {SIZE_MULTIPLE} and at "
                              f"least {MIN_SIZE} (the skip maps of a window must line up)")
    return int(size[0]), int(size[1])


def resize_factor(size: tuple[int, int], model: Any, options: InferenceOptions) -> float:
    """Resize mode's factor: `options.scale`; else the training frame's larger side over the
    image's larger side when the image is larger, 1 when it fits: training pads images smaller
    than the frame (it never enlarges them), so they are at the training scale already
    (benchmarks/scale_modes.py measured enlarging them: lower scores)."""
    if options.scale is not None:
        return float(options.scale)
    frame = [s for s in model.input_shape[:2] if s is not None]
    if not frame:
        raise ConfigError(f"--mode resize needs --scale: the model was built for any input "
                          f"size (input_shape {model.input_shape})")
    return min(1.0, max(frame) / max(size))


def prepare(image: np.ndarray, model: Any, options: InferenceOptions) -> Prepared | None:
    """`image` (h, w, 3) as a frame of the network for `options.mode`; None in tiles mode when
    the image is larger than one window (`predict_tiles` predicts it alone)."""
    image = _check_image(image)
    size = image.shape[:2]
    if options.mode == "tiles":
        tile = tile_size_of(model, options)
        if size[0] > tile[0] or size[1] > tile[1]:
            return None
        # A small image is one window: padded (centred) to the window, as `predict_tiles` pads.
        return Prepared(image, tile, ((tile[0] - size[0]) // 2, (tile[1] - size[1]) // 2), size)
    if options.mode == "resize":
        factor = resize_factor(size, model, options)
        target = tuple(max(1, int(round(side * factor))) for side in size)
        if target != size:
            # INTER_AREA averages the pixels a smaller image merges (no aliasing); enlarging
            # interpolates linearly.
            interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (target[1], target[0]), interpolation=interpolation)
    height, width, top, left = inference_padding(*image.shape[:2])
    return Prepared(image, (height, width), (top, left), size)


def pad_prepared(items: Sequence[Prepared]) -> np.ndarray:
    """Frames `(n, H, W, 3)` of prepared images sharing one frame size, zero (black) around
    each image, as the training images are padded in `datasets/`."""
    frame = items[0].frame
    batch = np.zeros((len(items), *frame, 3), np.uint8)
    for i, item in enumerate(items):
        if item.frame != frame:
            raise ValueError(f"pad_prepared: image {i} pads to {item.frame[0]}x{item.frame[1]}, "
                             f"not {frame[0]}x{frame[1]} like the first one")
        (top, left), (h, w) = item.offset, item.image.shape[:2]
        batch[i, top:top + h, left:left + w] = item.image
    return batch


def predict_prepared(model: Any, items: Sequence[Prepared], *, tta: str = "none",
                     output: str = "mask") -> list[np.ndarray]:
    """One forward pass over prepared images of one frame size; each result at its original
    size: `(h, w)` uint8 masks or `(h, w, C)` float32 probabilities."""
    # Resized images need probabilities to resize back; masks otherwise go the argmax path.
    needs_probs = output == "probs" or tta != "none" or any(item.resized for item in items)
    results = forward(model, pad_prepared(items), tta=tta,
                      output="probs" if needs_probs else "mask")
    finished = []
    for item, result in zip(items, results):
        (top, left), (h, w) = item.offset, item.image.shape[:2]
        result = result[top:top + h, left:left + w]
        if item.resized:
            # Linear interpolation of the class probabilities, then the argmax: smoother
            # outlines than resizing a mask.
            result = cv2.resize(result, (item.size[1], item.size[0]),
                                interpolation=cv2.INTER_LINEAR).reshape(*item.size, -1)
        if output == "mask" and result.ndim == 3:
            result = argmax_mask(result)
        finished.append(result)
    return finished


def predict_image(model: Any, image: np.ndarray, options: InferenceOptions | None = None,
                  output: str = "probs") -> np.ndarray:
    """`SegNet.predict_image`: one RGB 0-255 image of any size `(h, w, 3)` -> `(h, w, C)`
    float32 probabilities (output="probs") or `(h, w)` uint8 class indices ("mask").
    `options` (`InferenceOptions`): the mode, flip averaging, tiles' batch size; None: the
    defaults."""
    check_output(output)
    options = InferenceOptions() if options is None else options
    prepared = prepare(image, model, options)
    if prepared is None:
        return predict_tiles(model, image, options, output=output)
    return predict_prepared(model, [prepared], tta=options.tta, output=output)[0]


# ---------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------

def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Where windows of `tile` start along a side of `length >= tile` pixels: from 0 to
    `length - tile`, evenly spread, at most `tile * (1 - overlap)` apart."""
    if length <= tile:
        return [0]
    step = tile * (1.0 - overlap)
    count = math.ceil((length - tile) / step) + 1
    return [int(round(i * (length - tile) / (count - 1))) for i in range(count)]


def tile_weights(height: int, width: int) -> np.ndarray:
    """Blending weights of one window `(height, width)` float32: a Gaussian centred on the
    window (standard deviation 1/8 of the side, as nnU-Net's), 1 at the centre, falling
    towards the border but never 0 (at least exp(-8) per axis: every pixel keeps a weight).
    Mirror-symmetric, so flip averaging sees the same weights."""
    axes = []
    for side in (height, width):
        offset = np.arange(side, dtype=np.float64) - (side - 1) / 2.0
        axes.append(np.exp(-0.5 * (offset / (side * _SIGMA_FRACTION)) ** 2))
    weights = np.outer(*axes)
    return (weights / weights.max()).astype(np.float32)


def predict_tiles(model: Any, image: np.ndarray, options: InferenceOptions,
                  output: str = "mask") -> np.ndarray:
    """Tiles mode for one image: windows of `tile_size_of(model, options)`, `batch_size` per
    forward pass, blended by `tile_weights` into a float32 accumulator of the image's size. A
    side shorter than the window is padded (centred, black) to it first."""
    image = _check_image(image)
    tile_h, tile_w = tile_size_of(model, options)
    height, width = image.shape[:2]
    frame_h, frame_w = max(height, tile_h), max(width, tile_w)
    top, left = (frame_h - height) // 2, (frame_w - width) // 2
    if (frame_h, frame_w) != (height, width):
        framed = np.zeros((frame_h, frame_w, 3), np.uint8)
        framed[top:top + height, left:left + width] = image
    else:
        framed = image
    positions = [(y, x) for y in tile_starts(frame_h, tile_h, options.tile_overlap)
                 for x in tile_starts(frame_w, tile_w, options.tile_overlap)]
    weights = tile_weights(tile_h, tile_w)
    scores = np.zeros((frame_h, frame_w, model.num_classes), np.float32)
    weight_sum = np.zeros((frame_h, frame_w), np.float32)
    for start in range(0, len(positions), options.batch_size):
        chunk = positions[start:start + options.batch_size]
        batch = np.stack([framed[y:y + tile_h, x:x + tile_w] for y, x in chunk])
        for (y, x), probs in zip(chunk, forward(model, batch, tta=options.tta)):
            probs *= weights[..., None]
            scores[y:y + tile_h, x:x + tile_w] += probs
            weight_sum[y:y + tile_h, x:x + tile_w] += weights
    scores = scores[top:top + height, left:left + width]
    if output == "mask":
        # Every weight is > 0, so the argmax of the weighted sums is the blend's argmax.
        return argmax_mask(scores)
    scores /= weight_sum[top:top + height, left:left + width, None]
    return scores
