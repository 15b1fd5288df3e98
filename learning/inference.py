"""Inference over a folder: the load -> predict -> draw loop of test.py and draw.py.

Data flow (h, w: an image's own size; H, W: the frame the network sees, `models.predict.prepare`
for the mode: the padded image, the padded resized image, or one window of tiles mode)::

    examples ──decode threads, `prefetch` files ahead, results taken in input order──>
        image (h, w, 3) uint8 [+ label (h, w) uint8]      (undecodable: skipped, warned, counted)
    ──prepare (mode)──> frame of the network, or "tiles" for an image larger than a window
    ──SizeBatcher: same (H, W) together, at most batch_size──> padded batch (n, H, W, 3)
    ──models.predict.predict_prepared on the calling thread──> masks (h, w) uint8
      (an image larger than a window: `models.predict.predict_tiles`, its windows batched)
    ──> Prediction(name, image, mask (h, w), label)
    ──caller's callback (test.py scores here)──> DrawingWriter threads: draw, encode, write

The model never waits for a decode or a write unless the window ahead (`prefetch` decodes,
`max_pending` writes) is full: both run in background threads while TensorFlow computes.
Each image is prepared exactly as `SegNet.predict_image` prepares it, so the masks are the same.

The scripts' shared start-up is `learning.run_info.read_run_labels` (how the run read its masks,
its class names and colours) and `SegNet.load`; `TestScores` is what test.py measures, in either
protocol.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from datasets.decode import MAX_PIXELS, UnreadableFileError
from datasets.examples import Example
from datasets.loading import load_image, load_label
from datasets.labels import LabelFormat
from learning.evaluators import (DEFAULT_BOUNDARY_TOLERANCE, AccuracyEvaluator,
                                 BoundaryFEvaluator, MeanIoUEvaluator)
from learning.previews import SHEET_COUNT, BestWorstSheet
from learning.utils import write_prediction
# The SegNet interface (how `predict_image` prepares, batches and finishes images); models/
# imports nothing of learning/.
from models.inference_options import InferenceOptions
from models.nn import SegNet, inference_padding
from models.predict import Prepared, pad_prepared, predict_prepared, predict_tiles, prepare

__all__ = [
    "Prediction",
    "InferenceResult",
    "TestScores",
    "SizeBatcher",
    "DrawingWriter",
    "plan_batches",
    "pad_batch",
    "predict_examples",
    "predict_and_draw",
]

logger = logging.getLogger(__name__)

RGB = tuple[int, int, int]


# ---------------------------------------------------------------------------------------------
# Decoding ahead
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image at its own resolution and what the model made of it."""

    index: int                          # position in the examples given
    name: str                           # the image's file name, e.g. "Bombay_217.jpg"
    image: np.ndarray                   # (h, w, 3) uint8 RGB
    mask: np.ndarray                    # (h, w) uint8 class indices
    label: np.ndarray | None            # (h, w) uint8, 255 = ignore; None without labels


@dataclasses.dataclass(frozen=True)
class _Decoded:
    index: int
    example: Example
    image: np.ndarray | None            # None: skipped
    label: np.ndarray | None
    error: str | None = None


def _decode(index: int, example: Example, *, with_labels: bool,
            label_format: LabelFormat | None, max_pixels: int | None) -> _Decoded:
    """Runs in a decode thread (the decoders release the GIL while they work)."""
    try:
        image = load_image(example.image_path, max_pixels=max_pixels)       # (h, w, 3)
        label = (load_label(example, image_shape=image.shape[:2], max_pixels=max_pixels,
                            label_format=label_format) if with_labels else None)
    except (UnreadableFileError, OSError) as error:
        return _Decoded(index, example, None, None, str(error))
    return _Decoded(index, example, image, label)


