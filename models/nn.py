"""Segmentation networks: the `SegNet` interface and the `GCN` model on a ResNet50V2 backbone.

Data flow (shapes for a 512x512 input, C = num_classes):

    images (N, H, W, 3) RGB 0-255, uint8 or float
      -> Rescaling x/127.5 - 1 ("preprocess", the ResNetV2 / slim inception preprocessing)
      -> ResNet50V2 encoder, four skip maps taken before each stride-2 unit (SKIP_LAYERS):
         1/4 (128x128x256), 1/8 (64x64x512), 1/16 (32x32x1024), 1/32 (16x16x2048)
      -> GCN decoder, C channels everywhere (see `GCN._build_model`)
      -> logits (N, H, W, C) float32 (the last 1x1 conv runs in float32 under mixed precision)

`models/` knows nothing of files on disk beyond its own save format, datasets or training loops:
`learning/` drives `keras_model` and the loss through the `SegNet` interface, and
`SegNet.predict` accepts anything with an `.images` array, so `datasets.DataSet` works
without being imported here.
"""
from __future__ import annotations

import abc
import logging
import os
from typing import Any, ClassVar, Sequence

import keras
import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from models.layers import boundary_refine_module, global_conv_module, up_scale
from models.pretrained import LoadReport, load_backbone_weights
from models.saving import ModelConfigError

logger = logging.getLogger(__name__)

# The network downsamples by 32: input sides must be multiples of it for the skip maps to line
# up exactly, and at least 64 so the GCN kernel H/32 - 1 is at least 1.
SIZE_MULTIPLE = 32
MIN_SIZE = 64
# The GCN kernel for an unknown input size: the tutorial's value at 512x512.
DEFAULT_GCN_KERNEL = 15

# ONE table of the encoder features the decoder uses: output stride -> Keras ResNet50V2 layer.
# Each is the output of the last unit before a stride-2 unit (slim end-point in the comment).
SKIP_LAYERS: dict[int, str] = {
    4: "conv2_block2_out",   # resnet_v2_50/block1/unit_2/bottleneck_v2
    8: "conv3_block3_out",   # resnet_v2_50/block2/unit_3/bottleneck_v2
    16: "conv4_block5_out",  # resnet_v2_50/block3/unit_5/bottleneck_v2
    32: "conv5_block3_out",  # resnet_v2_50/block4/unit_3/bottleneck_v2
}


