"""A saved model: a folder holding a ``.keras`` archive and the JSON that rebuilds it.

``save_model`` / ``load_model`` (``SegNet.save`` / ``SegNet.load`` call them) write and read one
such folder, and ``load_model`` names the file and what disagrees when it cannot. Training runs
write their best models through ``ArchiveWriter``, which is fast for repeated saves:

Keras' ``Model.save`` walks the model's object graph and serialises its configuration on every
call, mostly Python work that writes no bytes (benchmarks/save_speed.py). A training run
saves the same architecture again and again (every new best model), so ``ArchiveWriter`` does
the walk once:

1. a copy of the model (``SegNet.clone``) gets a fingerprint in every weight (weight i is
   filled with the value i + 1) and is saved by Keras once: the template archive;
2. in the template's ``model.weights.h5`` each dataset is matched to its weight by that value
   (every weight must be found exactly once, else the writer refuses to exist);
3. each dataset's bytes lie at a fixed offset of that file (HDF5's contiguous layout, which
   Keras uses; any other layout and the writer refuses to exist), so each ``write(weights)``
   streams the archive (``metadata.json``, ``config.json``, ``model.weights.h5``) atomically:
   the template's bytes between the datasets, each weight's own buffer in its place. One pass
   over the weights (the zip's CRC and the file write), no copy of the 100 MB file in memory
   and no HDF5 library call per write: a third of the CPU time of filling a copy through h5py,
   time that a training run's background writes take from its steps. Next to it, the model's
   ``model_config.json``.

The archive is the one Keras would write for those weights (its ``model.weights.h5`` has the
same layout, the config is Keras' own): ``SegNet.load`` and ``keras.saving.load_model`` read
it (tests/test_saving.py compares with a Keras save).
"""
from __future__ import annotations

import datetime
import functools
import io
import json
import logging
import os
import tempfile
import time
import zipfile
import zlib
from typing import TYPE_CHECKING, Any, Sequence

import h5py
import numpy as np

from common.errors import ModelError
from common.files import atomic_write, atomic_write_by_name, atomic_write_json

if TYPE_CHECKING:
    from models.nn import SegNet

__all__ = ["ArchiveWriter", "BEST_MODEL_NAME", "MODEL_CONFIG_NAME", "ModelConfigError",
           "load_model", "model_config_document", "save_model"]

logger = logging.getLogger(__name__)

# A saved model is a folder holding its weights archive and the JSON that rebuilds it; the
# training run's best model is that archive under this name.
BEST_MODEL_NAME = "best_model.keras"
MODEL_CONFIG_NAME = "model_config.json"
# The layout of model_config.json (its "format_version").
MODEL_CONFIG_FORMAT = 1

_CONFIG, _METADATA, _WEIGHTS = "config.json", "metadata.json", "model.weights.h5"


class ModelConfigError(ModelError, ValueError):
    """A saved model does not match what was asked for, or its files are missing, damaged or
    inconsistent."""


