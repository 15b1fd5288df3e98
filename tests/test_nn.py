"""The GCN model (models/nn.py): topology, kernel rule, loss, inference, save/load.

Models are small (64-128 px) with random backbones (pretrain="none"); the shared ones are built
(and saved, and loaded) once per module. What is SegNet's own code (predict's batching, the
loss, reading a damaged file) is checked on a one-convolution SegNet built in milliseconds.
"""
import json
import logging
import math
import os
import shutil
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import ConfigError, ModelError
from models.inference_options import InferenceOptions
from models.layers import BoundaryRefineModule, GlobalConvModule
from models.nn import (
    GCN,
    SKIP_LAYERS,
    ModelConfigError,
    SegNet,
    gcn_kernel_size,
    inference_padding,
    validate_input_shape,
)

DECODER_SHAPES_64x96 = {  # layer -> (h, w) of its output for a 64x96 input; C = 3 everywhere
    "gcm1": (2, 3), "brm1_1": (2, 3), "up16": (4, 6),
    "gcm2": (4, 6), "brm2_1": (4, 6), "sum16": (4, 6), "brm2_2": (4, 6), "up8": (8, 12),
    "gcm3": (8, 12), "brm3_1": (8, 12), "sum8": (8, 12), "brm3_2": (8, 12), "up4": (16, 24),
    "gcm4": (16, 24), "brm4_1": (16, 24), "sum4": (16, 24), "brm4_2": (16, 24), "up2": (32, 48),
    "brm4_3": (32, 48), "up1": (64, 96), "brm4_4": (64, 96), "logits": (64, 96),
}


