"""Values, gradients and serialisation of the GCN decoder blocks (models/layers.py)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from models.layers import (
    BoundaryRefineModule,
    GlobalConvModule,
    UpScale,
    boundary_refine_module,
    conv_layer,
    global_conv_module,
    up_scale,
)


def _set_conv(layer: keras.layers.Conv2D, kernel: np.ndarray, bias: float = 0.0) -> None:
    layer.set_weights([kernel.astype(np.float32), np.full(layer.filters, bias, np.float32)])


def test_up_scale_doubles_with_half_pixel_bilinear_values():
    # 2x2 map [[0, 1], [2, 3]] = 2*row + col. Half-pixel sampling of a 2-pixel axis at 4 output
    # pixels reads source coordinates -0.25, 0.25, 0.75, 1.25 -> clamped weights give
    # [0, 0.25, 0.75, 1] of the way from the first to the second pixel.
    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32).reshape(1, 2, 2, 1)
    out = UpScale(2)(x).numpy()[0, :, :, 0]
    axis = np.array([0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(out, 2 * axis[:, None] + axis[None, :], atol=1e-6)


def test_up_scale_to_odd_reference_size():
    # A 1/32 map of 4x4 under a 1/16 skip map of 7x9 (input not a multiple of 32): resize to
    # the skip's exact size instead of failing in the sum.
    x = np.full((2, 4, 4, 3), 5.0, np.float32)
    reference = np.zeros((2, 7, 9, 8), np.float32)
    out = up_scale(x, reference=reference).numpy()
    assert out.shape == (2, 7, 9, 3)
    np.testing.assert_allclose(out, 5.0)  # bilinear keeps a constant map constant
    assert UpScale(2).compute_output_shape([(None, 4, 4, 3), (None, 7, 9, 8)]) == (None, 7, 9, 3)


def test_up_scale_keeps_compute_dtype_under_mixed_precision():
    layer = UpScale(2, dtype="mixed_float16")
    out = layer(np.ones((1, 2, 2, 1), np.float16))
    assert out.dtype == tf.float16 and out.shape == (1, 4, 4, 1)


def test_global_conv_module_sums_two_separable_branches():
    # One input channel, one filter, k = 3, all kernels ones, no bias: each branch spreads a
    # delta into a 3x3 box of ones, so the sum is a 3x3 box of twos around the delta.
    layer = GlobalConvModule(1, 3)
    x = np.zeros((1, 7, 7, 1), np.float32)
    x[0, 3, 3, 0] = 1.0
    layer.build(x.shape)
    for conv in (layer.conv_l1, layer.conv_r2):
        _set_conv(conv, np.ones((3, 1, 1, 1)))
    for conv in (layer.conv_l2, layer.conv_r1):
        _set_conv(conv, np.ones((1, 3, 1, 1)))
    expected = np.zeros((7, 7))
    expected[2:5, 2:5] = 2.0
    np.testing.assert_allclose(layer(x).numpy()[0, :, :, 0], expected, atol=1e-6)


def test_global_conv_module_branches_are_asymmetric_for_rectangular_kernels():
    # kernel (3, 1): left = (3x1 conv -> 1x1 conv), right = (1x1 conv -> 3x1 conv). With ones
    # kernels and zero biases each branch spreads a delta over its column's 3 rows only.
    layer = GlobalConvModule(1, (3, 1))
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 2, 2, 0] = 1.0
    layer.build(x.shape)
    assert layer.conv_l1.kernel.shape == (3, 1, 1, 1) and layer.conv_l2.kernel.shape == (1, 1, 1, 1)
    assert layer.conv_r1.kernel.shape == (1, 1, 1, 1) and layer.conv_r2.kernel.shape == (3, 1, 1, 1)
    for conv in (layer.conv_l1, layer.conv_l2, layer.conv_r1, layer.conv_r2):
        _set_conv(conv, np.ones(conv.kernel.shape))
    expected = np.zeros((5, 5))
    expected[1:4, 2] = 2.0
    np.testing.assert_allclose(layer(x).numpy()[0, :, :, 0], expected, atol=1e-6)


def test_global_conv_module_parameter_count():
    layer = GlobalConvModule(3, (15, 15))
    layer.build((None, 16, 16, 2048))
    # (k*C_in*F + F) for the two input convs, (k*F*F + F) for the two second convs.
    expected = 2 * (15 * 2048 * 3 + 3) + 2 * (15 * 3 * 3 + 3)
    assert layer.count_params() == expected == 184_602


def test_boundary_refine_module_is_x_plus_conv_relu_conv():
    # conv1 = identity (centre tap 1), conv2 = 2 * identity, no biases:
    # out = x + 2 * relu(x), so negatives pass unchanged and positives triple.
    layer = BoundaryRefineModule(1)
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0], np.float32).reshape(1, 1, 5, 1)
    layer.build(x.shape)
    centre = np.zeros((3, 3, 1, 1))
    centre[1, 1] = 1.0
    _set_conv(layer.conv1, centre)
    _set_conv(layer.conv2, 2 * centre)
    np.testing.assert_allclose(layer(x).numpy().ravel(), [-2.0, -0.5, 0.0, 1.5, 9.0], atol=1e-6)


def test_boundary_refine_module_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="needs 3 channels"):
        BoundaryRefineModule(3).build((None, 8, 8, 5))


def test_original_brm_wiring_leaves_first_conv_without_gradient_ours_trains_both():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)

    # The tutorial's wiring: relu(conv1(x)) is computed, but the second conv reads x again.
    conv1 = keras.layers.Conv2D(3, 3, padding="same")
    conv2 = keras.layers.Conv2D(3, 3, padding="same")
    with tf.GradientTape() as tape:
        tf.nn.relu(conv1(x))  # computed, then dropped
        loss = tf.reduce_sum(tf.square(x + conv2(x)))
    grads = tape.gradient(loss, conv1.trainable_variables + conv2.trainable_variables)
    assert grads[0] is None and grads[1] is None  # conv1 kernel and bias: never trained
    assert np.abs(grads[2].numpy()).sum() > 0 and np.abs(grads[3].numpy()).sum() > 0

    ours = BoundaryRefineModule(3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(ours(x)))
    grads = tape.gradient(loss, ours.trainable_variables)
    assert len(grads) == 4
    for variable, grad in zip(ours.trainable_variables, grads):
        assert grad is not None and np.abs(grad.numpy()).sum() > 0, variable.path


def test_blocks_serialise_in_a_keras_file_without_custom_objects(tmp_path):
    inputs = keras.Input((8, 12, 4))
    skip = keras.Input((8, 12, 2))
    x = global_conv_module(inputs, 2, (3, 5), name="gcm")
    x = boundary_refine_module(x, 2, name="brm")
    x = conv_layer(x, 2, 1, name="conv")
    small = keras.layers.MaxPooling2D(2)(x)
    x = up_scale(small, reference=skip, name="up")
    model = keras.Model([inputs, skip], x)
    rng = np.random.default_rng(1)
    data = [rng.normal(size=(1, 8, 12, 4)).astype(np.float32), np.zeros((1, 8, 12, 2), np.float32)]

    path = str(tmp_path / "blocks.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored(data).numpy(), model(data).numpy())
    assert restored.get_layer("gcm").get_config()["kernel_size"] == [3, 5]
    assert isinstance(restored.get_layer("brm"), BoundaryRefineModule)
    assert restored.get_layer("up").get_config()["scale"] == 2


@pytest.mark.parametrize("bad", [0, (3,), (3, 0)])
def test_global_conv_module_rejects_bad_kernel(bad):
    with pytest.raises(ValueError, match="kernel_size"):
        GlobalConvModule(2, bad)
