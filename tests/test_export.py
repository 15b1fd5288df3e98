"""models/export.py: SavedModel + float32/float16 TFLite export and its numerical self-check.

Most tests use a two-convolution SegNet on 64x64 images (conversion in about a second); one
converts the real GCN at 64x64.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import ConfigError, ModelError
from datasets.synthetic_render import render_scene
from models import export
from models.export import (
    MAX_MASK_DIFFERENCE,
    convert_to_tflite,
    export_model,
    parse_image_size,
    run_tflite,
)
from models.layers import up_scale
from models.nn import GCN, SegNet

NAMES = ("background", "cat", "dog", "bird", "fish")


class ExportTinyNet(SegNet):
    """The op kinds of the GCN in miniature, so the converter meets them all: a stride-2 conv,
    BatchNorm (inference: folded into a scale), ReLU, the decoder's bilinear upsampling
    (`up_scale` to the input's size), a skip sum.

        images (N, H, W, 3) -> [-1, 1] -> conv3x3/2 (6) -> BN -> ReLU -> bilinear x2 (H, W, 6)
               + conv1x1 (6) of the input -> logits conv1x1 (C)
    """

    def _build_model(self) -> keras.Model:
        images = keras.Input((None, None, 3), name="images")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
        down = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv")(x)
        down = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(down))
        up = up_scale(down, 2, reference=images, name="up")
        skip = keras.layers.Conv2D(6, 1, name="skip")(x)
        summed = keras.layers.Add()([up, skip])
        logits = keras.layers.Conv2D(self.num_classes, 1, name="logits")(summed)
        return keras.Model(images, logits, name=self.name)


def tiny(seed: int = 3, num_classes: int = 5) -> ExportTinyNet:
    keras.utils.set_random_seed(seed)
    names = NAMES if num_classes == len(NAMES) else None
    return ExportTinyNet((64, 64, 3), num_classes, class_names=names)


def scene_images(count: int, size=(64, 64)) -> np.ndarray:
    """Test images: the multi-class synthetic scenes (animals on textured backgrounds)."""
    return np.stack([render_scene(np.random.default_rng([9, i]), *size,
                                  [("cat", 1), ("fish", 4)][:1 + i % 2])[0]
                     for i in range(count)])


def _assert_close_to_keras(model, content, images, max_share=MAX_MASK_DIFFERENCE):
    """Run the TFLite model ourselves (not trusting the report) and compare with Keras."""
    outputs = run_tflite(content, images)
    keras_probs = model.predict(images, output="probs")
    keras_mask = model.predict(images, output="mask")
    share = np.mean(outputs["mask"] != keras_mask)
    assert share <= max_share
    np.testing.assert_array_equal(outputs["mask"], outputs["probabilities"].argmax(-1))
    return float(np.abs(outputs["probabilities"] - keras_probs).max()), float(share)


def test_export_writes_saved_model_and_both_tflite_models_that_match_keras(tmp_path):
    model = tiny()
    images = scene_images(4)
    report = export_model(model, tmp_path, check_images=images)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "export.json", "model_float16.tflite", "model_float32.tflite", "saved_model"]
    assert report.image_size == (64, 64) and report.class_names == NAMES
    float32, float16 = report.checks
    assert (float32.variant, float16.variant) == ("float32", "float16")
    assert float32.num_pixels == 4 * 64 * 64
    assert float32.max_prob_difference < 1e-5 and float32.mask_difference_share == 0.0
    assert float16.max_prob_difference < 1e-2
    assert float16.mask_difference_share <= MAX_MASK_DIFFERENCE
    for check in report.checks:
        content = (tmp_path / f"model_{check.variant}.tflite").read_bytes()
        assert len(content) == check.size_bytes
        max_diff, share = _assert_close_to_keras(model, content, images)
        assert max_diff == pytest.approx(check.max_prob_difference, abs=1e-7)
        assert share == check.mask_difference_share
    info = json.loads((tmp_path / "export.json").read_text())
    assert info["input"]["shape"] == [1, 64, 64, 3]
    assert info["outputs"] == {"probabilities": [1, 64, 64, 5], "mask": [1, 64, 64]}
    assert info["class_names"] == list(NAMES)
    assert [c["mask_difference_share"] for c in info["checks"]] == [
        c.mask_difference_share for c in report.checks]
    # The SavedModel serves any size, as SegNet.export promises.
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))  # owns the variables: keep it
    served = loaded.serve(images.astype(np.float32)).numpy()
    np.testing.assert_allclose(served, model.predict(images), atol=1e-6)


def test_tflite_input_output_signature_and_no_mask_option():
    model = tiny()
    content = convert_to_tflite(model, (64, 64), mask_output=False)
    interpreter = export._interpreter(content)
    signature = interpreter.get_signature_list()["serving_default"]
    assert signature == {"inputs": ["images"], "outputs": ["probabilities"]}
    runner = interpreter.get_signature_runner("serving_default")
    details = runner.get_input_details()["images"]
    assert list(details["shape"]) == [1, 64, 64, 3] and details["dtype"] == np.float32
    with_mask = export._interpreter(convert_to_tflite(model, (64, 64)))
    outputs = with_mask.get_signature_runner("serving_default").get_output_details()
    assert outputs["mask"]["dtype"] == np.uint8 and list(outputs["mask"]["shape"]) == [1, 64, 64]


def test_another_input_size_exports_the_same_weights(tmp_path):
    model = tiny()
    images = scene_images(2, size=(96, 64))
    report = export_model(model, tmp_path, image_size=(96, 64), saved_model=False,
                          variants=("float32",), check_images=images)
    assert report.image_size == (96, 64) and report.checks[0].mask_difference_share == 0.0
    _assert_close_to_keras(model, (tmp_path / "model_float32.tflite").read_bytes(), images, 0.0)


def test_the_gcn_converts_and_its_float32_masks_equal_the_keras_masks(tmp_path):
    keras.utils.set_random_seed(0)
    model = GCN((64, 64, 3), 5, pretrain="none", class_names=NAMES)
    images = scene_images(3)
    # float32 only: the float16 file differs in weight storage, not in the ops, and each
    # ResNet-50 conversion is one of the suite's slowest steps; the tiny models cover float16.
    report = export_model(model, tmp_path, saved_model=False, variants=("float32",),
                          check_images=images)
    assert report.checks[0].mask_difference_share == 0.0
    assert report.checks[0].max_prob_difference < 1e-4


def test_a_mixed_precision_model_is_exported_as_a_float32_copy(tmp_path):
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert model.keras_model.get_layer("conv").compute_dtype == "bfloat16"
    report = export_model(model, tmp_path, saved_model=False, variants=("float32",),
                          num_check_images=2)
    assert report.checks[0].mask_difference_share == 0.0


def test_a_tflite_model_that_disagrees_with_keras_is_an_error(tmp_path, monkeypatch):
    wrong = tiny(seed=99)            # other weights: what a broken conversion would look like
    real_convert = export.convert_to_tflite
    monkeypatch.setattr(export, "convert_to_tflite",
                        lambda model, size, **kwargs: real_convert(wrong, size, **kwargs))
    with pytest.raises(ModelError, match=r"the exported float32: .* beyond the tolerance"):
        export_model(tiny(), tmp_path, saved_model=False, variants=("float32",),
                     num_check_images=2)
    # The files and the numbers were written first, for inspection.
    info = json.loads((tmp_path / "export.json").read_text())
    assert info["checks"][0]["mask_difference_share"] > MAX_MASK_DIFFERENCE


@pytest.mark.parametrize("text, expected", [("64", (64, 64)), ("96x64", (96, 64))])
def test_image_size_text(text, expected):
    assert parse_image_size(text) == expected


@pytest.mark.parametrize("text, message", [
    ("100", "must be a multiple of 32"), ("a", "expected N or HxW"), ("64x64x3", "expected N")])
def test_bad_image_size_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=f"--image-size: .*{message}"):
        parse_image_size(text)


def test_check_images_of_another_size_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"check images must be RGB arrays \(N, 64, 64, 3\)"):
        export_model(tiny(), tmp_path, check_images=np.zeros((2, 32, 32, 3), np.uint8))


def test_command_line_exports_a_run_folder_and_reports_the_numbers(tmp_path, capsys):
    tiny().save(tmp_path / "run")
    code = export.main(["--model", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                        "--no-mask-output", "--check-images", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "float32: " in printed and "differing mask pixels 0/8192 (0.0000%)" in printed
    assert "outputs probabilities;" in printed
    assert (tmp_path / "out" / "model_float16.tflite").is_file()
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert "mask" not in info["outputs"]


def test_command_line_errors_are_one_line_with_the_error_exit_code(tmp_path, capsys):
    assert export.main(["--model", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    tiny().save(tmp_path / "run")
    assert export.main(["--model", str(tmp_path / "run"), "--image-size", "70"]) == 2
    assert "--image-size: input size 70x70 is not valid" in capsys.readouterr().err


def test_a_failed_re_export_keeps_the_previous_saved_model(tmp_path, monkeypatch):
    model = tiny()
    export._write_saved_model(model, tmp_path / "saved_model")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "saved_model").rglob("*"))

    def broken_export(_model, path):
        (path / "variables").mkdir(parents=True)    # half written, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "export_saved_model", broken_export)
    with pytest.raises(OSError, match="No space left"):
        export._write_saved_model(model, tmp_path / "saved_model")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "saved_model").rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]   # no temporary left