@pytest.fixture(scope="module")
def gcn():
    return GCN((64, 96, 3), 3, pretrain="none", weight_decay=1e-4)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(3, 64, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def small_gcn():
    """A 2-class GCN at 64x64 (kernel 1x1): another architecture than ``gcn``'s."""
    return GCN((64, 64, 3), 2, pretrain="none")


def outputs_of(model, names, x):
    probe = keras.Model(model.keras_model.input,
                        [model.keras_model.get_layer(n).output for n in names])
    return dict(zip(names, probe(x, training=False)))


@pytest.mark.parametrize("size", [(64, 64), (128, 128)])
def test_output_has_input_size_and_num_classes(size, small_gcn):
    model = small_gcn if size == (64, 64) else GCN(size + (3,), 2, pretrain="none")
    logits = model(np.zeros((2,) + size + (3,), np.uint8))
    assert logits.shape == (2,) + size + (2,) and logits.dtype == tf.float32


def test_decoder_shapes_follow_the_spec(gcn, images):
    got = outputs_of(gcn, list(DECODER_SHAPES_64x96), images[:1])
    for name, (h, w) in DECODER_SHAPES_64x96.items():
        assert tuple(got[name].shape) == (1, h, w, 3), name
    encoder = gcn.keras_model.get_layer("resnet50v2_encoder")
    c4, c8, c16, c32 = encoder(np.zeros((1, 64, 96, 3), np.float32))
    assert [tuple(t.shape) for t in (c4, c8, c16, c32)] == [
        (1, 16, 24, 256), (1, 8, 12, 512), (1, 4, 6, 1024), (1, 2, 3, 2048)]
    assert [layer.name for layer in encoder.layers if layer.name in SKIP_LAYERS.values()] == [
        "conv2_block2_out", "conv3_block3_out", "conv4_block5_out", "conv5_block3_out"]
    # post_bn (after the deepest skip) is in the backbone but not in the segmentation model.
    assert "post_bn" in [layer.name for layer in gcn.backbone.layers]
    assert "post_bn" not in [layer.name for layer in encoder.layers]


def test_kernel_size_rule():
    assert gcn_kernel_size(512, 512) == (15, 15)
    assert gcn_kernel_size(64, 96) == (1, 2)
    assert gcn_kernel_size(None, None) == (15, 15)
    assert gcn_kernel_size(None, 256) == (15, 7)


def test_kernel_size_reaches_the_layers(gcn):
    assert gcn.kernel_size == (1, 2)
    gcm = gcn.keras_model.get_layer("gcm1")
    assert gcm.conv_l1.kernel.shape == (1, 1, 2048, 3) and gcm.conv_l2.kernel.shape == (1, 2, 3, 3)

    unknown = GCN((None, None, 3), 3, pretrain="none")
    assert unknown.kernel_size == (15, 15)
    assert unknown.keras_model.get_layer("gcm1").conv_l1.kernel.shape == (15, 1, 2048, 3)
    assert unknown(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 64, 64, 3)

    explicit = GCN((64, 64, 3), 3, kernel_size=(5, 3), pretrain="none")
    gcm = explicit.keras_model.get_layer("gcm4")
    assert gcm.conv_l1.kernel.shape == (5, 1, 256, 3) and gcm.conv_r1.kernel.shape == (1, 3, 256, 3)


@pytest.mark.parametrize("shape, message", [
    ((500, 512, 3), "H=500 must be a multiple of 32 .* nearest valid H: 480 or 512"),
    ((512, 40, 3), "W=40 must be a multiple of 32 and at least 64 .* nearest valid W: 64"),
    ((512, 512, 1), r"must be \(H, W, 3\)"),
])
def test_invalid_input_sizes_are_explained(shape, message):
    with pytest.raises(ValueError, match=message):
        validate_input_shape(shape)


def test_every_trainable_weight_gets_a_gradient(gcn, images):
    # Inference-mode batch norm: in training mode the batch mean cancels conv1_conv's bias
    # exactly (it only feeds conv2_block1_preact_bn), which is a property of ResNet-v2 itself.
    labels = np.random.default_rng(1).integers(0, 3, size=(3, 64, 96)).astype(np.uint8)
    with tf.GradientTape() as tape:
        loss = gcn.loss(labels, gcn(images, training=False))
    grads = tape.gradient(loss, gcn.trainable_variables)
    assert len(grads) == len(gcn.trainable_variables) > 200
    dead = [v.path for v, g in zip(gcn.trainable_variables, grads)
            if g is None or not np.any(g.numpy())]
    assert dead == []
    decoder_brms = [layer for layer in gcn.keras_model.layers
                    if isinstance(layer, BoundaryRefineModule)]
    assert len(decoder_brms) == 9


def test_masked_cross_entropy_matches_hand_computation(gcn):
    # 1x1x4 image, 3 classes. Pixel logits and labels:
    #   [2, 0, 0] label 0 -> -log(e^2 / (e^2 + 2))
    #   [0, 1, 0] label 255 (ignored)
    #   [1, 1, 1] label 2 -> log 3
    #   [0, 0, 1000] label 0 -> 1000 (stable: no overflow)
    logits = np.array([[[[2, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1000]]]], np.float32)
    labels = np.array([[[0, 255, 2, 0]]], np.uint8)
    ce_sum, count = gcn.cross_entropy_terms(labels, logits)
    expected = -math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3) + 1000.0
    assert count.numpy() == 3.0
    np.testing.assert_allclose(ce_sum.numpy(), expected, rtol=1e-6)
    loss = gcn.loss(labels, logits).numpy()
    np.testing.assert_allclose(loss, expected / 3 + gcn.regularization_loss().numpy(), rtol=1e-6)


def test_all_ignored_batch_gives_zero_cross_entropy(gcn):
    logits = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32)
    labels = np.full((2, 4, 4), 255, np.uint8)
    ce_sum, count = gcn.cross_entropy_terms(labels, logits)
    assert ce_sum.numpy() == 0.0 and count.numpy() == 0.0
    assert gcn.loss(labels, logits).numpy() == pytest.approx(gcn.regularization_loss().numpy())


def test_out_of_range_label_is_an_error_eagerly_and_adds_nothing_when_compiled(gcn):
    labels = np.array([[[3, 0]]], np.uint8)
    logits = np.array([[[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]]]], np.float32)
    with pytest.raises(ValueError, match="labels must be < num_classes=3 or ignore_label=255, "
                                         "got the value 3"):
        gcn.cross_entropy_terms(labels, logits)
    # Compiled, no assertion stops the device: the bad pixel counts as ignored (the training
    # step counts it apart: tests/test_steps.py).
    ce_sum, count = tf.function(gcn.cross_entropy_terms)(labels, logits)
    assert count.numpy() == 1.0
    np.testing.assert_allclose(ce_sum.numpy(), _hand_ce(logits[0, 0, 1], 0), rtol=1e-6)


