"""Backbone weights for the Keras ResNet50V2: ImageNet download, Keras files, TF-slim checkpoints.

One entry point, `load_backbone_weights(backbone, pretrain, pretrained_dir) -> LoadReport`, where
`pretrain` is one of

* `"none"`: keep the random initialisation (trains from scratch, works offline);
* `"imagenet"`: Keras' own ImageNet "notop" weights for ResNet50V2, fetched with
  `keras.utils.get_file` from `IMAGENET_BASE_URL` (checked against `IMAGENET_FILE_HASH`, cached
  under `~/.keras/models/`);
* `"auto"` (the default of `GCN`): a weights file found in `pretrained_dir` (the tutorial's slim
  checkpoint first, then the Keras `.h5`), else `"imagenet"`;
* a path: a TF-slim checkpoint prefix (`resnet_v2_50.ckpt`, V1 single file or V2
  `.index` + `.data-*`), a legacy Keras `.h5` weights file (the format of the ImageNet file) or
  a Keras 3 `.weights.h5` file.

Every source either loads every backbone weight or fails with a message listing what did not
match: a partly pretrained backbone is never returned silently, and neither is a random one when
pretrained weights were asked for.

The TF-slim names (tensorflow/models research/slim `resnet_v2_50`) map onto the Keras layers as

    resnet_v2_50/conv1/{weights,biases}                        -> conv1_conv
    resnet_v2_50/block{b}/unit_{u}/bottleneck_v2/preact/*      -> conv{b+1}_block{u}_preact_bn
        .../shortcut/{weights,biases}                          -> conv{b+1}_block{u}_0_conv
        .../conv{1,2}/weights                                  -> conv{b+1}_block{u}_{1,2}_conv
        .../conv{1,2}/BatchNorm/*                              -> conv{b+1}_block{u}_{1,2}_bn
        .../conv3/{weights,biases}                             -> conv{b+1}_block{u}_3_conv
    resnet_v2_50/postnorm/*                                    -> post_bn
    resnet_v2_50/logits/*, global_step                         -> not used (reported as skipped)

Batch-norm variables are `gamma, beta, moving_mean, moving_variance`, in Keras' weight order;
conv kernels have the same `(kh, kw, in, out)` layout in both. Two architectural differences
remain and are not weights: slim's pool1 is a 3x3/2 'SAME' max pool (on an even map: no padding
before, one row/column after, windows starting at pixel 0), Keras zero-pads one pixel on every
side and pools 'VALID' (windows starting at pixel -1), so the pooled grid is shifted by one
conv1 pixel; and slim's batch-norm epsilon is 1e-5 against Keras' 1.001e-5.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Iterable

import h5py
import keras
import numpy as np
import tensorflow as tf

from common.errors import ModelError

logger = logging.getLogger(__name__)

# Keras' official ImageNet weights for ResNet50V2 without the classifier ("notop"), exactly as
# `keras.applications.ResNet50V2(weights="imagenet", include_top=False)` fetches them. Module
# constants so tests (or a mirror) can point the download elsewhere.
IMAGENET_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
KERAS_WEIGHTS_NAME = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_FILE_HASH = "fac2f116257151a9d068a22e544a4917"  # md5, from keras.applications
KERAS_CACHE_DIR: str | None = None  # None: Keras' default cache, ~/.keras (or $KERAS_HOME)

# The tutorial's checkpoint: resnet_v2_50_2017_04_14.tar.gz from the TF-slim model zoo.
SLIM_CHECKPOINT_NAME = "resnet_v2_50.ckpt"
SLIM_CHECKPOINT_URL = (
    "http://download.tensorflow.org/models/resnet_v2_50_2017_04_14.tar.gz"
)
SLIM_SCOPE = "resnet_v2_50"

PRETRAIN_CHOICES = ("auto", "imagenet", "none")

# Slim checkpoint entries that have no place in a headless backbone.
_SLIM_SKIPPED = re.compile(rf"^({SLIM_SCOPE}/logits/.*|global_step)$")
_BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")
_BLOCK_LAYER = re.compile(r"^conv(\d+)_block(\d+)_(preact_bn|[0-3]_conv|[12]_bn)$")


class PretrainedWeightsError(ModelError, RuntimeError):
    """Backbone weights were asked for but cannot be found, fetched or matched."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_backbone_weights` put into the backbone.

    Attributes:
        source: "none", "imagenet", "keras-weights" or "slim-checkpoint".
        path: the file (or checkpoint prefix) that was read; None for "none".
        requested: the `pretrain` argument as given ("auto", "imagenet", a path, ...).
        num_loaded: backbone variables assigned from the file.
        num_variables: variables in the backbone (all of them are loaded unless source="none").
        skipped: file entries deliberately not used (slim `logits/*`, `global_step`).
    """

    source: str
    path: str | None
    requested: str
    num_loaded: int
    num_variables: int
    skipped: tuple[str, ...] = ()

    @property
    def pretrained(self) -> bool:
        return self.source != "none"

    def summary(self) -> str:
        if not self.pretrained:
            return (f"backbone: random initialisation ({self.num_variables} variables, "
                    f"pretrain={self.requested!r})")
        text = (f"backbone: {self.num_loaded}/{self.num_variables} variables from "
                f"{self.source} {self.path} (pretrain={self.requested!r})")
        if self.skipped:
            text += f"; skipped {len(self.skipped)} unused entries: {', '.join(self.skipped)}"
        return text


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def load_backbone_weights(
    backbone: keras.Model,
    pretrain: str = "auto",
    pretrained_dir: str | os.PathLike = "pretrained_models",
) -> LoadReport:
    """Fill `backbone` (a `keras.applications.ResNet50V2(include_top=False)`) with weights.

    See the module docstring for the values of `pretrain`. Returns a `LoadReport`, also logged.
    Raises `PretrainedWeightsError` when the weights cannot be had or do not match the backbone.
    """
    pretrain = str(pretrain)
    pretrained_dir = os.fspath(pretrained_dir)
    num_variables = len(backbone.weights)

    if pretrain == "none":
        report = LoadReport("none", None, pretrain, 0, num_variables)
    elif pretrain == "imagenet":
        report = _load_keras_file(backbone, _fetch_imagenet(pretrained_dir), "imagenet", pretrain)
    elif pretrain == "auto":
        found = find_pretrained_file(pretrained_dir)
        if found is None:
            logger.info("no backbone weights in %s/; trying Keras' ImageNet weights",
                        pretrained_dir)
            looked = (f"pretrain='auto' found neither {SLIM_CHECKPOINT_NAME} nor "
                      f"{KERAS_WEIGHTS_NAME} in {pretrained_dir}/, and ")
            report = _load_keras_file(
                backbone, _fetch_imagenet(pretrained_dir, looked), "imagenet", pretrain)
        else:
            report = _load_path(backbone, found, pretrain)
    else:
        report = _load_path(backbone, pretrain, pretrain)

    # Only weights actually loaded are news. A random backbone is either a rebuild whose trained
    # weights come next (`SegNet.load`, test.py, draw.py: "random initialisation" would read as
    # a bug there) or a from-scratch run, which train.py announces itself.
    logger.log(logging.INFO if report.pretrained else logging.DEBUG, "%s", report.summary())
    return report


def find_pretrained_file(pretrained_dir: str | os.PathLike) -> str | None:
    """The weights file `auto` would use in `pretrained_dir`: slim checkpoint, else Keras .h5."""
    slim_prefix = os.path.join(os.fspath(pretrained_dir), SLIM_CHECKPOINT_NAME)
    if _is_slim_checkpoint(slim_prefix):
        return slim_prefix
    keras_file = os.path.join(os.fspath(pretrained_dir), KERAS_WEIGHTS_NAME)
    if os.path.isfile(keras_file):
        return keras_file
    return None


def _load_path(backbone: keras.Model, path: str, requested: str) -> LoadReport:
    """Load from an explicit file: slim checkpoint prefix or Keras weights file."""
    if _is_slim_checkpoint(path):
        return load_slim_checkpoint(backbone, path, requested=requested)
    if os.path.isfile(path) and path.endswith(".h5"):
        return _load_keras_file(backbone, path, "keras-weights", requested)
    raise PretrainedWeightsError(
        f"pretrain={path!r} is neither one of {', '.join(PRETRAIN_CHOICES)} nor an existing "
        f"weights file. Valid files: a TF-slim checkpoint prefix such as "
        f"pretrained_models/{SLIM_CHECKPOINT_NAME} (with .index/.data-* files, or the single-file "
        f"V1 format), or a Keras weights file ending in .h5 such as "
        f"pretrained_models/{KERAS_WEIGHTS_NAME}. Use --pretrain none to train from scratch."
    )


def _is_slim_checkpoint(prefix: str) -> bool:
    """True for a V2 checkpoint prefix (`<prefix>.index` exists) or a V1 single-file checkpoint."""
    if os.path.isfile(prefix + ".index"):
        return True
    return os.path.isfile(prefix) and (prefix.endswith(".ckpt") or ".ckpt-" in prefix)


# ---------------------------------------------------------------------------------------------
# ImageNet download
# ---------------------------------------------------------------------------------------------


def _fetch_imagenet(pretrained_dir: str, context: str = "") -> str:
    """Path of Keras' ImageNet notop file, downloaded into the Keras cache when missing."""
    origin = IMAGENET_BASE_URL + KERAS_WEIGHTS_NAME
    if KERAS_CACHE_DIR is not None:
        # get_file silently switches to /tmp/.keras when the cache folder does not exist yet.
        os.makedirs(KERAS_CACHE_DIR, exist_ok=True)
    try:
        return keras.utils.get_file(
            KERAS_WEIGHTS_NAME,
            origin,
            file_hash=IMAGENET_FILE_HASH,
            cache_subdir="models",
            cache_dir=KERAS_CACHE_DIR,
        )
    except Exception as error:  # URLError, HTTPError, a hash mismatch, a timeout...
        raise PretrainedWeightsError(
            f"{context}could not get the ImageNet weights for the ResNet50V2 backbone from {origin} "
            f"({type(error).__name__}: {error}). Without internet access, download "
            f"{KERAS_WEIGHTS_NAME} from {origin} (or the tutorial's TF-slim checkpoint "
            f"{SLIM_CHECKPOINT_NAME} from {SLIM_CHECKPOINT_URL}, unpacked) on another machine "
            f"and put it in {pretrained_dir}/; or train from scratch with --pretrain none "
            f"(pretrain='none')."
        ) from error


