"""learning/utils.py: mask overlay pixels by hand, learning-curve files and their content."""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from learning.utils import (
    DEFAULT_COLORS,
    draw_legend,
    draw_pixel,
    legend_entries,
    plot_learning_curve,
    write_prediction,
)

CAT, DOG = (0, 102, 66), (155, 10, 116)


def _image_and_mask():
    image = np.array([[[100, 50, 200], [100, 50, 200], [10, 20, 30]],
                      [[1, 2, 3], [255, 255, 255], [7, 8, 9]]], dtype=np.uint8)   # (2, 3, 3)
    mask = np.array([[0, 1, 2],
                     [255, 1, 0]], dtype=np.uint8)
    return image, mask


def test_draw_pixel_blends_half_and_leaves_background_and_ignore_untouched():
    image, mask = _image_and_mask()
    before = image.copy()
    out = draw_pixel(image, mask)
    expected = before.copy()
    expected[0, 1] = [50, 76, 133]      # ((100+0)/2, (50+102)/2, (200+66)/2)
    expected[0, 2] = [83, 15, 73]       # (82.5 rounds half up, 15, 73)
    expected[1, 1] = [128, 179, 161]    # (127.5, 178.5, 160.5) rounded half up
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(image, before)  # input not modified


def test_draw_pixel_alpha_extremes_and_quarter():
    image, mask = _image_and_mask()
    np.testing.assert_array_equal(draw_pixel(image, mask, alpha=0.0), image)
    solid = draw_pixel(image, mask, alpha=1.0)
    np.testing.assert_array_equal(solid[0, 1], CAT)
    np.testing.assert_array_equal(solid[0, 2], DOG)
    np.testing.assert_array_equal(solid[1, 0], image[1, 0])
    quarter = draw_pixel(image, mask, alpha=0.25)
    # 0.75 * (100, 50, 200) + 0.25 * (0, 102, 66) = (75, 63, 166.5)
    np.testing.assert_array_equal(quarter[0, 1], [75, 63, 167])


def test_draw_pixel_batch_and_custom_colours():
    image, mask = _image_and_mask()
    batch = np.stack([image, image[::-1]])
    masks = np.stack([mask, np.zeros_like(mask)])
    out = draw_pixel(batch, masks, colors={0: (0, 0, 0)})
    # Only class 0 is coloured now: halves the pixel values there, cats/dogs untouched.
    np.testing.assert_array_equal(out[0, 0, 0], [50, 25, 100])
    np.testing.assert_array_equal(out[0, 0, 1], image[0, 1])
    np.testing.assert_array_equal(out[1], np.floor(image[::-1] / 2 + 0.5).astype(np.uint8))


def test_draw_pixel_rejects_bad_inputs_with_clear_errors():
    image, mask = _image_and_mask()
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_pixel(image.astype(np.float32), mask)
    with pytest.raises(ValueError, match=r"shape \(2, 3\); got \(2, 3, 3\)"):
        draw_pixel(image, np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="alpha"):
        draw_pixel(image, mask, alpha=1.5)
    with pytest.raises(ValueError, match="colour of class 1"):
        draw_pixel(image, mask, colors={1: (0, 300, 0)})


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _svg_texts(path) -> str:
    root = ET.parse(path).getroot()
    return " ".join(t for el in root.iter() if el.tag.endswith("text") for t in el.itertext())


def test_plot_learning_curve_writes_png_and_svg_and_marks_best_eval_epoch(tmp_path):
    losses = [1.0, 0.8, float("nan"), 0.5, 0.4, 0.3]
    train = [0.5, 0.7, 0.8]
    evals = [0.6, 0.9, 0.85]
    paths = plot_learning_curve(-1, losses, train, eval_scores=evals, mode="max",
                                img_dir=tmp_path / "run", score_name="accuracy",
                                extra_eval_scores={"mean_iou": [0.3, 0.5, 0.55]})
    assert [p.name for p in paths] == ["learning_curve.png", "learning_curve.svg"]
    assert _png_size(paths[0].read_bytes()) == (800, 650)   # 8 x 6.5 in at 100 dpi
    texts = _svg_texts(paths[1])
    for expected in ("train accuracy", "eval accuracy", "eval mean_iou", "loss", "epoch",
                     "best 0.9000 (epoch 2)"):
        assert expected in texts
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "learning_curve.png", "learning_curve.svg"]   # no temporary files left behind