def _decode_ahead(examples: Sequence[Example], decode: Callable[[int, Example], _Decoded], *,
                  threads: int, prefetch: int) -> Iterator[_Decoded]:
    """`decode(index, example)` of every example, in input order, up to `prefetch` of them
    being decoded ahead in `threads` threads."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads,
                                               thread_name_prefix="decode") as pool:
        window: collections.deque = collections.deque()
        try:
            for index, example in enumerate(examples):
                window.append(pool.submit(decode, index, example))
                if len(window) >= prefetch:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:     # on an error or an early stop: drop what is queued
                future.cancel()


# ---------------------------------------------------------------------------------------------
# Batching by padded size
# ---------------------------------------------------------------------------------------------

class SizeBatcher:
    """Groups items that share a key (the padded size) into batches of at most `batch_size`.

    `add` returns the batches that are complete: a full group, or, when more than
    `max_buffered` items wait, the largest group (the first of equal ones) so that memory stays
    bounded. `flush` returns the rest, group by group in order of first arrival. Within a batch
    items keep their arrival order. Deterministic: the same keys in the same order give the same
    batches (the benchmark rebuilds the pipeline's batches from the sizes alone).
    """

    def __init__(self, batch_size: int, max_buffered: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_buffered = 4 * batch_size if max_buffered is None else max_buffered
        if self.max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, got {max_buffered}")
        self._groups: dict[Hashable, list] = {}
        self._count = 0

    def add(self, key: Hashable, item: object) -> list[list]:
        group = self._groups.setdefault(key, [])
        group.append(item)
        self._count += 1
        ready = []
        if len(group) == self.batch_size:
            ready.append(self._take(key))
        if self._count > self.max_buffered:
            largest = max(self._groups, key=lambda k: len(self._groups[k]))   # first of ties
            ready.append(self._take(largest))
        return ready

    def flush(self) -> list[list]:
        return [self._take(key) for key in list(self._groups)]

    def _take(self, key: Hashable) -> list:
        group = self._groups.pop(key)
        self._count -= len(group)
        return group


def plan_batches(sizes: Iterable[tuple[int, int]], batch_size: int,
                 max_buffered: int | None = None) -> list[list[int]]:
    """The batches (lists of positions) that `predict_examples` forms for images of these
    `(h, w)` sizes, in this order, when every image decodes."""
    batcher = SizeBatcher(batch_size, max_buffered)
    batches: list[list[int]] = []
    for index, (height, width) in enumerate(sizes):
        batches.extend(batcher.add(inference_padding(height, width)[:2], index))
    return batches + batcher.flush()


def pad_batch(images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pad images that share a padded size into one batch `(n, H, W, 3)` (zeros around each,
    centred, as `SegNet.predict_image` pads in full mode). Returns the batch and each image's
    (top, left)."""
    full = InferenceOptions(mode="full")
    items = [prepare(image, None, full) for image in images]
    return pad_prepared(items), [item.offset for item in items]


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------

def predict_examples(
    model: SegNet,
    examples: Sequence[Example],
    *,
    options: InferenceOptions | None = None,
    with_labels: bool = False,
    label_format: LabelFormat | None = None,
    max_pixels: int | None = MAX_PIXELS,
    skipped: list[tuple[str, str]] | None = None,
    decode_threads: int = 2,
    prefetch: int | None = None,
    max_buffered: int | None = None,
) -> Iterator[Prediction]:
    """Predict every example at its own resolution, in batches of frames of equal size.

    Args:
        model: a `SegNet` (only its `predict(batch, batch_size=, output=)`, `num_classes` and
            `input_shape` are used).
        examples: what to predict (`datasets.examples.list_examples`).
        options: the mode, flip averaging and `batch_size` (images, or tiles of one image
            larger than a window in tiles mode, per forward pass); None: the defaults
            (`models.inference_options`).
        with_labels: also decode each example's label at full resolution (test.py), read as
            `label_format` (the run's, `learning.run_info`; None: trimaps).
        max_pixels: the pixel limit of `datasets.loading.load_image` (larger files are skipped).
        skipped: a list that receives (name, reason) for every file that cannot be decoded
            (or is over `max_pixels`); such a file is also logged as a warning and never stops
            the pass.
        decode_threads, prefetch: decoding runs in `decode_threads` threads, at most
            `prefetch` files (default 2 * batch_size) ahead of the model.
        max_buffered: decoded images waiting for a batch of their frame size (default
            4 * batch_size) before the largest waiting group runs as it is.

    Yields:
        `Prediction`s, batch by batch (so not in input order; `index` gives the position).
        The masks equal `model.predict_image(image, output="mask", options=options)`.
    """
    options = InferenceOptions() if options is None else options
    batch_size = options.batch_size
    prefetch = 2 * batch_size if prefetch is None else prefetch
    if prefetch < 1 or decode_threads < 1:
        raise ValueError(f"prefetch and decode_threads must be >= 1, got {prefetch} and "
                         f"{decode_threads}")
    batcher = SizeBatcher(batch_size, max_buffered)

    def prediction(item: _Decoded, mask: np.ndarray) -> Prediction:
        return Prediction(item.index, item.example.name, item.image, mask, item.label)

    def run(batch: list[tuple[_Decoded, Prepared]]) -> Iterator[Prediction]:
        masks = predict_prepared(model, [prepared for _, prepared in batch], tta=options.tta,
                                 output="mask")
        for (item, _), mask in zip(batch, masks):
            yield prediction(item, mask)

    decode = functools.partial(_decode, with_labels=with_labels, label_format=label_format,
                               max_pixels=max_pixels)
    for item in _decode_ahead(examples, decode, threads=decode_threads, prefetch=prefetch):
        if item.image is None:
            logger.warning("skipping %s: %s", item.example.image_path, item.error)
            if skipped is not None:
                skipped.append((item.example.name, item.error))
            continue
        prepared = prepare(item.image, model, options)
        if prepared is None:   # tiles mode, larger than a window: its own windows are batched
            yield prediction(item, predict_tiles(model, item.image, options, output="mask"))
            continue
        for batch in batcher.add(prepared.frame, (item, prepared)):
            yield from run(batch)
    for batch in batcher.flush():
        yield from run(batch)


# ---------------------------------------------------------------------------------------------
# Writing drawings in the background
# ---------------------------------------------------------------------------------------------

class DrawingWriter:
    """Draws masks over their images and writes them (`learning.utils.write_prediction`) in
    background threads, at most `max_pending` at a time (memory stays bounded: the caller
    waits for the oldest write only when that many are queued).

    Use as a context manager; leaving the block waits for every write and raises the first
    error of a write (a full disk, a read-only folder) instead of losing it.
    """

    def __init__(self, out_dir: str | os.PathLike, *, colors: Mapping[int, RGB],
                 class_names: Sequence[str] | None = None, legend: bool = False,
                 alpha: float = 0.5, mask_dir: str | os.PathLike | None = None,
                 threads: int = 2, max_pending: int = 16) -> None:
        if threads < 1 or max_pending < 1:
            raise ValueError(f"threads and max_pending must be >= 1, got {threads} and "
                             f"{max_pending}")
        self.out_dir = Path(out_dir)
        self.colors = dict(colors)
        self.class_names = class_names
        self.legend = legend
        self.alpha = alpha
        self.mask_dir = mask_dir
        self.max_pending = max_pending
        self.num_written = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads,
                                                           thread_name_prefix="draw")
        self._pending: collections.deque = collections.deque()

    def submit(self, name: str, image: np.ndarray, mask: np.ndarray) -> None:
        """Queue `image` (h, w, 3) with `mask` (h, w) drawn over it, as `<out_dir>/<name>`."""
        while len(self._pending) >= self.max_pending:
            self._finish_oldest()
        self._pending.append(self._pool.submit(
            write_prediction, self.out_dir, name, image, mask, alpha=self.alpha,
            mask_dir=self.mask_dir, colors=self.colors, class_names=self.class_names,
            legend=self.legend))

    def _finish_oldest(self) -> None:
        self._pending.popleft().result()
        self.num_written += 1

    def close(self) -> None:
        """Wait for every queued write; raise the first error."""
        try:
            while self._pending:
                self._finish_oldest()
        finally:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "DrawingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # Already failing: stop queued writes, keep that error (not a later write error).
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# Scores (test.py)
# ---------------------------------------------------------------------------------------------

