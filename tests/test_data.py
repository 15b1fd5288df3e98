"""The data layer's readers: listing (datasets/examples.py), per-file loading (loading.py),
label formats in the readers (label_format.py), header-only checks (validation.py), read_data,
converters and DataSet (data.py), tf.data (pipeline.py).

Every fixture is a handful of tiny PNG/JPEG files written with cv2 into tmp_path; expected
pixels are worked out by hand in the comments.
"""
import json
import logging
import os

import cv2
import imagefiles
import numpy as np
import pytest

from common.errors import ConfigError, DataError
from datasets import loading
from datasets.augment import random_flip_scale_crop
from datasets.classes import IGNORE_LABEL, PET_CLASS_NAMES
from datasets.data import DataSet, from_one_hot, read_data, to_one_hot
from datasets.examples import (IMAGE_EXTENSIONS, Example, MissingFilesError, check_unique_stems,
                               list_examples)
from datasets.label_format import ClassMismatchError, check_model_classes, resolve_label_format
from datasets.labels import DataFormatError, LabelFormat, default_palette
from datasets.loading import load_example, load_examples, load_image, load_label
from datasets.oxford import TRIMAP_BACKGROUND, TRIMAP_FOREGROUND, TRIMAP_UNKNOWN
from datasets.pipeline import epoch_order, make_tf_dataset
from datasets.validation import iter_labels, validate_examples


