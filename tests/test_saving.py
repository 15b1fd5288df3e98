"""The fast archive writer (models/saving.py) writes what Keras' own save writes."""
from __future__ import annotations

import io
import json
import re
import zipfile

import h5py
import keras
import numpy as np
import pytest

from common.errors import ModelError
from models.nn import GCN, SegNet
from models.saving import ArchiveWriter


@pytest.fixture(scope="module")
def gcn():
    keras.utils.set_random_seed(3)
    return GCN((64, 64, 3), 3, pretrain="none", bn_momentum=0.9)


@pytest.fixture(scope="module")
def writer(gcn):
    """The writer of ``gcn``'s archives (building one clones and saves the GCN once)."""
    return ArchiveWriter(gcn)


@pytest.fixture(scope="module")
def shifted(gcn):
    """``(weights, model)``: ``_shifted_weights(gcn)`` and a clone of ``gcn`` holding them."""
    weights = _shifted_weights(gcn)
    model = gcn.clone()
    model.keras_model.set_weights(weights)
    return weights, model


def _h5_datasets(archive_path) -> dict[str, np.ndarray]:
    """Every dataset of the archive's model.weights.h5, by its HDF5 path."""
    with zipfile.ZipFile(archive_path) as archive:
        raw = archive.read("model.weights.h5")
    found = {}
    with h5py.File(io.BytesIO(raw), "r") as h5:
        h5.visititems(lambda name, item: found.__setitem__(name, np.asarray(item[()]))
                      if isinstance(item, h5py.Dataset) else None)
    return found


def _without_counters(config: str) -> str:
    """Keras numbers the layers the backbone leaves unnamed per model built (input_layer_1,
    max_pooling2d_3, ...): the writer's template and the reference are different builds."""
    return re.sub(r'"(input_layer|max_pooling2d)_\d+"', r'"\1"', config)


def _shifted_weights(model: SegNet) -> list[np.ndarray]:
    """The model's weights, each changed by a different amount (not the values it holds)."""
    return [np.asarray(w.numpy()) + 0.25 * (i + 1) for i, w in enumerate(model.keras_model.weights)]


def test_archive_holds_what_a_keras_save_of_the_same_weights_holds(gcn, writer, shifted,
                                                                  tmp_path):
    weights, reference = shifted
    before = [np.asarray(w.numpy()) for w in gcn.keras_model.weights]
    (tmp_path / "fast").mkdir()
    fast = writer.write(tmp_path / "fast", "best.keras", weights,
                        info={"training": {"epoch": 4}})
    # The writer never touches the model it writes for.
    for old, now in zip(before, gcn.keras_model.weights):
        np.testing.assert_array_equal(old, now.numpy())

    reference.save(tmp_path / "keras", "best.keras", info={"training": {"epoch": 4}})

    ours, theirs = _h5_datasets(fast), _h5_datasets(tmp_path / "keras" / "best.keras")
    assert sorted(ours) == sorted(theirs) and len(ours) == len(gcn.keras_model.weights)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    with zipfile.ZipFile(fast) as a, zipfile.ZipFile(tmp_path / "keras" / "best.keras") as b:
        configs = [_without_counters(archive.read("config.json").decode()) for archive in (a, b)]
    assert json.loads(configs[0]) == json.loads(configs[1])
    documents = [json.loads((tmp_path / d / "model_config.json").read_text())
                 for d in ("fast", "keras")]
    assert documents[0] == documents[1] and documents[0]["training"] == {"epoch": 4}


def test_written_archive_loads_with_segnet_and_keras_and_predicts_as_the_weights_say(
        writer, shifted, tmp_path):
    weights, expected_model = shifted
    writer.write(tmp_path, "model.keras", weights)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)

    expected = expected_model.keras_model(images, training=False).numpy()

    loaded = SegNet.load(tmp_path, "model.keras")
    np.testing.assert_array_equal(loaded.keras_model(images, training=False).numpy(), expected)
    plain = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(plain(images, training=False).numpy(), expected, rtol=0, atol=0)


def test_a_template_dataset_that_is_no_weight_is_refused(gcn):
    # Two weights of one shape: the template's datasets must each name a weight exactly once.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["layers/a/vars/0"] = np.full((2, 2), 1, np.float32)
        h5["layers/b/vars/0"] = np.full((2, 2), 1, np.float32)     # weight 1 again
    with pytest.raises(ModelError, match="2 weights for the model's 2"):
        ArchiveWriter._locate(buffer.getvalue(), [(2, 2), (2, 2)])

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["layers/a/vars/0"] = np.full((2, 2), 1, np.float32)
        h5["layers/b/vars/0"] = np.full((3,), 0, np.float32)        # an extra, unknown array
    with pytest.raises(ModelError, match="none of the model's weights"):
        ArchiveWriter._locate(buffer.getvalue(), [(2, 2)])


def test_the_streamed_weights_file_is_the_template_filled_by_hdf5_itself(writer, shifted,
                                                                        tmp_path):
    # write() puts each weight's bytes at its dataset's offset; HDF5 writing the same values
    # into the template's datasets must give the very same file.
    weights, _ = shifted
    path = writer.write(tmp_path, "model.keras", weights)
    buffer = io.BytesIO(writer._h5)
    with h5py.File(buffer, "r+") as h5:
        for name, index in ArchiveWriter._locate(writer._h5, [w.shape for w in weights]):
            h5[name][...] = weights[index]
    with zipfile.ZipFile(path) as archive:
        assert archive.read("model.weights.h5") == buffer.getvalue()
        assert archive.testzip() is None                     # every CRC holds


def test_a_template_weight_stored_in_chunks_is_refused():
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_dataset("layers/a/vars/0", data=np.full((4, 4), 1, np.float32), chunks=(2, 2))
    found = ArchiveWriter._locate(buffer.getvalue(), [(4, 4)])
    with pytest.raises(ModelError, match="'layers/a/vars/0' in pieces"):
        ArchiveWriter._byte_regions(buffer.getvalue(), found)


def test_weights_of_the_wrong_shape_are_refused_before_anything_is_written(writer, shifted,
                                                                          tmp_path):
    weights = list(shifted[0])
    first = next(i for i, w in enumerate(weights) if w.ndim == 4)
    weights[first] = weights[first].reshape(-1)              # same bytes, wrong shape
    with pytest.raises(ModelError, match=f"weight #{first} has shape"):
        writer.write(tmp_path, "model.keras", weights)
    assert list(tmp_path.iterdir()) == []