class TestScores:
    """test.py's scores of one protocol: pixel accuracy (mean over images), mean IoU, per-class
    IoU, the confusion matrix and the boundary F-score (per class and mean, within
    `boundary_tolerance` pixels), fed batch by batch (`update`) or image by image (`add`,
    which also keeps the best and worst images for the summary sheet, `self.sheet`)."""

    __test__ = False   # a scorer, not a pytest test class

    def __init__(self, num_classes: int, *, ignore_label: int = 255,
                 sheet_count: int = SHEET_COUNT,
                 boundary_tolerance: int = DEFAULT_BOUNDARY_TOLERANCE) -> None:
        self.accuracy = AccuracyEvaluator(ignore_label=ignore_label)
        self.iou = MeanIoUEvaluator(num_classes=num_classes, ignore_label=ignore_label)
        self.boundary = BoundaryFEvaluator(num_classes=num_classes, ignore_label=ignore_label,
                                           tolerance=boundary_tolerance)
        self.sheet = BestWorstSheet(count=sheet_count, ignore_label=ignore_label)

    def update(self, labels: np.ndarray, masks: np.ndarray) -> None:
        """labels, masks: (N, H, W) class indices (labels: 255 = ignore)."""
        self.accuracy.update(labels, masks)
        self.iou.update(labels, masks)
        self.boundary.update(labels, masks)

    def add(self, prediction: Prediction) -> None:
        """One full-resolution prediction with its label (`predict_and_draw`'s callback)."""
        self.update(prediction.label[None], prediction.mask[None])
        self.sheet.add(prediction.name, prediction.image, prediction.label, prediction.mask)

    def result(self, protocol: str, class_names: Sequence[str]) -> dict:
        """JSON-ready: protocol, pixel_accuracy, mean_iou, per_class_iou (by name),
        confusion_matrix (rows: truth, columns: prediction, in pixels), boundary_f,
        per_class_boundary_f (by name; NaN: no outline of that class in truth or prediction)
        and boundary_tolerance_px."""
        details = self.iou.result_details()
        return {
            "protocol": protocol,
            "pixel_accuracy": self.accuracy.result(),
            "mean_iou": details["mean_iou"],
            "per_class_iou": dict(zip(class_names, map(float, details["per_class_iou"]))),
            "confusion_matrix": details["confusion_matrix"].tolist(),
            "boundary_f": self.boundary.result(),
            "per_class_boundary_f": dict(zip(class_names,
                                             map(float, self.boundary.per_class_f))),
            "boundary_tolerance_px": self.boundary.tolerance,
        }