# ---------------------------------------------------------------------------------------------
# Keras weights files
# ---------------------------------------------------------------------------------------------


def _load_keras_file(backbone: keras.Model, path: str, source: str, requested: str) -> LoadReport:
    """Load a legacy Keras `.h5` (by layer name) or a Keras 3 `.weights.h5` file."""
    if path.endswith(".weights.h5"):
        # Keras 3 format: Keras itself checks every layer's variable count and shapes.
        try:
            backbone.load_weights(path)
        except ValueError as error:
            raise PretrainedWeightsError(
                f"{path} does not match the ResNet50V2 backbone: {error}") from error
        return LoadReport(source, path, requested, len(backbone.weights), len(backbone.weights))

    arrays = _read_legacy_h5(path)
    targets = {layer.name: layer for layer in backbone.layers if layer.weights}
    problems = []
    for name in sorted(set(targets) - set(arrays)):
        problems.append(f"backbone layer {name} has no weights in the file")
    for name in sorted(set(arrays) - set(targets)):
        problems.append(f"file layer {name} has no backbone layer of that name")
    for name in sorted(set(targets) & set(arrays)):
        expected = [tuple(w.shape) for w in targets[name].weights]
        found = [a.shape for a in arrays[name]]
        if expected != found:
            problems.append(f"layer {name}: backbone expects {expected}, file has {found}")
    if problems:
        raise PretrainedWeightsError(_mismatch_message(path, problems))
    for name, layer in targets.items():
        layer.set_weights(arrays[name])
    return LoadReport(source, path, requested, len(backbone.weights), len(backbone.weights))


