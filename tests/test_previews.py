"""Prediction/truth grids (learning/previews.py): layout, exact panel pixels, files, the sheet."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from learning.previews import (
    CANVAS_COLOR,
    EpochPreviews,
    IGNORE_COLOR,
    BestWorstSheet,
    GridLayout,
    choose_preview_indices,
    image_accuracy,
    preview_path,
    preview_summary_image,
    render_grid,
    render_previews,
    write_preview,
)
from datasets.data import DataSet
from learning.evaluators import AccuracyEvaluator
from learning.optimizers import MomentumOptimizer
from learning.utils import draw_pixel
from tiny import tiny_data, tiny_model

COLORS = {1: (0, 102, 66), 2: (155, 10, 116)}
NAMES = ("background", "cat", "dog")


def batch(n=2, h=8, w=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (n, h, w)).astype(np.uint8)
    labels[:, 0, :] = 255                                   # an ignored first row
    predictions = rng.integers(0, 3, (n, h, w)).astype(np.uint8)
    return images, labels, predictions


@pytest.mark.parametrize("n, count, expected", [
    (10, 4, [0, 3, 6, 9]), (100, 8, [0, 14, 28, 42, 56, 70, 84, 99]), (3, 8, [0, 1, 2]),
    (5, 1, [0]), (0, 4, []), (7, 7, [0, 1, 2, 3, 4, 5, 6]),
])
def test_preview_indices_are_evenly_spread_and_fixed(n, count, expected):
    assert choose_preview_indices(n, count) == expected
    assert choose_preview_indices(n, count) == expected        # the same on every call


def test_image_accuracy_counts_known_pixels_only():
    label = np.array([[255, 1], [2, 0]], np.uint8)
    prediction = np.array([[1, 1], [0, 0]], np.uint8)
    assert image_accuracy(label, prediction) == pytest.approx(2 / 3)
    assert math.isnan(image_accuracy(np.full((2, 2), 255, np.uint8), prediction))


def test_layout_of_two_cells_by_hand():
    layout = GridLayout(count=3, panel=(8, 10), columns=2, legend_lines=2)
    # margin 4, caption 14, gap 4 (panels, rows), 12 between cells: cells are 14 + 8 = 22
    # high and 2 * 10 + 4 = 24 wide.
    assert layout.cell_size == (22, 24)
    assert layout.shape == (4 + 14 + 2 * 26 + 2 * 14 + 4, 4 + 24 + 12 + 24 + 4, 3) == (102, 68, 3)
    assert layout.cell_origin(1) == (18, 40) and layout.cell_origin(2) == (44, 4)
    assert layout.panel_origin(1, "prediction") == (32, 40)
    assert layout.panel_origin(1, "truth") == (32, 54)
    assert layout.legend_top() == 102 - 4 - 28


def test_preview_panels_are_the_drawn_prediction_and_the_drawn_truth_exactly():
    images, labels, predictions = batch()
    grid = render_previews(images, labels, predictions, colors=COLORS, class_names=NAMES,
                           alpha=0.5, columns=2)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    layout = GridLayout(count=2, panel=(8, 10), columns=2,
                        legend_lines=(grid.shape[0] - 4 - 14 - 26 - 4) // 14)
    assert grid.shape == layout.shape
    for i in range(2):
        y, x = layout.panel_origin(i, "prediction")
        np.testing.assert_array_equal(grid[y:y + 8, x:x + 10],
                                      draw_pixel(images[i], predictions[i], colors=COLORS))
        y, x = layout.panel_origin(i, "truth")
        truth = grid[y:y + 8, x:x + 10]
        np.testing.assert_array_equal(
            truth, draw_pixel(images[i], labels[i], colors={**COLORS, 255: IGNORE_COLOR}))
        # The ignored row is the image half-way to white, by hand: round(v / 2 + 127.5).
        np.testing.assert_array_equal(truth[0], np.floor(images[i, 0] / 2 + 127.5 + 0.5))
        background = labels[i] == 0
        np.testing.assert_array_equal(truth[background], images[i][background])
    # Between and around the panels: the canvas colour.
    assert (grid[layout.panel_origin(0, "truth")[0], 4 + 10:4 + 14] == CANVAS_COLOR).all()


def test_captions_and_legend_put_text_on_the_canvas():
    images, labels, predictions = batch(n=1)
    grid = render_previews(images, labels, predictions, colors=COLORS, class_names=NAMES,
                           names=["val 0"], epoch=3)
    layout = GridLayout(count=1, panel=(8, 10), columns=1,
                        legend_lines=(grid.shape[0] - 4 - 14 - 26 - 4) // 14)
    top, left = layout.cell_origin(0)
    caption = grid[top:top + 14, left:left + layout.cell_size[1]]
    legend = grid[layout.legend_top():grid.shape[0] - 4]
    for strip in (grid[4:18], caption, legend):
        assert (strip != CANVAS_COLOR).any(axis=-1).sum() > 10   # text pixels
    assert (legend == COLORS[1]).all(axis=-1).sum() == 100       # a 10x10 swatch per colour
    assert (legend == COLORS[2]).all(axis=-1).sum() == 100


def test_images_of_different_sizes_are_centred_in_their_panels():
    small = np.full((4, 6, 3), 200, np.uint8)
    large = np.full((8, 10, 3), 100, np.uint8)
    grid = render_grid([small, large], [np.zeros((4, 6), np.uint8), np.zeros((8, 10), np.uint8)],
                       [np.zeros((4, 6), np.uint8), np.zeros((8, 10), np.uint8)],
                       captions=["a", "b"], colors=COLORS, class_names=NAMES, columns=2)
    y, x = GridLayout(2, (8, 10), 2).panel_origin(0, "prediction")
    panel = grid[y:y + 8, x:x + 10]
    assert (panel[2:6, 2:8] == 200).all()                      # offsets (8-4)//2, (10-6)//2
    assert (panel[:2] == CANVAS_COLOR).all() and (panel[6:] == CANVAS_COLOR).all()


def test_bad_inputs_are_refused_with_their_shapes():
    images, labels, predictions = batch()
    with pytest.raises(ValueError, match="same pixels"):
        render_grid(list(images), [labels[0][:4], labels[1]], list(predictions),
                    captions=["a", "b"], colors=COLORS, class_names=NAMES)
    with pytest.raises(ValueError, match="one name per image"):
        render_previews(images, labels, predictions, colors=COLORS, class_names=NAMES,
                        names=["only one"])
    with pytest.raises(ValueError, match="at least one"):
        render_grid([], [], [], captions=[], colors=COLORS, class_names=NAMES)


def test_write_preview_is_a_lossless_png_named_by_epoch_and_leaves_no_temporary(tmp_path):
    grid = render_previews(*batch(), colors=COLORS, class_names=NAMES)
    path = write_preview(tmp_path, 7, grid)
    assert path == preview_path(tmp_path, 7) == tmp_path / "previews" / "epoch_007.png"
    read = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(read, grid)
    assert [p.name for p in (tmp_path / "previews").iterdir()] == ["epoch_007.png"]
    assert preview_path(tmp_path, 1234).name == "epoch_1234.png"


def test_summary_image_is_a_batch_of_one():
    grid = np.zeros((5, 6, 3), np.uint8)
    assert preview_summary_image(grid).shape == (1, 5, 6, 3)
    with pytest.raises(ValueError, match="uint8 RGB"):
        preview_summary_image(np.zeros((5, 6), np.uint8))


def _scored(accuracy_percent: int, size=(10, 10)) -> tuple:
    """An image whose prediction is right on exactly `accuracy_percent` % of its pixels."""
    label = np.ones(size, np.uint8)
    prediction = label.copy()
    prediction.reshape(-1)[:label.size * (100 - accuracy_percent) // 100] = 2
    return np.zeros(size + (3,), np.uint8), label, prediction


def test_the_sheet_keeps_the_best_and_the_worst_and_the_earlier_of_ties():
    sheet = BestWorstSheet(count=2)
    for name, percent in [("a", 20), ("b", 90), ("c", 50), ("d", 90), ("e", 100), ("f", 20),
                          ("g", 60)]:
        assert sheet.add(name, *_scored(percent)) == pytest.approx(percent / 100)
    empty = np.full((10, 10), 255, np.uint8)
    assert math.isnan(sheet.add("all-ignored", np.zeros((10, 10, 3), np.uint8), empty, empty))
    best, worst = sheet.ranked()
    assert best == [("e", 1.0), ("b", 0.9)]            # b and d tie: the earlier stays
    assert worst == [("a", 0.2), ("f", 0.2)]
    picture = sheet.render(colors=COLORS, class_names=NAMES)
    layout = GridLayout(4, (10, 10), 2)              # best in the first row, worst below
    assert picture.shape[1] == layout.shape[1]
    cat, dog = (0, 51, 33), (78, 5, 58)              # the colours at alpha 0.5 over black
    for cell, num_cat in ((0, 100), (1, 90), (2, 20), (3, 20)):     # e, b, a, f
        y, x = layout.panel_origin(cell, "prediction")
        panel = picture[y:y + 10, x:x + 10]
        assert (panel == cat).all(axis=-1).sum() == num_cat
        assert (panel == dog).all(axis=-1).sum() == 100 - num_cat


def test_a_small_test_set_lists_each_image_once_and_thumbnails_fit():
    sheet = BestWorstSheet(count=3, thumbnail_size=16)
    sheet.add("wide", *_scored(70, size=(20, 40)))     # scaled to 8x16
    sheet.add("small", *_scored(40))
    best, worst = sheet.ranked()
    assert best == [("wide", 0.7), ("small", 0.4)] and worst == []
    picture = sheet.render(colors=COLORS, class_names=NAMES)
    layout = GridLayout(2, (10, 16), 2)                  # panels as large as the largest
    assert picture.shape[1] == layout.shape[1]
    y, x = layout.panel_origin(0, "prediction")          # "wide" is 8x16, one row above/below
    panel = picture[y:y + 10, x:x + 16]
    assert (panel[0] == CANVAS_COLOR).all() and (panel[9] == CANVAS_COLOR).all()
    assert not (panel[1:9] == CANVAS_COLOR).all(axis=-1).any()
    assert BestWorstSheet().render(colors=COLORS, class_names=NAMES) is None


def test_epoch_previews_keep_the_chosen_examples_across_batches():
    previews = EpochPreviews(5, colors=COLORS, class_names=NAMES, count=3)
    assert previews.indices == [0, 2, 4]
    images, labels, predictions = batch(n=5, seed=3)
    previews.start()
    for start in (0, 2, 4):                       # batches of 2, 2, 1
        previews.add(images[start:start + 2], labels[start:start + 2],
                     predictions[start:start + 2])
    expected = render_previews(images[[0, 2, 4]], labels[[0, 2, 4]], predictions[[0, 2, 4]],
                               colors=COLORS, class_names=NAMES,
                               names=["val #0", "val #2", "val #4"], epoch=7)
    np.testing.assert_array_equal(previews.render(7), expected)
    previews.start()                              # a new pass forgets the last one
    assert previews.render(8) is None


def _image_summaries(folder) -> dict[int, np.ndarray]:
    """step -> the picture of every `previews` image summary in the run's TensorBoard logs."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for events in sorted((folder / "tensorboard").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"tensors": 0})
        accumulator.Reload()
        for event in accumulator.Tensors("previews") if "previews" in accumulator.Tags()[
                "tensors"] else []:
            encoded = tf.make_ndarray(event.tensor_proto)[2]     # [width, height, png...]
            found[event.step] = tf.io.decode_png(encoded).numpy()
    return found