class ArchiveWriter:
    """Writes ``.keras`` archives (+ ``model_config.json``) of ``model``'s architecture.

    Args:
        model: a ``SegNet``; its weights are not touched (a clone gets the fingerprints).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        template = model.clone()
        weights = template.keras_model.weights
        if len(weights) >= 2 ** 24:   # float32 represents the fingerprints exactly below
            raise ModelError(f"{len(weights)} weights are too many for fingerprints")
        for index, weight in enumerate(weights):
            weight.assign(np.full(weight.shape, index + 1, weight.dtype))
        with tempfile.TemporaryDirectory(prefix="archive_writer_") as tmp:
            path = os.path.join(tmp, "template.keras")
            template.keras_model.save(path)
            with zipfile.ZipFile(path) as archive:
                self._config = archive.read(_CONFIG)
                self._h5 = archive.read(_WEIGHTS)
        found = self._locate(self._h5, [tuple(w.shape) for w in weights])
        self._regions = self._byte_regions(self._h5, found)
        self._document = functools.partial(model_config_document, template)

    @staticmethod
    def _locate(h5_bytes: bytes, shapes: Sequence[tuple[int, ...]]) -> list[tuple[str, int]]:
        """(dataset path, weight index) for every dataset of the template's weights file."""
        found: list[tuple[str, int]] = []

        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                values = np.asarray(item[()])
                index = int(values.flat[0]) - 1 if values.size else -1
                if not (0 <= index < len(shapes) and values.shape == shapes[index]
                        and np.all(values == index + 1)):
                    raise ModelError(f"the Keras archive holds a dataset {name!r} that is none "
                                     f"of the model's weights: fast saving is not possible")
                found.append((name, index))

        with h5py.File(io.BytesIO(h5_bytes), "r") as h5:
            h5.visititems(visit)
        if sorted(index for _, index in found) != list(range(len(shapes))):
            raise ModelError(f"the Keras archive holds {len(found)} weights for the model's "
                             f"{len(shapes)}: fast saving is not possible")
        return found

    @staticmethod
    def _byte_regions(h5_bytes: bytes, found: Sequence[tuple[str, int]]
                      ) -> list[tuple[int, int, int, np.dtype, tuple[int, ...]]]:
        """(offset, byte count, weight index, dtype, shape) of every weight's dataset in the
        weights file, by offset; ``ModelError`` unless each is stored contiguously, apart."""
        regions = []
        with h5py.File(io.BytesIO(h5_bytes), "r") as h5:
            for name, index in found:
                dataset = h5[name]
                offset, dtype = dataset.id.get_offset(), dataset.dtype
                nbytes = int(np.prod(dataset.shape, dtype=np.int64)) * dtype.itemsize
                if nbytes and (offset is None or dataset.id.get_storage_size() != nbytes
                               or dataset.compression is not None):
                    raise ModelError(f"the Keras archive stores the weight {name!r} in pieces "
                                     f"(not one contiguous block): fast saving is not possible")
                regions.append((int(offset or 0), nbytes, index, dtype, dataset.shape))
        regions.sort()
        for (start, size, *_), (following, *_rest) in zip(regions, regions[1:]):
            if start + size > following:
                raise ModelError("the Keras archive's weights overlap: fast saving is not "
                                 "possible")
        return regions

    def write(self, directory: str | os.PathLike, filename: str, weights: Sequence[np.ndarray],
              *, info: dict[str, Any] | None = None) -> str:
        """Write ``<directory>/<filename>`` with ``weights`` (the model's ``weights`` order,
        host arrays) and ``model_config.json`` (with ``info``); returns the archive's path."""
        import keras   # here: run folders import the names above without TensorFlow

        parts = self._weight_bytes(weights)
        metadata = json.dumps({"keras_version": keras.__version__, "date_saved":
                               datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})
        path = os.path.join(os.fspath(directory), filename)

        def zip_into(fileobj: Any) -> None:
            with zipfile.ZipFile(fileobj, "w") as archive:   # stored, as Keras writes it
                archive.writestr(_METADATA, metadata)
                archive.writestr(_CONFIG, self._config)
                entry = zipfile.ZipInfo(_WEIGHTS, time.localtime()[:6])
                entry.file_size = len(self._h5)   # decides zip64 before the bytes come
                with archive.open(entry, "w") as stream:
                    for part in parts:
                        stream.write(part)

        atomic_write(path, zip_into)
        atomic_write_json(os.path.join(os.fspath(directory), MODEL_CONFIG_NAME),
                          {**self._document(filename), **(info or {})}, sort_keys=True)
        return path

    def _weight_bytes(self, weights: Sequence[np.ndarray]) -> list[memoryview]:
        """The weights file as pieces: template bytes between the datasets, each weight's own
        buffer (no copy when it is contiguous and of the dataset's dtype) in its place."""
        template = memoryview(self._h5)
        parts, position = [], 0
        for offset, nbytes, index, dtype, shape in self._regions:
            value = np.ascontiguousarray(weights[index], dtype=dtype)
            if value.shape != shape:
                raise ModelError(f"weight #{index} has shape {value.shape}, the model's is "
                                 f"{shape}: pass the weights in the order of keras_model.weights")
            parts.append(template[position:offset])
            parts.append(memoryview(value.reshape(-1)).cast("B"))
            position = offset + nbytes
        parts.append(template[position:])
        return parts


# -- a model folder: save, describe, load -----------------------------------------------------