def rgb_pattern(height, width):
    """A distinct RGB value per pixel: R = 10*y + x, G = 100 + y, B = 200 + x."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([10 * yy + xx, 100 + yy, 200 + xx], axis=-1).astype(np.uint8)


def write_image(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))  # cv2 writes BGR


def write_mask(path, trimap):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), trimap)


def random_trimap(rng, height, width):
    return rng.integers(1, 4, size=(height, width), dtype=np.uint8)


@pytest.fixture
def split(tmp_path):
    """Four labelled examples of different sizes (odd/even, smaller/larger than 6x6), a cat and
    dogs, PNG and JPEG with upper-case extensions, plus junk that must be ignored."""
    rng = np.random.default_rng(0)
    for name, (height, width) in {"Abyssinian_1.png": (7, 9), "beagle_2.PNG": (4, 4),
                                  "Bombay_3.png": (10, 3), "pug_4.JPG": (8, 8)}.items():
        write_image(tmp_path / "images" / name, rgb_pattern(height, width))
        stem = os.path.splitext(name)[0]
        write_mask(tmp_path / "masks" / f"{stem}.png", random_trimap(rng, height, width))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "._Abyssinian_1.png").write_bytes(b"macOS resource fork junk")
    (tmp_path / "images" / "folder.jpg").mkdir()
    return tmp_path


# ---------------------------------------------------------------------------------------------
# list_examples
# ---------------------------------------------------------------------------------------------

def test_list_examples_sorted_case_insensitive_extensions_junk_ignored(split):
    examples = list_examples(split)
    assert [e.name for e in examples] == ["Abyssinian_1.png", "Bombay_3.png", "beagle_2.PNG",
                                          "pug_4.JPG"]
    assert examples[2] == Example("beagle_2.PNG", str(split / "images" / "beagle_2.PNG"),
                                  str(split / "masks" / "beagle_2.png"))
    assert [e.foreground_class for e in examples] == [1, 1, 2, 2]
    assert all(e.mask_path is None for e in list_examples(split, no_label=True))


def test_missing_images_folder_names_the_folder_and_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no 'images' folder.*expected layout"):
        list_examples(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        list_examples(tmp_path / "nowhere")


def test_a_plain_folder_of_photos_is_read_only_without_labels(tmp_path):
    write_image(tmp_path / "b.PNG", rgb_pattern(3, 3))
    write_image(tmp_path / "a.jpg", rgb_pattern(3, 3))
    examples = list_examples(tmp_path, no_label=True)
    assert examples == [Example("a.jpg", str(tmp_path / "a.jpg")),
                        Example("b.PNG", str(tmp_path / "b.PNG"))]
    with pytest.raises(FileNotFoundError, match=r"holds 2 image files directly: move them into"):
        list_examples(tmp_path)


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"no images in .*\.jpg"):
        list_examples(tmp_path)


def test_image_without_mask_is_named_unless_no_label(split):
    os.remove(split / "masks" / "pug_4.png")
    with pytest.raises(FileNotFoundError, match=r"1 of 4 images .* pug_4\.JPG \(no masks/pug_4"):
        list_examples(split)
    assert len(list_examples(split, no_label=True)) == 4
    os.rename(split / "masks", split / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"no 'masks' folder.*no_label=True"):
        list_examples(split)


def test_mask_name_differing_only_in_case_is_not_a_match(split):
    os.rename(split / "masks" / "beagle_2.png", split / "masks" / "Beagle_2.PNG")
    with pytest.raises(FileNotFoundError, match=r"beagle_2\.PNG \(found 'Beagle_2\.PNG', which "
                                                 r"differs only in case"):
        list_examples(split)


def test_images_sharing_a_stem_are_refused(split):
    write_image(split / "images" / "pug_4.png", rgb_pattern(8, 8))
    with pytest.raises(ValueError, match=r"pug_4\.JPG and pug_4\.png"):
        list_examples(split)


# ---------------------------------------------------------------------------------------------
# load_image / load_example
# ---------------------------------------------------------------------------------------------

def test_load_image_is_rgb_and_converts_gray_rgba_16bit(tmp_path):
    rgb = rgb_pattern(3, 4)
    write_image(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), rgb)

    gray = np.array([[0, 50], [100, 250]], np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(load_image(tmp_path / "gray.png"),
                                  np.repeat(gray[..., None], 3, axis=-1))

    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[...] = (30, 20, 10, 0)  # fully transparent: the colour is kept, alpha dropped
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"),
                                  np.full((2, 2, 3), (10, 20, 30), np.uint8))

    deep = np.array([[0, 256 * 7 + 200], [256 * 255 + 255, 256 * 128]], np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    out = load_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[..., 0], [[0, 7], [255, 128]])


def test_load_image_converts_cmyk_jpeg(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    image_module.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red
    out = load_image(tmp_path / "cmyk.jpg")
    assert out.shape == (3, 4, 3)
    assert (out[..., 0] > 240).all() and (out[..., 1:] < 15).all()


def test_load_example_exact_pixels_cat_and_dog(tmp_path):
    # 3x6 image/trimap to 4x4: height 3 is odd -> drop row 0 -> 2 rows, padded 1 above and
    # 1 below; width 6 -> centre crop columns 1..4.
    trimap = np.array([[1, 1, 1, 1, 1, 1],
                       [2, 1, 3, 2, 1, 2],
                       [3, 2, 1, 1, 3, 2]], np.uint8)
    rgb = rgb_pattern(3, 6)
    for name, fg in (("Persian_1", 1), ("boxer_1", 2)):
        write_image(tmp_path / "images" / f"{name}.png", rgb)
        write_mask(tmp_path / "masks" / f"{name}.png", trimap)
        image, label = load_example(
            Example(f"{name}.png", str(tmp_path / "images" / f"{name}.png"),
                    str(tmp_path / "masks" / f"{name}.png")), (4, 4))
        assert image.dtype == np.uint8 and label.dtype == np.uint8
        np.testing.assert_array_equal(image[..., 0], [[0, 0, 0, 0],
                                                      [11, 12, 13, 14],
                                                      [21, 22, 23, 24],
                                                      [0, 0, 0, 0]])
        np.testing.assert_array_equal(image[1, :, 1], [101] * 4)
        np.testing.assert_array_equal(image[2, :, 2], [201, 202, 203, 204])
        # Trimap 1 -> fg class, 2 (and the padding) -> 0 background, 3 -> 255.
        np.testing.assert_array_equal(label, [[0, 0, 0, 0],
                                              [fg, 255, 0, fg],
                                              [0, fg, fg, 255],
                                              [0, 0, 0, 0]])


def test_load_label_is_the_full_resolution_label(tmp_path):
    # The same 3x6 trimap, uncropped: 1 -> dog class 2, 2 -> 0, 3 -> 255, shape kept.
    trimap = np.array([[1, 1, 1, 1, 1, 1],
                       [2, 1, 3, 2, 1, 2],
                       [3, 2, 1, 1, 3, 2]], np.uint8)
    write_image(tmp_path / "images" / "boxer_1.png", rgb_pattern(3, 6))
    write_mask(tmp_path / "masks" / "boxer_1.png", trimap)
    example = Example("boxer_1.png", str(tmp_path / "images" / "boxer_1.png"),
                      str(tmp_path / "masks" / "boxer_1.png"))
    np.testing.assert_array_equal(load_label(example), [[2, 2, 2, 2, 2, 2],
                                                        [0, 2, 255, 0, 2, 0],
                                                        [255, 0, 2, 2, 255, 0]])
    with pytest.raises(ValueError, match="exactly its image's size"):
        load_label(example, image_shape=(3, 7))


def test_load_examples_loads_a_subset_in_the_given_order(split):
    examples = list_examples(split)
    X, y, names = load_examples([examples[3], examples[0]], (6, 6))
    assert names == ["pug_4.JPG", "Abyssinian_1.png"]
    for row, example in enumerate((examples[3], examples[0])):
        image, label = load_example(example, (6, 6))
        np.testing.assert_array_equal(X[row], image)
        np.testing.assert_array_equal(y[row], label)


def labelled_example(tmp_path, image_hw, mask):
    write_image(tmp_path / "images" / "Sphynx_1.png", rgb_pattern(*image_hw))
    write_mask(tmp_path / "masks" / "Sphynx_1.png", mask)
    return Example("Sphynx_1.png", str(tmp_path / "images" / "Sphynx_1.png"),
                   str(tmp_path / "masks" / "Sphynx_1.png"))


def test_masks_with_three_equal_channels_or_16_bits_are_accepted(tmp_path):
    trimap = np.array([[1, 2], [3, 2]], np.uint8)
    example = labelled_example(tmp_path, (2, 2), np.repeat(trimap[..., None], 3, axis=-1))
    np.testing.assert_array_equal(load_example(example, (2, 2))[1], [[1, 0], [255, 0]])
    example = labelled_example(tmp_path, (2, 2), trimap.astype(np.uint16))
    np.testing.assert_array_equal(load_example(example, (2, 2))[1], [[1, 0], [255, 0]])


def test_mask_problems_are_named(tmp_path):
    colour = np.ones((2, 2, 3), np.uint8)
    colour[0, 0] = (1, 2, 1)
    with pytest.raises(ValueError, match=r"Sphynx_1\.png has 3 channels with different"):
        load_example(labelled_example(tmp_path, (2, 2), colour), (2, 2))

    example = labelled_example(tmp_path, (4, 6), np.ones((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"mask .*masks/Sphynx_1\.png is 4x5 .* image "
                                         r".*images/Sphynx_1\.png is 4x6"):
        load_example(example, (4, 4))

    bad = np.array([[1, 2, 0], [4, 3, 1]], np.uint8)
    with pytest.raises(ValueError, match=r"Sphynx_1\.png has values \[0, 4\] outside .*"
                                         r"found: \[0, 1, 2, 3, 4\]"):
        load_example(labelled_example(tmp_path, (2, 3), bad), (2, 2))

    with pytest.raises(ValueError, match="no mask path"):
        load_example(Example("Sphynx_1.png", str(tmp_path / "images" / "Sphynx_1.png")), (2, 2))
    with pytest.raises(TypeError, match="image_size must be two positive integers"):
        load_example(example, (4, 4, 3))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_image_lines_up_with_its_mask_whatever_its_exif_orientation(tmp_path, orientation):
    # Stored grid 6x10, the pet in the top-left 3x4 block of both image and trimap. Applying
    # the tag to the image only would move the pet (1-4) or swap the sides (5-8).
    bgr = np.zeros((6, 10, 3), np.uint8)
    bgr[:3, :4] = 255
    trimap = np.full((6, 10), 2, np.uint8)
    trimap[:3, :4] = 1
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Bombay_1.jpg").write_bytes(
        imagefiles.with_exif_orientation(imagefiles.jpeg(bgr, quality=100), orientation))
    write_mask(tmp_path / "masks" / "Bombay_1.png", trimap)
    image, label = load_example(list_examples(tmp_path)[0], (6, 10))
    np.testing.assert_array_equal(image.min(axis=-1) > 128, label == 1)
    np.testing.assert_array_equal(load_image(tmp_path / "images" / "Bombay_1.jpg") > 128,
                                  np.repeat((trimap == 1)[..., None], 3, axis=-1))


def test_names_outside_the_oxford_rule_are_counted_once(tmp_path, caplog):
    for name in ("IMG_0001", "0001", "Abyssinian_1", "pug_7", "Beagle_2"):
        write_image(tmp_path / "images" / f"{name}.png", rgb_pattern(2, 2))
        write_mask(tmp_path / "masks" / f"{name}.png", np.full((2, 2), 2, np.uint8))
    with caplog.at_level(logging.WARNING, logger="datasets"):
        examples = list_examples(tmp_path)
    assert [e.foreground_class for e in examples] == [2, 1, 1, 1, 2]  # the rule is kept
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "3 of 5 images were classed by the first letter of their name only" in warnings[0]
    assert "0001.png, Beagle_2.png, IMG_0001.png" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="datasets"):
        list_examples(tmp_path, no_label=True)  # no labels, no class: nothing to report
    assert not caplog.records


def test_masks_without_an_image_are_ignored_with_one_warning(split, caplog):
    write_mask(split / "masks" / "orphan_1.png", np.ones((2, 2), np.uint8))
    write_mask(split / "masks" / "orphan_2.png", np.ones((2, 2), np.uint8))
    (split / "masks" / "._orphan_3.png").write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="datasets"):
        assert len(list_examples(split)) == 4
    assert "2 mask(s) have no image and are ignored: orphan_1.png, orphan_2.png" in caplog.text


def test_oversized_images_are_skipped_and_counted_without_decoding(split, caplog):
    with caplog.at_level(logging.WARNING, logger="datasets"):
        X, y, names = read_data(split, (6, 6), return_names=True, max_pixels=60)
    # 7x9 = 63 and 8x8 = 64 pixels are over 60; 4x4 and 10x3 are not.
    assert names == ["Bombay_3.png", "beagle_2.PNG"]
    assert "skipped 2 unreadable file(s) of 4 examples (2 over the pixel limit)" in caplog.text
    with pytest.raises(DataError, match="none of the 4 examples .* could be decoded"):
        read_data(split, (6, 6), max_pixels=5)


def test_validate_examples_checks_headers_and_masks_without_decoding_images(split, monkeypatch):
    examples = list_examples(split)
    (split / "images" / "Bombay_3.png").write_bytes(b"")
    monkeypatch.setattr("datasets.decode.cv2.imdecode", _only_masks(cv2.imdecode))
    assert [e.name for e in validate_examples(examples)] == [
        "Abyssinian_1.png", "beagle_2.PNG", "pug_4.JPG"]
    write_mask(split / "masks" / "pug_4.png", np.ones((8, 7), np.uint8))
    with pytest.raises(DataFormatError, match=r"pug_4\.png is 8x7 .* is 8x8"):
        validate_examples(examples)
    assert len(validate_examples(examples, no_label=True)) == 3


def _only_masks(imdecode):
    """cv2.imdecode that refuses colour decodes (the images), for proving they are not run."""
    def guarded(buffer, flags):
        assert flags == cv2.IMREAD_UNCHANGED, "an image was decoded"
        return imdecode(buffer, flags)
    return guarded


def test_images_sharing_a_stem_are_refused_for_written_masks_too(tmp_path):
    with pytest.raises(DataFormatError, match=r"share a stem and would write the same "
                                                   r"masks/<stem>\.png: a\.jpg and a\.png"):
        check_unique_stems(["a.jpg", "a.png", "b.jpg"], where=str(tmp_path),
                                consequence="would write the same masks/<stem>.png")
    check_unique_stems(["a.jpg", "b.png"], where=str(tmp_path), consequence="-")


@pytest.mark.parametrize("num_classes", [2, 5])
def test_a_model_of_other_classes_than_the_data_is_refused(num_classes):
    with pytest.raises(ClassMismatchError, match=rf"runs/x predicts {num_classes} classes, "
                                                      r"but the labels of d/test have 3"):
        check_model_classes(num_classes, model="runs/x", data="d/test")
    check_model_classes(3, model="runs/x", data="d/test")


def test_layout_errors_are_data_errors_and_file_not_found_errors(tmp_path):
    with pytest.raises(MissingFilesError) as error:
        list_examples(tmp_path / "nowhere")
    assert isinstance(error.value, FileNotFoundError) and isinstance(error.value, DataError)


# ---------------------------------------------------------------------------------------------
# read_data
# ---------------------------------------------------------------------------------------------

def test_read_data_matches_load_example_row_by_row(split):
    X, y, names = read_data(split, (6, 6), return_names=True)
    examples = list_examples(split)
    assert names == [e.name for e in examples]
    assert X.shape == (4, 6, 6, 3) and X.dtype == np.uint8
    assert y.shape == (4, 6, 6) and y.dtype == np.uint8
    assert (X.nbytes + y.nbytes) / len(X) == 6 * 6 * 4  # 4 bytes per pixel: 1 MiB at 512x512
    for row, example in enumerate(examples):
        image, label = load_example(example, (6, 6))
        np.testing.assert_array_equal(X[row], image)
        np.testing.assert_array_equal(y[row], label)
    # Cats (upper-case names) only use classes {0, 1}, dogs {0, 2}; all have ignored pixels.
    assert set(np.unique(y[0])) == {0, 1, 255} and set(np.unique(y[3])) == {0, 2, 255}


def test_read_data_without_labels(split):
    os.rename(split / "masks", split / "elsewhere")
    X, y = read_data(split, (5, 5), no_label=True)
    assert y is None and X.shape == (4, 5, 5, 3)
    # 7x9 -> drop the first row/col -> rows 1..6, cols 1..8 (6x8) -> centre crop to 5x5:
    # height excess 1 -> rows 1..5 (the extra row goes at the bottom), width excess 3 -> cols
    # 2..6 of the original pattern (R = 10*y + x).
    np.testing.assert_array_equal(X[0, 0, :, 0], [12, 13, 14, 15, 16])
    np.testing.assert_array_equal(X[0, 4, :, 0], [52, 53, 54, 55, 56])


def test_read_data_skips_unreadable_files_with_one_warning(split, caplog):
    (split / "images" / "beagle_2.PNG").write_bytes(b"")                       # empty
    good = (split / "masks" / "pug_4.png").read_bytes()
    (split / "masks" / "pug_4.png").write_bytes(good[: len(good) // 3])        # truncated
    with caplog.at_level(logging.WARNING, logger="datasets"):
        X, y, names = read_data(split, (6, 6), return_names=True)
    assert names == ["Abyssinian_1.png", "Bombay_3.png"]
    assert X.shape == (2, 6, 6, 3) and y.shape == (2, 6, 6)
    expected = load_example(list_examples(split)[1], (6, 6))
    np.testing.assert_array_equal(X[1], expected[0])
    np.testing.assert_array_equal(y[1], expected[1])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipped 2 unreadable file(s) of 4" in message
    assert "images/beagle_2.PNG" in message and "masks/pug_4.png" in message


@pytest.mark.parametrize("size", [(512,), (0, 512), (512.0, 512)])
def test_read_data_rejects_bad_image_size(split, size):
    with pytest.raises((TypeError, ValueError), match="image_size must be two positive"):
        read_data(split, size)


# ---------------------------------------------------------------------------------------------
# Label converters
# ---------------------------------------------------------------------------------------------

def test_one_hot_converters_round_trip():
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    one_hot = to_one_hot(labels)
    assert one_hot.dtype == np.float32 and one_hot.shape == (2, 2, 3)
    np.testing.assert_array_equal(one_hot, [[[1, 0, 0], [0, 1, 0]],
                                            [[0, 0, 1], [-1, -1, -1]]])
    np.testing.assert_array_equal(from_one_hot(one_hot), labels)
    batch = np.stack([labels, labels[::-1]])
    np.testing.assert_array_equal(from_one_hot(to_one_hot(batch)), batch)
    # Soft probabilities: argmax per pixel.
    np.testing.assert_array_equal(from_one_hot(np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])),
                                  [1, 0])
    with pytest.raises(ValueError, match=r"values \[3\]"):
        to_one_hot(np.array([0, 3, 255], np.uint8))


# ---------------------------------------------------------------------------------------------
# DataSet
# ---------------------------------------------------------------------------------------------

def id_dataset(num, **kwargs):
    """Images (num, 2, 2, 3) and labels (num, 2, 2) whose every value is the example's id."""
    images = np.repeat(np.arange(num, dtype=np.uint8), 12).reshape(num, 2, 2, 3)
    labels = np.repeat(np.arange(num, dtype=np.uint8), 4).reshape(num, 2, 2)
    return DataSet(images, labels, **kwargs)