def test_weight_decay_is_half_sum_of_conv_kernel_squares(gcn):
    kernels = [layer.kernel for layer in gcn.keras_model.get_layer("resnet50v2_encoder").layers
               if isinstance(layer, keras.layers.Conv2D)]
    for layer in gcn.keras_model.layers:
        if isinstance(layer, GlobalConvModule):
            kernels += [layer.conv_l1.kernel, layer.conv_l2.kernel,
                        layer.conv_r1.kernel, layer.conv_r2.kernel]
        elif isinstance(layer, BoundaryRefineModule):
            kernels += [layer.conv1.kernel, layer.conv2.kernel]
    kernels.append(gcn.keras_model.get_layer("logits").kernel)
    # 1 stem + 3*16 bottleneck convs + 4 shortcuts in the encoder (post_bn excluded anyway),
    # 4 GCMs x 4 + 9 BRMs x 2 + 1 logits in the decoder.
    assert len(kernels) == 53 + 16 + 18 + 1
    expected = 1e-4 * sum(float(np.sum(k.numpy().astype(np.float64) ** 2)) for k in kernels) / 2
    np.testing.assert_allclose(gcn.regularization_loss().numpy(), expected, rtol=1e-5)
    everything = 1e-4 * sum(float(np.sum(v.numpy() ** 2)) for v in gcn.trainable_variables) / 2
    assert everything > expected * 1.001  # biases and BN gamma/beta are not decayed


def test_weight_decay_gradient_is_tensorflows_own_to_the_bit(gcn):
    # models/nn.py writes the decay's gradient as one multiply; TensorFlow's autodiff of the
    # plain expression must give the very same numbers (and the same loss value).
    kernels = [v for v in gcn.keras_model.trainable_variables if v.name == "kernel"]
    with tf.GradientTape(persistent=True) as tape:
        ours = gcn.regularization_loss()
        plain = gcn.weight_decay * 0.5 * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
    assert ours.numpy() == plain.numpy()
    for got, want in zip(tape.gradient(ours, kernels), tape.gradient(plain, kernels)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert float(tf.reduce_max(tf.abs(tape.gradient(ours, kernels)[0]))) > 0


def test_predict_accepts_arrays_datasets_and_tf_data(images):
    gcn = LossProbeNet((64, 64, 3), 3)        # SegNet.predict: the same for every network
    probs = gcn.predict(images, batch_size=2)
    assert probs.shape == (3, 64, 96, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    expected = tf.nn.softmax(gcn(images, training=False)).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)

    masks = gcn.predict(images, output="mask")
    assert masks.shape == (3, 64, 96) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, probs.argmax(-1))

    class HasImages:  # datasets.DataSet without importing datasets/
        def __init__(self, array):
            self.images = array

    labels = np.zeros((3, 64, 96), np.uint8)
    sources = {
        "dataset-like": HasImages(images),
        "tf.data images": tf.data.Dataset.from_tensor_slices(images),
        "tf.data (image, label)": tf.data.Dataset.from_tensor_slices((images, labels)),
        "tf.data batched": tf.data.Dataset.from_tensor_slices((images, labels)).batch(2),
    }
    for what, source in sources.items():
        np.testing.assert_allclose(gcn.predict(source, batch_size=2), probs, atol=1e-5,
                                   err_msg=what)


def test_predict_rejects_bad_input(images):
    gcn = LossProbeNet((64, 64, 3), 3)
    with pytest.raises(ValueError, match=r"got \(64, 96, 3\); use predict_image"):
        gcn.predict(images[0])
    with pytest.raises(ValueError, match="output must be 'probs' or 'mask'"):
        gcn.predict(images, output="logits")
    with pytest.raises(ValueError, match="output must be 'probs' or 'mask'"):
        gcn.predict_batch(images, output="logits")