# ---------------------------------------------------------------------------------------------
# The loop of both scripts
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class InferenceResult:
    num_predicted: int = 0
    num_drawn: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (name, reason)


def predict_and_draw(
    model: SegNet,
    examples: Sequence[Example],
    *,
    out_dir: str | os.PathLike | None,
    colors: Mapping[int, RGB],
    class_names: Sequence[str] | None = None,
    legend: bool = False,
    alpha: float = 0.5,
    mask_dir: str | os.PathLike | None = None,
    options: InferenceOptions | None = None,
    with_labels: bool = False,
    label_format: LabelFormat | None = None,
    max_pixels: int | None = MAX_PIXELS,
    on_prediction: Callable[[Prediction], None] | None = None,
    decode_threads: int = 2,
    draw_threads: int = 2,
) -> InferenceResult:
    """Predict every example at full resolution and draw each prediction over its image.

    test.py passes `with_labels=True` and scores in `on_prediction` (called on this thread,
    once per image, in batch order); draw.py only draws. With `out_dir=None` nothing is drawn.
    Drawings are named like their images (`<out_dir>/<name>`), in `colors`, with a legend of
    `class_names` when `legend` (`learning.utils.write_prediction`; the run's values come from
    `learning.run_info.read_run_labels`); raw masks go to `<mask_dir>/<stem>.png` when
    `mask_dir` is given. Undecodable files are skipped with a warning and listed in the result;
    `options` (mode, flip averaging, batch size), `label_format` and `max_pixels` are
    `predict_examples`'.
    """
    options = InferenceOptions() if options is None else options
    result = InferenceResult()
    writer = (DrawingWriter(out_dir, colors=colors, class_names=class_names, legend=legend,
                            alpha=alpha, mask_dir=mask_dir, threads=draw_threads,
                            max_pending=2 * options.batch_size)
              if out_dir is not None else None)
    with writer if writer is not None else contextlib.nullcontext():
        for prediction in predict_examples(model, examples, options=options,
                                           with_labels=with_labels, label_format=label_format,
                                           max_pixels=max_pixels, skipped=result.skipped,
                                           decode_threads=decode_threads):
            result.num_predicted += 1
            if on_prediction is not None:
                on_prediction(prediction)
            if writer is not None:
                writer.submit(prediction.name, prediction.image, prediction.mask)
    result.num_drawn = 0 if writer is None else writer.num_written
    return result