def ids(batch):
    images, labels = batch
    np.testing.assert_array_equal(images[:, 0, 0, 0], labels[:, 0, 0])  # rows stay paired
    return images[:, 0, 0, 0].tolist()


def test_next_batch_sees_every_example_once_per_epoch():
    ds = id_dataset(7, seed=0)
    stream = []
    for _ in range(12):  # 36 ids = 5 full epochs and a bit
        stream += ids(ds.next_batch(3))
    epochs = [stream[i:i + 7] for i in range(0, 35, 7)]
    assert all(sorted(epoch) == list(range(7)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 5  # reshuffled at each epoch end
    assert ds.epochs_completed == 5  # the 12th batch (ids 33..35) crossed the 5th boundary


def test_wrap_around_batch_is_old_tail_then_new_head():
    ds = id_dataset(5, seed=1)
    first = ids(ds.next_batch(3))
    assert ds.epochs_completed == 0
    second = ids(ds.next_batch(3))
    assert ds.epochs_completed == 1
    # The old epoch's two remaining ids, then the head of the new epoch.
    assert sorted(first + second[:2]) == list(range(5))
    third = ids(ds.next_batch(3))
    assert sorted(second[2:] + third + ids(ds.next_batch(3))[:1]) == list(range(5))


def test_next_batch_without_shuffle_walks_in_order():
    ds = id_dataset(5, seed=0)
    assert [ids(ds.next_batch(2, shuffle=False)) for _ in range(4)] == [[0, 1], [2, 3], [4, 0],
                                                                         [1, 2]]


def test_seeded_and_independent_of_the_global_rng():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()

    def run(seed):
        ds = id_dataset(6, seed=seed)
        return [ids(ds.next_batch(4)) for _ in range(5)]

    assert run(42) == run(42)
    assert run(42) != run(43)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def add_noise(image, label, rng):
    """A test augmentation: shift the image by a random amount, keep the label."""
    return (image + rng.integers(1, 50)).astype(np.uint8), label


def test_state_round_trip_through_json_continues_identically():
    ds = id_dataset(7, seed=3, augment=add_noise)
    for _ in range(3):
        ds.next_batch(3)
    ds.sample_batch(2)
    state = json.loads(json.dumps(ds.get_state()))
    expected = [ds.next_batch(3) for _ in range(6)] + [ds.sample_batch(4)]
    resumed = id_dataset(7, seed=999, augment=add_noise)
    resumed.set_state(state)
    got = [resumed.next_batch(3) for _ in range(6)] + [resumed.sample_batch(4)]
    for (xa, ya), (xb, yb) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert resumed.epochs_completed == ds.epochs_completed
    with pytest.raises(ValueError, match="state is for 7 examples, this data set has 6"):
        id_dataset(6).set_state(state)


def test_augment_is_applied_per_example_in_next_batch_only():
    images = np.zeros((4, 2, 2, 3), np.uint8)
    calls = []

    def mark(image, label, rng):
        calls.append(label)
        return image + 10, label

    ds = DataSet(images, None, seed=0, augment=mark)
    batch_images, batch_labels = ds.next_batch(3)
    assert batch_labels is None and calls == [None] * 3
    np.testing.assert_array_equal(batch_images, np.full((3, 2, 2, 3), 10))
    np.testing.assert_array_equal(images, 0)  # the stored data is never modified
    np.testing.assert_array_equal(ds.sample_batch(2)[0], 0)
    assert len(calls) == 3


def test_augment_with_random_flip_scale_crop_keeps_pairs_aligned():
    # Image channel 0 == label everywhere; a nearest-sampled channel would stay equal, bilinear
    # on piecewise-constant blocks stays equal away from block edges.
    label = np.zeros((16, 16), np.uint8)
    label[:, 8:] = 2
    images = np.repeat(label[None, ..., None], 3, axis=-1).repeat(2, axis=0) * 100
    labels = np.stack([label, label])
    ds = DataSet(images, labels, seed=0, augment=random_flip_scale_crop)
    out_images, out_labels = ds.next_batch(2)
    pure = np.isin(out_images[..., 0], (0, 200))
    np.testing.assert_array_equal(out_images[..., 0][pure], out_labels[pure] * 100)


def test_sample_batch_semantics():
    ds = id_dataset(5, seed=0)
    assert ids(ds.sample_batch(3, shuffle=False)) == [0, 1, 2]
    sampled = ids(ds.sample_batch(50))  # with replacement: more than num_examples is fine
    assert len(sampled) == 50 and set(sampled) <= set(range(5)) and len(set(sampled)) == 5
    # sample_batch does not change next_batch's sequence.
    untouched = id_dataset(5, seed=0)
    assert ids(ds.next_batch(4)) == ids(untouched.next_batch(4))


def test_bad_batch_sizes_are_clear_errors():
    ds = id_dataset(5, seed=0)
    with pytest.raises(ValueError, match=r"batch_size=6 is larger than the data set \(5"):
        ds.next_batch(6)
    with pytest.raises(ValueError, match="positive integer"):
        ds.next_batch(0)
    with pytest.raises(ValueError, match="larger than the data set"):
        ds.sample_batch(6, shuffle=False)
    with pytest.raises(ValueError, match="same number of examples, got 5 images and 4 labels"):
        DataSet(np.zeros((5, 2, 2, 3)), np.zeros((4, 2, 2)))


# ---------------------------------------------------------------------------------------------
# make_tf_dataset
# ---------------------------------------------------------------------------------------------

def collect(dataset):
    return [tuple(element) if isinstance(element, tuple) else element
            for element in dataset.as_numpy_iterator()]


def test_tf_dataset_yields_exactly_read_data_arrays(split):
    X, y = read_data(split, (6, 6))
    dataset = make_tf_dataset(list_examples(split), (6, 6))
    assert dataset.element_spec[0].shape == (6, 6, 3) and dataset.element_spec[1].shape == (6, 6)
    elements = collect(dataset)
    assert len(elements) == 4
    for row, (image, label) in enumerate(elements):
        assert image.dtype == np.uint8 and label.dtype == np.uint8
        np.testing.assert_array_equal(image, X[row])
        np.testing.assert_array_equal(label, y[row])

    images = collect(make_tf_dataset(list_examples(split, no_label=True), (6, 6), no_label=True))
    np.testing.assert_array_equal(np.stack(images), X)


def test_tf_dataset_order_is_fixed_by_seed_and_epoch(split):
    examples = list_examples(split)
    X, y = read_data(split, (6, 6))
    orders = {epoch: epoch_order(4, 7, epoch).tolist() for epoch in range(3)}
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders.values())
    assert len({tuple(order) for order in orders.values()}) == 3  # differs between epochs
    for epoch in (0, 1):
        elements = collect(make_tf_dataset(examples, (6, 6), shuffle_seed=7, epoch=epoch))
        np.testing.assert_array_equal(np.stack([e[0] for e in elements]), X[orders[epoch]])
        np.testing.assert_array_equal(np.stack([e[1] for e in elements]), y[orders[epoch]])
    assert epoch_order(4, 7, 1).tolist() == orders[1]  # rebuilt from (seed, epoch) alone


def test_tf_dataset_augmentation_is_reproducible(split):
    examples = list_examples(split)

    def run(epoch):
        return collect(make_tf_dataset(examples, (6, 6), shuffle_seed=3, epoch=epoch,
                                       augment=add_noise))

    first, again, other = run(0), run(0), run(1)
    for (image_a, label_a), (image_b, label_b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(label_a, label_b)
    plain = {e.name: load_example(e, (6, 6))[0] for e in examples}
    names = [examples[i].name for i in epoch_order(4, 3, 0)]
    shifts = [int(image[0, 0, 0]) - int(plain[name][0, 0, 0]) for name, (image, _) in
              zip(names, first, strict=True)]
    assert all(1 <= (s % 256) < 50 for s in shifts)  # the augmentation really ran
    assert [o[0].tolist() for o in other] != [f[0].tolist() for f in first]


def test_tf_dataset_skips_unreadable_files_like_read_data(split):
    (split / "images" / "Bombay_3.png").write_bytes(b"garbage")
    X, y = read_data(split, (6, 6))
    elements = collect(make_tf_dataset(list_examples(split), (6, 6)))
    assert len(elements) == 3
    np.testing.assert_array_equal(np.stack([e[0] for e in elements]), X)
    np.testing.assert_array_equal(np.stack([e[1] for e in elements]), y)


def test_tf_dataset_checks_masks_when_built_not_while_batches_are_read(split):
    # A mask with bad values and one of the wrong size: the error comes from make_tf_dataset
    # itself, before any element exists (it used to be an InvalidArgumentError mid-epoch).
    write_mask(split / "masks" / "beagle_2.png", np.full((4, 4), 9, np.uint8))
    with pytest.raises(DataFormatError, match=r"beagle_2\.png has values \[9\]"):
        make_tf_dataset(list_examples(split), (6, 6))
    write_mask(split / "masks" / "beagle_2.png", np.full((4, 5), 2, np.uint8))
    with pytest.raises(DataFormatError, match=r"beagle_2\.png is 4x5 .* is 4x4"):
        make_tf_dataset(list_examples(split), (6, 6), shuffle_seed=1)
    with pytest.raises(ValueError, match="no mask_path"):
        make_tf_dataset(list_examples(split, no_label=True), (6, 6))


def test_tf_dataset_skips_a_mask_broken_after_the_check_instead_of_failing(split, caplog):
    examples = list_examples(split)
    make_tf_dataset(examples, (6, 6))  # checked once for this list
    write_mask(split / "masks" / "beagle_2.png", np.full((4, 4), 9, np.uint8))
    with caplog.at_level(logging.WARNING, logger="datasets"):
        elements = collect(make_tf_dataset(examples, (6, 6), epoch=1))
    assert len(elements) == 3
    assert "skipping beagle_2.PNG, changed since it was checked" in caplog.text


def test_constants():
    assert IGNORE_LABEL == 255
    assert PET_CLASS_NAMES == ("background", "cat", "dog")
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png")
    assert (TRIMAP_FOREGROUND, TRIMAP_BACKGROUND, TRIMAP_UNKNOWN) == (1, 2, 3)


# ---------------------------------------------------------------------------------------------
# Label formats in the readers (datasets/labels.py has the formats themselves)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def index_split(tmp_path):
    """Three images with 4-class index masks (values 0..3 and 255), names that are not pet
    names, and a classes.json naming the classes."""
    rng = np.random.default_rng(3)
    for name, (height, width) in {"a.png": (5, 7), "b.png": (8, 4), "c.png": (6, 6)}.items():
        write_image(tmp_path / "images" / name, rgb_pattern(height, width))
        mask = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=(height, width))
        write_mask(tmp_path / "masks" / name, mask)
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["bg", "x", "y", "z"]}))
    return tmp_path