@pytest.fixture(scope="module")
def context_net():
    """SegNet.predict_image's padding on a net whose every output pixel depends on the padded
    frame's size and on the padding's offset (tests/tiny.py), built in milliseconds."""
    from tiny import ContextSegNet, tiny_model

    return tiny_model(seed=2, cls=ContextSegNet)


@pytest.mark.parametrize("height, width", [(50, 70), (33, 97), (64, 96)])
def test_predict_image_pads_with_zero_and_crops_back(context_net, height, width):
    gcn = context_net
    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    full_mode = InferenceOptions(mode="full")
    probs = gcn.predict_image(image, options=full_mode)
    mask = gcn.predict_image(image, output="mask", options=full_mode)
    assert probs.shape == (height, width, 3) and mask.shape == (height, width)
    # Same as predicting by hand on the centred zero-padded image (multiple of 32, >= 64).
    padded_h, padded_w = max(64, -(-height // 32) * 32), max(64, -(-width // 32) * 32)
    top, left = (padded_h - height) // 2, (padded_w - width) // 2
    padded = np.zeros((1, padded_h, padded_w, 3), np.uint8)
    padded[0, top:top + height, left:left + width] = image
    full = gcn.predict(padded)[0]
    np.testing.assert_allclose(probs, full[top:top + height, left:left + width], atol=1e-6)
    np.testing.assert_array_equal(mask, probs.argmax(-1))


@pytest.mark.parametrize("size, expected", [
    ((50, 70), (64, 96, 7, 13)), ((100, 40), (128, 64, 14, 12)), ((64, 64), (64, 64, 0, 0)),
    ((1, 1), (64, 64, 31, 31)), ((97, 65), (128, 96, 15, 15)),
])
def test_inference_padding_centres_to_the_next_multiple_of_32_at_least_64(size, expected):
    assert inference_padding(*size) == expected


def test_inference_padding_rejects_an_empty_image():
    with pytest.raises(ValueError, match="positive"):
        inference_padding(0, 5)


@pytest.fixture(scope="module")
def saved_and_loaded(gcn, tmp_path_factory):
    """The 64x96 GCN saved once (``folder``; ``path``: what save returned) and loaded once
    (``restored``; ``messages``: what the load logged at INFO and above)."""
    folder = tmp_path_factory.mktemp("saved")
    path = gcn.save(folder)
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        restored = SegNet.load(folder, expected_num_classes=3, input_shape=(64, 96, 3))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return SimpleNamespace(folder=folder, path=path, restored=restored,
                           messages=[r.getMessage() for r in records])


@pytest.fixture(scope="module")
def saved(saved_and_loaded):
    """The folder of the saved 64x96 GCN; tests copy its model_config.json and damage their
    copy."""
    return saved_and_loaded.folder


def test_save_load_gives_identical_predictions(gcn, images, saved, saved_and_loaded):
    assert saved_and_loaded.path == str(saved / "best_model.keras")
    assert sorted(os.listdir(saved)) == ["best_model.keras", "model_config.json"]
    with open(saved / "model_config.json") as f:
        document = json.load(f)
    assert document["class_name"] == "GCN"
    config = document["config"]
    assert (config["input_shape"], config["num_classes"], config["kernel_size"]) == (
        [64, 96, 3], 3, [1, 2])
    assert (config["backbone"], config["weight_decay"], config["bn_momentum"]) == (
        "resnet50v2", 1e-4, None)
    assert "pretrain" not in config and document["pretrain"] == "none"
    assert document["pretrain_report"].startswith("backbone: random initialisation")

    restored = saved_and_loaded.restored
    assert isinstance(restored, GCN) and restored.pretrain_report.source == "none"
    assert restored.get_config() == gcn.get_config()
    np.testing.assert_array_equal(restored.predict(images), gcn.predict(images))


def test_loading_a_trained_model_logs_no_backbone_initialisation(saved_and_loaded):
    messages = saved_and_loaded.messages
    assert not [m for m in messages if "backbone" in m and "initialisation" in m], messages
    assert any(m.startswith("loaded a GCN with 3 classes") for m in messages), messages


def test_load_with_mismatched_request_names_both_configs(saved):
    with pytest.raises(ModelConfigError, match=r"describes a GCN with 3 classes and input "
                                               r"64x96x3.*but a model with 2 classes"):
        SegNet.load(saved, expected_num_classes=2)
    with pytest.raises(ModelConfigError, match="but input shape 128x128x3 was requested"):
        SegNet.load(saved, input_shape=(128, 128, 3))


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_from_another_config_are_rejected(saved, small_gcn, tmp_path):
    shutil.copy(saved / "model_config.json", tmp_path)           # the 3-class 64x96 GCN's
    small_gcn.keras_model.save(str(tmp_path / "best_model.keras"))   # 2 classes, kernel 1x1
    with pytest.raises(ModelConfigError) as error:
        SegNet.load(tmp_path)
    message = str(error.value)
    assert "saved from a different model (2 classes, GCN kernel (1, 1))" in message
    assert "(a GCN with 3 classes and input 64x96x3, GCN kernel (1, 2))" in message


def test_missing_model_config_is_explained(tmp_path):
    with pytest.raises(ModelConfigError, match="model_config.json not found"):
        SegNet.load(tmp_path)


@pytest.fixture(scope="module")
def tiny_saved(tmp_path_factory):
    """A one-convolution SegNet saved once: reading a damaged .keras file is SegNet's code."""
    folder = tmp_path_factory.mktemp("tiny_saved")
    LossProbeNet((64, 64, 3), 3).save(folder)
    return folder


def _model_folder(saved, tmp_path, *, config=None, weights=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model_config.json").write_text(
        (saved / "model_config.json").read_text() if config is None else config)
    target = tmp_path / "best_model.keras"
    if weights is None:
        target.symlink_to(saved / "best_model.keras")  # 95 MB: linked, not copied
    else:
        target.write_bytes(weights)
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "crc"])
def test_a_damaged_keras_file_is_a_model_error_naming_it(tiny_saved, tmp_path, damage):
    saved = tiny_saved
    data = (saved / "best_model.keras").read_bytes()
    middle = len(data) // 2         # inside model.weights.h5; its 64 bytes inverted
    broken = {"truncated": data[:middle], "empty": b"", "text": b"not a zip " * 50,
              "crc": data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64])
              + data[middle + 64:]}[damage]
    folder = _model_folder(saved, tmp_path, weights=broken)
    with pytest.raises(ModelConfigError, match=r"best_model\.keras is not a readable \.keras "
                                               r"archive .*truncated or damaged") as error:
        SegNet.load(folder)
    assert isinstance(error.value, ModelError)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["config"].update(num_classes="3"), "'num_classes' must be an integer, got '3'"),
    (lambda d: d["config"].update(input_shape=[64, "x", 3]), "'input_shape' must be a list"),
    (lambda d: d["config"].update(weight_decay="lots"), "cannot rebuild a GCN with 3 classes"),
    (lambda d: d.update(config=[1, 2]), "'config' must be an object"),
    (lambda d: d.pop("class_name"), "unknown model class None"),
])
def test_a_hand_edited_model_config_is_a_one_line_model_error(saved, tmp_path, edit, message):
    document = json.loads((saved / "model_config.json").read_text())
    edit(document)
    folder = _model_folder(saved, tmp_path, config=json.dumps(document))
    with pytest.raises(ModelConfigError, match=message):
        SegNet.load(folder)
    not_json = _model_folder(saved, tmp_path / "b", config="{oops")
    with pytest.raises(ModelConfigError, match="model_config.json is not valid JSON"):
        SegNet.load(not_json)


