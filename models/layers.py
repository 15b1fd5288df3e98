"""Decoder building blocks of GCN ("Large Kernel Matters", arXiv 1703.02719) as Keras 3 layers.

Every block exists twice:

* a Keras layer class (`UpScale`, `GlobalConvModule`, `BoundaryRefineModule`) that serialises
  through `get_config` and is registered with `keras.saving.register_keras_serializable`, so a
  model saved as `.keras` loads back without `custom_objects`;
* a functional helper with the tutorial's name (`conv_layer`, `up_scale`, `global_conv_module`,
  `boundary_refine_module`) that builds the layer and applies it to a tensor, so the decoder in
  `models/nn.py` reads like the original.

All tensors are NHWC. The decoder keeps `num_classes` channels everywhere, so the residual sums
inside the boundary refinement module and between decoder stages need no projection.
"""
from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

# Package name under which the custom layers are registered ("gcn_segmentation>UpScale", ...).
# It is written into every saved `.keras` file, so renaming it breaks loading old files.
SERIALIZATION_PACKAGE = "gcn_segmentation"


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    """Normalise an int or a pair of ints into a `(rows, cols)` tuple of positive ints."""
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class UpScale(keras.layers.Layer):
    """Bilinear upsampling by an integer factor, or to the exact size of a reference map.

    Call it on `x` alone to get `(N, scale*h, scale*w, C)`, or on `[x, reference]` to resize `x`
    to the spatial size of `reference`. The reference form is what the decoder uses before every
    skip sum: when the encoder map has an odd size (an input that is not a multiple of 32, e.g.
    a 1/16 map of 7 rows under an upsampled 1/32 map of 2*4 = 8 rows), the sum still lines up
    instead of failing. For sizes that are exact doubles both forms give identical results.

    Uses `tf.image.resize` (half-pixel centres, the TF2 default). The tutorial's TF1
    `resize_bilinear` used the older corner-aligned sampling grid, which shifts the map by half
    a pixel; half-pixel centres are the correct bilinear upsampling.
    """

    def __init__(
        self,
        scale: int = 2,
        *,
        name: str | None = None,
        dtype: Any = None,
        trainable: bool = True,
    ) -> None:
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        if int(scale) < 1:
            raise ValueError(f"UpScale: scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)

    def call(self, inputs: tf.Tensor | Sequence[tf.Tensor]) -> tf.Tensor:
        if isinstance(inputs, (list, tuple)):
            x, reference = inputs
            size = tf.shape(reference)[1:3]
        else:
            x = inputs
            size = tf.shape(x)[1:3] * self.scale
        # tf.image.resize returns float32 for bilinear; cast back so float16/bfloat16 decoders
        # stay in their compute dtype under mixed precision.
        return tf.cast(tf.image.resize(x, size, method="bilinear"), self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            x_shape, ref_shape = input_shape
            return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.scale, None if w is None else w * self.scale, c)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class GlobalConvModule(keras.layers.Layer):
    """Global Convolution Module: a separable approximation of a dense `k1 x k2` convolution.

    Two branches over the same input, summed:
        left:  conv (k1 x 1) -> conv (1 x k2)
        right: conv (1 x k2) -> conv (k1 x 1)
    Every conv has `filters` outputs, 'same' padding, stride 1 and a bias; there is no batch
    norm and no activation (as in the paper and the tutorial). Shapes: `(N, h, w, C_in)` ->
    `(N, h, w, filters)`. With `k = h - 1` (the GCN rule, e.g. 15 at a 16-cell 1/32 map of a
    512 input) each output pixel sees almost the whole map.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        *,
        name: str | None = None,
        dtype: Any = None,
        trainable: bool = True,
    ) -> None:
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "GlobalConvModule kernel_size")
        k1, k2 = self.kernel_size

        def conv(kernel: tuple[int, int], part: str) -> keras.layers.Conv2D:
            return keras.layers.Conv2D(
                self.filters, kernel, padding="same", name=part, dtype=self.dtype_policy
            )

        self.conv_l1 = conv((k1, 1), "conv_l1")
        self.conv_l2 = conv((1, k2), "conv_l2")
        self.conv_r1 = conv((1, k2), "conv_r1")
        self.conv_r2 = conv((k1, 1), "conv_r2")

    def build(self, input_shape: Any) -> None:
        # Build the sub-layers eagerly so their variables exist before weights are loaded.
        mid_shape = tuple(input_shape[:-1]) + (self.filters,)
        self.conv_l1.build(input_shape)
        self.conv_r1.build(input_shape)
        self.conv_l2.build(mid_shape)
        self.conv_r2.build(mid_shape)
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        left = self.conv_l2(self.conv_l1(x))
        right = self.conv_r2(self.conv_r1(x))
        return left + right

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size))
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class BoundaryRefineModule(keras.layers.Layer):
    """Boundary Refinement: a residual block `x + conv3x3(relu(conv3x3(x)))`.

    Shapes: `(N, h, w, filters)` -> same; the input must already have `filters` channels (the
    decoder keeps `num_classes` channels throughout). Both convs have a bias and no batch norm.

    The tutorial fed `x` (not the ReLU output) into the second conv, which left the first conv
    outside the graph of the loss: it never received a gradient and never trained. Here the
    second conv consumes the ReLU output, as the paper draws it.
    """

    def __init__(
        self,
        filters: int,
        *,
        name: str | None = None,
        dtype: Any = None,
        trainable: bool = True,
    ) -> None:
        super().__init__(name=name, dtype=dtype, trainable=trainable)
        self.filters = int(filters)
        self.conv1 = keras.layers.Conv2D(
            self.filters, 3, padding="same", name="conv1", dtype=self.dtype_policy
        )
        self.conv2 = keras.layers.Conv2D(
            self.filters, 3, padding="same", name="conv2", dtype=self.dtype_policy
        )

    def build(self, input_shape: Any) -> None:
        if input_shape[-1] is not None and input_shape[-1] != self.filters:
            raise ValueError(
                f"BoundaryRefineModule '{self.name}' adds its input to a {self.filters}-channel "
                f"residual, so the input needs {self.filters} channels; got shape {input_shape}"
            )
        self.conv1.build(input_shape)
        self.conv2.build(tuple(input_shape[:-1]) + (self.filters,))
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        residual = self.conv2(tf.nn.relu(self.conv1(x)))
        return x + residual

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return tuple(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(filters=self.filters)
        return config


# ---------------------------------------------------------------------------------------------
# Functional helpers with the tutorial's names: build the layer and apply it in one call.
# ---------------------------------------------------------------------------------------------


def conv_layer(
    x: Any,
    filters: int,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] = (1, 1),
    padding: str = "same",
    use_bias: bool = True,
    *,
    name: str | None = None,
    dtype: Any = None,
) -> Any:
    """Plain 2-D convolution (a `keras.layers.Conv2D`, which serialises on its own)."""
    layer = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding.lower(), use_bias=use_bias,
        name=name, dtype=dtype,
    )
    return layer(x)


def up_scale(x: Any, scale: int = 2, *, reference: Any = None, name: str | None = None) -> Any:
    """Bilinear upsampling by `scale`, or to `reference`'s spatial size when it is given."""
    layer = UpScale(scale, name=name)
    return layer(x) if reference is None else layer([x, reference])


def global_conv_module(
    x: Any, filters: int, kernel_size: int | Sequence[int], *, name: str | None = None
) -> Any:
    """Global Convolution Module with `filters` outputs and a `kernel_size` (k1, k2) span."""
    return GlobalConvModule(filters, kernel_size, name=name)(x)


def boundary_refine_module(x: Any, filters: int, *, name: str | None = None) -> Any:
    """Boundary Refinement Module, `x + conv3x3(relu(conv3x3(x)))` with `filters` channels."""
    return BoundaryRefineModule(filters, name=name)(x)
