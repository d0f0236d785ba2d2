"""Object-detection metrics: COCO-style AP through pycocotools, and the official YOLOP evaluation.

:class:`DetectionMetrics` collects predictions and ground truth image by image and computes two
families of numbers from them.

COCO style (``AP``, ``AP50``, ...)
    The ground truth and the detections are put into in-memory ``pycocotools.coco.COCO`` objects (no
    files) and evaluated with ``COCOeval(..., iouType="bbox")`` and its default parameters, so the
    numbers are pycocotools' own: per class, detections matched greedily in descending score to the
    best still unmatched ground truth with IoU >= t, crowd boxes (``gt_crowd``) never counted as
    misses and detections on them ignored, precision sampled at the 101 recall thresholds 0:0.01:1
    and averaged over classes that have ground truth. Class ids are the caller's integers (predictions
    and truth must use the same ids). A ground-truth box's area (for AP_small/medium/large) is its box
    area. **pycocotools keeps at most 100 detections per image and class** (``maxDets``: the
    highest-scoring ones), so AP* and AR100 ignore the rest; AR1 and AR10 keep 1 and 10. Keys: ``AP``
    (IoU 0.5:0.95), ``AP50``, ``AP75``, ``AP_small``, ``AP_medium``, ``AP_large``, ``AR1``, ``AR10``,
    ``AR100``, ``AR_small``, ``AR_medium``, ``AR_large`` and ``per_class_AP`` {class id: AP 0.5:0.95}.
    Where pycocotools reports -1 (nothing to average, e.g. no small boxes, or a class that only
    occurs in the predictions) the value here is NaN.

YOLOP style (``map50``, ``map``, ``recall``, ``precision``)
    The evaluation in YOLOP's ``lib/core/function.py`` / ``evaluate.py`` (hustvl/YOLOP, MIT), whose
    numbers the YOLOP and YOLOPv2 papers report for the single class "vehicle". Class ids are ignored:
    every box is one class, so pass only the boxes to be merged. Per image, predictions are visited in
    descending score; each takes the ground-truth box it overlaps most (over *all* ground truth of the
    image, taken or not); if that IoU is > 0.5 and the box was not taken by an earlier prediction, the
    prediction is a true positive at every threshold t in 0.5:0.05:0.95 with IoU > t, otherwise it is a
    false positive at every threshold. (Unlike COCO, a prediction whose best box is already taken does
    not fall back to another box, and a true positive's IoU at the higher thresholds is that of its 0.5
    match.) Over the dataset, precision and recall are accumulated in descending score; the AP of a
    threshold is the YOLOv5 "101-point interpolation": sentinels (recall 0, precision 1) and
    (last recall + 0.01, precision 0) are added, precision is made monotone (its running maximum from
    the right), linearly interpolated at recall 0, 0.01, ..., 1 and integrated with the trapezoidal
    rule (see :func:`average_precision`). ``map50`` is the AP at IoU 0.5, ``map`` the mean over the 10
    thresholds, ``ap_per_iou`` the 10 APs; ``recall`` and ``precision`` are taken at the lowest
    confidence, i.e. over all predictions, at IoU 0.5 (YOLOP picks the confidence of maximal recall).
    ``pr_recall`` / ``pr_precision`` are the raw precision-recall points at IoU 0.5, one per prediction
    in descending score, for plotting. IoUs and thresholds are computed in float64 (YOLOP: float32 on
    the network's device), which can only matter for an IoU within float32 rounding of a threshold.

    Crowd boxes have no meaning in YOLOP's evaluation; they are left out of it (neither targets nor
    ignored regions). With no prediction at all the official code reports zeros, and so does this
    one; with no ground truth at all AP and recall are undefined (NaN), precision is 0 (every
    prediction is false) and the curve is empty.

The YOLOP-style AP50 is *not* pycocotools' AP50, even where both matchings agree (well separated
ground truth, no crowd, < 100 detections per image): both read the same precision envelope, but COCO
averages it sampled at the 101 recall thresholds, while YOLOP integrates the linearly interpolated
envelope with the trapezoidal rule, so the ends of [0, 1] count half, the sentinel adds a 0.01-wide
ramp after the last recall, and at a recall value that falls exactly on the 0.01 grid the envelope is
read just after the drop rather than before it. :func:`average_precision` implements both rules; on
the same curve they differ by at most 0.02 when no recall value other than 1 falls on the grid.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch

from ..nn.boxes import box_iou

#: IoU thresholds of both evaluations: 0.5, 0.55, ..., 0.95.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)

#: The recall grid of both "101-point" rules: 0, 0.01, ..., 1 (built as pycocotools builds it).
RECALL_GRID = np.linspace(0.0, 1.0, 101)

_COCO_STATS = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def average_precision(recall: np.ndarray, precision: np.ndarray, method: str = "yolop") -> float:
    """AP of one precision-recall curve (points in descending score order).

    ``method="yolop"``: YOLOP's / YOLOv5's ``compute_ap`` — add (0, 1) before and
    (last recall + 0.01, 0) after the curve, take the precision envelope (running maximum from the
    right), interpolate it linearly at :data:`RECALL_GRID` (``np.interp``) and integrate with the
    trapezoidal rule.

    ``method="coco"``: pycocotools' ``accumulate`` — for each recall threshold r of
    :data:`RECALL_GRID`, the envelope at the first point with recall >= r (0 where the curve never
    reaches r), averaged over the 101 thresholds.

    An empty curve has AP 0.
    """
    recall = np.asarray(recall, np.float64).ravel()
    precision = np.asarray(precision, np.float64).ravel()
    if recall.shape != precision.shape:
        raise ValueError(f"recall and precision differ in length: {recall.size} vs {precision.size}")
    if recall.size == 0:
        return 0.0
    if method == "yolop":
        xs = np.concatenate(([0.0], recall, [recall[-1] + 0.01]))
        ys = np.concatenate(([1.0], precision, [0.0]))
        envelope = np.maximum.accumulate(ys[::-1])[::-1]
        samples = np.interp(RECALL_GRID, xs, envelope)
        step = np.diff(RECALL_GRID)
        return float(np.sum(step * (samples[1:] + samples[:-1]) / 2))
    if method == "coco":
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, RECALL_GRID, side="left")
        samples = np.where(first < recall.size, envelope[np.minimum(first, recall.size - 1)], 0.0)
        return float(samples.mean())
    raise ValueError(f"unknown AP method {method!r} (use 'yolop' or 'coco')")


def _as_boxes(boxes, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) xyxy boxes, got shape {boxes.shape}")
    return boxes


def _as_vector(values, length: int, name: str, dtype) -> np.ndarray:
    values = np.asarray(values, dtype).ravel()
    if values.size != length:
        raise ValueError(f"{name} has {values.size} entries for {length} boxes")
    return values


def _yolop_correct(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """(N, 10) true-positive flags of score-sorted predictions, YOLOP's per-image matching."""
    correct = np.zeros((len(pred_boxes), len(IOU_THRESHOLDS)), bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return correct
    iou = box_iou(torch.from_numpy(pred_boxes), torch.from_numpy(gt_boxes)).numpy()
    best_target = iou.argmax(1)
    best_iou = iou[np.arange(len(pred_boxes)), best_target]
    candidates = np.flatnonzero(best_iou > IOU_THRESHOLDS[0])
    # The first (highest-scoring) candidate of each target claims it; later ones stay false positives.
    _, first = np.unique(best_target[candidates], return_index=True)
    winners = candidates[first]
    correct[winners] = best_iou[winners, None] > IOU_THRESHOLDS[None, :]
    return correct


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _nan_if_absent(value: float) -> float:
    return math.nan if value == -1 else float(value)


class DetectionMetrics:
    """Accumulates detections image by image; :meth:`compute` gives COCO-style and YOLOP-style metrics.

    See the module docstring for the exact definitions.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._images: list[tuple[np.ndarray, ...]] = []
        self._correct: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._targets = 0

    @property
    def images(self) -> int:
        return len(self._images)

    def add(
        self,
        pred_boxes: np.ndarray,
        pred_scores: np.ndarray,
        pred_classes: np.ndarray,
        gt_boxes: np.ndarray,
        gt_classes: np.ndarray,
        gt_crowd: np.ndarray | None = None,
    ) -> None:
        """Add one image: predictions (N, 4) xyxy pixels with scores and class ids, truth (M, 4) with
        class ids and optional crowd flags (default: no crowd). Either side may be empty."""
        pred_boxes = _as_boxes(pred_boxes, "pred_boxes")
        pred_scores = _as_vector(pred_scores, len(pred_boxes), "pred_scores", np.float64)
        pred_classes = _as_vector(pred_classes, len(pred_boxes), "pred_classes", np.int64)
        gt_boxes = _as_boxes(gt_boxes, "gt_boxes")
        gt_classes = _as_vector(gt_classes, len(gt_boxes), "gt_classes", np.int64)
        if gt_crowd is None:
            gt_crowd = np.zeros(len(gt_boxes), bool)
        gt_crowd = _as_vector(gt_crowd, len(gt_boxes), "gt_crowd", bool)
        self._images.append((pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, gt_crowd))

        order = np.argsort(-pred_scores, kind="stable")
        targets = gt_boxes[~gt_crowd]
        self._correct.append(_yolop_correct(pred_boxes[order], targets))
        self._scores.append(pred_scores[order])
        self._targets += len(targets)

    def compute(self) -> dict:
        if not self._images:
            raise ValueError("no images were added")
        results: dict = self._compute_coco()
        results.update(self._compute_yolop())
        results["images"] = len(self._images)
        return results

    # COCO ------------------------------------------------------------------------------------------

    def coco_datasets(self) -> tuple[dict, list[dict]]:
        """The ground truth as a COCO dataset dict and the detections as a COCO results list.

        Images get ids 1..n in the order they were added, ground-truth annotations ids 1..m; a box's
        ``area`` is its width times height.
        """
        images, annotations, detections, category_ids = [], [], [], set()
        for image_id, (pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes, gt_crowd) in enumerate(
            self._images, start=1
        ):
            images.append({"id": image_id})
            for box, cls, crowd in zip(gt_boxes, gt_classes, gt_crowd):
                xywh = _xywh(box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(cls),
                        "bbox": xywh,
                        "area": xywh[2] * xywh[3],
                        "iscrowd": int(crowd),
                    }
                )
            for box, score, cls in zip(pred_boxes, pred_scores, pred_classes):
                detections.append({"image_id": image_id, "category_id": int(cls), "bbox": _xywh(box), "score": float(score)})
            category_ids.update(int(c) for c in gt_classes)
            category_ids.update(int(c) for c in pred_classes)
        categories = [{"id": c, "name": str(c)} for c in sorted(category_ids)]
        return {"images": images, "annotations": annotations, "categories": categories}, detections

    def _compute_coco(self) -> dict:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        dataset, detections = self.coco_datasets()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and a summary
            truth = COCO()
            truth.dataset = dataset
            truth.createIndex()
            if detections:
                predicted = truth.loadRes(detections)
            else:  # loadRes cannot take an empty list
                predicted = COCO()
                predicted.dataset = {"images": list(dataset["images"]), "categories": dataset["categories"], "annotations": []}
                predicted.createIndex()
            evaluation = COCOeval(truth, predicted, iouType="bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        results = {name: _nan_if_absent(value) for name, value in zip(_COCO_STATS, evaluation.stats)}
        # precision: [IoU threshold, recall threshold, class, area range ("all" first), maxDets (100 last)]
        precision = evaluation.eval["precision"]
        per_class = {}
        for k, class_id in enumerate(evaluation.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            per_class[int(class_id)] = float(values.mean()) if values.size else math.nan
        results["per_class_AP"] = per_class
        return results

    # YOLOP -----------------------------------------------------------------------------------------

    def _compute_yolop(self) -> dict:
        correct = np.concatenate(self._correct)
        scores = np.concatenate(self._scores)
        order = np.argsort(-scores, kind="stable")
        correct = correct[order]
        n_pred, n_true = len(correct), self._targets
        empty = np.zeros(0, np.float64)
        if n_true == 0:
            return {
                "map50": math.nan,
                "map": math.nan,
                "ap_per_iou": np.full(len(IOU_THRESHOLDS), math.nan),
                "recall": math.nan,
                "precision": 0.0 if n_pred else math.nan,
                "pr_recall": empty,
                "pr_precision": empty,
            }
        if n_pred == 0:
            return {
                "map50": 0.0,
                "map": 0.0,
                "ap_per_iou": np.zeros(len(IOU_THRESHOLDS)),
                "recall": 0.0,
                "precision": 0.0,
                "pr_recall": empty,
                "pr_precision": empty,
            }
        true_positives = np.cumsum(correct, axis=0, dtype=np.float64)
        false_positives = np.cumsum(~correct, axis=0, dtype=np.float64)
        recall = true_positives / n_true
        precision = true_positives / (true_positives + false_positives)
        ap = np.array([average_precision(recall[:, j], precision[:, j], "yolop") for j in range(correct.shape[1])])
        return {
            "map50": float(ap[0]),
            "map": float(ap.mean()),
            "ap_per_iou": ap,
            "recall": float(recall[-1, 0]),
            "precision": float(precision[-1, 0]),
            "pr_recall": recall[:, 0].copy(),
            "pr_precision": precision[:, 0].copy(),
        }
