"""Semantic-segmentation metrics in the standard form: one confusion matrix over the whole dataset.

The definitions are those of the Cityscapes pixel-level benchmark (``cityscapesscripts``
``evalPixelLevelSemanticLabeling``) for label ids:

- The evaluated classes are ``class_ids`` minus ``ignore_ids``. A pixel counts only if its truth is
  an evaluated class; pixels whose truth is an ignore id (void) or any other id are left out.
- Counted pixels are accumulated into one confusion matrix (rows truth, columns prediction) over all
  images added. Its last column collects predictions that are *not* an evaluated class (void, an
  ignored class, an unknown id): such a pixel is a false negative of its true class and a false
  positive of no class, as in Cityscapes.
- ``per_class_iou``: TP / (TP + FP + FN) per class, NaN for a class that appears neither in the
  counted truth nor in the prediction on counted pixels (0 / 0).
- ``miou``: the mean of the per-class IoUs that are not NaN — Cityscapes' average over the evaluated
  classes with absent classes skipped (equivalently: over the classes that appear in the truth or in
  the prediction). NaN when no class appears at all.
- ``pixel_accuracy``: correctly labelled counted pixels / counted pixels.
- ``mean_accuracy``: the mean over classes with truth pixels of TP / (TP + FN) (per-class recall);
  ``per_class_accuracy`` holds the values, NaN for classes without truth pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


class SemanticSegmentationMetrics:
    """Accumulates (H, W) class-id maps (any matching shapes, e.g. batches) into one confusion matrix."""

    def __init__(self, class_ids: Sequence[int], ignore_ids: Iterable[int] = (0,)) -> None:
        ignored = {int(i) for i in ignore_ids}
        ids = [int(c) for c in class_ids if int(c) not in ignored]
        if len(set(ids)) != len(ids):
            raise ValueError("class_ids repeat an id")
        if not ids:
            raise ValueError("no class left to evaluate")
        #: The evaluated class ids, in the caller's order (the confusion matrix's row order).
        self.class_ids = tuple(ids)
        self.ignore_ids = frozenset(ignored)
        self._sorted = np.array(sorted(ids), np.int64)
        # Position in the caller's order of each id in ascending order.
        self._rank = np.array([ids.index(c) for c in self._sorted.tolist()], np.int64)
        self.reset()

    def reset(self) -> None:
        k = len(self.class_ids)
        self._confusion = np.zeros((k, k + 1), np.int64)
        self._images = 0

    @property
    def confusion(self) -> np.ndarray:
        """(K, K + 1) pixel counts: rows true class, columns predicted class, last column "not an
        evaluated class". Classes in :attr:`class_ids` order."""
        return self._confusion.copy()

    @property
    def images(self) -> int:
        return self._images

    def _index(self, ids: np.ndarray) -> np.ndarray:
        """Row/column index of each id; K (the "other" column) for ids that are not evaluated."""
        position = np.searchsorted(self._sorted, ids)
        clipped = np.minimum(position, len(self._sorted) - 1)
        known = self._sorted[clipped] == ids
        return np.where(known, self._rank[clipped], len(self._sorted))

    def add(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        prediction = np.asarray(prediction).astype(np.int64, copy=False).ravel()
        truth = np.asarray(truth).astype(np.int64, copy=False).ravel()
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction and truth differ in size: {prediction.size} vs {truth.size}")
        k = len(self.class_ids)
        rows = self._index(truth)
        counted = rows < k
        columns = self._index(prediction[counted])
        self._confusion += np.bincount(rows[counted] * (k + 1) + columns, minlength=k * (k + 1)).reshape(k, k + 1)
        self._images += 1

    def compute(self) -> dict:
        if self._images == 0:
            raise ValueError("no images were added")
        confusion = self._confusion.astype(np.float64)
        k = len(self.class_ids)
        tp = np.diag(confusion[:, :k])
        truth_total = confusion.sum(1)
        predicted_total = confusion[:, :k].sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (truth_total + predicted_total - tp)
            accuracy = tp / truth_total
        total = confusion.sum()
        return {
            "miou": _nanmean(iou),
            "per_class_iou": {c: float(v) for c, v in zip(self.class_ids, iou)},
            "pixel_accuracy": float(tp.sum() / total) if total else math.nan,
            "mean_accuracy": _nanmean(accuracy),
            "per_class_accuracy": {c: float(v) for c, v in zip(self.class_ids, accuracy)},
            "pixels": int(total),
            "images": self._images,
        }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan
