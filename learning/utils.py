"""Pictures of a run: the learning curve, and predicted masks drawn over their images.

Everything renders through matplotlib's Agg canvas on a private ``Figure`` (no pyplot, no global
state, never a window), and files are written atomically so a reader never sees half a PNG.
"""
from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from common.files import atomic_write_bytes
from datasets.classes import PET_CLASS_NAMES, class_colors

__all__ = ["DEFAULT_COLORS", "plot_learning_curve", "draw_pixel", "legend_entries",
           "draw_legend", "write_prediction"]

logger = logging.getLogger(__name__)

# Class index -> RGB overlay colour of the pet classes (the tutorial's choice: cat (0, 102, 66),
# dog (155, 10, 116)). Background (0) and ignored (255) pixels have no colour and stay
# untouched. Other class lists: `datasets.classes.class_colors(names)`.
DEFAULT_COLORS: dict[int, tuple[int, int, int]] = class_colors(PET_CLASS_NAMES)

# Legend look: white names on a dark box, the box blended over the image at this opacity.
_LEGEND_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LEGEND_BOX_COLOR = (32, 32, 32)
_LEGEND_BOX_OPACITY = 0.75
_LEGEND_TEXT_COLOR = (255, 255, 255)


def _best_index(scores: Sequence[float], mode: str) -> int | None:
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0 or np.all(np.isnan(values)):
        return None
    return int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))


def _decay_epochs(learning_rates: Sequence[float] | None) -> list[tuple[int, float]]:
    """(first epoch at the lower rate, 1-based; that rate) for every fall of the per-epoch
    learning rate. Rises (a warm restart, a resume at another rate) are not decays."""
    if learning_rates is None:
        return []
    rates = [float(r) for r in learning_rates]
    return [(i + 1, rates[i]) for i in range(1, len(rates)) if rates[i] < rates[i - 1]]