def test_plot_learning_curve_min_mode_without_eval_uses_train_and_numbers_files(tmp_path):
    paths = plot_learning_curve(3, [0.5, 0.4], [0.3, 0.1, 0.2], mode="min", img_dir=tmp_path,
                                formats=("svg",))
    assert [p.name for p in paths] == ["learning_curve-3.svg"]
    texts = _svg_texts(paths[0])
    assert "best 0.1000 (epoch 2)" in texts and "experiment 3" in texts
    with pytest.raises(ValueError, match="mode"):
        plot_learning_curve(None, [1.0], [0.5], mode="best", img_dir=tmp_path)


def _svg_ids(path) -> set[str]:
    return {el.get("id") for el in ET.parse(path).getroot().iter() if el.get("id")}


def test_plot_learning_curve_marks_each_learning_rate_decay_and_the_best_epoch(tmp_path):
    rates = [0.03, 0.03, 0.015, 0.015, 0.015, 0.0075, 0.01]   # falls before epochs 3 and 6
    evals = [0.5, 0.6, 0.7, 0.72, 0.71, 0.74, 0.73]
    (svg,) = plot_learning_curve(None, [1.0] * 14, [0.4] * 7, eval_scores=evals,
                                 img_dir=tmp_path, formats=("svg",), learning_rates=rates)
    ids = _svg_ids(svg)
    assert {i for i in ids if i.startswith("lr-decay")} == {"lr-decay-epoch-3",
                                                             "lr-decay-epoch-6"}
    assert "best-epoch" in ids
    texts = _svg_texts(svg)
    assert "lr 0.015" in texts and "lr 0.0075" in texts
    assert "lr 0.01" not in texts.replace("lr 0.015", "")   # the rise at epoch 7 is no decay
    assert "best 0.7400 (epoch 6)" in texts


def test_an_annealed_rate_is_drawn_as_a_curve_not_a_mark_per_epoch(tmp_path):
    rates = [0.03 * 0.5 * (1 + np.cos(np.pi * e / 12)) for e in range(1, 13)]   # cosine
    (svg,) = plot_learning_curve(None, [1.0] * 24, [0.4] * 12, eval_scores=[0.5] * 12,
                                 img_dir=tmp_path, formats=("svg",), learning_rates=rates)
    ids = _svg_ids(svg)
    assert not [i for i in ids if i.startswith("lr-decay")]
    assert "lr-curve" in ids and "learning rate" in _svg_texts(svg)


def test_plot_learning_curve_without_rates_draws_no_decay_marks(tmp_path):
    (svg,) = plot_learning_curve(None, [1.0, 0.9], [0.4, 0.5], eval_scores=[0.5, 0.6],
                                 img_dir=tmp_path, formats=("svg",))
    assert not [i for i in _svg_ids(svg) if i.startswith("lr-decay")]
    assert "best-epoch" in _svg_ids(svg)


@pytest.mark.parametrize("alpha", [0.37, 0.5, 0.9])
def test_draw_pixel_equals_the_blend_formula_for_every_channel_value(alpha):
    values = np.arange(256, dtype=np.uint8)
    image = np.stack(np.meshgrid(values, values[::-1], indexing="ij"), -1)[..., [0, 1, 0]]
    mask = (np.arange(256 * 256).reshape(256, 256) % 3).astype(np.uint8)   # (256, 256)
    out = draw_pixel(image, mask, alpha=alpha)
    for class_index, colour in ((1, CAT), (2, DOG)):
        selected = mask == class_index
        expected = np.floor((1.0 - alpha) * image[selected].astype(np.float64)
                            + alpha * np.array(colour, np.float64) + 0.5)
        np.testing.assert_array_equal(out[selected], expected.astype(np.uint8))
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])


