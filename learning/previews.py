"""Grids of predictions next to the truth: per-epoch previews of training, and test.py's sheet.

One picture shows several images; each gets a *cell*: a one-line caption above two panels,

    +--------------------------------------+
    | caption (name, pixel accuracy)       |   CAPTION_HEIGHT px
    +-----------------+---+----------------+
    | prediction      |gap| true mask      |   panel: the largest image of the grid
    | over the image  |   | over the image |   (smaller ones centred in it)
    +-----------------+---+----------------+

both drawn with `learning.utils.draw_pixel` in the run's class colours; pixels the truth
ignores (255, the trimap's unknown band) are painted `IGNORE_COLOR` in the truth panel. Cells
are laid out row by row, `columns` per row, under a title line and above a legend (one swatch
per coloured class, named, plus the ignore colour).

* Training previews (`render_previews`, `write_preview`, `preview_summary_image`,
  `choose_preview_indices`): the same validation images every epoch, at the training size, so
  successive `previews/epoch_NNN.png` files show the masks forming.
* test.py's summary sheet (`BestWorstSheet`): the best and the worst test images by pixel
  accuracy, scaled down to fit one cell size.

Everything is uint8 RGB and deterministic (OpenCV's Hershey font, no anti-aliasing), so tests
compare exact pixels.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from common.files import atomic_write_bytes
from learning.evaluators import AccuracyEvaluator
from learning.run_folder import RunFolder
from learning.utils import draw_pixel

__all__ = [
    "IGNORE_COLOR",
    "PREVIEWS_DIR",
    "EpochPreviews",
    "GridLayout",
    "BestWorstSheet",
    "choose_preview_indices",
    "image_accuracy",
    "render_grid",
    "render_previews",
    "preview_path",
    "write_preview",
    "preview_summary_image",
]

PREVIEWS_DIR = RunFolder.PREVIEWS   # inside the run folder: previews/epoch_NNN.png
IGNORE_COLOR = (255, 255, 255)     # truth panel: pixels the loss and the scores ignore
CANVAS_COLOR = (32, 32, 32)        # everything that is not a panel
TEXT_COLOR = (235, 235, 235)
CAPTION_HEIGHT = 14                # one line of FONT_SCALE text
GAP = 4                            # between the two panels of a cell, and between rows
CELL_GAP = 12                      # between the cells of a row: wider, so pairs stand apart
MARGIN = 4                         # around the whole grid
SWATCH = 10                        # legend colour square
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.35
SHEET_COUNT = 6                    # test.py's sheet: this many best and as many worst images


# ---------------------------------------------------------------------------------------------
# Scores and choices
# ---------------------------------------------------------------------------------------------

def choose_preview_indices(num_examples: int, count: int = 8) -> list[int]:
    """Which validation examples to preview: `count` indices spread evenly over
    `[0, num_examples)`, first and last included, the same for every call (so for the whole
    run); all of them when there are no more than `count`."""
    if num_examples < 0 or count < 0:
        raise ValueError(f"num_examples and count must be >= 0, got {num_examples} and {count}")
    if count >= num_examples:
        return list(range(num_examples))
    if count == 1:
        return [0]
    # i * (n - 1) / (count - 1), rounded down: strictly increasing because n > count.
    return [i * (num_examples - 1) // (count - 1) for i in range(count)]


def image_accuracy(label: np.ndarray, prediction: np.ndarray, ignore_label: int = 255) -> float:
    """Pixel accuracy of one image (the test metric's per-image term): correct known pixels /
    known pixels; NaN when every pixel is ignored. label, prediction: (h, w) class indices."""
    evaluator = AccuracyEvaluator(ignore_label=ignore_label)
    evaluator.update(np.asarray(label)[None], np.asarray(prediction)[None])
    scored = evaluator.per_image_accuracy
    return float(scored[0]) if scored.size else math.nan


def _score_text(accuracy: float) -> str:
    return "acc n/a" if math.isnan(accuracy) else f"acc {accuracy:.3f}"


# ---------------------------------------------------------------------------------------------
# Layout and drawing
# ---------------------------------------------------------------------------------------------

def _text_width(text: str) -> int:
    (width, _), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    return width


def _fit_text(text: str, width: int) -> str:
    """`text`, cut short with '..' if needed, so that it is at most `width` pixels wide."""
    if _text_width(text) <= width:
        return text
    while text and _text_width(text + "..") > width:
        text = text[:-1]
    return text + ".." if text else ""


def _put_text(canvas: np.ndarray, text: str, top: int, left: int) -> None:
    """One line of text whose box starts at (top, left), CAPTION_HEIGHT tall."""
    cv2.putText(canvas, text, (left, top + CAPTION_HEIGHT - 4), FONT, FONT_SCALE, TEXT_COLOR, 1,
                cv2.LINE_8)


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """Where everything goes in a grid of `count` cells with panels of `panel` = (h, w) pixels.

    Row 0 of the canvas starts with the title line; cell i sits in grid row i // columns,
    column i % columns; the legend takes `legend_lines` lines under the last row.
    """

    count: int
    panel: tuple[int, int]
    columns: int
    legend_lines: int = 1

    @property
    def rows(self) -> int:
        return -(-self.count // self.columns)

    @property
    def cell_size(self) -> tuple[int, int]:
        """(height, width) of one cell: caption line plus the two panels side by side."""
        return CAPTION_HEIGHT + self.panel[0], 2 * self.panel[1] + GAP

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the whole grid."""
        cell_h, cell_w = self.cell_size
        height = (2 * MARGIN + CAPTION_HEIGHT + self.rows * (cell_h + GAP)
                  + self.legend_lines * CAPTION_HEIGHT)
        width = 2 * MARGIN + self.columns * cell_w + (self.columns - 1) * CELL_GAP
        return height, width, 3

    def cell_origin(self, index: int) -> tuple[int, int]:
        """(top, left) of cell `index`: its caption line starts there."""
        cell_h, cell_w = self.cell_size
        row, column = divmod(index, self.columns)
        return (MARGIN + CAPTION_HEIGHT + row * (cell_h + GAP),
                MARGIN + column * (cell_w + CELL_GAP))

    def panel_origin(self, index: int, side: str) -> tuple[int, int]:
        """(top, left) of the prediction panel (side="prediction") or of the truth panel
        (side="truth") of cell `index`."""
        if side not in ("prediction", "truth"):
            raise ValueError(f"side must be 'prediction' or 'truth', got {side!r}")
        top, left = self.cell_origin(index)
        return top + CAPTION_HEIGHT, left + (0 if side == "prediction" else self.panel[1] + GAP)

    def legend_top(self) -> int:
        return self.shape[0] - MARGIN - self.legend_lines * CAPTION_HEIGHT


def _legend_items(colors: Mapping[int, Sequence[int]],
                  class_names: Sequence[str]) -> list[tuple[tuple[int, int, int], str]]:
    """(colour, text) per coloured class in index order, then the ignore colour."""
    items = []
    for index in sorted(colors):
        name = class_names[index] if 0 <= index < len(class_names) else f"class {index}"
        items.append((tuple(int(c) for c in colors[index]), name))
    items.append((IGNORE_COLOR, "ignored (truth)"))
    return items


def _legend_lines(items: Sequence[tuple[tuple[int, int, int], str]], width: int) -> list[list]:
    """Split the legend items into lines no wider than `width` (at least one item per line)."""
    lines: list[list] = [[]]
    used = 0
    for colour, text in items:
        item_width = SWATCH + 3 + _text_width(text) + 2 * GAP
        if lines[-1] and used + item_width > width:
            lines.append([])
            used = 0
        lines[-1].append((colour, text))
        used += item_width
    return lines


def render_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    *,
    captions: Sequence[str],
    colors: Mapping[int, Sequence[int]],
    class_names: Sequence[str],
    alpha: float = 0.5,
    columns: int | None = None,
    title: str = "",
    ignore_label: int = 255,
) -> np.ndarray:
    """Draw each image's prediction next to its true mask, in one uint8 RGB picture.

    Args:
        images: uint8 RGB (h_i, w_i, 3) each; sizes may differ (each is centred in a panel as
            large as the largest image).
        labels: true class indices (h_i, w_i), `ignore_label` where unknown.
        predictions: predicted class indices (h_i, w_i).
        captions: one line per image (cut short with '..' to fit the cell).
        colors: class index -> RGB (0-255) of the classes to colour; others stay untouched.
        class_names: index -> name, for the legend.
        alpha: opacity of the colours (as `draw_pixel`).
        columns: cells per row; default min(count, 4).
        title: text of the first line (after "left: prediction, right: truth").
        ignore_label: label value painted `IGNORE_COLOR` in the truth panel.

    Returns:
        uint8 (H, W, 3), shape `GridLayout(...).shape`; the panels of image i are at
        `GridLayout.panel_origin(i, "prediction" | "truth")` plus its centring offset
        ((panel_h - h_i) // 2, (panel_w - w_i) // 2).
    """
    _check_grid_inputs(images, labels, predictions, captions)
    count = len(images)
    panel = (max(np.shape(image)[0] for image in images),
             max(np.shape(image)[1] for image in images))
    columns = min(count, 4) if columns is None else int(columns)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    items = _legend_items(colors, class_names)
    probe = GridLayout(count, panel, columns)
    lines = _legend_lines(items, probe.shape[1] - 2 * MARGIN)
    layout = GridLayout(count, panel, columns, legend_lines=len(lines))

    canvas = np.empty(layout.shape, np.uint8)
    canvas[:] = CANVAS_COLOR
    header = "left: prediction, right: truth" + (f"  |  {title}" if title else "")
    _put_text(canvas, _fit_text(header, layout.shape[1] - 2 * MARGIN), MARGIN, MARGIN)
    truth_colors = {**{int(k): tuple(v) for k, v in colors.items()}, ignore_label: IGNORE_COLOR}
    for i in range(count):
        _draw_cell(canvas, layout, i, np.asarray(images[i]), caption=captions[i],
                   prediction=predictions[i], label=labels[i], colors=colors,
                   truth_colors=truth_colors, alpha=alpha)
    _draw_legend(canvas, layout.legend_top(), lines)
    return canvas


