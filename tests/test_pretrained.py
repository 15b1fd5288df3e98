"""Backbone weight loading (models/pretrained.py): slim checkpoints, Keras files, ImageNet.

Every weights file here is written by the test itself from random values; nothing is
downloaded. The ImageNet path is exercised against a local http.server on 127.0.0.1.
"""
import functools
import hashlib
import http.server
import shutil
import socket
import sys
import threading
import warnings

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from models import pretrained
from models.pretrained import PretrainedWeightsError, load_backbone_weights

# Written out independently of models/pretrained.py: slim resnet_v2_50 has 3, 4, 6, 3 units.
UNITS = {1: 3, 2: 4, 3: 6, 4: 3}
BN = ("gamma", "beta", "moving_mean", "moving_variance")


def expected_slim_table():
    """{slim name: (keras layer, weight index)} as the slim and Keras sources define them."""
    table = {"resnet_v2_50/conv1/weights": ("conv1_conv", 0),
             "resnet_v2_50/conv1/biases": ("conv1_conv", 1)}
    for i, v in enumerate(BN):
        table[f"resnet_v2_50/postnorm/{v}"] = ("post_bn", i)
    for block, units in UNITS.items():
        for unit in range(1, units + 1):
            slim = f"resnet_v2_50/block{block}/unit_{unit}/bottleneck_v2"
            keras_name = f"conv{block + 1}_block{unit}"
            for i, v in enumerate(BN):
                table[f"{slim}/preact/{v}"] = (f"{keras_name}_preact_bn", i)
                table[f"{slim}/conv1/BatchNorm/{v}"] = (f"{keras_name}_1_bn", i)
                table[f"{slim}/conv2/BatchNorm/{v}"] = (f"{keras_name}_2_bn", i)
            table[f"{slim}/conv1/weights"] = (f"{keras_name}_1_conv", 0)
            table[f"{slim}/conv2/weights"] = (f"{keras_name}_2_conv", 0)
            table[f"{slim}/conv3/weights"] = (f"{keras_name}_3_conv", 0)
            table[f"{slim}/conv3/biases"] = (f"{keras_name}_3_conv", 1)
            if unit == 1:  # projection shortcut in the first unit of each block
                table[f"{slim}/shortcut/weights"] = (f"{keras_name}_0_conv", 0)
                table[f"{slim}/shortcut/biases"] = (f"{keras_name}_0_conv", 1)
    return table


def new_backbone():
    return keras.applications.ResNet50V2(include_top=False, weights=None,
                                         input_shape=(None, None, 3))


@pytest.fixture(scope="module")
def backbone():
    return new_backbone()


@pytest.fixture(scope="module")
def slim_values(backbone):
    """Random values under slim names, shaped like the Keras weights, plus the unused extras."""
    rng = np.random.default_rng(0)
    values = {}
    for name, (layer, index) in expected_slim_table().items():
        shape = backbone.get_layer(layer).weights[index].shape
        values[name] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    values["resnet_v2_50/logits/weights"] = rng.normal(size=(1, 1, 2048, 1001)).astype(np.float32)
    values["resnet_v2_50/logits/biases"] = np.zeros(1001, np.float32)
    values["global_step"] = np.array(12345, np.int64)
    return values


def write_checkpoint(prefix, values, v1=False):
    """Write exactly the given names: SaveV2 (prefix.index + .data) or the V1 single file."""
    names = sorted(values)
    tensors = [tf.constant(values[n]) for n in names]
    if v1:
        tf.raw_ops.Save(filename=prefix, tensor_names=names, data=tensors)
    else:
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=tensors)
    return prefix


