"""Tiny models and data shared by the training-engine tests (imported by test files and by the
child processes of the fault tests, which get this folder on their PYTHONPATH).

TinySegNet and NanSegNet are two-convolution SegNets on 64x64 images (no BatchNorm, so one step
on two replicas must equal one step on one device, and training mode predicts like inference
mode). TinyGCN is what the commands' tests give train.py in place of the GCN (``swap_gcn``).
"""
from __future__ import annotations

import sys

import keras
import numpy as np
import tensorflow as tf

from models.nn import GCN, SegNet
from models.pretrained import load_backbone_weights

SIZE = 64
IGNORE = 255
# An image whose pixels all hold this value makes NanSegNet's loss infinite.
POISON_VALUE = 7


class TinySegNet(SegNet):
    """RGB -> 3x3 conv (4 filters, ReLU) -> 1x1 conv logits. No BatchNorm, no dropout."""

    def _build_model(self) -> keras.Model:
        images = keras.Input((None, None, 3), name="images")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
        logits = keras.layers.Conv2D(self.num_classes, 1, name="logits")(x)
        return keras.Model(images, logits, name=self.name)


class NanSegNet(TinySegNet):
    """TinySegNet whose logits get ``log(max |image - 7|)`` added to every class: the same
    constant for all classes of an image (the softmax and the loss do not change, and it does
    not depend on the weights), but -inf for an image that is 7 everywhere: a loss that turns
    infinite exactly at the step whose batch holds that image."""

    def _build_model(self) -> keras.Model:
        inner = super()._build_model()
        images = keras.Input((None, None, 3), name="images")
        offset = keras.layers.Lambda(lambda x: tf.math.log(tf.reduce_max(
            tf.abs(x - float(POISON_VALUE)), axis=[1, 2, 3], keepdims=True)))(images)
        return keras.Model(images, inner(images) + offset, name=self.name)


class ContextSegNet(TinySegNet):
    """TinySegNet plus what makes every output pixel depend on the frame an image is padded
    into, as the GCN's do: the mean over 8x8 cells (moves with the offset of the padding modulo
    8) and the mean over the whole frame (changes with the padded size)."""

    def _build_model(self) -> keras.Model:
        local = super()._build_model()
        images = keras.Input((None, None, 3), name="images")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
        cells = keras.layers.AveragePooling2D(8)(x)
        cells = keras.layers.UpSampling2D(8)(keras.layers.Conv2D(self.num_classes, 1)(cells))
        frame = keras.layers.GlobalAveragePooling2D(keepdims=True)(
            keras.layers.Conv2D(self.num_classes, 1)(x))
        return keras.Model(images, local(images) + cells + frame, name=self.name)


def tiny_model(seed: int = 7, num_classes: int = 3, cls: type = TinySegNet) -> SegNet:
    keras.utils.set_random_seed(seed)   # same initial weights for the same seed
    return cls((SIZE, SIZE, 3), num_classes, weight_decay=1e-3)


def tiny_data(n: int, seed: int = 0, unknown_rows: int = 0):
    """Random images; labels = a learnable function of the pixel, plus an ignored band."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = (images[..., 0] > 100).astype(np.uint8) + (images[..., 1] > 180)
    labels[:, :unknown_rows] = IGNORE
    return images, labels


def noise_data(n: int, seed: int):
    """Labels independent of the images: scores stay near chance (no epoch doubles them)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (n, SIZE, SIZE), dtype=np.uint8)
    labels[:, :4] = IGNORE
    return images, labels


def weights_of(model: SegNet) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.keras_model.trainable_variables]


class TinyGCN(GCN):
    """The GCN as train.py, test.py and draw.py see it (constructor, config, kernel rule,
    ``bn_momentum``, ``sync_bn``, pretrain report, save and load) on a body of two convolutions
    and a BatchNorm: built and traced in a fraction of a second where ResNet-50 takes seconds,
    and saved in kilobytes instead of 95 MB. The commands' tests train it; tests/test_nn.py and
    one run of tests/test_scripts.py train and check the real GCN."""

    def _build_model(self) -> keras.Model:
        images = keras.Input((None, None, 3), name="images")
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
        x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
        x = keras.layers.BatchNormalization(momentum=self.bn_momentum or 0.99,
                                            synchronized=self.sync_bn, name="bn")(x)
        x = keras.layers.ReLU()(x)
        logits = keras.layers.Conv2D(self.num_classes, 1, name="logits", dtype="float32")(x)
        model = keras.Model(images, logits, name=self.name)
        self.backbone = model
        self.pretrain_report = load_backbone_weights(model, self.pretrain, self.pretrained_dir)
        return model


def swap_gcn(monkeypatch=None) -> None:
    """Make every module that has imported ``GCN`` (and ``models.nn`` itself, where train.py
    takes it from) build a TinyGCN instead: undone at the test's end with ``monkeypatch``, for
    good in a child process without it."""
    for module in list(sys.modules.values()):
        if getattr(module, "GCN", None) is GCN and module is not sys.modules[__name__]:
            if monkeypatch is None:
                module.GCN = TinyGCN
            else:
                monkeypatch.setattr(module, "GCN", TinyGCN)


# The prologue of a child process that runs train.py with a TinyGCN (tests/ on its PYTHONPATH):
# ``python -c TRAIN_WITH_TINY_GCN <train.py's arguments>``, as ``python train.py`` runs.
TRAIN_WITH_TINY_GCN = """
import runpy, sys
from tiny import swap_gcn
swap_gcn()
sys.argv[0] = "train.py"
runpy.run_path("train.py", run_name="__main__")
"""