def _nearest_valid_sizes(size: int) -> str:
    lower = max(MIN_SIZE, size // SIZE_MULTIPLE * SIZE_MULTIPLE)
    upper = max(MIN_SIZE, -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return str(lower) if lower == upper else f"{lower} or {upper}"


def validate_input_shape(input_shape: Sequence[int | None]) -> tuple[int | None, int | None, int]:
    """`(H, W, 3)` with H, W multiples of 32 and >= 64, or None (any size); else ValueError."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ConfigError(f"input_shape must be (H, W, 3) for RGB images, got {input_shape!r}")
    for axis, size in zip(("H", "W"), shape[:2]):
        if size is None:
            continue
        if not isinstance(size, (int, np.integer)) or size < MIN_SIZE or size % SIZE_MULTIPLE:
            raise ConfigError(
                f"input size {shape[0]}x{shape[1]} is not valid: {axis}={size} must be a multiple "
                f"of {SIZE_MULTIPLE} and at least {MIN_SIZE} (the ResNet downsamples by 32 and "
                f"the GCN kernel is size/32 - 1); nearest valid {axis}: "
                f"{_nearest_valid_sizes(int(size))}. Pad or crop the images to such a size, or "
                f"use predict_image() for single images of any size")
    return (None if shape[0] is None else int(shape[0]),
            None if shape[1] is None else int(shape[1]), 3)


def gcn_kernel_size(height: int | None, width: int | None) -> tuple[int, int]:
    """The GCN rule: `(H // 32 - 1, W // 32 - 1)`, 15 for a side of unknown size."""
    return (DEFAULT_GCN_KERNEL if height is None else height // SIZE_MULTIPLE - 1,
            DEFAULT_GCN_KERNEL if width is None else width // SIZE_MULTIPLE - 1)


def check_output(output: str) -> None:
    """What inference returns: "probs" (softmax probabilities) or "mask" (class indices)."""
    if output not in ("probs", "mask"):
        raise ValueError(f"output must be 'probs' or 'mask', got {output!r}")


def inference_padding(height: int, width: int) -> tuple[int, int, int, int]:
    """Where an image of any size `(height, width)` sits for inference: padded, centred, to the
    next multiple of 32 per side (at least 64), so every skip map lines up exactly.

    Returns `(padded_height, padded_width, top, left)`; the image occupies
    `[top:top + height, left:left + width]` of the padded frame. `SegNet.predict_image` and the
    batched inference of test.py/draw.py (`learning.inference`) both use this one rule, so their
    masks are identical.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    padded_h, padded_w = (max(MIN_SIZE, -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE)
                          for size in (height, width))
    return padded_h, padded_w, (padded_h - height) // 2, (padded_w - width) // 2


@tf.custom_gradient
def _squared_norm(kernel: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """``sum(kernel**2)``, with the gradient ``2 * upstream * kernel`` written as one multiply.

    TensorFlow's own gradient of ``reduce_sum(square(k))`` broadcasts the upstream scalar to a
    tensor of k's shape and multiplies twice: three passes over all 25 M weights every step
    where one does. Here the scalar is doubled first, so the decay's gradient ``(2 * wd / 2) *
    k`` is the same float32 numbers as TensorFlow's ``(wd / 2) * (2 * k)`` (powers of two scale
    exactly; tests/test_nn.py compares them). (``tf.nn.l2_loss`` is as cheap, but with it a run
    resumed after SIGTERM no longer repeated the uninterrupted run's losses: tests/test_scripts.py.)"""
    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        return (2.0 * upstream) * kernel

    return tf.reduce_sum(tf.square(kernel)), gradient


class SegNet(abc.ABC):
    """Base class of the segmentation networks: one `keras.Model` plus loss and inference.

    The Keras model maps RGB 0-255 images `(N, h, w, 3)` to logits `(N, h, w, num_classes)`; it
    is built once, in `__init__`, by the subclass' `_build_model`, with free spatial dimensions
    (the network is fully convolutional), so a model trained at `input_shape` also predicts on
    other sizes (`predict_image`). `input_shape` is the training size: it fixes the
    architecture (e.g. the GCN kernel) and must have sides that are multiples of 32.

    Training loops use `keras_model` (or calling the object), `cross_entropy_terms` and
    `regularization_loss` (or `loss`); inference uses `predict` and `predict_image`.

    `class_names` (one per class, saved in the config) and `class_weights` (loss weights, saved
    too) are plain data here: `models/` knows no data set. Without names (None, also what a
    model saved before names were recorded loads with) the caller decides what to show:
    `datasets.classes.resolve_class_names` gives the pet names for 3 classes, generic ones
    otherwise.
    """

    # class name -> class, filled by __init_subclass__, used by `SegNet.load`.
    _registry: ClassVar[dict[str, type["SegNet"]]] = {}
    # Set by `clone`: the provenance record of the model this one copies.
    _provenance: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        SegNet._registry[cls.__name__] = cls

    def __init__(
        self,
        input_shape: Sequence[int | None] = (512, 512, 3),
        num_classes: int = 3,
        *,
        weight_decay: float = 1e-4,
        ignore_label: int = 255,
        class_names: Sequence[str] | None = None,
        class_weights: Sequence[float] | None = None,
        name: str = "segnet",
    ) -> None:
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes!r}")
        if float(weight_decay) < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.input_shape = validate_input_shape(input_shape)
        self.num_classes = int(num_classes)
        self.weight_decay = float(weight_decay)
        self.ignore_label = int(ignore_label)
        self.class_names = _check_class_names(class_names, self.num_classes)
        self.class_weights = _check_class_weights(class_weights, self.num_classes)
        self.name = str(name)
        self.keras_model: keras.Model = self._build_model()
        # Inference in graph mode (BatchNorm with moving statistics); reduce_retracing makes the
        # first traces generalise to a free batch size instead of one graph per batch shape.
        self._probs_fn = tf.function(self.probabilities, reduce_retracing=True)
        self._mask_fn = tf.function(self._mask, reduce_retracing=True)

    @abc.abstractmethod
    def _build_model(self) -> keras.Model:
        """Build the `keras.Model`: RGB 0-255 `(N, None, None, 3)` -> logits float32."""

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that define the architecture and the loss (JSON-serialisable).

        `from_config(get_config())` rebuilds the same model, without pretrained weights.
        `class_names` and `class_weights` appear only when set, so the config of a model
        without them is the one saved before they existed (old runs still resume and load).
        """
        return _base_config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SegNet":
        """Rebuild from `get_config()` without any pretrained weights (they are loaded next)."""
        return cls(**config)

    # -- forward ---------------------------------------------------------------------------------

    def __call__(self, images: Any, training: bool = False) -> tf.Tensor:
        """Logits `(N, h, w, C)` float32 for RGB 0-255 images `(N, h, w, 3)`."""
        return self.keras_model(images, training=training)

    @property
    def trainable_variables(self) -> list:
        return self.keras_model.trainable_variables

    def probabilities(self, images: tf.Tensor) -> tf.Tensor:
        logits = self.keras_model(tf.cast(images, tf.float32), training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    def predict_batch(self, images: Any, output: str = "probs") -> tf.Tensor:
        """One batch `(n, h, w, 3)` RGB 0-255 in inference mode, through the compiled function:
        "probs" `(n, h, w, C)` float32 or "mask" `(n, h, w)` uint8."""
        check_output(output)
        return (self._probs_fn if output == "probs" else self._mask_fn)(images)

    def _mask(self, images: tf.Tensor) -> tf.Tensor:
        logits = self.keras_model(tf.cast(images, tf.float32), training=False)
        return self.mask_from_logits(logits)

    @staticmethod
    def mask_from_logits(logits: tf.Tensor) -> tf.Tensor:
        """Class masks `(N, h, w)` uint8 of logits `(N, h, w, C)` (C <= 256): the argmax."""
        return tf.cast(tf.argmax(logits, axis=-1), tf.uint8)

    # -- loss ------------------------------------------------------------------------------------

    def cross_entropy_terms(self, labels: Any, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Sum of per-pixel softmax cross-entropy over valid pixels, and their count.

        labels: `(N, H, W)` integer class indices, `ignore_label` for pixels to skip.
        logits: `(N, H, W, C)`, any float dtype (computed in float32).
        Returns `(sum_ce, num_valid)`, both float32 scalars, so a distributed loop can divide
        the global sum by the global count (`loss_from_terms`).

        A valid pixel holds a class in `[0, C)` other than `ignore_label`. Any other value adds
        nothing to either term: called eagerly this raises ValueError instead; inside a
        compiled step no check runs here (a host assertion would stop the device every step),
        so the caller counts such labels itself (learning/steps.py reports them by step).

        With `class_weights` w, each valid pixel of class c counts w_c times: the result is
        `(sum w[label] * ce, sum w[label])` over the valid pixels, so sum / count is the
        weighted mean of PyTorch's and Keras' weighted cross-entropy. The weights are used
        scaled so that the smallest positive one is 1 (`loss_weights`): the weighted mean does
        not change with a common factor, and the count of a batch holding any weighted pixel
        is then at least 1, so a loop dividing by `max(count, 1)` stays exact.
        """
        logits = tf.cast(logits, tf.float32)
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank != 3:
            raise ValueError(f"labels must be class indices of shape (N, H, W), got shape "
                             f"{labels.shape}; one-hot labels need datasets.from_one_hot first")
        if tf.executing_eagerly():
            _check_label_values(labels.numpy(), self.num_classes, self.ignore_label)
        labels, valid = _valid_pixels(labels, self.num_classes, self.ignore_label)
        # Other pixels get class 0 so the op sees a legal index; their loss is zeroed below.
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
        # The fused op uses log-sum-exp: stable for large logits.
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=safe_labels, logits=logits)
        per_pixel = tf.where(valid, per_pixel, tf.zeros_like(per_pixel))
        if self.loss_weights is None:
            return tf.reduce_sum(per_pixel), tf.reduce_sum(tf.cast(valid, tf.float32))
        # (N, H, W) float32: w[label] on valid pixels, 0 on the others.
        pixel_weights = tf.where(valid, tf.gather(tf.constant(self.loss_weights), safe_labels),
                                 tf.zeros_like(per_pixel))
        return tf.reduce_sum(pixel_weights * per_pixel), tf.reduce_sum(pixel_weights)

    def regularization_loss(self) -> tf.Tensor:
        """L2 weight decay as TF-slim's `l2_regularizer`: `wd * sum(w**2) / 2` over kernels.

        Every trainable convolution kernel (backbone and decoder), not biases and not batch-norm
        parameters; frozen (non-trainable) weights are left out. Float32 scalar.
        """
        kernels = [v for v in self.keras_model.trainable_variables if v.name == "kernel"]
        if self.weight_decay == 0.0 or not kernels:
            return tf.constant(0.0, tf.float32)
        squares = tf.add_n([_squared_norm(tf.cast(k, tf.float32)) for k in kernels])
        return self.weight_decay * 0.5 * squares

    @property
    def loss_weights(self) -> np.ndarray | None:
        """`class_weights` as the loss uses them: float32 (C,), scaled so the smallest positive
        weight is 1 (see `cross_entropy_terms`); None without class weights."""
        return _scaled_loss_weights(self.class_weights)

    def loss(self, labels: Any, logits: tf.Tensor) -> tf.Tensor:
        """Mean cross-entropy over valid pixels (0 when there is none) plus weight decay; the
        weighted mean with `class_weights`."""
        ce_sum, num_valid = self.cross_entropy_terms(labels, logits)
        return self.loss_from_terms(ce_sum, num_valid, self.regularization_loss())

    @staticmethod
    def loss_from_terms(ce_sum: tf.Tensor, count: tf.Tensor,
                        regularization: tf.Tensor) -> tf.Tensor:
        """The loss from its terms (`cross_entropy_terms`, `regularization_loss`):
        `ce_sum / max(count, 1) + regularization`, in the terms' float dtype.

        A replica's share of a loss over R replicas is its own `ce_sum` with the global
        `count` and `regularization / R`: the shares add up to the loss of the global batch,
        and so do their gradients."""
        return ce_sum / tf.maximum(count, 1.0) + regularization

    # -- inference -------------------------------------------------------------------------------

    def predict(self, data: Any, batch_size: int = 8, output: str = "probs") -> np.ndarray:
        """Run the model over a whole data set: an `.images` array, an array `(N, h, w, 3)` or a
        `tf.data.Dataset`; "probs" `(N, h, w, C)` float32 or "mask" `(N, h, w)` uint8
        (`models.predict.predict`)."""
        from models.predict import predict   # models/predict.py imports this module

        return predict(self, data, batch_size=batch_size, output=output)

    def predict_image(self, image: np.ndarray, output: str = "probs",
                      options: Any = None) -> np.ndarray:
        """Predict one RGB 0-255 image of any size `(h, w, 3)`: `(h, w, C)` float32
        probabilities ("probs") or `(h, w)` uint8 class indices ("mask"), in the mode of
        `options` (`models.inference_options.InferenceOptions`: full, resize or tiles, flip
        averaging; None: the defaults). See `models.predict.predict_image`."""
        from models.predict import predict_image

        return predict_image(self, image, options, output=output)

    # -- save / load / export: models/saving.py and models/export.py do the work -------------

    def save(self, directory: str | os.PathLike, filename: str | None = None, *,
             info: dict[str, Any] | None = None) -> str:
        """Write `<directory>/<filename>` (a `.keras` archive; default `best_model.keras`) and
        `model_config.json`, both atomically; returns the archive's path
        (`models.saving.save_model`)."""
        from models.saving import BEST_MODEL_NAME, save_model  # saving imports this module

        return save_model(self, directory, filename or BEST_MODEL_NAME, info=info)

    @staticmethod
    def load(directory: str | os.PathLike, filename: str | None = None, *,
             expected_num_classes: int | None = None,
             input_shape: Sequence[int | None] | None = None) -> "SegNet":
        """Rebuild the model saved in `directory` and load its weights; `ModelConfigError`
        names the file and what disagrees (`models.saving.load_model`)."""
        from models.saving import load_model

        return load_model(directory, filename, expected_num_classes=expected_num_classes,
                          input_shape=input_shape)

    def export(self, path: str | os.PathLike) -> str:
        """Write a TF SavedModel with the endpoint `serve(images)` -> probabilities
        (`models.export.export_saved_model`)."""
        from models.export import export_saved_model

        return export_saved_model(self, path)

    def clone(self) -> "SegNet":
        """A new model of the same class and configuration, with fresh weights, that records
        the same provenance (where the backbone weights came from) when saved."""
        other = type(self).from_config(self.get_config())
        other._provenance = self._extra_save_info()
        return other

    def provenance(self) -> dict[str, Any]:
        """Informational fields for model_config.json (where the weights came from), not used to
        rebuild: a clone's are those of the model it copies."""
        return self._provenance if self._provenance is not None else self._extra_save_info()

    def _extra_save_info(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def registered() -> dict[str, type["SegNet"]]:
        """Class name -> class of every SegNet subclass (what `load` can rebuild)."""
        return dict(SegNet._registry)


def _base_config(model: SegNet) -> dict[str, Any]:
    """`SegNet.get_config`'s dictionary: the base class' constructor arguments, with
    `class_names` and `class_weights` only when they are set."""
    config: dict[str, Any] = {
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "weight_decay": model.weight_decay,
        "ignore_label": model.ignore_label,
        "name": model.name,
    }
    if model.class_names is not None:
        config["class_names"] = list(model.class_names)
    if model.class_weights is not None:
        config["class_weights"] = list(model.class_weights)
    return config


def _check_class_names(names: Sequence[str] | None, num_classes: int) -> tuple[str, ...] | None:
    """One unique, non-empty name per output channel, or None (names not recorded)."""
    if names is None:
        return None
    if isinstance(names, str):
        raise ConfigError(f"class_names must be a sequence of names, got the string {names!r}")
    names = tuple(names)
    if len(names) != num_classes or len(set(names)) != len(names) \
            or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"class_names must be {num_classes} unique non-empty names (one per "
                          f"class), got {list(names)!r}")
    return names


def _check_class_weights(weights: Sequence[float] | None,
                         num_classes: int) -> tuple[float, ...] | None:
    """One finite weight >= 0 per class, at least one > 0, or None (unweighted loss)."""
    if weights is None:
        return None
    try:
        weights = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ConfigError(f"class_weights must be {num_classes} numbers, got {weights!r}") from None
    if len(weights) != num_classes or not all(np.isfinite(w) and w >= 0 for w in weights) \
            or not any(w > 0 for w in weights):
        raise ConfigError(f"class_weights must be {num_classes} finite numbers >= 0 (one per "
                          f"class) with at least one > 0, got {list(weights)}")
    return weights


def _check_label_values(labels: np.ndarray, num_classes: int, ignore_label: int) -> None:
    """The eager check of `SegNet.cross_entropy_terms`: ValueError naming the first label value
    that is neither a class nor ignored."""
    values = np.unique(labels)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if bad.size:
        raise ValueError(f"labels must be < num_classes={num_classes} or "
                         f"ignore_label={ignore_label}, got the value {bad[0]}")


def _valid_pixels(labels: tf.Tensor, num_classes: int,
                  ignore_label: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The first step of `SegNet.cross_entropy_terms`: the labels as int64 and the boolean
    mask of the pixels that count, those holding a class in `[0, num_classes)` other than
    `ignore_label`."""
    unsigned = labels.dtype.is_unsigned
    # int64, not int32: TensorFlow keeps most int32 tensors in host memory on a GPU.
    labels = tf.cast(labels, tf.int64)
    valid = labels < num_classes
    if not unsigned:
        valid = tf.logical_and(valid, labels >= 0)
    if 0 <= ignore_label < num_classes:
        valid = tf.logical_and(valid, tf.not_equal(labels, ignore_label))
    return labels, valid


def _scaled_loss_weights(class_weights: Sequence[float] | None) -> np.ndarray | None:
    """`class_weights` scaled so that the smallest positive one is 1, float32 (C,) (see
    `SegNet.cross_entropy_terms`); None without class weights."""
    if class_weights is None:
        return None
    weights = np.asarray(class_weights, np.float64)
    return (weights / weights[weights > 0].min()).astype(np.float32)


class GCN(SegNet):
    """Global Convolutional Network (Peng et al., "Large Kernel Matters", arXiv 1703.02719).

    Encoder: `keras.applications.ResNet50V2` (pre-activation ResNet-v2-50). Decoder, with
    C = num_classes channels everywhere and k = `kernel_size` (names as in the tutorial):

        1/32  gcm1 = GCM(c32) -> brm1_1 -> up16 (x2, to the 1/16 size)
        1/16  gcm2 = GCM(c16) -> brm2_1; sum16 = up16 + brm2_1 -> brm2_2 -> up8
        1/8   gcm3 = GCM(c8)  -> brm3_1; sum8  = up8  + brm3_1 -> brm3_2 -> up4
        1/4   gcm4 = GCM(c4)  -> brm4_1; sum4  = up4  + brm4_1 -> brm4_2 -> up2 (1/2)
        1/2   brm4_3 -> up1 (to the input size) -> brm4_4 -> logits (1x1 conv, float32)

    Args:
        input_shape: training size `(H, W, 3)`, sides multiples of 32 (>= 64), or None sides.
        num_classes: output classes (3: background, cat, dog).
        kernel_size: GCM span; default `(H // 32 - 1, W // 32 - 1)`, 15 for an unknown side.
        pretrain: backbone weights: "auto", "imagenet", "none" or a file (models/pretrained.py).
        pretrained_dir: where "auto" looks for weights files.
        weight_decay: L2 factor of `regularization_loss` (slim semantics, wd * sum(w^2) / 2).
        bn_momentum: moving-average momentum of every BatchNorm; None keeps Keras' 0.99. A
            from-scratch run can use e.g. 0.9 so the moving statistics catch up faster.
        sync_bn: BatchNorm statistics computed over the global batch across all replicas of a
            tf.distribute strategy (Keras' ``synchronized=True``) instead of per replica. A
            training-time setting, not part of the architecture: not in ``get_config``, so a
            model trained with it loads (``SegNet.load``) as any other.
        ignore_label: label value excluded from the loss.
        class_names: one name per class, saved with the model (test.py and draw.py show them);
            None records no names (see `SegNet`).
        class_weights: per-class weights of the cross-entropy (see
            `SegNet.cross_entropy_terms`); None: the unweighted mean over valid pixels.
        name: name of the Keras model.
    """

    BACKBONE = "resnet50v2"

    def __init__(
        self,
        input_shape: Sequence[int | None] = (512, 512, 3),
        num_classes: int = 3,
        *,
        kernel_size: int | Sequence[int] | None = None,
        pretrain: str = "auto",
        pretrained_dir: str | os.PathLike = "pretrained_models",
        weight_decay: float = 1e-4,
        bn_momentum: float | None = None,
        sync_bn: bool = False,
        ignore_label: int = 255,
        class_names: Sequence[str] | None = None,
        class_weights: Sequence[float] | None = None,
        name: str = "gcn",
    ) -> None:
        shape = validate_input_shape(input_shape)
        if kernel_size is None:
            kernel = gcn_kernel_size(shape[0], shape[1])
        elif isinstance(kernel_size, (int, np.integer)):
            kernel = (int(kernel_size), int(kernel_size))
        else:
            kernel = tuple(int(k) for k in kernel_size)
        if len(kernel) != 2 or min(kernel) < 1:
            raise ConfigError(f"kernel_size must be a positive int or pair, got {kernel_size!r}")
        if bn_momentum is not None and not 0.0 < float(bn_momentum) < 1.0:
            raise ConfigError(f"bn_momentum must be in (0, 1) or None, got {bn_momentum!r}")
        self.kernel_size: tuple[int, int] = kernel  # type: ignore[assignment]
        self.pretrain = str(pretrain)
        self.pretrained_dir = os.fspath(pretrained_dir)
        self.bn_momentum = None if bn_momentum is None else float(bn_momentum)
        self.sync_bn = bool(sync_bn)
        self.backbone: keras.Model | None = None
        self.pretrain_report: LoadReport | None = None
        super().__init__(shape, num_classes, weight_decay=weight_decay,
                         ignore_label=ignore_label, class_names=class_names,
                         class_weights=class_weights, name=name)

    def _build_model(self) -> keras.Model:
        num_classes, kernel = self.num_classes, self.kernel_size
        # Free spatial size: the net is fully convolutional (see SegNet); H, W only set `kernel`.
        backbone = keras.applications.ResNet50V2(
            include_top=False, weights=None, input_shape=(None, None, 3))
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                if self.bn_momentum is not None:
                    layer.momentum = self.bn_momentum
                # Batch statistics over the global batch (all replicas) instead of each
                # replica's share; read at call time, so it can be set after construction.
                layer.synchronized = self.sync_bn
        self.pretrain_report = load_backbone_weights(backbone, self.pretrain, self.pretrained_dir)
        self.backbone = backbone  # the full ResNet50V2, incl. post_bn which the decoder skips
        # The encoder shares the backbone's layers up to the deepest skip map, so post_bn (after
        # conv5_block3_out) is not part of the segmentation model and gets no dead weights.
        encoder = keras.Model(
            backbone.input, [backbone.get_layer(SKIP_LAYERS[s]).output for s in (4, 8, 16, 32)],
            name=f"{self.BACKBONE}_encoder")

        images = keras.Input((None, None, 3), name="images")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(images)
        c4, c8, c16, c32 = encoder(x)  # (N, H/4, W/4, 256) ... (N, H/32, W/32, 2048)

        # 1/32
        gcm1 = global_conv_module(c32, num_classes, kernel, name="gcm1")
        brm1_1 = boundary_refine_module(gcm1, num_classes, name="brm1_1")
        up16 = up_scale(brm1_1, 2, reference=c16, name="up16")
        # 1/16
        gcm2 = global_conv_module(c16, num_classes, kernel, name="gcm2")
        brm2_1 = boundary_refine_module(gcm2, num_classes, name="brm2_1")
        sum16 = keras.layers.Add(name="sum16")([up16, brm2_1])
        brm2_2 = boundary_refine_module(sum16, num_classes, name="brm2_2")
        up8 = up_scale(brm2_2, 2, reference=c8, name="up8")
        # 1/8
        gcm3 = global_conv_module(c8, num_classes, kernel, name="gcm3")
        brm3_1 = boundary_refine_module(gcm3, num_classes, name="brm3_1")
        sum8 = keras.layers.Add(name="sum8")([up8, brm3_1])
        brm3_2 = boundary_refine_module(sum8, num_classes, name="brm3_2")
        up4 = up_scale(brm3_2, 2, reference=c4, name="up4")
        # 1/4
        gcm4 = global_conv_module(c4, num_classes, kernel, name="gcm4")
        brm4_1 = boundary_refine_module(gcm4, num_classes, name="brm4_1")
        sum4 = keras.layers.Add(name="sum4")([up4, brm4_1])
        brm4_2 = boundary_refine_module(sum4, num_classes, name="brm4_2")
        up2 = up_scale(brm4_2, 2, name="up2")
        # 1/2 -> 1/1: the last upsampling targets the input size exactly.
        brm4_3 = boundary_refine_module(up2, num_classes, name="brm4_3")
        up1 = up_scale(brm4_3, 2, reference=images, name="up1")
        brm4_4 = boundary_refine_module(up1, num_classes, name="brm4_4")
        # float32 even under a mixed-precision policy, so the loss sees float32 logits.
        logits = keras.layers.Conv2D(num_classes, 1, name="logits", dtype="float32")(brm4_4)
        return keras.Model(images, logits, name=self.name)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        # Architecture and loss only: where the backbone weights came from does not change the
        # model (it is recorded in model_config.json by `save`), so a run resumed or reloaded
        # with another `pretrain` compares equal.
        config.update(
            kernel_size=list(self.kernel_size),
            bn_momentum=self.bn_momentum,
            backbone=self.BACKBONE,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "GCN":
        """Rebuild without pretrained weights (pretrain="none"): the saved weights follow."""
        config = dict(config)
        backbone = config.pop("backbone", cls.BACKBONE)
        if backbone != cls.BACKBONE:
            raise ModelConfigError(f"GCN config names backbone {backbone!r}; this code builds "
                                   f"{cls.BACKBONE!r} only")
        return cls(**config, pretrain="none")

    def _extra_save_info(self) -> dict[str, Any]:
        report = self.pretrain_report
        return {"pretrain": self.pretrain,
                "pretrain_report": None if report is None else report.summary()}