NAMES = ("background", "cat", "dog", "bird", "fish")


@pytest.fixture(scope="module")
def with_options(tmp_path_factory):
    """A GCN built with every option that is not the default (``model``: BatchNorm momentum,
    synchronised BatchNorm, class names and weights), saved to ``folder`` and loaded again
    (``restored``)."""
    folder = tmp_path_factory.mktemp("with_options")
    model = GCN((64, 64, 3), 5, pretrain="none", bn_momentum=0.9, sync_bn=True,
                class_names=NAMES, class_weights=(0.3, 1.0, 1.5, 2.0, 0.0))
    model.save(folder)
    return SimpleNamespace(model=model, folder=folder, restored=SegNet.load(folder))


def test_bn_momentum_is_applied_and_survives_save_load(with_options):
    model, restored = with_options.model, with_options.restored
    momenta = {layer.momentum for layer in model.backbone.layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
    assert restored.bn_momentum == 0.9
    assert {layer.momentum for layer in restored.backbone.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}


def test_mixed_precision_logits_and_loss_are_float32():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = GCN((64, 64, 3), 3, pretrain="none")
        assert model.keras_model.get_layer("brm4_4").compute_dtype == "bfloat16"
        logits = model(np.full((1, 64, 64, 3), 127, np.uint8), training=True)
        labels = np.zeros((1, 64, 64), np.uint8)
        loss = model.loss(labels, logits)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert logits.dtype == tf.float32 and loss.dtype == tf.float32
    assert np.isfinite(loss.numpy())


# -- class names and class weights ---------------------------------------------------------------

class LossProbeNet(SegNet):
    """A 1x1 convolution: enough for the loss and the config, built in milliseconds."""

    def _build_model(self) -> keras.Model:
        images = keras.Input((None, None, 3), name="images")
        logits = keras.layers.Conv2D(self.num_classes, 1, name="logits")(images)
        return keras.Model(images, logits, name=self.name)


def _weighted_case():
    """Six pixels, 3 classes: logits (1, 2, 3, 3) and labels (1, 2, 3), two pixels ignored."""
    logits = np.array([[[[2, 0, 0], [0, 1, 0], [1, 1, 1]],
                        [[0, 0, 1000], [3, -1, 0.5], [0.2, 0.1, 0.3]]]], np.float32)
    labels = np.array([[[0, 255, 2], [0, 1, 255]]], np.uint8)
    return labels, logits


def _hand_ce(logits, label):
    z = np.asarray(logits, np.float64)
    return float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[label])