def _check_grid_inputs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                       predictions: Sequence[np.ndarray], captions: Sequence[str]) -> None:
    """`ValueError` unless there is at least one image and each has a caption, a label and a
    prediction covering its pixels."""
    count = len(images)
    if count == 0:
        raise ValueError("render_grid needs at least one image")
    if not len(labels) == len(predictions) == len(captions) == count:
        raise ValueError(f"need as many labels, predictions and captions as images ({count}); "
                         f"got {len(labels)}, {len(predictions)} and {len(captions)}")
    shapes = [np.shape(image) for image in images]
    for i, (image, label, prediction) in enumerate(zip(images, labels, predictions)):
        if np.shape(label) != shapes[i][:2] or np.shape(prediction) != shapes[i][:2]:
            raise ValueError(f"image {i} is {shapes[i]} but its label is {np.shape(label)} and "
                             f"its prediction {np.shape(prediction)}; they must cover the same "
                             f"pixels")


def _draw_cell(canvas: np.ndarray, layout: GridLayout, index: int, image: np.ndarray, *,
               caption: str, prediction: np.ndarray, label: np.ndarray,
               colors: Mapping[int, Sequence[int]], truth_colors: Mapping[int, Sequence[int]],
               alpha: float) -> None:
    """Cell ``index``: its caption, then the image under its prediction and under its truth,
    each centred in its panel."""
    height, width = image.shape[:2]
    panel_h, panel_w = layout.panel
    dy, dx = (panel_h - height) // 2, (panel_w - width) // 2
    top, left = layout.cell_origin(index)
    _put_text(canvas, _fit_text(caption, layout.cell_size[1]), top, left)
    for side, mask, palette in (("prediction", prediction, colors),
                                ("truth", label, truth_colors)):
        y, x = layout.panel_origin(index, side)
        canvas[y + dy:y + dy + height, x + dx:x + dx + width] = draw_pixel(
            image, np.asarray(mask), alpha=alpha, colors=palette)