def test_training_writes_each_epochs_preview_to_the_folder_and_tensorboard(tmp_path):
    images, labels = tiny_data(8, seed=1)
    val_images, val_labels = tiny_data(3, seed=2, unknown_rows=4)
    model = tiny_model(seed=2)
    optimizer = MomentumOptimizer(model, DataSet(images, labels, seed=1), AccuracyEvaluator(),
                                  DataSet(val_images, val_labels), batch_size=4,
                                  eval_batch_size=2, num_epochs=3, init_learning_rate=0.1,
                                  learning_rate_patience=0, learning_rate_decay=0.5,
                                  score_threshold=1.0, seed=3)
    results = optimizer.train(tmp_path / "run", details=True, verbose=False)

    # The last epoch's preview: the final model's predictions on the 3 validation images.
    predictions = np.argmax(model.keras_model(val_images, training=False).numpy(), axis=-1)
    expected = render_previews(val_images, val_labels, predictions, colors=COLORS,
                               class_names=NAMES, names=["val #0", "val #1", "val #2"],
                               epoch=3)
    files = sorted(p.name for p in (tmp_path / "run" / "previews").iterdir())
    assert files == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    written = cv2.cvtColor(cv2.imread(str(preview_path(tmp_path / "run", 3))), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(written, expected)
    summaries = _image_summaries(tmp_path / "run")
    assert sorted(summaries) == [1, 2, 3]
    np.testing.assert_array_equal(summaries[3], expected)

    # The learning curve marks every epoch that trained at a lower rate than the one before.
    rates = results["learning_rates"]
    decays = [i + 1 for i in range(1, len(rates)) if rates[i] < rates[i - 1]]
    # Epoch 1 improves on nothing; epoch 2 does not double it (score_threshold 1.0), and with
    # patience 0 the rate halves for epoch 3.
    assert decays == [3]
    svg = (tmp_path / "run" / "learning_curve.svg").read_text()
    for epoch in decays:
        assert f'id="lr-decay-epoch-{epoch}"' in svg
    assert 'id="best-epoch"' in svg