def test_index_labels_are_cropped_like_the_image_and_padded_with_background(index_split):
    fmt = LabelFormat("index", ("bg", "x", "y", "z"))
    mask = cv2.imread(str(index_split / "masks" / "b.png"), cv2.IMREAD_UNCHANGED)  # (8, 4)
    (example,) = [e for e in list_examples(index_split, label_format=fmt) if e.name == "b.png"]
    _, label = load_example(example, (6, 6), label_format=fmt)
    # Height 8 -> centre crop rows 1..6; width 4 -> one column of 0 (background) each side.
    expected = np.zeros((6, 6), np.uint8)
    expected[:, 1:5] = mask[1:7]
    np.testing.assert_array_equal(label, expected)


def test_resolve_label_format_takes_the_names_from_one_place(index_split, tmp_path):
    examples = list_examples(index_split, label_format="auto")
    resolve = resolve_label_format
    folder = resolve(examples, "auto", data_dir=index_split)
    assert (folder.kind, folder.class_names) == ("index", ("bg", "x", "y", "z"))
    given = resolve(examples, "auto", classes=("background", "p", "q", "r"), num_classes=4,
                    data_dir=index_split)
    assert given.class_names == ("background", "p", "q", "r")       # --classes first
    assert resolve(examples, "index", num_classes=5).class_names == (
        "background", "class_1", "class_2", "class_3", "class_4")   # no names anywhere
    with pytest.raises(ConfigError, match=r"classes\.json names 4 classes \(.*\) but "
                                          r"--num-classes is 5"):
        resolve(examples, "auto", num_classes=5, data_dir=index_split)
    with pytest.raises(ConfigError, match=r"--palette .* is a colour table for palette masks, "
                                          r"but the masks of .* are index masks"):
        resolve(examples, "auto", palette=default_palette(4), data_dir=index_split)
    with pytest.raises(ConfigError, match="--label-format must be one of"):
        resolve(examples, "colour")
    (index_split / "classes.json").write_text(json.dumps({"classes": ["bg", "x", "y", "z"],
                                                          "ignore_label": 254}))
    with pytest.raises(ConfigError, match=r"classes\.json gives ignore_label 254, but masks mark "
                                          r"ignored pixels with 255"):
        resolve(examples, "auto", data_dir=index_split)