def model_config_document(model: SegNet,
                          filename: str = BEST_MODEL_NAME) -> dict[str, Any]:
    """What ``model_config.json`` holds for ``model`` saved as ``filename``: enough to rebuild
    it (class and config) plus where its weights came from."""
    import keras
    import tensorflow as tf

    return {
        "format_version": MODEL_CONFIG_FORMAT,
        "class_name": type(model).__name__,
        "config": model.get_config(),
        "weights_file": filename,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        **model.provenance(),
    }


def save_model(model: SegNet, directory: str | os.PathLike, filename: str = BEST_MODEL_NAME, *,
               info: dict[str, Any] | None = None) -> str:
    """Write ``<directory>/<filename>`` (Keras' own ``.keras`` archive) and
    ``model_config.json`` (with ``info``, e.g. the epoch of a best model), each atomically
    (``common.files``): a crash mid-save never leaves a truncated file where the last good one
    was. Returns the archive's path."""
    if not filename.endswith(".keras"):
        raise ValueError(f"filename must end with .keras, got {filename!r}")
    directory = os.fspath(directory)
    path = os.path.join(directory, filename)
    # Keras writes the archive by path, and the name must end with .keras.
    atomic_write_by_name(path, lambda tmp: model.keras_model.save(tmp, overwrite=True))
    atomic_write_json(os.path.join(directory, MODEL_CONFIG_NAME),
                      {**model_config_document(model, filename), **(info or {})},
                      sort_keys=True)
    return path


def load_model(directory: str | os.PathLike, filename: str | None = None, *,
               expected_num_classes: int | None = None,
               input_shape: Sequence[int | None] | None = None) -> SegNet:
    """Rebuild the model ``model_config.json`` describes and load its ``.keras`` weights.

    No pretrained backbone weights are needed (the model is rebuilt with pretrain="none").
    ``expected_num_classes`` / ``input_shape``, when given, must agree with the saved config.
    ``ModelConfigError`` names the file and both descriptions on any disagreement (including
    weights saved from another model than the JSON describes), and names the file when the
    JSON is missing, not JSON or holds values of the wrong type, or the archive is damaged.
    """
    from models.nn import SegNet   # here: nn.py imports this module, and TensorFlow

    directory = os.fspath(directory)
    config_path = os.path.join(directory, MODEL_CONFIG_NAME)
    known = SegNet.registered()
    class_name, config, document = _read_model_config(config_path, known)
    described = _describe_config(class_name, config)
    if expected_num_classes is not None and int(expected_num_classes) != config["num_classes"]:
        raise ModelConfigError(f"{config_path} describes {described}, but a model with "
                               f"{expected_num_classes} classes was requested")
    if input_shape is not None and tuple(input_shape) != tuple(config["input_shape"]):
        raise ModelConfigError(f"{config_path} describes {described}, but input shape "
                               f"{_shape_text(tuple(input_shape))} was requested")
    weights_path = os.path.join(directory, filename or document.get("weights_file",
                                                                    BEST_MODEL_NAME))
    if not os.path.isfile(weights_path):
        raise ModelConfigError(f"{weights_path} not found (model_config.json in {directory} "
                               f"describes {described})")
    try:
        model = known[class_name].from_config(config)
    except ModelConfigError:
        raise
    except (TypeError, ValueError, KeyError) as error:   # a value of the wrong type or range
        raise ModelConfigError(f"{config_path}: cannot rebuild {described} from its config "
                               f"({type(error).__name__}: {error}); {_DAMAGED}") from error
    _load_keras_weights(model, weights_path, described)
    logger.info("loaded %s from %s", described, weights_path)
    return model


_DAMAGED = ("the file is damaged or was edited by hand: restore the one train.py wrote "
            "(or retrain)")