# -- colours per class, legend, write_prediction ---------------------------------------------------

def test_default_colours_are_the_pet_entries_of_the_class_colour_table():
    from datasets.classes import class_colors
    assert DEFAULT_COLORS == {1: CAT, 2: DOG} == class_colors(("background", "cat", "dog"))


def _grey(height=120, width=160):
    return np.full((height, width, 3), 200, np.uint8)


NAMES = ("background", "cat", "dog", "bird")
COLOURS = {1: CAT, 2: DOG, 3: (250, 200, 0)}


def test_legend_lists_coloured_classes_or_only_those_in_the_mask():
    assert [row[:2] for row in legend_entries(NAMES, COLOURS)] == [(1, "cat"), (2, "dog"),
                                                                   (3, "bird")]
    mask = np.array([[0, 3], [3, 255]], np.uint8)
    assert legend_entries(NAMES, COLOURS, mask) == [(3, "bird", (250, 200, 0))]


def test_legend_inside_keeps_the_size_and_draws_solid_squares_in_a_corner_box():
    image = _grey()
    out = draw_legend(image, NAMES, COLOURS)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, _grey())              # input untouched
    # Short side 120 -> 8 px squares (120/24 = 5 is below the 8 px minimum), 2 px padding:
    # the box starts at (2, 2), the squares at x = 4 and y = 4, 14, 24 (rows of 8 + 2 px).
    for row, colour in enumerate((CAT, DOG, (250, 200, 0))):
        y0 = 2 + 2 + row * 10
        np.testing.assert_array_equal(out[y0:y0 + 8, 4:12], np.full((8, 8, 3), colour))
    # Outside the box nothing changed; inside, the box darkens the picture.
    changed = np.argwhere(np.any(out != image, axis=-1))
    (top, left), (bottom, right) = changed.min(0), changed.max(0)
    assert (top, left) == (2, 2) and bottom < 40 and right < 60
    assert out[2, 2].tolist() == [int(np.floor(0.25 * 200 + 0.75 * 32 + 0.5))] * 3


def test_legend_on_the_right_leaves_the_image_intact_beside_a_panel():
    image = _grey(40, 30)
    out = draw_legend(image, NAMES, COLOURS, placement="right")
    assert out.shape[1] > 30 and out.shape[0] >= 40
    np.testing.assert_array_equal(out[:40, :30], image)
    assert out[0, 30].tolist() == [32, 32, 32]


def test_legend_without_coloured_classes_returns_the_image_and_bad_options_are_errors():
    image = _grey()
    np.testing.assert_array_equal(
        draw_legend(image, NAMES, COLOURS, mask=np.zeros((120, 160), np.uint8)), image)
    with pytest.raises(ValueError, match="placement must be 'inside' or 'right'"):
        draw_legend(image, NAMES, COLOURS, placement="left")
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_legend(image.astype(np.float32), NAMES, COLOURS)


def test_write_prediction_uses_the_given_colours_and_legend(tmp_path):
    image = _grey(64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[32:, 32:] = 3
    path = write_prediction(tmp_path, "a.png", image, mask, alpha=1.0, colors=COLOURS,
                            class_names=NAMES, legend=True, mask_dir=tmp_path / "masks")
    drawn = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(drawn[40:, 40:], np.full((24, 24, 3), (250, 200, 0)))
    expected = draw_legend(draw_pixel(image, mask, alpha=1.0, colors=COLOURS), NAMES, COLOURS,
                           mask=mask)
    np.testing.assert_array_equal(drawn, expected)              # PNG is lossless
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "masks" / "a.png"),
                                             cv2.IMREAD_UNCHANGED), mask)
    # Without colours: the pet colours, class 3 not drawn; a legend needs names.
    plain = write_prediction(tmp_path, "b.png", image, mask, alpha=1.0)
    np.testing.assert_array_equal(cv2.imread(str(plain)), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with pytest.raises(ValueError, match="needs class_names"):
        write_prediction(tmp_path, "c.png", image, mask, legend=True)