def test_weighted_cross_entropy_is_the_weighted_mean_by_hand():
    labels, logits = _weighted_case()
    model = LossProbeNet((64, 64, 3), 3, weight_decay=0.0, class_weights=(0.5, 2.0, 4.0))
    pixels = [((0, 0), 0), ((0, 2), 2), ((1, 0), 0), ((1, 1), 1)]      # the valid ones
    ces = [_hand_ce(logits[0][yx], label) for yx, label in pixels]
    weights = [0.5, 4.0, 0.5, 2.0]
    expected = sum(w * ce for w, ce in zip(weights, ces)) / sum(weights)
    ce_sum, count = model.cross_entropy_terms(labels, logits)
    # The terms use the weights scaled so the smallest is 1: (1, 4, 8); same weighted mean.
    np.testing.assert_allclose(model.loss_weights, [1.0, 4.0, 8.0])
    assert count.numpy() == pytest.approx(1 + 8 + 1 + 4)
    np.testing.assert_allclose(ce_sum.numpy(), 2 * sum(w * ce for w, ce in zip(weights, ces)),
                               rtol=1e-6)
    np.testing.assert_allclose(model.loss(labels, logits).numpy(), expected, rtol=1e-6)


def test_unweighted_cross_entropy_is_unchanged_bit_for_bit():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, (2, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 8, 8)).astype(np.uint8)
    labels[:, :2] = 255
    model = LossProbeNet((64, 64, 3), 3)
    ce_sum, count = model.cross_entropy_terms(labels, logits)
    # The formula before class weights existed, op for op.
    valid = labels != 255
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=np.where(valid, labels, 0).astype(np.int32), logits=logits)
    reference = tf.reduce_sum(tf.where(valid, per_pixel, tf.zeros_like(per_pixel)))
    assert ce_sum.numpy().tobytes() == reference.numpy().tobytes()
    assert count.numpy() == valid.sum()
    # Equal weights give the same numbers too.
    ones = LossProbeNet((64, 64, 3), 3, class_weights=(1, 1, 1))
    ones_sum, ones_count = ones.cross_entropy_terms(labels, logits)
    assert ones_sum.numpy().tobytes() == ce_sum.numpy().tobytes()
    assert ones_count.numpy() == count.numpy()