def _read_legacy_h5(path: str) -> dict[str, list[np.ndarray]]:
    """{layer name: [arrays in weight order]} from a legacy Keras (2.x) HDF5 weights file.

    Layout: root attribute `layer_names`; one group per layer with attribute `weight_names`
    (e.g. `conv1_conv/kernel:0`) naming its datasets in order. A full-model file keeps the same
    structure under a `model_weights` group.
    """
    def text(value: bytes | str) -> str:
        return value.decode("utf8") if isinstance(value, bytes) else str(value)

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise PretrainedWeightsError(
                    f"{path} is not a Keras weights file: it has no 'layer_names' attribute (a "
                    f"Keras 3 weights file must be named *.weights.h5)")
            arrays = {}
            for layer_name in map(text, group.attrs["layer_names"]):
                layer_group = group[layer_name]
                names = [text(n) for n in layer_group.attrs.get("weight_names", [])]
                if names:
                    arrays[layer_name] = [np.asarray(layer_group[n]) for n in names]
            return arrays
    except OSError as error:
        raise PretrainedWeightsError(f"cannot read {path} as HDF5: {error}") from error


# ---------------------------------------------------------------------------------------------
# TF-slim checkpoints
# ---------------------------------------------------------------------------------------------


def slim_variable_names(backbone: keras.Model) -> dict[str, tuple[str, int]]:
    """{slim variable name: (Keras layer name, index in layer.weights)} for every backbone weight.

    Built from the backbone's own layer names, so every Keras weight has exactly one slim source
    by construction; a layer this function does not know raises (so an unexpected architecture
    cannot be half-mapped).
    """
    mapping: dict[str, tuple[str, int]] = {}

    def add(slim_prefix: str, layer: keras.layers.Layer, names: Iterable[str]) -> None:
        names = tuple(names)
        if len(names) != len(layer.weights):
            raise PretrainedWeightsError(
                f"backbone layer {layer.name} has {len(layer.weights)} weights, the slim mapping "
                f"expects {len(names)} ({', '.join(names)})")
        for index, name in enumerate(names):
            mapping[f"{SLIM_SCOPE}/{slim_prefix}/{name}"] = (layer.name, index)

    conv_names = {1: ("weights",), 2: ("weights", "biases")}
    for layer in backbone.layers:
        if not layer.weights:
            continue
        if layer.name == "conv1_conv":
            add("conv1", layer, ("weights", "biases"))
        elif layer.name == "post_bn":
            add("postnorm", layer, _BN_VARIABLES)
        elif match := _BLOCK_LAYER.match(layer.name):
            stage, unit, part = int(match[1]), int(match[2]), match[3]
            unit_scope = f"block{stage - 1}/unit_{unit}/bottleneck_v2"
            if part == "preact_bn":
                add(f"{unit_scope}/preact", layer, _BN_VARIABLES)
            elif part == "0_conv":
                add(f"{unit_scope}/shortcut", layer, ("weights", "biases"))
            elif part.endswith("_conv"):
                add(f"{unit_scope}/conv{part[0]}", layer, conv_names[len(layer.weights)])
            else:
                add(f"{unit_scope}/conv{part[0]}/BatchNorm", layer, _BN_VARIABLES)
        else:
            raise PretrainedWeightsError(
                f"backbone layer {layer.name} has weights but no TF-slim resnet_v2_50 "
                f"counterpart; the slim mapping only knows keras.applications.ResNet50V2")
    return mapping


