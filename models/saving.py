"""Repeated saves of one model: ``.keras`` archives written from host arrays, fast.

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
import io
import json
import os
import tempfile
import time
import zipfile
from typing import Any, Sequence

import h5py
import keras
import numpy as np

from common.errors import ModelError
from common.files import atomic_write, atomic_write_json

__all__ = ["ArchiveWriter", "BEST_MODEL_NAME", "MODEL_CONFIG_NAME"]

# A saved model is a folder holding its weights archive and the JSON that rebuilds it; the
# training run's best model is that archive under this name.
BEST_MODEL_NAME = "best_model.keras"
MODEL_CONFIG_NAME = "model_config.json"

_CONFIG, _METADATA, _WEIGHTS = "config.json", "metadata.json", "model.weights.h5"


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
        self._document = template.config_document

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
