"""Evaluators: agreement with the tutorial's literal definition, hand-computed cases, edge cases."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from learning.evaluators import (
    AccuracyEvaluator,
    Evaluator,
    MeanIoUEvaluator,
    confusion_matrix,
)

IGNORE = 255


# ----------------------------------------------------------------------------------------------
# The literal reference: per image, drop the unknown pixels with np.delete, then the share of
# equal argmaxes (what the tutorial's sklearn.metrics.accuracy_score returns for two label
# vectors); the plain mean over images. It only understands the original format (one-hot
# labels with -1 in every channel, per-class scores as predictions).
# ----------------------------------------------------------------------------------------------
def reference_accuracy(one_hot_labels: np.ndarray, scores: np.ndarray) -> float:
    per_image = []
    for t, p in zip(one_hot_labels, scores):
        unknown = np.where(t[..., 0].reshape(-1) == -1)[0]
        true_cls = np.delete(t.argmax(axis=-1).reshape(-1), unknown)
        pred_cls = np.delete(p.argmax(axis=-1).reshape(-1), unknown)
        per_image.append(float(np.mean(true_cls == pred_cls)))
    return sum(per_image) / len(per_image)


def to_one_hot(index: np.ndarray, num_classes: int = 3) -> np.ndarray:
    """Index labels (N, H, W) -> float32 one-hot (N, H, W, C), -1 in every channel if unknown."""
    out = np.eye(num_classes, dtype=np.float32)[np.where(index == IGNORE, 0, index)]
    out[index == IGNORE] = -1.0
    return out


def random_case(rng: np.random.Generator, n: int = 6, size: tuple[int, int] = (17, 23),
                num_classes: int = 3, unknown_fraction: float = 0.2):
    """Random labels with unknown pixels, and softmax-like predictions that are often right."""
    labels = rng.integers(0, num_classes, size=(n, *size)).astype(np.uint8)
    labels[rng.random((n, *size)) < unknown_fraction] = IGNORE
    probs = rng.random((n, *size, num_classes)).astype(np.float32)
    # Push the true class up on ~70% of the pixels so the accuracies are not all ~1/3.
    boost = (rng.random((n, *size)) < 0.7) & (labels != IGNORE)
    hot = np.eye(num_classes, dtype=np.float32)[np.where(labels == IGNORE, 0, labels)]
    probs += 2.0 * hot * boost[..., None]
    probs /= probs.sum(axis=-1, keepdims=True)
    return labels, probs


# ----------------------------------------------------------------------------------------------
# AccuracyEvaluator
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_format", ["index", "one_hot"])
@pytest.mark.parametrize("pred_format", ["probs", "index"])
def test_accuracy_equals_literal_reference(label_format, pred_format):
    rng = np.random.default_rng(0)
    labels, probs = random_case(rng)
    expected = reference_accuracy(to_one_hot(labels), probs)

    y_true = labels if label_format == "index" else to_one_hot(labels)
    y_pred = probs if pred_format == "probs" else probs.argmax(-1).astype(np.uint8)
    got = AccuracyEvaluator().score(y_true, y_pred)

    assert 0.5 < expected < 0.95  # the case is not degenerate
    assert abs(got - expected) <= 1e-12


def test_scoring_in_chunks_of_images_matches_the_reference_across_chunk_boundaries():
    rng = np.random.default_rng(3)
    labels, probs = random_case(rng, n=70, size=(5, 7))   # 3 chunks of <= 32 images
    assert abs(AccuracyEvaluator().score(to_one_hot(labels), probs)
               - reference_accuracy(to_one_hot(labels), probs)) <= 1e-12
    per_image = sum(confusion_matrix(labels[i:i + 1], probs[i:i + 1], 3) for i in range(70))
    np.testing.assert_array_equal(confusion_matrix(labels, probs, 3), per_image)
    assert per_image.sum() == np.count_nonzero(labels != IGNORE)


def test_accuracy_hand_computed_is_mean_over_images_not_pooled():
    labels = np.array([[[0, 1], [IGNORE, 2]],      # 3 known pixels, 2 right -> 2/3
                       [[1, 1], [1, 1]]],          # 4 known pixels, 3 right -> 3/4
                      dtype=np.uint8)
    preds = np.array([[[0, 2], [1, 2]],
                      [[1, 1], [1, 0]]], dtype=np.uint8)
    evaluator = AccuracyEvaluator()
    assert evaluator.score(labels, preds) == pytest.approx((2 / 3 + 3 / 4) / 2, abs=1e-15)
    np.testing.assert_allclose(evaluator.per_image_accuracy, [2 / 3, 3 / 4], rtol=0, atol=1e-15)
    # The pooled accuracy (5 of 7) would be 0.714..., the per-image mean is 0.7083...
    assert evaluator.score(labels, preds) != pytest.approx(5 / 7)


def test_prediction_equal_to_ignore_value_is_never_correct():
    labels = np.array([[[IGNORE, 1]]], dtype=np.uint8)
    preds = np.array([[[IGNORE, 0]]], dtype=np.uint8)
    assert AccuracyEvaluator().score(labels, preds) == 0.0


def test_all_unknown_image_is_left_out_with_a_warning():
    labels = np.array([[[0, 1], [IGNORE, 2]],
                       [[IGNORE, IGNORE], [IGNORE, IGNORE]],
                       [[1, 1], [1, 1]]], dtype=np.uint8)
    preds = np.array([[[0, 2], [1, 2]],
                      [[0, 0], [0, 0]],
                      [[1, 1], [1, 0]]], dtype=np.uint8)
    evaluator = AccuracyEvaluator()
    with pytest.warns(RuntimeWarning, match="1 image"):
        score = evaluator.score(labels, preds)
    assert score == pytest.approx((2 / 3 + 3 / 4) / 2, abs=1e-15)
    assert evaluator.num_skipped_images == 1


def test_every_image_unknown_gives_worst_score_not_nan():
    labels = np.full((2, 3, 3), IGNORE, dtype=np.uint8)
    preds = np.zeros((2, 3, 3), dtype=np.uint8)
    for y_true in (labels, to_one_hot(labels)):
        with pytest.warns(RuntimeWarning, match="no known"):
            assert AccuracyEvaluator().score(y_true, preds) == 0.0


def test_accuracy_streaming_equals_one_shot_and_reset_forgets():
    rng = np.random.default_rng(1)
    labels, probs = random_case(rng, n=7)
    evaluator = AccuracyEvaluator()
    one_shot = evaluator.score(labels, probs)

    evaluator.reset()
    evaluator.update(np.zeros((1, 17, 23), np.uint8), np.ones((1, 17, 23), np.uint8))  # 0.0
    evaluator.reset()
    for lo, hi in [(0, 2), (2, 3), (3, 7)]:
        evaluator.update(labels[lo:hi], probs[lo:hi])
    assert evaluator.result() == one_shot  # fsum: exact, whatever the batching


def test_is_better_relative_threshold_and_explicit_keyword():
    evaluator = AccuracyEvaluator()
    assert evaluator.worst_score == 0.0 and evaluator.mode == "max"
    assert evaluator.is_better(0.1, 0.0)                     # anything beats the worst score
    assert not evaluator.is_better(0.5, 0.5)
    assert not evaluator.is_better(0.50004, 0.5)             # 0.5 * 1.0001 = 0.50005
    assert evaluator.is_better(0.50006, 0.5)
    assert not evaluator.is_better(0.54, 0.5, score_threshold=0.1)   # needs > 0.55
    assert evaluator.is_better(0.56, 0.5, score_threshold=0.1)
    with pytest.raises(TypeError):
        evaluator.is_better(0.6, 0.5, threshold=0.1)  # no catch-all **kwargs


def test_shape_mismatch_and_bad_rank_are_clear_errors():
    evaluator = AccuracyEvaluator()
    with pytest.raises(ValueError, match=r"labels \(2, 4, 4\) vs predictions \(2, 4, 5\)"):
        evaluator.score(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="must be a batch"):
        evaluator.score(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))


# ----------------------------------------------------------------------------------------------
# confusion_matrix and MeanIoUEvaluator
# ----------------------------------------------------------------------------------------------
# Known pixel pairs (true, pred): (0,0) (1,2) (2,2) (2,2) (1,0); the 255 pixel is dropped.
CM_LABELS = np.array([[[0, 1, 2], [IGNORE, 2, 1]]], dtype=np.uint8)
CM_PREDS = np.array([[[0, 2, 2], [1, 2, 0]]], dtype=np.uint8)
CM_EXPECTED = np.array([[1, 0, 0],
                        [1, 0, 1],
                        [0, 0, 2]], dtype=np.int64)


def test_confusion_matrix_hand_computed_in_every_input_format():
    probs = np.eye(3, dtype=np.float32)[CM_PREDS] * 0.8 + 0.05
    for y_true in (CM_LABELS, to_one_hot(CM_LABELS)):
        for y_pred in (CM_PREDS, probs):
            cm = confusion_matrix(y_true, y_pred, num_classes=3)
            assert cm.dtype == np.int64
            np.testing.assert_array_equal(cm, CM_EXPECTED)


def test_confusion_matrix_rejects_values_outside_the_classes():
    labels = CM_LABELS.copy()
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"label values \[7\].*\[0, 3\)"):
        confusion_matrix(labels, CM_PREDS, num_classes=3)
    preds = CM_PREDS.copy()
    preds[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"predicted classes \[3\]"):
        confusion_matrix(CM_LABELS, preds, num_classes=3)


def test_mean_iou_hand_computed():
    # IoU = TP / (row + col - TP): class 0: 1/(1+2-1) = 1/2, class 1: 0/(2+0-0) = 0,
    # class 2: 2/(2+3-2) = 2/3; mean 7/18.
    evaluator = MeanIoUEvaluator(num_classes=3)
    assert evaluator.score(CM_LABELS, CM_PREDS) == pytest.approx(7 / 18, abs=1e-15)
    details = evaluator.result_details()
    np.testing.assert_allclose(details["per_class_iou"], [1 / 2, 0.0, 2 / 3], atol=1e-15)
    np.testing.assert_array_equal(details["confusion_matrix"], CM_EXPECTED)
    assert details["pixel_accuracy"] == pytest.approx(3 / 5)
    assert evaluator.name == "mean_iou" and evaluator.mode == "max"


def test_mean_iou_leaves_out_a_class_absent_from_labels_and_predictions():
    labels = np.array([[[0, 0], [1, 1]]], dtype=np.uint8)
    preds = np.array([[[0, 1], [1, 1]]], dtype=np.uint8)
    evaluator = MeanIoUEvaluator(num_classes=3)
    # class 0: 1/(2+1-1) = 1/2, class 1: 2/(2+3-2) = 2/3, class 2 (no dog anywhere): left out.
    assert evaluator.score(labels, preds) == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15)
    iou = evaluator.per_class_iou
    assert np.isnan(iou[2]) and iou[:2] == pytest.approx([1 / 2, 2 / 3])


def test_mean_iou_is_dataset_level_when_streaming():
    # Two batches whose per-batch mIoUs average to something else than the pooled matrix.
    a_true = np.array([[[0, 0, 0, 1]]], np.uint8)
    a_pred = np.array([[[0, 0, 0, 0]]], np.uint8)   # class0 3/4, class1 0   -> 3/8
    b_true = np.array([[[1, 1]]], np.uint8)
    b_pred = np.array([[[1, 1]]], np.uint8)         # class1 1               -> 1
    evaluator = MeanIoUEvaluator(num_classes=3)
    evaluator.update(a_true, a_pred)
    evaluator.update(b_true, b_pred)
    # Pooled: class0 TP 3, row 3, col 4 -> 3/4; class1 TP 2, row 3, col 2 -> 2/3.
    assert evaluator.result() == pytest.approx((3 / 4 + 2 / 3) / 2, abs=1e-15)
    np.testing.assert_array_equal(evaluator.confusion, [[3, 0, 0], [1, 2, 0], [0, 0, 0]])


def test_mean_iou_with_nothing_known_is_worst_score():
    labels = np.full((1, 2, 2), IGNORE, np.uint8)
    with pytest.warns(RuntimeWarning, match="no known"):
        assert MeanIoUEvaluator().score(labels, np.zeros((1, 2, 2), np.uint8)) == 0.0


# ----------------------------------------------------------------------------------------------
# The base class's generic streaming fallback (for evaluators that only define score()).
# ----------------------------------------------------------------------------------------------
class PixelErrorRate(Evaluator):
    """A 'min' evaluator defined the original way (score only): pooled error rate."""

    @property
    def worst_score(self) -> float:
        return 1.0

    @property
    def mode(self) -> str:
        return "min"

    def score(self, y_true, y_pred) -> float:
        known = y_true != IGNORE
        return float(np.mean(y_true[known] != y_pred[known]))

    def is_better(self, curr, best, score_threshold=1e-4) -> bool:
        return curr < best * (1 - score_threshold)


def test_base_class_streams_by_buffering_for_score_only_evaluators():
    evaluator = PixelErrorRate()
    assert evaluator.name == "pixelerrorrate"
    evaluator.update(CM_LABELS[:, :1], CM_PREDS[:, :1])     # 1 wrong of 3
    evaluator.update(CM_LABELS[:, 1:], CM_PREDS[:, 1:])     # 1 wrong of 2 known
    assert evaluator.result() == pytest.approx(2 / 5)
    evaluator.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluator.result() == 1.0
    assert any("no known" in str(w.message) for w in caught)
