"""Semantic-segmentation metrics against hand-counted confusion matrices."""

import math

import numpy as np
import pytest

from panoptic_perception.evaluation.semantic import SemanticSegmentationMetrics

# Classes 7 (road), 8 (sidewalk), 26 (car); 0 is void.
TRUTH = np.array(
    [
        [7, 7, 7, 8],
        [7, 7, 8, 8],
        [26, 26, 0, 0],
    ]
)
PREDICTION = np.array(
    [
        [7, 7, 8, 8],
        [7, 26, 8, 0],
        [26, 7, 26, 7],
    ]
)


def test_hand_counted_confusion_matrix():
    metrics = SemanticSegmentationMetrics([7, 8, 26])
    metrics.add(PREDICTION, TRUTH)
    # Counted pixels: the 10 with truth 7, 8 or 26 (the two void ones are left out).
    #            pred 7  8  26 other
    expected = [[3, 1, 1, 0],  # truth 7: (0,0) (0,1) (1,0) right, (0,2) -> 8, (1,1) -> 26
                [0, 2, 0, 1],  # truth 8: (0,3) (1,2) right, (1,3) predicted void
                [1, 0, 1, 0]]  # truth 26: (2,0) right, (2,1) -> 7
    np.testing.assert_array_equal(metrics.confusion, expected)
    result = metrics.compute()
    iou = {7: 3 / (5 + 4 - 3), 8: 2 / (3 + 3 - 2), 26: 1 / (2 + 2 - 1)}
    for class_id, value in iou.items():
        assert result["per_class_iou"][class_id] == pytest.approx(value)
    assert result["miou"] == pytest.approx(sum(iou.values()) / 3)
    assert result["pixel_accuracy"] == pytest.approx(6 / 10)
    assert result["mean_accuracy"] == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)
    assert result["pixels"] == 10 and result["images"] == 1


def test_one_confusion_matrix_over_all_images():
    metrics = SemanticSegmentationMetrics([7, 8, 26])
    metrics.add(PREDICTION, TRUTH)
    metrics.add(TRUTH, TRUTH)  # a perfect second image
    result = metrics.compute()
    # Road: TP 3 + 5, truth 5 + 5, predicted 4 + 5 -> 8 / 11 (not the mean of 0.5 and 1).
    assert result["per_class_iou"][7] == pytest.approx(8 / 11)
    assert result["pixel_accuracy"] == pytest.approx(16 / 20)


def test_ignore_ids_and_unknown_truth_are_not_counted():
    truth = np.array([[7, 255, 3, 8]])
    prediction = np.array([[7, 7, 7, 7]])
    metrics = SemanticSegmentationMetrics([7, 8, 3], ignore_ids=(0, 255, 3))
    assert metrics.class_ids == (7, 8)
    metrics.add(prediction, truth)
    result = metrics.compute()
    # Only (0,0) and (0,3) count: road right, sidewalk predicted as road.
    assert result["pixels"] == 2
    assert result["per_class_iou"] == {7: pytest.approx(1 / 2), 8: 0.0}
    assert result["pixel_accuracy"] == pytest.approx(1 / 2)
    assert 3 not in result["per_class_iou"]


def test_a_class_absent_everywhere_is_nan_and_skipped():
    metrics = SemanticSegmentationMetrics([7, 8, 26, 24])
    metrics.add(PREDICTION, TRUTH)
    result = metrics.compute()
    assert math.isnan(result["per_class_iou"][24]) and math.isnan(result["per_class_accuracy"][24])
    assert result["miou"] == pytest.approx((3 / 6 + 2 / 4 + 1 / 3) / 3)
    assert result["mean_accuracy"] == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)


def test_a_class_only_predicted_has_iou_zero_and_no_accuracy():
    metrics = SemanticSegmentationMetrics([7, 24])
    metrics.add(np.array([[7, 24]]), np.array([[7, 7]]))
    result = metrics.compute()
    assert result["per_class_iou"] == {7: 0.5, 24: 0.0}
    assert result["miou"] == 0.25
    assert math.isnan(result["per_class_accuracy"][24]) and result["mean_accuracy"] == 0.5


def test_class_order_follows_the_caller_and_batches_work():
    metrics = SemanticSegmentationMetrics([26, 8, 7])
    metrics.add(np.stack([PREDICTION, PREDICTION]), np.stack([TRUTH, TRUTH]))
    np.testing.assert_array_equal(metrics.confusion, 2 * np.array([[1, 0, 1, 0], [0, 2, 0, 1], [1, 1, 3, 0]]))


def test_only_ignored_pixels_and_empty_evaluator():
    metrics = SemanticSegmentationMetrics([7, 8])
    with pytest.raises(ValueError, match="no images"):
        metrics.compute()
    metrics.add(np.full((2, 2), 7), np.zeros((2, 2)))
    result = metrics.compute()
    assert math.isnan(result["miou"]) and math.isnan(result["pixel_accuracy"]) and result["pixels"] == 0
    with pytest.raises(ValueError):
        metrics.add(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        SemanticSegmentationMetrics([0], ignore_ids=(0,))
