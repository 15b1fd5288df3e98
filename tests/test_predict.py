"""Images of any size (models/predict.py): tiles, their blending weights, resize, flip averaging,
the options and their bad values; the batched loop (learning/inference.py) against
`predict_image` in every mode.

Tiny fully convolutional SegNets (tests/tiny.py) and fakes that need no TensorFlow.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from tiny import SIZE, TinySegNet, tiny_model

from common.errors import ConfigError
from models.inference_options import InferenceOptions
from models.nn import SegNet
from models.predict import predict_image, predict_tiles, tile_starts, tile_weights


class PointwiseSegNet(SegNet):
    """1x1 convolutions only: each pixel's output depends on that pixel alone, so the model
    commutes with a mirror."""

    def _build_model(self) -> keras.Model:
        images = keras.Input((None, None, 3))
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
        x = keras.layers.Conv2D(4, 1, activation="relu")(x)
        return keras.Model(images, keras.layers.Conv2D(self.num_classes, 1)(x))


class TileConstantModel:
    """Stands in for a SegNet in tiles mode: the i-th window it sees gets class-1 probability
    `values[i]` everywhere (class 0 the rest)."""

    input_shape = (64, 64, 3)
    num_classes = 2

    def __init__(self, values):
        self.values = list(values)
        self.seen = 0

    def predict(self, batch, batch_size=8, output="probs"):
        assert output == "probs"
        probs = np.zeros(batch.shape[:3] + (2,), np.float32)
        for i in range(len(batch)):
            probs[i, ..., 1] = self.values[self.seen]
            probs[i, ..., 0] = 1 - self.values[self.seen]
            self.seen += 1
        return probs


class RedModel:
    """Class 1 where the red channel is above 127, else class 0 (one-hot probabilities);
    records the frames it sees."""

    input_shape = (64, 64, 3)
    num_classes = 2

    def __init__(self):
        self.frames = []

    def predict(self, batch, batch_size=8, output="probs"):
        self.frames.append(batch.shape)
        red = (batch[..., 0] > 127).astype(np.float32)
        probs = np.stack([1 - red, red], axis=-1)
        return probs if output == "probs" else probs.argmax(-1).astype(np.uint8)


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def gauss(i, side=64):
    """The blending weight along one axis of a `side` window, by hand (sigma = side / 8)."""
    return math.exp(-0.5 * ((i - (side - 1) / 2) / (side / 8)) ** 2)


def test_tile_starts_spread_windows_evenly_from_edge_to_edge():
    assert tile_starts(64, 64, 0.5) == [0]
    assert tile_starts(96, 64, 0.5) == [0, 32]
    assert tile_starts(100, 64, 0.5) == [0, 18, 36]      # ceil(36 / 32) + 1 windows
    assert tile_starts(128, 64, 0.0) == [0, 64]
    assert tile_starts(130, 64, 0.0) == [0, 33, 66]
    assert tile_starts(160, 64, 0.75) == [0, 16, 32, 48, 64, 80, 96]


def test_tile_weights_are_the_gaussian_by_hand():
    weights = tile_weights(64, 32)
    peak = gauss(31) * gauss(15, 32)           # the pixels next to the centre (31.5, 15.5)
    for y, x in [(0, 0), (31, 15), (10, 20), (63, 31)]:
        assert weights[y, x] == pytest.approx(gauss(y) * gauss(x, 32) / peak, rel=1e-5)
    assert weights.min() > 0 and weights.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(weights, weights[:, ::-1])      # mirror-symmetric


def test_blending_divides_by_the_sum_of_the_overlapping_weights():
    # 64x96: windows at columns 0 and 32, seeing class-1 probabilities 0.2 and 0.8.
    model = TileConstantModel([0.2, 0.8])
    probs = predict_tiles(model, random_image(64, 96), InferenceOptions(mode="tiles"),
                          output="probs")
    assert probs.shape == (64, 96, 2) and model.seen == 2
    for y, x in [(5, 32), (30, 40), (63, 47), (20, 63)]:        # columns 32-63: both windows
        w0, w1 = gauss(y) * gauss(x), gauss(y) * gauss(x - 32)
        assert probs[y, x, 1] == pytest.approx((0.2 * w0 + 0.8 * w1) / (w0 + w1), abs=1e-6)
    np.testing.assert_allclose(probs[:, :32, 1], 0.2, atol=1e-6)   # one window only
    np.testing.assert_allclose(probs[:, 64:, 1], 0.8, atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    # Equal windows blend to themselves: the weights sum to what they are divided by.
    same = predict_tiles(TileConstantModel([0.3] * 6), random_image(100, 96),
                         InferenceOptions(mode="tiles"), output="probs")
    np.testing.assert_allclose(same[..., 1], 0.3, atol=1e-6)


def test_tiles_feed_the_network_windows_only_batch_size_at_a_time():
    # The memory bound: whatever the image's size, the network sees batches of at most
    # batch_size windows of the training size, never the image.
    model = RedModel()
    image = np.zeros((300, 200, 3), np.uint8)
    image[:150, :, 0] = 255                           # the top half red
    mask = predict_image(model, image, InferenceOptions(mode="tiles", batch_size=4),
                         output="mask")
    windows = len(tile_starts(300, 64, 0.5)) * len(tile_starts(200, 64, 0.5))   # 9 x 6
    assert model.frames == [(4, 64, 64, 3)] * (windows // 4) + [(windows % 4, 64, 64, 3)]
    expected = np.zeros((300, 200), np.uint8)
    expected[:150] = 1
    np.testing.assert_array_equal(mask, expected)


def test_tiles_reproduce_the_whole_image_inside_every_window():
    model = tiny_model(seed=3)         # 3x3 conv: a window's outer ring sees its zero padding
    image = random_image(128, 160, seed=1)
    whole = model.predict(image[None])[0]            # 128x160: no padding needed
    tiled = predict_tiles(model, image, InferenceOptions(mode="tiles", batch_size=4),
                          output="probs")
    # Pixels that are at least 1 px inside every window covering them (image borders are
    # borders of the whole image too) must match; ring pixels blend in a wrong value.
    inside = np.ones((128, 160), bool)
    for y in tile_starts(128, SIZE, 0.5):
        for x in tile_starts(160, SIZE, 0.5):
            ring = np.zeros((128, 160), bool)
            ring[y:y + SIZE, x:x + SIZE] = True
            top, left = y + (y > 0), x + (x > 0)
            ring[top:y + SIZE - (y + SIZE < 128), left:x + SIZE - (x + SIZE < 160)] = False
            inside &= ~ring
    assert 0.5 < inside.mean() < 1
    np.testing.assert_allclose(tiled[inside], whole[inside], atol=1e-5)
    # On a window's inner edge its own output is wrong; the blend weighs it down.
    window_error = np.abs(model.predict(image[None, :64, :64])[0, 63] - whole[63, :64]).max()
    assert window_error > 1e-3
    assert 0 < np.abs(tiled[63, :64] - whole[63, :64]).max() < window_error / 10


def test_tiles_pad_an_image_smaller_than_a_window():
    model = tiny_model(seed=3)
    image = random_image(20, 150, seed=2)            # shorter than 64 rows, wider than 64
    mask = predict_image(model, image, InferenceOptions(mode="tiles"), output="mask")
    assert mask.shape == (20, 150)
    # Rows padded (centred) to 64: one row of windows, identical to tiling the padded image.
    padded = np.zeros((64, 150, 3), np.uint8)
    padded[22:42] = image
    np.testing.assert_array_equal(
        mask, predict_tiles(model, padded, InferenceOptions(mode="tiles"))[22:42])
    small = random_image(30, 40, seed=4)             # one window: the image padded to 64x64
    framed = np.zeros((1, 64, 64, 3), np.uint8)
    framed[0, 17:47, 12:52] = small
    np.testing.assert_allclose(predict_image(model, small, InferenceOptions(mode="tiles")),
                               model.predict(framed)[0, 17:47, 12:52], atol=1e-6)


def test_resize_predicts_at_the_training_scale_and_returns_the_original_size():
    model = RedModel()
    image = np.zeros((256, 128, 3), np.uint8)
    image[:, :64, 0] = 255                            # the left half red
    mask = predict_image(model, image, InferenceOptions(mode="resize"), output="mask")
    # Larger side 256 -> 64: a 64x32 image, centred in a 64x64 frame.
    assert model.frames == [(1, 64, 64, 3)]
    assert mask.shape == (256, 128) and mask.dtype == np.uint8
    expected = np.zeros((256, 128), np.uint8)
    expected[:, :64] = 1
    np.testing.assert_array_equal(mask, expected)
    probs = predict_image(model, image, InferenceOptions(mode="resize"), output="probs")
    # Column 63 maps to 15.375 of the 32 columns: 0.625 of red column 15, 0.375 of column 16.
    assert probs.shape == (256, 128, 2)
    assert probs[100, 63, 1] == pytest.approx(0.625) and probs[100, 64, 1] == pytest.approx(0.375)
    predict_image(model, image, InferenceOptions(mode="resize", scale=0.5))
    assert model.frames[-1] == (1, 128, 64, 3)


def test_resize_keeps_an_image_that_fits_the_training_frame_at_its_size():
    model = tiny_model(seed=3)
    image = random_image(40, 60, seed=9)             # within 64x64: training pads, never enlarges
    np.testing.assert_array_equal(
        predict_image(model, image, InferenceOptions(mode="resize")),
        predict_image(model, image, InferenceOptions(mode="full")))
    enlarged = predict_image(model, image, InferenceOptions(mode="resize", scale=2.0))
    assert enlarged.shape == (40, 60, 3)


def test_flip_averaging_of_a_mirror_symmetric_model_changes_nothing():
    keras.utils.set_random_seed(5)
    model = PointwiseSegNet((SIZE, SIZE, 3), 3)
    image = random_image(64, 96, seed=6)
    for mode in ("full", "tiles"):
        plain = predict_image(model, image, InferenceOptions(mode=mode))
        flipped = predict_image(model, image, InferenceOptions(mode=mode, tta="flip"))
        np.testing.assert_allclose(flipped, plain, atol=1e-6)


def test_flip_averaging_is_the_mean_with_the_mirror_image():
    model = tiny_model(seed=8)
    image = random_image(64, 96, seed=7)
    plain = model.predict(image[None])[0]
    mirror = model.predict(image[None, :, ::-1])[0, :, ::-1]
    averaged = predict_image(model, image, InferenceOptions(mode="full", tta="flip"))
    np.testing.assert_allclose(averaged, (plain + mirror) / 2, atol=1e-6)
    assert np.abs(plain - mirror).max() > 1e-3                  # the model is asymmetric
    mask = predict_image(model, image, InferenceOptions(mode="full", tta="flip"), output="mask")
    np.testing.assert_array_equal(mask, ((plain + mirror) / 2).argmax(-1))


@pytest.mark.parametrize("options, message", [
    (dict(mode="tiles", tile_overlap=1.0), "--tile-overlap must be in"),
    (dict(mode="tiles", tile_overlap=-0.1), "--tile-overlap must be in"),
    (dict(mode="resize", scale=0.0), "--scale must be a number > 0"),
    (dict(mode="resize", scale=-2.0), "--scale must be a number > 0"),
    (dict(mode="resize", scale=float("nan")), "--scale must be a number > 0"),
    (dict(mode="full", scale=2.0), "--scale applies to --mode resize only"),
    (dict(mode="tile"), "--mode must be one of full, resize, tiles"),
    (dict(batch_size=0), "--batch-size must be an integer >= 1"),
    (dict(tta="vflip"), "--tta must be one of none, flip"),
])
def test_bad_options_are_one_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        InferenceOptions(**options)


@pytest.mark.parametrize("tile, message", [
    ((50, 64), "H=50 must be a multiple of 32"), ((64, 0), "W=0 must be a multiple of 32"),
    ((-64, 64), "H=-64 must be a multiple of 32"), ((32, 64), "H=32 must be a multiple"),
])
def test_a_window_the_network_cannot_take_is_refused(tile, message):
    options = InferenceOptions(mode="tiles", tile_size=tile)
    with pytest.raises(ConfigError, match=message):
        predict_image(RedModel(), random_image(80, 80), options)


def test_a_model_built_for_any_size_needs_a_window_or_a_scale():
    model = RedModel()
    model.input_shape = (None, None, 3)
    with pytest.raises(ConfigError, match="pass tile_size"):
        predict_image(model, random_image(80, 80), InferenceOptions(mode="tiles"))
    with pytest.raises(ConfigError, match="needs --scale"):
        predict_image(model, random_image(80, 80), InferenceOptions(mode="resize"))
    assert predict_image(model, random_image(80, 80), InferenceOptions(
        mode="tiles", tile_size=(64, 64)), output="mask").shape == (80, 80)


@pytest.mark.parametrize("options", [
    InferenceOptions(mode="full", batch_size=3),
    InferenceOptions(mode="resize", batch_size=3, tta="flip"),
    InferenceOptions(mode="tiles", batch_size=3),
], ids=lambda o: o.mode)
def test_the_batched_loop_gives_predict_images_masks_in_every_mode(options, tmp_path):
    import cv2

    from datasets.examples import Example
    from learning.inference import predict_examples

    model = TinySegNet((SIZE, SIZE, 3), 3)
    sizes = [(50, 70), (64, 64), (100, 40), (33, 33), (130, 90)]
    examples = []
    for i, (h, w) in enumerate(sizes):
        path = tmp_path / f"img_{i}.png"
        cv2.imwrite(str(path), random_image(h, w, seed=i))
        examples.append(Example(path.name, str(path)))
    predictions = sorted(predict_examples(model, examples, options=options),
                         key=lambda p: p.index)
    assert [p.mask.shape for p in predictions] == sizes
    for p in predictions:
        np.testing.assert_array_equal(
            p.mask, model.predict_image(p.image, output="mask", options=options))


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / name
    spec = importlib.util.spec_from_file_location(path.stem + "_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, required", [
    ("test.py", ["--model", "run"]), ("draw.py", ["--images", "in", "--model", "run"])])
def test_both_scripts_parse_the_same_options_with_one_default(name, required):
    from models.inference_options import inference_options

    script = _script(name)
    assert inference_options(script.build_parser().parse_args(required)) == InferenceOptions()
    args = script.build_parser().parse_args(required + [
        "--mode", "tiles", "--tile-overlap", "0.25", "--tta", "flip", "--batch-size", "4"])
    assert inference_options(args) == InferenceOptions(mode="tiles", tile_overlap=0.25,
                                                       tta="flip", batch_size=4)
    args = script.build_parser().parse_args(required + ["--mode", "resize", "--scale", "0.5"])
    assert inference_options(args).scale == 0.5
    # Refused before any file is read (the folders do not exist).
    with pytest.raises(ConfigError, match=r"--tile-overlap must be in \[0, 1\)"):
        script.main(required + ["--mode", "tiles", "--tile-overlap", "1"])


def test_a_bad_option_is_one_line_at_the_command_boundary(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from common.errors import EXIT_ERROR

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "draw.py"), "--images", str(tmp_path), "--model",
         str(tmp_path), "--scale", "-2", "--tile-overlap", "2"], cwd=root, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(root)), timeout=120)
    assert result.returncode == EXIT_ERROR and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--scale must be a number > 0" in lines[0], result.stderr
    assert "--tile-overlap must be in [0, 1)" in lines[0]   # both problems, one line