def write_legacy_h5(path, model):
    """A Keras 2 style weights file, laid out like keras-applications' *_notop.h5 files."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for name, weight in zip(names, layer.weights):
                group.create_dataset(name, data=weight.numpy())
    return path


@pytest.fixture(scope="module")
def source_h5(tmp_path_factory):
    """``(source, path)``: another random backbone and its weights written once as a Keras 2
    notop file; tests copy the file."""
    source = new_backbone()
    path = tmp_path_factory.mktemp("source") / pretrained.KERAS_WEIGHTS_NAME
    return source, write_legacy_h5(str(path), source)


def assert_backbone_equals_slim(backbone, values):
    for name, (layer, index) in expected_slim_table().items():
        np.testing.assert_array_equal(
            backbone.get_layer(layer).weights[index].numpy(), values[name], err_msg=name)


@pytest.mark.parametrize("v1", [False, True], ids=["v2-index-data", "v1-single-file"])
def test_slim_checkpoint_fills_every_backbone_weight(tmp_path, backbone, slim_values, v1):
    prefix = write_checkpoint(str(tmp_path / "resnet_v2_50.ckpt"), slim_values, v1=v1)
    listed = dict(tf.train.list_variables(prefix))
    assert set(listed) == set(slim_values) and len(listed) == 273  # the real file's count
    report = load_backbone_weights(backbone, prefix, tmp_path)
    assert (report.source, report.num_loaded) == ("slim-checkpoint", len(backbone.weights))
    assert len(backbone.weights) == len(expected_slim_table()) == 270
    assert report.skipped == ("global_step", "resnet_v2_50/logits/biases",
                              "resnet_v2_50/logits/weights")
    assert_backbone_equals_slim(backbone, slim_values)


def test_auto_prefers_the_slim_checkpoint_in_pretrained_dir(tmp_path, backbone, slim_values,
                                                             source_h5):
    write_checkpoint(str(tmp_path / "resnet_v2_50.ckpt"), slim_values)
    shutil.copy(source_h5[1], tmp_path)
    report = load_backbone_weights(backbone, "auto", tmp_path)
    assert report.source == "slim-checkpoint" and report.requested == "auto"
    assert report.path == str(tmp_path / "resnet_v2_50.ckpt")
    assert_backbone_equals_slim(backbone, slim_values)


def test_slim_mismatches_fail_loudly_in_both_directions(tmp_path, slim_values, backbone):
    values = dict(slim_values)
    del values["resnet_v2_50/block3/unit_4/bottleneck_v2/conv2/weights"]
    values["resnet_v2_50/block3/unit_4/bottleneck_v2/conv2/weights_typo"] = np.zeros(3, np.float32)
    values["resnet_v2_50/postnorm/gamma"] = np.ones(1024, np.float32)
    prefix = write_checkpoint(str(tmp_path / "bad.ckpt"), values)
    target = backbone
    before = target.get_layer("conv1_conv").kernel.numpy().copy()
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(target, prefix, tmp_path)
    message = str(error.value)
    assert "3 problems" in message and "nothing was loaded" in message
    assert ("missing in checkpoint: resnet_v2_50/block3/unit_4/bottleneck_v2/conv2/weights "
            "(for Keras conv4_block4_2_conv weight 0, shape (3, 3, 256, 256))") in message
    assert "no Keras target for checkpoint variable: resnet_v2_50/block3/unit_4/" in message
    assert "shape mismatch: resnet_v2_50/postnorm/gamma is (1024,), Keras post_bn" in message
    np.testing.assert_array_equal(target.get_layer("conv1_conv").kernel.numpy(), before)


def test_keras_h5_file_loads_by_layer_name(tmp_path, backbone, source_h5):
    source = source_h5[0]
    path = shutil.copy(source_h5[1], tmp_path)
    report = load_backbone_weights(backbone, "auto", tmp_path)  # no slim ckpt: the .h5
    assert (report.source, report.path) == ("keras-weights", path)
    for ours, theirs in zip(backbone.weights, source.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_keras_h5_with_missing_layer_is_rejected(tmp_path, backbone, source_h5):
    path = shutil.copy(source_h5[1], tmp_path / "partial.h5")
    with h5py.File(path, "a") as f:
        names = [n for n in f.attrs["layer_names"] if n != b"post_bn"]
        f.attrs["layer_names"] = np.array(names)
    with pytest.raises(PretrainedWeightsError, match="backbone layer post_bn has no weights"):
        load_backbone_weights(backbone, path, tmp_path)


def test_unknown_pretrain_value_names_the_choices(tmp_path, backbone):
    with pytest.raises(PretrainedWeightsError, match="auto, imagenet, none") as error:
        load_backbone_weights(backbone, "imagnet", tmp_path)
    assert "--pretrain none" in str(error.value)


def test_none_keeps_random_weights(tmp_path, backbone):
    target = backbone
    before = [w.numpy().copy() for w in target.weights]
    report = load_backbone_weights(target, "none", tmp_path)
    assert not report.pretrained and report.num_loaded == 0
    for w, b in zip(target.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


@pytest.fixture
def local_imagenet(tmp_path, monkeypatch, source_h5):
    """Serve a test-written notop file over http on 127.0.0.1; point the module at it."""
    served = tmp_path / "served"
    served.mkdir()
    source = source_h5[0]
    path = shutil.copy(source_h5[1], served)
    with open(path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(pretrained, "IMAGENET_BASE_URL",
                        f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setattr(pretrained, "IMAGENET_FILE_HASH", md5)
    monkeypatch.setattr(pretrained, "KERAS_CACHE_DIR", str(tmp_path / "keras_home"))
    yield source
    server.shutdown()
    server.server_close()


def test_imagenet_download_from_local_server(tmp_path, local_imagenet, backbone):
    target = backbone
    empty_dir = tmp_path / "pretrained_models"
    empty_dir.mkdir()
    report = load_backbone_weights(target, "auto", empty_dir)  # nothing local -> imagenet
    cached = tmp_path / "keras_home" / "models" / pretrained.KERAS_WEIGHTS_NAME
    assert (report.source, report.path) == ("imagenet", str(cached)) and cached.is_file()
    for ours, theirs in zip(target.weights, local_imagenet.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_imagenet_hash_mismatch_is_an_error(tmp_path, local_imagenet, monkeypatch, backbone):
    monkeypatch.setattr(pretrained, "IMAGENET_FILE_HASH", "0" * 32)
    with pytest.raises(PretrainedWeightsError, match="could not get the ImageNet weights"):
        load_backbone_weights(backbone, "imagenet", tmp_path)


@pytest.mark.parametrize("pretrain", ["imagenet", "auto"])
def test_offline_imagenet_says_what_to_download_and_how_to_go_without(
        tmp_path, monkeypatch, pretrain, backbone):
    with socket.socket() as s:  # a port nobody listens on: connection refused, like offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(pretrained, "IMAGENET_BASE_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setattr(pretrained, "KERAS_CACHE_DIR", str(tmp_path / "keras_home"))
    with pytest.raises(PretrainedWeightsError) as error:
        load_backbone_weights(backbone, pretrain, "pretrained_models_here")
    message = str(error.value)
    assert f"download {pretrained.KERAS_WEIGHTS_NAME} from http://127.0.0.1:{port}/" in message
    assert "put it in pretrained_models_here/" in message
    assert "resnet_v2_50.ckpt" in message and "--pretrain none" in message
    if pretrain == "auto":
        assert message.startswith("pretrain='auto' found neither resnet_v2_50.ckpt nor "
                                  f"{pretrained.KERAS_WEIGHTS_NAME} in pretrained_models_here/")


# ---------------------------------------------------------------------------------------------
# Against the real TF-slim resnet_v2_50 graph (needs the dev extras tf-slim and tf-keras).
# ---------------------------------------------------------------------------------------------


def _import_slim_resnet_v2():
    """tf_slim's batch_norm imports `tf_keras.legacy_tf_layers`, which tf-keras now keeps under
    `tf_keras.src`; alias the two modules it needs, then import slim's resnet_v2."""
    pytest.importorskip("tf_keras")
    tf_slim = pytest.importorskip("tf_slim")
    import tf_keras.src.legacy_tf_layers as legacy
    import tf_keras.src.legacy_tf_layers.normalization as legacy_normalization

    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy)
    sys.modules.setdefault("tf_keras.legacy_tf_layers.normalization", legacy_normalization)
    from tf_slim.nets import resnet_v2

    return tf_slim, resnet_v2