def test_resolve_label_format_reads_names_and_colours_from_a_palette_file(tmp_path):
    palette = {"classes": ["sky", "tree"], "colors": [[0, 0, 255], [0, 255, 0]],
               "ignore_colors": [[255, 255, 255]]}
    (tmp_path / "p.json").write_text(json.dumps(palette))
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[:] = (0, 0, 255)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 2] = (255, 255, 255)
    write_image(tmp_path / "images" / "a.png", rgb_pattern(2, 3))
    write_image(tmp_path / "masks" / "a.png", rgb)
    examples = list_examples(tmp_path, label_format="palette")
    fmt = resolve_label_format(examples, "auto", palette=tmp_path / "p.json")
    assert (fmt.kind, fmt.class_names) == ("palette", ("sky", "tree"))
    np.testing.assert_array_equal(load_label(examples[0], label_format=fmt),
                                  [[0, 1, 0], [0, 0, 255]])


def test_the_first_letter_rule_is_reported_for_trimaps_only(index_split, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datasets"):
        examples = list_examples(index_split, label_format="auto")
        resolve_label_format(examples, "auto", data_dir=index_split)   # index masks
    assert "first letter" not in caplog.text
    for name in ("IMG_1", "pug_2", "Bombay_3"):     # trimaps, one name outside the rule
        write_image(tmp_path / "pets" / "images" / f"{name}.png", rgb_pattern(2, 2))
        write_mask(tmp_path / "pets" / "masks" / f"{name}.png", np.full((2, 2), 2, np.uint8))
    with caplog.at_level(logging.WARNING, logger="datasets"):
        examples = list_examples(tmp_path / "pets", label_format="auto")
        assert "first letter" not in caplog.text              # not known yet: auto decides
        fmt = resolve_label_format(examples, "auto")
    assert fmt is not None and fmt.kind == "trimap"
    assert "1 of 3 images were classed by the first letter of their name only" in caplog.text


def test_iter_labels_gives_the_labels_of_load_examples_without_decoding_images(index_split,
                                                                               monkeypatch):
    fmt = LabelFormat("index", ("bg", "x", "y", "z"))
    examples = list_examples(index_split, label_format=fmt)
    _, expected, _ = load_examples(examples, (6, 6), label_format=fmt)
    monkeypatch.setattr(loading, "load_image", lambda *a, **k: pytest.fail("decoded an image"))
    got = list(iter_labels(examples, (6, 6), label_format=fmt))
    np.testing.assert_array_equal(np.stack(got), expected)


def test_tf_dataset_reads_index_masks_like_read_data(index_split):
    fmt = LabelFormat("index", ("bg", "x", "y", "z"))
    _, y = read_data(index_split, (6, 6), label_format=fmt)
    elements = collect(make_tf_dataset(list_examples(index_split), (6, 6), label_format=fmt))
    np.testing.assert_array_equal(np.stack([label for _, label in elements]), y)
    assert set(np.unique(y)) <= {0, 1, 2, 3, 255} and 3 in y


def test_a_model_is_checked_against_the_classes_of_the_label_format():
    fmt = LabelFormat("index", ("bg", "x", "y", "z", "w"))
    check_model_classes(5, model="runs/x", data="d", label_format=fmt)
    with pytest.raises(ClassMismatchError, match=r"have 5 \(bg, x, y, z, w\)"):
        check_model_classes(3, model="runs/x", data="d", label_format=fmt)


def test_the_state_stays_small_whatever_the_data_set_size():
    # The feed records a state after every step until the loop reads the device: the state
    # must not hold the order itself (it is drawn again from the order seed and the epoch).
    small, large = id_dataset(10, seed=1), DataSet(np.zeros((100_000, 1), np.uint8), seed=1)
    for ds in (small, large):
        ds.next_batch(7)
        ds.next_batch(7)
    sizes = [len(json.dumps(ds.get_state())) for ds in (small, large)]
    assert sizes[1] < 1000 and abs(sizes[1] - sizes[0]) < 10, sizes