def _draw_legend(canvas: np.ndarray, top: int, lines: Sequence[Sequence]) -> None:
    """The legend rows from ``top`` down: a colour square and the class name per entry."""
    for line in lines:
        left = MARGIN
        for colour, text in line:
            box_top = top + (CAPTION_HEIGHT - SWATCH) // 2
            canvas[box_top:box_top + SWATCH, left:left + SWATCH] = colour
            _put_text(canvas, text, top, left + SWATCH + 3)
            left += SWATCH + 3 + _text_width(text) + 2 * GAP
        top += CAPTION_HEIGHT


# ---------------------------------------------------------------------------------------------
# Training previews
# ---------------------------------------------------------------------------------------------

def render_previews(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    *,
    colors: Mapping[int, Sequence[int]],
    class_names: Sequence[str],
    names: Sequence[str] | None = None,
    epoch: int | None = None,
    alpha: float = 0.5,
    columns: int | None = None,
    ignore_label: int = 255,
) -> np.ndarray:
    """The preview grid of one epoch.

    Args:
        images: (N, H, W, 3) uint8, the fixed preview images (at the training size).
        labels: (N, H, W) uint8 true classes, `ignore_label` where unknown.
        predictions: (N, H, W) integer predicted classes (argmax of the logits).
        names: one per image for the captions (e.g. the file names); default "#0", "#1", ...
        epoch: shown in the title when given.
    Each caption is the name and the image's pixel accuracy (`image_accuracy`).

    Returns:
        uint8 RGB (H', W', 3).
    """
    images, labels, predictions = (np.asarray(a) for a in (images, labels, predictions))
    if images.ndim != 4 or labels.shape != images.shape[:3] or predictions.shape != labels.shape:
        raise ValueError(f"expected images (N, H, W, 3), labels and predictions (N, H, W); got "
                         f"{images.shape}, {labels.shape}, {predictions.shape}")
    names = [f"#{i}" for i in range(len(images))] if names is None else list(names)
    if len(names) != len(images):
        raise ValueError(f"need one name per image ({len(images)}), got {len(names)}")
    captions = [f"{name}  {_score_text(image_accuracy(label, prediction, ignore_label))}"
                for name, label, prediction in zip(names, labels, predictions)]
    return render_grid(list(images), list(labels), list(predictions), captions=captions,
                       colors=colors, class_names=class_names, alpha=alpha, columns=columns,
                       title="" if epoch is None else f"epoch {epoch}",
                       ignore_label=ignore_label)