def test_two_replica_sums_divided_by_the_global_weight_equal_the_whole_batch_mean():
    rng = np.random.default_rng(8)
    logits = rng.normal(0, 2, (4, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 8, 8)).astype(np.uint8)
    labels[:2, :7] = 255          # the first replica keeps few pixels, the second many
    model = LossProbeNet((64, 64, 3), 3, weight_decay=0.0, class_weights=(0.2, 1.0, 3.0))
    halves = [model.cross_entropy_terms(labels[i:i + 2], logits[i:i + 2]) for i in (0, 2)]
    global_sum = sum(h[0].numpy() for h in halves)
    global_count = sum(h[1].numpy() for h in halves)
    whole = model.loss(labels, logits).numpy()
    np.testing.assert_allclose(global_sum / max(global_count, 1.0), whole, rtol=1e-6)
    # And that is the weighted mean computed by hand in float64.
    w = np.array([0.2, 1.0, 3.0])
    valid = labels != 255
    ces = np.array([_hand_ce(logits[n, y, x], labels[n, y, x]) for n, y, x in np.argwhere(valid)])
    wl = w[labels[valid]]
    np.testing.assert_allclose(whole, (wl * ces).sum() / wl.sum(), rtol=1e-5)
    # Averaging the replicas' own means instead would be wrong here.
    assert abs(np.mean([h[0].numpy() / h[1].numpy() for h in halves]) - whole) > 1e-3


def test_small_weights_keep_a_loop_dividing_by_max_count_one_exact():
    # One valid pixel of a class weighted 0.01: the loop's max(count, 1) must not swallow it.
    labels = np.array([[[1, 255]]], np.uint8)
    logits = np.array([[[[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]]]], np.float32)
    model = LossProbeNet((64, 64, 3), 3, class_weights=(0.01, 0.01, 0.02))
    ce_sum, count = model.cross_entropy_terms(labels, logits)
    np.testing.assert_allclose((ce_sum / tf.maximum(count, 1.0)).numpy(),
                               _hand_ce(logits[0, 0, 0], 1), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"class_names": ("background", "cat")}, "class_names must be 3 unique non-empty names"),
    ({"class_names": ("a", "a", "b")}, "class_names must be 3 unique"),
    ({"class_names": "abc"}, "a sequence of names, got the string"),
    ({"class_weights": (1, 2)}, "class_weights must be 3 finite numbers"),
    ({"class_weights": (0, 0, 0)}, "at least one > 0"),
    ({"class_weights": (1, float("inf"), 1)}, "class_weights must be 3 finite numbers"),
])
def test_bad_class_names_or_weights_are_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LossProbeNet((64, 64, 3), 3, **kwargs)


def test_class_names_and_weights_are_saved_and_restored(with_options):
    model, restored = with_options.model, with_options.restored
    config = json.loads((with_options.folder / "model_config.json").read_text())["config"]
    assert config["class_names"] == list(NAMES)
    assert config["class_weights"] == [0.3, 1.0, 1.5, 2.0, 0.0]
    assert restored.class_names == NAMES
    assert restored.class_weights == (0.3, 1.0, 1.5, 2.0, 0.0)
    assert restored.get_config() == model.get_config()


def test_a_model_folder_saved_without_names_or_weights_still_loads(tmp_path):
    model = LossProbeNet((64, 64, 3), 3)
    model.save(tmp_path)
    document = json.loads((tmp_path / "model_config.json").read_text())
    # What every model folder written before names and weights existed looks like.
    assert "class_names" not in document["config"] and "class_weights" not in document["config"]
    restored = SegNet.load(tmp_path)
    assert restored.class_names is None and restored.class_weights is None


def test_sync_bn_reaches_every_batchnorm_and_a_model_trained_with_it_loads_without_it(
        with_options):
    synced, loaded = with_options.model, with_options.restored
    norms = [layer for layer in synced.backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 40 and all(layer.synchronized for layer in norms)
    assert "sync_bn" not in synced.get_config()      # a training setting, not architecture
    assert not any(layer.synchronized for layer in loaded.backbone.layers
                   if isinstance(layer, keras.layers.BatchNormalization))
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict(image), synced.predict(image), atol=1e-6)