def load_slim_checkpoint(
    backbone: keras.Model, prefix: str, *, requested: str | None = None
) -> LoadReport:
    """Assign a TF-slim `resnet_v2_50` checkpoint to the Keras ResNet50V2 `backbone`.

    Checks both directions before assigning anything: every Keras weight needs its slim variable
    with the same shape, and every checkpoint variable needs a Keras weight unless it is one of
    the unused `logits/*` / `global_step` entries. Any problem raises `PretrainedWeightsError`
    listing all of them.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as error:  # DataLossError, NotFoundError, ... from the C++ reader
        raise PretrainedWeightsError(
            f"cannot read the TF-slim checkpoint {prefix}: {error}. Expected the prefix of a "
            f"checkpoint (e.g. pretrained_models/{SLIM_CHECKPOINT_NAME} with its .index/.data-* "
            f"files, or the single V1 file unpacked from {SLIM_CHECKPOINT_URL})") from error
    shapes = {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    mapping = slim_variable_names(backbone)
    layers = {layer.name: layer for layer in backbone.layers}

    problems = []
    for slim_name, (layer_name, index) in sorted(mapping.items()):
        expected = tuple(layers[layer_name].weights[index].shape)
        if slim_name not in shapes:
            problems.append(f"missing in checkpoint: {slim_name} (for Keras {layer_name} "
                            f"weight {index}, shape {expected})")
        elif shapes[slim_name] != expected:
            problems.append(f"shape mismatch: {slim_name} is {shapes[slim_name]}, Keras "
                            f"{layer_name} weight {index} is {expected}")
    skipped = sorted(name for name in shapes if _SLIM_SKIPPED.match(name))
    for name in sorted(set(shapes) - set(mapping) - set(skipped)):
        problems.append(f"no Keras target for checkpoint variable: {name} {shapes[name]}")
    if problems:
        raise PretrainedWeightsError(_mismatch_message(prefix, problems))

    values: dict[str, list] = {}
    for slim_name, (layer_name, index) in mapping.items():
        values.setdefault(layer_name, [None] * len(layers[layer_name].weights))
        values[layer_name][index] = reader.get_tensor(slim_name)
    for layer_name, arrays in values.items():
        layers[layer_name].set_weights(arrays)
    return LoadReport("slim-checkpoint", prefix, requested or prefix, len(mapping),
                      len(backbone.weights), tuple(skipped))


def _mismatch_message(path: str, problems: list[str], limit: int = 40) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return (f"{path} does not match the Keras ResNet50V2 backbone ({len(problems)} problems); "
            f"nothing was loaded:\n  {shown}{more}")
