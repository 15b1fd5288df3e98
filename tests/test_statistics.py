"""datasets/statistics.py: streamed class pixel counts and median-frequency class weights."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from common.errors import DataError
from datasets.statistics import LabelHistogram, class_weights_from_labels, \
    median_frequency_weights

I = 255  # ignore


def _tiny_labels() -> np.ndarray:
    """Three 2x4 label images, 3 classes, hand-countable."""
    return np.array([
        [[0, 0, 0, 0],
         [0, 1, I, I]],      # 5 x class 0, 1 x class 1, 2 ignored: 6 labelled
        [[0, 0, 2, 2],
         [2, 2, 2, 2]],      # 2 x class 0, 6 x class 2: 8 labelled
        [[1, 1, I, I],
         [1, 1, I, I]],      # 4 x class 1, 4 ignored: 4 labelled
    ], np.uint8)


def test_counts_equal_a_hand_count():
    histogram = LabelHistogram(3).update(_tiny_labels())
    assert histogram.pixels.tolist() == [7, 5, 6]
    assert histogram.images.tolist() == [2, 2, 1]
    # Labelled pixels of the images containing the class: 0 in images 1, 2; 1 in 1, 3; 2 in 2.
    assert histogram.present_pixels.tolist() == [6 + 8, 6 + 4, 8]
    assert (histogram.num_images, histogram.ignored_pixels, histogram.total_pixels) == (3, 6, 24)
    np.testing.assert_allclose(histogram.shares(), [7 / 18, 5 / 18, 6 / 18])


def test_auto_weights_equal_the_median_frequency_rule_by_hand():
    # freq = (7/14, 5/10, 6/8) = (0.5, 0.5, 0.75); median 0.5; w = 0.5 / freq.
    weights = class_weights_from_labels(_tiny_labels(), 3)
    np.testing.assert_allclose(weights, [1.0, 1.0, 2 / 3], rtol=1e-12)
    assert all(isinstance(w, float) for w in weights)


def test_streaming_image_by_image_or_in_batches_gives_the_same_weights():
    labels = _tiny_labels()
    whole = class_weights_from_labels(labels, 3)
    assert class_weights_from_labels(iter(labels), 3) == whole                 # (H, W) each
    assert class_weights_from_labels([labels[:2], labels[2:]], 3) == whole      # batches
    # Other integer dtypes are counted alike.
    assert class_weights_from_labels(labels.astype(np.int64), 3) == whole


def test_a_class_absent_from_the_labels_gets_weight_zero_and_a_warning(caplog):
    labels = _tiny_labels()
    with caplog.at_level(logging.WARNING):
        weights = class_weights_from_labels(labels, 4)
    # Class 3 is left out of the median: the same three frequencies as above.
    np.testing.assert_allclose(weights, [1.0, 1.0, 2 / 3, 0.0])
    assert "classes [3] have no pixel in the training labels" in caplog.text


def test_even_number_of_present_classes_takes_the_mean_of_the_middle_two():
    # Two images: [0 0 0 1] and [2 2 3 3]: freq = (3/4, 1/4, 2/4, 2/4); median 0.5.
    labels = np.array([[[0, 0, 0, 1]], [[2, 2, 3, 3]]], np.uint8)
    np.testing.assert_allclose(class_weights_from_labels(labels, 4),
                               [0.5 / 0.75, 0.5 / 0.25, 1.0, 1.0])


def test_values_outside_the_classes_are_a_data_error_naming_them():
    labels = np.array([[[0, 1, 3, 7]]], np.uint8)
    with pytest.raises(DataError, match=r"masks/a.png: label values \[3, 7\] are neither a class "
                                        r"in \[0, 3\) nor the ignore value 255"):
        LabelHistogram(3).update(labels, source="masks/a.png")
    lenient = LabelHistogram(3, strict=False).update(labels)
    assert lenient.other_pixels == 2 and lenient.pixels.tolist() == [1, 1, 0]
    with pytest.raises(DataError, match=r"must lie in \[0, 255\]"):
        LabelHistogram(3).update(np.array([[-1, 0]]))


def test_labels_with_no_labelled_pixel_cannot_give_weights():
    with pytest.raises(DataError, match="hold no labelled pixel"):
        median_frequency_weights(LabelHistogram(3).update(np.full((2, 3, 3), I, np.uint8)))