@pytest.fixture(scope="module")
def slim_network(tmp_path_factory):
    """slim resnet_v2_50 (1001 classes, as the zoo checkpoint) with random weights and random
    batch-norm statistics, saved with tf.compat.v1 Saver; its graph stays open for feeding."""
    slim, resnet_v2 = _import_slim_resnet_v2()
    prefix = str(tmp_path_factory.mktemp("slim") / "resnet_v2_50.ckpt")
    graph = tf.Graph()
    with graph.as_default(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`layer.apply` is deprecated")
        images = tf.compat.v1.placeholder(tf.float32, (None, 64, 64, 3))
        with slim.arg_scope(resnet_v2.resnet_arg_scope()):
            _, end_points = resnet_v2.resnet_v2_50(images, num_classes=1001, is_training=False)
        tf.compat.v1.train.get_or_create_global_step()
        rng = np.random.default_rng(1)
        assigns = []
        for variable in tf.compat.v1.global_variables():
            shape = variable.shape.as_list()
            if variable.name.endswith(("moving_variance:0", "gamma:0")):
                value = rng.uniform(0.5, 1.5, shape)
            elif variable.name.endswith(("moving_mean:0", "beta:0", "biases:0")):
                value = rng.normal(0.0, 0.2, shape)
            else:
                continue  # kernels keep slim's own initialiser
            assigns.append(tf.compat.v1.assign(variable, value.astype(np.float32)))
        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
        session.run(assigns)
        tf.compat.v1.train.Saver().save(session, prefix, write_meta_graph=False)
    yield {"prefix": prefix, "graph": graph, "session": session, "images": images,
           "end_points": end_points}
    session.close()


@pytest.fixture(scope="module")
def keras_from_slim(slim_network):
    model = new_backbone()
    report = load_backbone_weights(model, slim_network["prefix"], "unused")
    assert report.num_loaded == 270 and len(report.skipped) == 3
    return model


def _slim_run(slim_network, fetch, feed):
    graph = slim_network["graph"]
    with graph.as_default():
        fetch_tensor = graph.get_tensor_by_name(fetch)
        feed_dict = {graph.get_tensor_by_name(k) if isinstance(k, str) else k: v
                     for k, v in feed.items()}
        return slim_network["session"].run(fetch_tensor, feed_dict)


def _keras_outputs(model, names, x):
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    outputs = probe(x, training=False)
    return [t.numpy() for t in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def test_slim_graph_matches_keras_conv1_and_units(slim_network, keras_from_slim):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(2, 64, 64, 3)).astype(np.float32)  # preprocessed images
    ep = slim_network["end_points"]

    (conv1,) = _keras_outputs(keras_from_slim, ["conv1_conv"], x)
    slim_conv1 = _slim_run(slim_network, ep["resnet_v2_50/conv1"].name,
                           {slim_network["images"]: x})
    np.testing.assert_allclose(conv1, slim_conv1, rtol=1e-4, atol=1e-4)

    # For each block, feed the same input into the second unit (identity shortcut) and the last
    # unit (stride 2 in blocks 1-3) of both networks.
    for block, units in UNITS.items():
        for unit in (2, units):
            keras_in = f"conv{block + 1}_block{unit - 1}_out"
            keras_out = f"conv{block + 1}_block{unit}_out"
            unit_in, unit_out = _keras_outputs(keras_from_slim, [keras_in, keras_out], x)
            slim_in = ep[f"resnet_v2_50/block{block}/unit_{unit - 1}/bottleneck_v2"]
            slim_out = ep[f"resnet_v2_50/block{block}/unit_{unit}/bottleneck_v2"]
            got = _slim_run(slim_network, slim_out.name, {slim_in: unit_in})
            assert got.shape == unit_out.shape
            scale = np.abs(unit_out).max()
            # slim's batch-norm epsilon is 1e-5, Keras' 1.001e-5: agreement to ~1e-5 relative.
            np.testing.assert_allclose(got / scale, unit_out / scale, atol=1e-4,
                                       err_msg=f"block{block}/unit_{unit}")


def test_pool1_padding_difference_is_a_one_pixel_shift(slim_network, keras_from_slim):
    """slim: 3x3/2 SAME max pool (32x32 map: pad 0 before, 1 after); Keras: zero-pad 1 on every
    side, VALID. Keras' windows start one conv1 pixel earlier and see zeros at the border."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(2, 64, 64, 3)).astype(np.float32)
    conv1, pool_keras = _keras_outputs(keras_from_slim, ["conv1_conv", "pool1_pool"], x)
    graph = slim_network["graph"]
    pool_name = [op.name for op in graph.get_operations() if op.name.endswith("pool1/MaxPool")][0]
    pool_slim = _slim_run(slim_network, pool_name + ":0", {slim_network["images"]: x})
    assert pool_slim.shape == pool_keras.shape == (2, 16, 16, 64)

    # Each side reproduced by hand from the same conv1 map (numpy, 3x3 windows, stride 2).
    def max_pool(padded, start):
        return np.stack([np.stack([padded[:, start + 2 * i:start + 2 * i + 3,
                                          start + 2 * j:start + 2 * j + 3].max(axis=(1, 2))
                                   for j in range(16)], axis=1) for i in range(16)], axis=1)

    neg_inf = np.pad(conv1, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    zeros = np.pad(conv1, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=0.0)
    np.testing.assert_allclose(pool_slim, max_pool(neg_inf, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pool_keras, max_pool(zeros, 0), rtol=1e-5, atol=1e-5)

    # Quantified: the shifted grid changes most pooled values (not just the border).
    changed = np.mean(~np.isclose(pool_slim, pool_keras, rtol=1e-5, atol=1e-5))
    relative = np.linalg.norm(pool_slim - pool_keras) / np.linalg.norm(pool_slim)
    print(f"pool1: {changed:.1%} of values differ, relative L2 difference {relative:.3f}")
    assert changed > 0.5 and relative > 0.05
