"""Drivable-area and lane-line metrics as the official TwinLiteNet / YOLOP evaluation computes them.

Official form (the papers' numbers): for every batch a 2x2 confusion matrix (rows ground truth,
columns prediction) is computed afresh, per-batch metrics are averaged weighted by batch size (so the
result depends on the batch size), and a NaN IoU counts as 0.

- ``drivable_miou``: mean IoU over both classes (background and drivable).
- ``lane_iou``: IoU of the lane class only (0 for a batch without any lane pixel).
- ``lane_accuracy``: overall two-class pixel accuracy — the TwinLiteNet paper's "accuracy" (97.3).
- ``lane_recall``: TP / (TP + FN) of the lane class — YOLOP's and YOLOPv2's "accuracy" (87.3).

The standard form, one confusion matrix accumulated over the whole dataset, is reported beside it
with the prefix ``global_``.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, num_classes: int = 2) -> np.ndarray:
    """(num_classes, num_classes) pixel counts, rows ground truth, columns prediction.

    Pixels whose target is outside ``[0, num_classes)`` (an ignore label) are not counted.
    """
    prediction = np.asarray(prediction).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target differ in size: {prediction.size} vs {target.size}")
    valid = (target >= 0) & (target < num_classes)
    return np.bincount(num_classes * target[valid] + prediction[valid], minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio with 0 where the denominator is 0 (the official NaN → 0)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    tp = np.diag(confusion)
    return _ratio(tp, confusion.sum(0) + confusion.sum(1) - tp)


def pixel_accuracy(confusion: np.ndarray) -> float:
    return float(_ratio(np.trace(confusion), confusion.sum()))


def recall_per_class(confusion: np.ndarray) -> np.ndarray:
    return _ratio(np.diag(confusion), confusion.sum(1))


def _metrics(drivable: np.ndarray, lane: np.ndarray) -> dict[str, float]:
    drivable_iou = iou_per_class(drivable)
    return {
        "drivable_miou": float(drivable_iou.mean()),
        "drivable_iou": float(drivable_iou[1]),
        "drivable_background_iou": float(drivable_iou[0]),
        "drivable_accuracy": pixel_accuracy(drivable),
        "lane_iou": float(iou_per_class(lane)[1]),
        "lane_accuracy": pixel_accuracy(lane),
        "lane_recall": float(recall_per_class(lane)[1]),
    }


class DrivingSegmentationMetrics:
    """Accumulates drivable-area and lane-line predictions batch by batch (official and global forms)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._weighted_sums: dict[str, float] = {}
        self._images = 0
        self._drivable = np.zeros((2, 2), np.int64)
        self._lane = np.zeros((2, 2), np.int64)

    def update(
        self, drivable_pred: np.ndarray, drivable_true: np.ndarray, lane_pred: np.ndarray, lane_true: np.ndarray
    ) -> None:
        """Add one batch of (N, H, W) (or (H, W)) 0/1 masks."""
        drivable_pred = np.asarray(drivable_pred)
        batch_size = drivable_pred.shape[0] if drivable_pred.ndim == 3 else 1
        drivable = confusion_matrix(drivable_pred, drivable_true)
        lane = confusion_matrix(lane_pred, lane_true)
        for name, value in _metrics(drivable, lane).items():
            self._weighted_sums[name] = self._weighted_sums.get(name, 0.0) + value * batch_size
        self._images += batch_size
        self._drivable += drivable
        self._lane += lane

    @property
    def images(self) -> int:
        return self._images

    def compute(self) -> dict[str, float]:
        if self._images == 0:
            raise ValueError("no batches were added")
        results = {name: total / self._images for name, total in self._weighted_sums.items()}
        results.update({f"global_{name}": value for name, value in _metrics(self._drivable, self._lane).items()})
        results["images"] = self._images
        return results