def preview_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """`<run_dir>/previews/epoch_NNN.png` (three digits at least: sorts by name up to 999)."""
    return Path(run_dir) / PREVIEWS_DIR / f"epoch_{int(epoch):03d}.png"


def encode_png(picture: np.ndarray) -> bytes:
    """uint8 RGB (H, W, 3) -> PNG bytes."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode a {np.shape(picture)} picture as PNG")
    return encoded.tobytes()


def write_preview(run_dir: str | os.PathLike, epoch: int, grid: np.ndarray) -> Path:
    """Write `grid` (uint8 RGB) as `previews/epoch_NNN.png` in the run folder, atomically."""
    return atomic_write_bytes(preview_path(run_dir, epoch), encode_png(grid))


def preview_summary_image(grid: np.ndarray) -> np.ndarray:
    """`grid` as the batch of one image `tf.summary.image` takes: uint8 (1, H, W, 3)."""
    grid = np.asarray(grid)
    if grid.dtype != np.uint8 or grid.ndim != 3 or grid.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB picture (H, W, 3), got {grid.dtype} {grid.shape}")
    return grid[None]


class EpochPreviews:
    """The preview of every epoch: the same validation examples, kept while the validation
    pass goes by, rendered once it is over (the training loop calls `start`, `add` per batch,
    then `render`).

    Args:
        num_examples: the validation set's size, or None when unknown (a stream): the first
            `count` examples are then previewed.
        colors, class_names: as `render_grid`.
        count: how many examples (`choose_preview_indices`).
    """

    def __init__(self, num_examples: int | None, *, colors: Mapping[int, Sequence[int]],
                 class_names: Sequence[str], count: int = 8, ignore_label: int = 255) -> None:
        self.indices = (list(range(count)) if num_examples is None
                        else choose_preview_indices(num_examples, count))
        self.colors, self.class_names, self.ignore_label = colors, class_names, ignore_label
        self._wanted = set(self.indices)
        self._kept: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self._seen = 0

    def start(self) -> None:
        """A new validation pass begins (examples are counted from 0 again)."""
        self._kept, self._seen = [], 0

    def add(self, images: np.ndarray, labels: np.ndarray, predictions: np.ndarray) -> None:
        """One batch of the pass, in order: images (B, H, W, 3), labels and predicted classes
        (B, H, W). Only the chosen examples are copied."""
        for row in range(len(images)):
            index = self._seen + row
            if index in self._wanted:
                image = np.asarray(images[row])
                if image.dtype != np.uint8:    # a float stream: the decoded 0-255 values
                    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
                self._kept.append((index, image, np.asarray(labels[row]).astype(np.uint8),
                                   np.asarray(predictions[row])))
        self._seen += len(images)

    def render(self, epoch: int) -> np.ndarray | None:
        """The grid of the kept examples (uint8 RGB), None if the pass gave none."""
        if not self._kept:
            return None
        indices, images, labels, predictions = zip(*self._kept)
        return render_previews(np.stack(images), np.stack(labels), np.stack(predictions),
                               colors=self.colors, class_names=self.class_names,
                               names=[f"val #{i}" for i in indices], epoch=epoch,
                               ignore_label=self.ignore_label)


# ---------------------------------------------------------------------------------------------
# test.py's summary sheet
# ---------------------------------------------------------------------------------------------

def _thumbnail(image: np.ndarray, label: np.ndarray, prediction: np.ndarray,
               size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale (image, label, prediction) down so the longer side is at most `size` px: area
    averaging for the image, nearest neighbour for the class maps (no invented classes)."""
    height, width = image.shape[:2]
    scale = min(1.0, size / max(height, width))
    if scale == 1.0:
        return image, label, prediction
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))   # cv2: (w, h)
    return (cv2.resize(image, shape, interpolation=cv2.INTER_AREA),
            cv2.resize(label, shape, interpolation=cv2.INTER_NEAREST),
            cv2.resize(prediction.astype(np.uint8), shape, interpolation=cv2.INTER_NEAREST))


