"""Panoptic quality (PQ) of Kirillov et al., "Panoptic Segmentation" (CVPR 2019, arXiv:1801.00868).

The counting follows the reference implementations — the COCO panoptic API's ``pq_compute`` and
cityscapesscripts' ``evalPanopticSemanticLabeling`` (the same code) — image by image:

- Panoptic ids are ``category * label_divisor + instance``; ``void_id`` is void. A truth pixel is
  VOID if its id is ``void_id`` or its category is not in ``categories`` (Cityscapes' panoptic
  ground truth writes the classes it does not evaluate as void). A predicted pixel whose id is
  ``void_id`` or whose category is not in ``categories`` belongs to no segment (the references
  refuse such categories; here they are ignored, as if predicted void).
- A predicted and a truth segment of the same category match if IoU > 0.5, where the union is
  ``|pred| + |truth| - |pred ∩ truth| - |pred ∩ truth VOID|``: the predicted pixels on VOID do not
  count. Crowd truth segments (``truth_crowd``) are never matched. IoU > 0.5 makes matches unique.
- Each match is a TP of its category and adds its IoU; an unmatched non-crowd truth segment is a FN.
- An unmatched predicted segment is a FP unless ``(|pred ∩ VOID| + |pred ∩ crowd of its category|)
  / |pred| > 0.5``, the denominator being the segment's whole area (VOID pixels included).
- Per category c with TP + FP + FN > 0: ``PQ_c = sum IoU / (TP + FP/2 + FN/2)``,
  ``SQ_c = sum IoU / TP`` (0 when TP = 0), ``RQ_c = TP / (TP + FP/2 + FN/2)``. ``all``, ``things``
  and ``stuff`` are plain means over those categories (``n`` of them); categories without any
  TP, FP or FN are left out of the means (their ``per_class`` PQ/SQ/RQ are NaN here; the
  references write 0 for them) and a group with ``n = 0`` has NaN means (the references divide by
  zero).

One deliberate difference: the references remember a single crowd segment per category and image
(the last one listed), while here every crowd segment of the category counts for the FP rule. With
at most one crowd region per category and image, as COCO and Cityscapes ground truth have, the two
agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np


class PanopticQuality:
    """Accumulates panoptic id maps image by image; :meth:`compute` gives PQ, SQ and RQ."""

    def __init__(self, categories: Mapping[int, bool], label_divisor: int = 1000, void_id: int = 0) -> None:
        """``categories``: category id → is_thing, the categories evaluated."""
        if not categories:
            raise ValueError("no categories to evaluate")
        if label_divisor < 1:
            raise ValueError("label_divisor must be positive")
        self.categories = {int(c): bool(thing) for c, thing in categories.items()}
        self.label_divisor = int(label_divisor)
        self.void_id = int(void_id)
        self.reset()

    def reset(self) -> None:
        self._iou = {c: 0.0 for c in self.categories}
        self._tp = dict.fromkeys(self.categories, 0)
        self._fp = dict.fromkeys(self.categories, 0)
        self._fn = dict.fromkeys(self.categories, 0)
        self._images = 0

    @property
    def images(self) -> int:
        return self._images

    def _known(self, ids: np.ndarray) -> np.ndarray:
        """Which segment ids are real segments (not void, of an evaluated category)."""
        known = np.fromiter(self.categories, np.int64)
        return (ids != self.void_id) & np.isin(ids // self.label_divisor, known)

    def add(self, prediction: np.ndarray, truth: np.ndarray, truth_crowd: Iterable[int] = ()) -> None:
        """Add one image: (H, W) panoptic id maps; ``truth_crowd`` lists truth segment ids that are crowd."""
        prediction = np.asarray(prediction).astype(np.int64, copy=False)
        truth = np.asarray(truth).astype(np.int64, copy=False)
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction and truth differ in shape: {prediction.shape} vs {truth.shape}")
        truth_ids, truth_index = np.unique(truth.ravel(), return_inverse=True)
        pred_ids, pred_index = np.unique(prediction.ravel(), return_inverse=True)
        # intersection[i, j]: pixels with truth id truth_ids[i] and predicted id pred_ids[j].
        intersection = np.bincount(
            truth_index.ravel() * len(pred_ids) + pred_index.ravel(), minlength=len(truth_ids) * len(pred_ids)
        ).reshape(len(truth_ids), len(pred_ids))

        truth_known, pred_known = self._known(truth_ids), self._known(pred_ids)
        on_void = intersection[~truth_known].sum(0)  # per predicted id: pixels on truth VOID
        pred_area = intersection.sum(0)
        crowd_ids = {int(i) for i in truth_crowd}
        truth_is_crowd = np.array([int(t) in crowd_ids for t in truth_ids], bool) & truth_known
        truth_category = truth_ids // self.label_divisor
        pred_category = pred_ids // self.label_divisor

        rows = np.flatnonzero(truth_known)
        columns = np.flatnonzero(pred_known)
        truth_area = intersection[rows].sum(1)
        pair = intersection[np.ix_(rows, columns)].astype(np.float64)
        union = truth_area[:, None] + (pred_area - on_void)[columns][None, :] - pair
        same_category = truth_category[rows][:, None] == pred_category[columns][None, :]
        eligible = same_category & ~truth_is_crowd[rows][:, None]
        iou = np.divide(pair, union, out=np.zeros_like(pair), where=union > 0)
        matched = eligible & (iou > 0.5)
        truth_matched = matched.any(1)
        pred_matched = matched.any(0)

        for r, c in zip(*np.nonzero(matched)):
            category = int(truth_category[rows[r]])
            self._tp[category] += 1
            self._iou[category] += float(iou[r, c])
        for r in np.flatnonzero(~truth_matched & ~truth_is_crowd[rows]):
            self._fn[int(truth_category[rows[r]])] += 1

        crowd_rows = np.flatnonzero(truth_is_crowd)
        for c in np.flatnonzero(~pred_matched):
            column = columns[c]
            category = int(pred_category[column])
            ignored = on_void[column]
            same_crowd = crowd_rows[truth_category[crowd_rows] == category]
            ignored += intersection[same_crowd, column].sum()
            if ignored / pred_area[column] > 0.5:
                continue
            self._fp[category] += 1
        self._images += 1

    def compute(self) -> dict:
        if self._images == 0:
            raise ValueError("no images were added")
        per_class: dict[int, dict] = {}
        for category in sorted(self.categories):
            tp, fp, fn, iou = self._tp[category], self._fp[category], self._fn[category], self._iou[category]
            counts = {"tp": tp, "fp": fp, "fn": fn}
            if tp + fp + fn == 0:
                per_class[category] = {"pq": math.nan, "sq": math.nan, "rq": math.nan, **counts}
                continue
            denominator = tp + 0.5 * fp + 0.5 * fn
            per_class[category] = {"pq": iou / denominator, "sq": iou / tp if tp else 0.0, "rq": tp / denominator, **counts}
        results: dict = {}
        for name, wanted in (("all", None), ("things", True), ("stuff", False)):
            included = [
                per_class[c]
                for c, is_thing in self.categories.items()
                if (wanted is None or is_thing == wanted) and not math.isnan(per_class[c]["pq"])
            ]
            n = len(included)
            results[name] = {
                key: (sum(values[key] for values in included) / n if n else math.nan) for key in ("pq", "sq", "rq")
            }
            results[name]["n"] = n
        results["per_class"] = per_class
        results["images"] = self._images
        return results