def plot_learning_curve(
    exp_idx: int | None,
    step_losses: Sequence[float],
    step_scores: Sequence[float],
    eval_scores: Sequence[float] | None = None,
    mode: str = "max",
    img_dir: str | os.PathLike = ".",
    *,
    score_name: str = "score",
    extra_eval_scores: Mapping[str, Sequence[float]] | None = None,
    formats: Sequence[str] = ("png", "svg"),
    learning_rates: Sequence[float] | None = None,
) -> list[Path]:
    """Draw the loss per step (top) and the scores per epoch (bottom); write one file per format.

    Args:
        exp_idx: experiment number shown in the title and appended to the file name
            (``learning_curve-<exp_idx>.png``); None or negative (the original passed -1) gives
            plain ``learning_curve.png``.
        step_losses: training loss of every step, in order (non-finite values leave a gap).
        step_scores: training score of every epoch (the original's name for it).
        eval_scores: validation score of every epoch, or None without a validation set.
        mode: 'max' or 'min': which end is best; the best epoch of the curve that drives model
            selection (eval if given, else train) is marked.
        img_dir: output folder (created if needed).
        score_name: y-axis label and legend name of the score, e.g. "accuracy".
        extra_eval_scores: further validation curves by name (e.g. {"mean_iou": [...]}).
        formats: file formats, written atomically.
        learning_rates: the rate every epoch trained with (history's ``lr``), optional. Where it
            fell from one epoch to the next, a dotted vertical line between the two epochs is
            labelled with the new rate (SVG id ``lr-decay-epoch-<first epoch at the new rate>``);
            a rate that falls at more than ``MAX_MARKED_DECAYS`` epochs (an annealing schedule)
            is drawn as a dotted curve on a right-hand axis instead (SVG id ``lr-curve``).

    The best epoch gets a star (SVG id ``best-epoch``), a horizontal line at its score and a
    "best <score> (epoch <n>)" label.

    Returns:
        The written paths, in ``formats`` order.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    has_idx = exp_idx is not None and exp_idx >= 0
    figure = Figure(figsize=(8.0, 6.5), layout="constrained")
    FigureCanvasAgg(figure)  # attaches the Agg canvas; PNG/SVG rendering needs no display
    ax_loss, ax_score = figure.subplots(2, 1)
    figure.suptitle("Learning curve" + (f" (experiment {exp_idx})" if has_idx else ""))

    _plot_losses(ax_loss, step_losses)
    selection = _plot_scores(ax_score, step_scores, eval_scores, extra_eval_scores, score_name)
    _mark_rate_decays(ax_score, learning_rates)
    _mark_best(ax_score, selection, mode)
    ax_score.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_score.set_xlabel("epoch")
    ax_score.set_ylabel(score_name if not extra_eval_scores else "score")
    ax_score.grid(alpha=0.3)
    ax_score.legend(loc="best")

    stem = f"learning_curve-{exp_idx}" if has_idx else "learning_curve"
    written = _save_figure(figure, Path(img_dir), stem, formats)
    logger.debug("learning curve written to %s", ", ".join(map(str, written)))
    return written


def _plot_losses(ax: Axes, step_losses: Sequence[float]) -> None:
    """The loss of every step (non-finite values leave a gap)."""
    steps = np.arange(1, len(step_losses) + 1)
    ax.plot(steps, np.asarray(step_losses, dtype=np.float64), color="tab:gray",
            linewidth=0.8, label="training loss per step")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")


def _plot_scores(ax: Axes, step_scores: Sequence[float], eval_scores: Sequence[float] | None,
                 extra_eval_scores: Mapping[str, Sequence[float]] | None,
                 score_name: str) -> Sequence[float]:
    """The score curves per epoch. Returns the curve that drives model selection (eval if
    given, else train)."""
    epochs = np.arange(1, len(step_scores) + 1)
    ax.plot(epochs, step_scores, color="tab:blue", marker=".", label=f"train {score_name}")
    selection = step_scores
    if eval_scores is not None:
        ax.plot(np.arange(1, len(eval_scores) + 1), eval_scores, color="tab:red",
                marker=".", label=f"eval {score_name}")
        selection = eval_scores
    extra_colors = ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:olive")
    for i, (name, values) in enumerate((extra_eval_scores or {}).items()):
        ax.plot(np.arange(1, len(values) + 1), values, linestyle="--", marker=".",
                color=extra_colors[i % len(extra_colors)], label=f"eval {name}")
    return selection


# More falls than this and the rate is annealed (cosine, linear: a fall at every epoch), not
# decayed in steps: one line per fall would bury the scores, so the rate is drawn as a curve.
MAX_MARKED_DECAYS = 4


def _mark_rate_decays(ax: Axes, learning_rates: Sequence[float] | None) -> None:
    """A dotted line between the two epochs of every fall of the rate, labelled with the new
    rate; or, for a rate that falls at more than ``MAX_MARKED_DECAYS`` epochs, the rate itself
    on a right-hand axis."""
    decays = _decay_epochs(learning_rates)
    if len(decays) > MAX_MARKED_DECAYS:
        rate_axis = ax.twinx()
        rates = [float(r) for r in learning_rates]
        rate_axis.plot(np.arange(1, len(rates) + 1), rates, color="tab:purple",
                       linestyle=":", linewidth=1.0, gid="lr-curve")
        rate_axis.set_ylabel("learning rate", color="tab:purple", fontsize=8)
        rate_axis.tick_params(axis="y", labelcolor="tab:purple", labelsize=7)
        rate_axis.set_ylim(bottom=0)
        return
    for epoch, rate in decays:
        ax.axvline(epoch - 0.5, color="tab:purple", linestyle=":", linewidth=1.0,
                   gid=f"lr-decay-epoch-{epoch}")
        # Along the line from the bottom of the axes, whatever the scores (x in data units, y
        # in axes fraction), away from the best-score label at the top.
        ax.annotate(f"lr {rate:.3g}", xy=(epoch - 0.5, 0.0),
                    xycoords=("data", "axes fraction"), xytext=(-2, 4),
                    textcoords="offset points", fontsize=7, color="tab:purple",
                    rotation=90, ha="right", va="bottom")


def _mark_best(ax: Axes, selection: Sequence[float], mode: str) -> None:
    """The best epoch of ``selection``: a star, a horizontal line at its score and a label."""
    best = _best_index(selection, mode)
    if best is None:
        return
    best_value = float(selection[best])
    ax.axhline(best_value, color="black", linestyle=":", linewidth=0.8)
    ax.plot([best + 1], [best_value], marker="*", markersize=12, color="gold",
            markeredgecolor="black", linestyle="none", zorder=5, gid="best-epoch")
    # Text on the side of the point that has room (the best epoch is often the last).
    right_half = best + 1 > (len(selection) + 1) / 2
    ax.annotate(f"best {best_value:.4f} (epoch {best + 1})", xy=(best + 1, best_value),
                xytext=(-4 if right_half else 4, 4), textcoords="offset points",
                ha="right" if right_half else "left", fontsize=8)


def _save_figure(figure: Figure, img_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    """``<img_dir>/<stem>.<format>`` for every format, written atomically (folder created)."""
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        buffer = io.BytesIO()
        # Real <text> in the SVG (searchable, smaller) instead of glyph outlines.
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            figure.savefig(buffer, format=fmt)
        written.append(atomic_write_bytes(img_dir / f"{stem}.{fmt}", buffer.getvalue()))
    return written


def draw_pixel(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    alpha: float = 0.5,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Blend class colours over an image where the mask predicts a coloured class.

    For every pixel whose class c has a colour (default: cat (0, 102, 66), dog (155, 10, 116),
    both RGB), ``out = round_half_up((1 - alpha) * image + alpha * colour)`` per channel; other
    pixels (background, ignore) are copied unchanged. So the picture stays visible under the
    mask. (The original added the colour onto the cropped frame, saturating it.)

    Args:
        image: uint8 RGB (H, W, 3), or a batch (N, H, W, 3).
        mask: integer class indices with the image's pixel shape, (H, W) or (N, H, W).
            Probabilities must be turned into indices (argmax) first.
        alpha: colour weight in [0, 1]; 0 returns the image, 1 paints solid colour.
        colors: class index -> RGB colour; None uses ``DEFAULT_COLORS``.

    Returns:
        A new uint8 array with the image's shape.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.dtype != np.uint8 or image.ndim < 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image must be uint8 RGB (H, W, 3) or (N, H, W, 3), got {image.dtype} {image.shape}"
        )
    if mask.shape != image.shape[:-1]:
        raise ValueError(
            f"mask must hold one class index per pixel, shape {image.shape[:-1]}; got "
            f"{mask.shape} (take argmax of probabilities first)"
        )
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer class indices, got dtype {mask.dtype}")
    if not (0.0 <= alpha <= 1.0) or math.isnan(alpha):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = DEFAULT_COLORS if colors is None else colors

    out = image.copy()
    # cv2.LUT takes 2-D multi-channel arrays: any batch is viewed as rows of one tall image.
    rows = np.ascontiguousarray(image).reshape(-1, image.shape[-2], 3)    # (N*H, W, 3)
    values = np.arange(256, dtype=np.float64)[:, None]                    # (256, 1)
    for class_index, color in colors.items():
        rgb = np.asarray(color, dtype=np.float64)
        if rgb.shape != (3,) or np.any(rgb < 0) or np.any(rgb > 255):
            raise ValueError(f"colour of class {class_index} must be 3 values in [0, 255], "
                             f"got {color!r}")
        selected = mask == class_index                           # (..., H, W) bool
        if not selected.any():
            continue
        # The blend of each of the 256 possible channel values with this colour, computed once
        # in float64 (the formula above, so exact), then looked up per pixel: (256, 3) uint8.
        table = np.floor((1.0 - alpha) * values + alpha * rgb + 0.5).astype(np.uint8)
        blended = cv2.LUT(rows, table.reshape(256, 1, 3)).reshape(image.shape)
        np.copyto(out, blended, where=selected[..., None])
    return out


def legend_entries(
    class_names: Sequence[str],
    colors: Mapping[int, tuple[int, int, int]],
    mask: np.ndarray | None = None,
) -> list[tuple[int, str, tuple[int, int, int]]]:
    """The legend's rows ``(class index, name, RGB colour)``, in class order: every class that
    has a colour, and, when ``mask`` is given, only those that occur in it."""
    present = None if mask is None else set(np.unique(np.asarray(mask)).tolist())
    rows = []
    for index, name in enumerate(class_names):
        if index in colors and (present is None or index in present):
            rows.append((index, str(name), tuple(int(c) for c in colors[index])))
    return rows


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw printable ASCII only; anything else becomes '?'."""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def draw_legend(
    image: np.ndarray,
    class_names: Sequence[str],
    colors: Mapping[int, tuple[int, int, int]],
    *,
    mask: np.ndarray | None = None,
    placement: str = "inside",
) -> np.ndarray:
    """Draw a legend (a colour square and the name of each coloured class) on a drawing.

    Args:
        image: uint8 RGB (H, W, 3), usually the output of ``draw_pixel``.
        class_names: name of each class index (``class_names[i]`` for label i).
        colors: class index -> RGB colour, the table the mask was drawn with
            (``datasets.classes.class_colors(class_names)``); uncoloured classes are not listed.
        mask: when given, only the classes present in it are listed.
        placement: "inside": a dark box blended into the top-left corner (the drawing keeps
            its size); "right": a dark panel appended to the right (the image is untouched,
            the drawing grows by the panel's width, and in height if the rows need it).

    Text and squares are sized from the image's shorter side (about 1/24 of it, 8-24 px), so
    the legend reads the same on a thumbnail and a photo. Returns a new uint8 array.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    if placement not in ("inside", "right"):
        raise ValueError(f"placement must be 'inside' or 'right', got {placement!r}")
    rows = legend_entries(class_names, colors, mask)
    if not rows:
        return image.copy()
    height, width = image.shape[:2]
    text_px = int(np.clip(round(min(height, width) / 24), 8, 24))   # wanted cap height
    (_, ref_h), _ = cv2.getTextSize("Ag", _LEGEND_FONT, 1.0, 1)
    scale = text_px / ref_h
    thickness = 1 if text_px < 16 else 2
    pad = max(2, text_px // 3)
    row_h = text_px + pad
    labels = [_ascii(name) for _, name, _ in rows]
    text_w = max(cv2.getTextSize(t, _LEGEND_FONT, scale, thickness)[0][0] for t in labels)
    box_w = pad + text_px + pad + text_w + pad          # [pad][square][pad][name][pad]
    box_h = pad + row_h * len(rows)

    if placement == "right":
        canvas = np.zeros((max(height, box_h), width + box_w, 3), np.uint8)
        canvas[:, width:] = _LEGEND_BOX_COLOR
        canvas[:height, :width] = image
        left, top = width, 0
    else:
        canvas = image.copy()
        left = top = min(pad, width - 1, height - 1)
        # Darken the box region (clipped to the image) so names stay readable on any picture.
        region = canvas[top:top + box_h, left:left + box_w].astype(np.float64)
        region = (1 - _LEGEND_BOX_OPACITY) * region + _LEGEND_BOX_OPACITY * np.asarray(
            _LEGEND_BOX_COLOR, np.float64)
        canvas[top:top + box_h, left:left + box_w] = np.floor(region + 0.5).astype(np.uint8)

    for row, ((_, _, color), label) in enumerate(zip(rows, labels)):
        y0 = top + pad + row * row_h                     # top of this row's square
        x0 = left + pad
        canvas[y0:y0 + text_px, x0:x0 + text_px] = color  # clipped by slicing at the borders
        cv2.putText(canvas, label, (x0 + text_px + pad, y0 + text_px), _LEGEND_FONT, scale,
                    _LEGEND_TEXT_COLOR, thickness, cv2.LINE_AA)
    return canvas


def write_prediction(
    out_dir: str | os.PathLike,
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    alpha: float = 0.5,
    mask_dir: str | os.PathLike | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    class_names: Sequence[str] | None = None,
    legend: bool = False,
    legend_placement: str = "inside",
) -> Path:
    """Save ``image`` with ``mask`` drawn over it (``draw_pixel``) as ``out_dir/name``.

    The file format follows ``name``'s extension (JPEG at quality 95, or PNG), so a drawing is
    named exactly like its input image. With ``mask_dir``, the raw class-index mask is also
    saved as ``mask_dir/<stem>.png`` (uint8 class indices, e.g. 0 background, 1 cat, 2 dog).

    Args:
        image: uint8 RGB (h, w, 3), the picture at its own resolution.
        mask: integer class indices (h, w).
        colors: class index -> RGB colour (``datasets.classes.class_colors(names)``); None:
            the pet colours ``DEFAULT_COLORS``.
        class_names: the name of each class index; needed for the legend.
        legend: draw a legend of the classes present in the mask (``draw_legend``).
        legend_placement: "inside" (top-left corner, same size) or "right" (appended panel).

    Returns:
        The path of the drawing.
    """
    out_path = Path(out_dir) / name
    out_path.parent.mkdir(parents=True, exist_ok=True)
    colors = DEFAULT_COLORS if colors is None else colors
    drawn = draw_pixel(image, mask, alpha=alpha, colors=colors)
    if legend:
        if class_names is None:
            raise ValueError("write_prediction(legend=True) needs class_names")
        drawn = draw_legend(drawn, class_names, colors, mask=mask, placement=legend_placement)
    extension = out_path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if extension in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(extension if extension else ".png",
                               cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode the drawing of {name} as {extension or '.png'}")
    atomic_write_bytes(out_path, encoded.tobytes())
    if mask_dir is not None:
        mask_path = Path(mask_dir) / (Path(name).stem + ".png")
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".png", np.asarray(mask, dtype=np.uint8))
        if not ok:
            raise OSError(f"could not encode the mask of {name}")
        atomic_write_bytes(mask_path, encoded.tobytes())
    return out_path