class BestWorstSheet:
    """Keeps the `count` best and `count` worst images by pixel accuracy while a test pass
    streams by, as thumbnails (longer side at most `thumbnail_size` px), and renders them.

    Memory is bounded by 2 * count thumbnails whatever the number of images. Images without a
    known pixel (no accuracy) are not kept. Ties keep the earlier image.
    """

    def __init__(self, count: int = SHEET_COUNT, thumbnail_size: int = 160,
                 ignore_label: int = 255) -> None:
        if count < 1 or thumbnail_size < 8:
            raise ValueError(f"count must be >= 1 and thumbnail_size >= 8, got {count} and "
                             f"{thumbnail_size}")
        self.count = count
        self.thumbnail_size = thumbnail_size
        self.ignore_label = ignore_label
        self._seen = 0
        # Min-heaps: the root is the first to drop out. Entries (key, order, payload) with
        # order = -arrival, so of two equal scores the later image drops out first.
        self._best: list = []    # key = accuracy
        self._worst: list = []   # key = -accuracy

    def add(self, name: str, image: np.ndarray, label: np.ndarray,
            prediction: np.ndarray) -> float:
        """Score one image (h, w, 3) against its label (h, w); keep it if it is among the best
        or worst so far. Returns its accuracy (NaN without known pixels)."""
        accuracy = image_accuracy(label, prediction, self.ignore_label)
        self._seen += 1
        if math.isnan(accuracy):
            return accuracy
        order = -self._seen
        thumbnail = None
        for heap, key in ((self._best, accuracy), (self._worst, -accuracy)):
            if len(heap) < self.count or (key, order) > heap[0][:2]:
                if thumbnail is None:
                    thumbnail = (name, accuracy, *_thumbnail(image, label, prediction,
                                                             self.thumbnail_size))
                entry = (key, order, thumbnail)
                if len(heap) < self.count:
                    heapq.heappush(heap, entry)
                else:
                    heapq.heapreplace(heap, entry)
        return accuracy

    def _kept(self) -> tuple[list[tuple], list[tuple]]:
        """Thumbnails (name, accuracy, image, label, prediction): best first, worst first; an
        image among both (fewer than 2 * count images seen) is listed with the best only."""
        best = [entry[2] for entry in sorted(self._best, reverse=True)]
        best_names = {item[0] for item in best}
        worst = [entry[2] for entry in sorted(self._worst, reverse=True)
                 if entry[2][0] not in best_names]
        return best, worst

    def ranked(self) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(best first, worst first) as (name, accuracy) pairs, each image listed once."""
        best, worst = self._kept()
        return [item[:2] for item in best], [item[:2] for item in worst]

    def render(self, *, colors: Mapping[int, Sequence[int]], class_names: Sequence[str],
               alpha: float = 0.5, title: str = "") -> np.ndarray | None:
        """The sheet: the best images (best first) in the first rows, then the worst (worst
        first), `count` cells per row; None when no image was kept."""
        best, worst = self._kept()
        if not best:
            return None
        rows = [("best", t) for t in best] + [("worst", t) for t in worst]
        captions = [f"{kind}: {t[0]}  {_score_text(t[1])}" for kind, t in rows]
        return render_grid([t[2] for _, t in rows], [t[3] for _, t in rows],
                           [t[4] for _, t in rows], captions=captions, colors=colors,
                           class_names=class_names, alpha=alpha,
                           columns=min(self.count, len(rows)), title=title,
                           ignore_label=self.ignore_label)
