"""The official drivable/lane metrics against a straightforward re-statement of their definitions."""

import math

import numpy as np
import pytest

from panoptic_perception.evaluation.segmentation import DrivingSegmentationMetrics, confusion_matrix


def reference_batch_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Plain counting, as written in the official definitions; NaN → 0."""
    tp = np.sum((pred == 1) & (true == 1))
    tn = np.sum((pred == 0) & (true == 0))
    fp = np.sum((pred == 1) & (true == 0))
    fn = np.sum((pred == 0) & (true == 1))

    def safe(a, b):
        return 0.0 if b == 0 else a / b

    iou1 = safe(tp, tp + fp + fn)
    iou0 = safe(tn, tn + fn + fp)
    return {"miou": (iou0 + iou1) / 2, "iou1": iou1, "accuracy": safe(tp + tn, tp + tn + fp + fn), "recall": safe(tp, tp + fn)}


def make_batches(seed: int, batch_sizes: list[int]):
    rng = np.random.default_rng(seed)
    for size in batch_sizes:
        true = (rng.random((size, 12, 16)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
        noise = rng.random(true.shape) < rng.uniform(0.0, 0.3)
        yield np.where(noise, 1 - true, true).astype(np.uint8), true


def test_official_form_is_batch_weighted_average_of_per_batch_metrics():
    sizes = [4, 1, 3, 4]
    drivable, lane = list(make_batches(0, sizes)), list(make_batches(10, sizes))
    metrics = DrivingSegmentationMetrics()
    for (dp, dt), (lp, lt) in zip(drivable, lane):
        metrics.update(dp, dt, lp, lt)
    result = metrics.compute()

    sums = {"drivable_miou": 0.0, "lane_iou": 0.0, "lane_accuracy": 0.0, "lane_recall": 0.0}
    for n, (dp, dt), (lp, lt) in zip(sizes, drivable, lane):
        d, l = reference_batch_metrics(dp, dt), reference_batch_metrics(lp, lt)
        sums["drivable_miou"] += d["miou"] * n
        sums["lane_iou"] += l["iou1"] * n
        sums["lane_accuracy"] += l["accuracy"] * n
        sums["lane_recall"] += l["recall"] * n
    for name, value in sums.items():
        assert result[name] == pytest.approx(value / sum(sizes), abs=1e-12), name
    assert result["images"] == sum(sizes)


def test_global_form_uses_one_confusion_over_everything():
    batches = list(make_batches(1, [2, 5]))
    metrics = DrivingSegmentationMetrics()
    for pred, true in batches:
        metrics.update(pred, true, pred, true)
    all_pred = np.concatenate([p for p, _ in batches])
    all_true = np.concatenate([t for _, t in batches])
    reference = reference_batch_metrics(all_pred, all_true)
    result = metrics.compute()
    assert result["global_drivable_miou"] == pytest.approx(reference["miou"])
    assert result["global_lane_recall"] == pytest.approx(reference["recall"])
    # The two forms really differ on uneven batches.
    assert not math.isclose(result["global_lane_iou"], result["lane_iou"], abs_tol=1e-9)


def test_batch_without_lane_pixels_scores_zero_iou_and_recall():
    metrics = DrivingSegmentationMetrics()
    empty = np.zeros((2, 4, 4), np.uint8)
    metrics.update(empty, empty, empty, empty)
    result = metrics.compute()
    assert result["lane_iou"] == 0.0 and result["lane_recall"] == 0.0
    assert result["lane_accuracy"] == 1.0
    assert result["drivable_miou"] == 0.5, "IoU of the absent class counts as 0 in the mean"


def test_confusion_matrix_rows_are_truth_and_ignore_label_is_skipped():
    pred = np.array([0, 1, 1, 0, 1])
    true = np.array([0, 1, 0, 255, 1])
    assert confusion_matrix(pred, true).tolist() == [[1, 1], [0, 2]]


def test_hand_computed_example():
    true = np.array([[1, 1, 0, 0]], np.uint8)
    pred = np.array([[1, 0, 1, 0]], np.uint8)
    metrics = DrivingSegmentationMetrics()
    metrics.update(pred, true, pred, true)
    r = metrics.compute()
    # TP=1 FN=1 FP=1 TN=1: IoU1 = 1/3, IoU0 = 1/3, accuracy 1/2, recall 1/2
    assert r["lane_iou"] == pytest.approx(1 / 3) and r["drivable_miou"] == pytest.approx(1 / 3)
    assert r["lane_accuracy"] == pytest.approx(0.5) and r["lane_recall"] == pytest.approx(0.5)
