"""The boundary F-score (learning/evaluators.py) on hand-made masks scored by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from learning.evaluators import BoundaryFEvaluator, class_boundaries
from learning.inference import TestScores

IGNORE = 255


def square(left: int) -> np.ndarray:
    """8x8 background with a 4x4 square of class 1 at rows 2-5, columns left..left+3."""
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, left:left + 4] = 1
    return mask


def test_class_boundaries_are_the_pixels_with_a_4_neighbour_of_another_class():
    ring = class_boundaries(square(2), 1)
    assert ring.sum() == 12 and not ring[3:5, 3:5].any() and ring[2, 2] and ring[5, 5]
    outside = class_boundaries(square(2), 0)
    # 4 above, 4 below, 4 left, 4 right of the square; the image border is no boundary.
    assert outside.sum() == 16 and outside[1, 2] and not outside[1, 1] and not outside[0].any()


def test_a_square_shifted_by_one_pixel_by_hand():
    truth, predicted = square(2), square(3)
    # Tolerance 0: square rings share rows 2 and 5 at columns 3-5: 6 of 12 pixels each way
    # (F 1/2); the outer rings share rows 1 and 6 at columns 3-5: 6 of 16 (F 3/8).
    exact = BoundaryFEvaluator(num_classes=2, tolerance=0)
    assert exact.score(truth[None], predicted[None]) == pytest.approx((0.5 + 0.375) / 2)
    np.testing.assert_allclose(exact.per_class_precision, [6 / 16, 6 / 12])
    np.testing.assert_allclose(exact.per_class_recall, [6 / 16, 6 / 12])
    assert exact.counts.tolist() == [[6, 16, 6, 16], [6, 12, 6, 12]]
    # Tolerance 1: every boundary pixel has one of the other side next to it.
    assert BoundaryFEvaluator(num_classes=2, tolerance=1).score(
        truth[None], predicted[None]) == pytest.approx(1.0)


def test_ignored_pixels_take_the_nearest_class_so_the_outline_runs_through_the_band():
    truth = np.zeros((6, 8), np.uint8)
    truth[:, 3:5] = IGNORE                 # an unknown band of 2 columns between 0 and 1
    truth[:, 5:] = 1
    middle = np.zeros((6, 8), np.uint8)
    middle[:, 4:] = 1                      # the outline between columns 3 and 4: the middle
    shifted = np.zeros((6, 8), np.uint8)
    shifted[:, 3:] = 1                     # one column to the left of the middle
    exact = BoundaryFEvaluator(num_classes=2, tolerance=0)
    assert exact.score(truth[None], middle[None]) == 1.0
    assert exact.score(truth[None], shifted[None]) == 0.0
    assert BoundaryFEvaluator(num_classes=2, tolerance=1).score(
        truth[None], shifted[None]) == 1.0


def test_absent_classes_all_ignored_images_and_missing_outlines():
    evaluator = BoundaryFEvaluator(num_classes=3, tolerance=1)
    truth = np.stack([square(2), np.full((8, 8), IGNORE, np.uint8)])
    predicted = np.stack([np.zeros((8, 8), np.uint8), square(2)])
    # Image 2 is all unknown: skipped. Image 1: no predicted outline at all -> F 0 for classes
    # 0 and 1; class 2 has no outline anywhere -> NaN, left out of the mean.
    assert evaluator.score(truth, predicted) == 0.0
    f = evaluator.per_class_f
    assert f[:2].tolist() == [0.0, 0.0] and math.isnan(f[2])
    with pytest.warns(RuntimeWarning, match="no known"):
        assert BoundaryFEvaluator(2).score(truth[1:], predicted[1:]) == 0.0


def test_streaming_pools_counts_and_sums_over_workers():
    truth = np.stack([square(2), square(1)])
    predicted = np.stack([square(3), square(1)])
    whole = BoundaryFEvaluator(num_classes=2, tolerance=0)
    whole.score(truth, predicted)
    streamed = BoundaryFEvaluator(num_classes=2, tolerance=0)
    for i in range(2):
        streamed.update(truth[i:i + 1], predicted[i:i + 1])
    assert streamed.counts.tolist() == whole.counts.tolist() == [[6 + 16, 32, 6 + 16, 32],
                                                                 [6 + 12, 24, 6 + 12, 24]]
    # Pooled: class 1 precision = recall = 18/24, class 0 22/32.
    assert streamed.result() == pytest.approx((18 / 24 + 22 / 32) / 2)
    summed = BoundaryFEvaluator(num_classes=2, tolerance=0)
    summed.set_totals(whole.totals())
    assert summed.result() == whole.result()
    # One-hot labels and probabilities are scored the same way.
    one_hot = np.eye(2, dtype=np.float32)[truth]
    assert BoundaryFEvaluator(2, tolerance=0).score(one_hot, np.eye(2)[predicted]) == \
        whole.result()


def test_test_scores_report_the_boundary_score_by_class_name():
    scores = TestScores(2, boundary_tolerance=0)
    scores.update(square(2)[None], square(3)[None])
    result = scores.result("p", ["background", "cat"])
    assert result["boundary_f"] == pytest.approx(0.4375)
    assert result["per_class_boundary_f"] == pytest.approx({"background": 0.375, "cat": 0.5})
    assert result["boundary_tolerance_px"] == 0


@pytest.mark.parametrize("tolerance", [-1, 1.5, True])
def test_a_bad_tolerance_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance must be an integer"):
        BoundaryFEvaluator(2, tolerance=tolerance)