def _read_model_config(config_path: str, known: dict[str, type]
                       ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(class name, config, whole document) of a ``model_config.json``, each checked."""
    if not os.path.isfile(config_path):
        raise ModelConfigError(
            f"{config_path} not found: a model directory needs the model_config.json that "
            f"SegNet.save (train.py) writes next to the .keras weights")
    try:
        with open(config_path, encoding="utf-8") as f:
            document = json.load(f)
    except ValueError as error:   # JSONDecodeError, UnicodeDecodeError
        raise ModelConfigError(f"{config_path} is not valid JSON ({error}); {_DAMAGED}") \
            from error
    class_name = document.get("class_name") if isinstance(document, dict) else None
    if class_name not in known:
        raise ModelConfigError(f"{config_path}: unknown model class {class_name!r}; known: "
                               f"{', '.join(sorted(known))}")
    config = document.get("config")
    problem = _config_type_problem(config)
    if problem is not None:
        raise ModelConfigError(f"{config_path}: {problem}; {_DAMAGED}")
    return class_name, config, document


def _load_keras_weights(model: SegNet, path: str, described: str) -> None:
    """Load a ``.keras`` archive into ``model.keras_model``, checking every variable matched.

    Keras checks each layer's variable count and shapes; the total count checked here also
    catches arrays in the file that no layer claimed. The archive's ``model.weights.h5`` is
    extracted first: h5py reading through a zip stream is about 10x slower.
    """
    with tempfile.TemporaryDirectory(prefix="segnet_load_") as tmp:
        try:
            with zipfile.ZipFile(path) as archive:
                saved_summary = _describe_keras_archive(archive)
                # The same layout as a standalone .weights.h5 written by save_weights.
                weights_h5 = archive.extract(_WEIGHTS, tmp)
            with h5py.File(weights_h5, "r") as h5:
                num_saved = _count_h5_arrays(h5)
        except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error,
                ValueError) as error:   # ValueError: its config.json is not JSON
            raise ModelConfigError(
                f"{path} is not a readable .keras archive ({type(error).__name__}: {error}): "
                f"the file is truncated or damaged; restore it or retrain") from error
        mismatch = (f"{path} was saved from a different model ({saved_summary}) than "
                    f"model_config.json describes ({described})")
        try:
            model.keras_model.load_weights(weights_h5)
        except ValueError as error:
            raise ModelConfigError(f"{mismatch}: {error}") from error
    if num_saved != len(model.keras_model.weights):
        raise ModelConfigError(f"{mismatch}: the file holds {num_saved} arrays, the model has "
                               f"{len(model.keras_model.weights)} variables")


def _shape_text(shape: Sequence[int | None]) -> str:
    return "x".join("?" if s is None else str(s) for s in shape)


def _config_type_problem(config: Any) -> str | None:
    """What is wrong with the types of the fields `load` reads before rebuilding the model
    (``num_classes``, ``input_shape``), or None."""
    if not isinstance(config, dict):
        return f"its 'config' must be an object, got {type(config).__name__}"
    classes = config.get("num_classes")
    if isinstance(classes, bool) or not isinstance(classes, int):
        return f"'num_classes' must be an integer, got {classes!r}"
    shape = config.get("input_shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(s is None or (isinstance(s, int) and not isinstance(s, bool))
                       for s in shape)):
        return f"'input_shape' must be a list [H, W, 3] of integers (or null), got {shape!r}"
    return None


def _describe_config(class_name: str, config: dict[str, Any]) -> str:
    text = (f"a {class_name} with {config['num_classes']} classes and input "
            f"{_shape_text(config['input_shape'])}")
    if config.get("kernel_size") is not None:
        text += f", GCN kernel {tuple(config['kernel_size'])}"
    return text


def _describe_keras_archive(archive: zipfile.ZipFile) -> str:
    """Classes (filters of the 'logits' layer) and GCN kernel recorded in a .keras config."""
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            config = node.get("config")
            if isinstance(config, dict):
                if config.get("name") == "logits" and "filters" in config:
                    found["classes"] = config["filters"]
                if node.get("class_name") == "GlobalConvModule" and "kernel_size" in config:
                    found.setdefault("kernel", tuple(config["kernel_size"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(archive.read("config.json")))
    parts = [f"{found['classes']} classes" if "classes" in found else "unknown classes"]
    if "kernel" in found:
        parts.append(f"GCN kernel {found['kernel']}")
    return ", ".join(parts)


def _count_h5_arrays(group: h5py.Group) -> int:
    count = 0

    def visit(_name: str, item: Any) -> None:
        nonlocal count
        count += isinstance(item, h5py.Dataset)

    group.visititems(visit)
    return count


