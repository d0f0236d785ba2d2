"""Scoring a backend's results against ground truth, for every output both have, frame by frame.

Each frame is added with :meth:`Evaluator.add` (the prediction and the truth as
:class:`~panoptic_perception.core.types.PerceptionResult`, any output of either may be missing);
:meth:`Evaluator.compute` gives one dictionary with a section per output kind:

- ``driving``: drivable-area and lane-line metrics in the official TwinLiteNet/YOLOP form (each frame
  is one batch of size 1) and the standard dataset-wide form (``global_*``);
- ``detection``: COCO-style AP (pycocotools) and the YOLOP-style mAP50 / recall. Classes are matched
  by name; a backend whose only class is "vehicle" (the released YOLOPv2) is scored as YOLOP does:
  car, bus, truck and train of the truth merged into one vehicle class, other classes left out;
- ``semantic``: mIoU and per-class IoU over the backend's classes (truth void ignored);
- ``panoptic``: PQ / SQ / RQ (all, things, stuff);
- ``ground``: where the truth is in metres (synthetic scenes), the outputs placed on the ground: drivable
  IoU within 40 m and object range error within 50 m (:mod:`.ground`);
- ``latency_ms`` and throughput, from each frame's time.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from ..core.labels import VEHICLE_CLASSES, LabelMap
from ..core.types import Capability, Detections, PerceptionResult
from .detection import DetectionMetrics
from .ground import GroundMetrics, ground_truth_of
from .panoptic import PanopticQuality
from .segmentation import DrivingSegmentationMetrics, confusion_matrix, iou_per_class
from .semantic import SemanticSegmentationMetrics


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, float)
    return {"median": float(np.median(array)), "p90": float(np.percentile(array, 90)),
            "p95": float(np.percentile(array, 95)), "mean": float(array.mean()), "max": float(array.max())}


class Evaluator:
    """Metrics of one backend (its ``label_map`` and ``capabilities``) over a sequence of frames."""

    def __init__(self, label_map: LabelMap, capabilities: Iterable[Capability]) -> None:
        capabilities = set(capabilities)
        self.label_map = label_map
        names = {c.name for c in label_map.classes}
        self.merge_vehicles = names == {"vehicle"}
        self._class_by_name = {c.name: c.id for c in label_map.classes}
        self.driving = DrivingSegmentationMetrics() if {Capability.DRIVABLE_AREA, Capability.LANE_LINES} <= capabilities else None
        self.detection = DetectionMetrics() if Capability.DETECTION in capabilities else None
        self.semantic = SemanticSegmentationMetrics(label_map.ids.tolist()) if Capability.SEMANTIC in capabilities else None
        self.panoptic = (PanopticQuality({c.id: c.is_thing for c in label_map.classes})
                         if Capability.PANOPTIC in capabilities else None)
        self.ground = GroundMetrics(label_map, self.merge_vehicles)
        self.frames: list[dict] = []
        self._latencies: list[float] = []

    def add(self, name: str, prediction: PerceptionResult, truth: PerceptionResult | None, latency_ms: float | None = None) -> dict:
        """Score one frame; returns its per-frame record (also kept in :attr:`frames`).

        Raises ValueError, before anything is counted, when a map of the prediction (drivable area, lane
        lines, semantic, panoptic) has another shape than the truth's, or the prediction another image size
        than the camera of a truth in metres: a frame is scored whole or not at all.
        """
        record: dict = {"frame": name}
        if latency_ms is not None:
            record["latency_ms"] = round(latency_ms, 3)
        if truth is not None:
            ground_truth = ground_truth_of(truth)
            if ground_truth is not None:
                ground_truth.calibration.check_image(*prediction.image_size)
            for field in ("drivable_mask", "lane_mask", "semantic", "panoptic"):
                predicted, true = getattr(prediction, field), getattr(truth, field)
                if predicted is not None and true is not None and predicted.shape != true.shape:
                    raise ValueError(f"{name}: the prediction's {field} is {predicted.shape[1]}x{predicted.shape[0]}, "
                                     f"the truth's {true.shape[1]}x{true.shape[0]}")
            self._add_driving(prediction, truth, record)
            self._add_detection(prediction, truth, record)
            if self.semantic is not None and prediction.semantic is not None and truth.semantic is not None:
                self.semantic.add(prediction.semantic, truth.semantic)
            if self.panoptic is not None and prediction.panoptic is not None and truth.panoptic is not None:
                # Datasets with crowd regions (Cityscapes) list them on the truth; others have none.
                self.panoptic.add(prediction.panoptic, truth.panoptic, getattr(truth, "crowd_segments", ()))
            if ground_truth is not None:
                record.update(self.ground.add(prediction, ground_truth))
        if latency_ms is not None:
            self._latencies.append(latency_ms)
        self.frames.append(record)
        return record

    def _add_driving(self, prediction: PerceptionResult, truth: PerceptionResult, record: dict) -> None:
        pairs = [(prediction.drivable_mask, truth.drivable_mask), (prediction.lane_mask, truth.lane_mask)]
        if self.driving is None or any(p is None or t is None for p, t in pairs):
            return
        self.driving.update(prediction.drivable_mask, truth.drivable_mask, prediction.lane_mask, truth.lane_mask)
        record["drivable_iou"] = round(float(iou_per_class(confusion_matrix(*pairs[0]))[1]), 5)
        record["lane_iou"] = round(float(iou_per_class(confusion_matrix(*pairs[1]))[1]), 5)

    def _add_detection(self, prediction: PerceptionResult, truth: PerceptionResult, record: dict) -> None:
        if self.detection is None or prediction.detections is None or truth.detections is None:
            return
        predicted, true = prediction.detections, self._truth_classes(truth.detections)
        self.detection.add(predicted.boxes, predicted.scores, self._predicted_classes(predicted), true[0], true[1])
        record["detections"] = len(predicted)
        record["truth_objects"] = len(true[0])

    def _predicted_classes(self, detections: Detections) -> np.ndarray:
        if self.merge_vehicles:
            return np.zeros(len(detections), np.int64)
        return np.asarray(detections.class_ids, np.int64)

    def _truth_classes(self, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
        """Truth boxes and class ids in the backend's terms; classes it does not know are left out."""
        if self.merge_vehicles:
            keep = [name in VEHICLE_CLASSES for name in detections.class_names]
            return detections.boxes[keep], np.zeros(sum(keep), np.int64)
        keep = [name in self._class_by_name for name in detections.class_names]
        ids = [self._class_by_name[name] for name, k in zip(detections.class_names, keep) if k]
        return detections.boxes[keep], np.asarray(ids, np.int64)

    def compute(self) -> dict:
        summary: dict = {"frames": len(self.frames)}
        if self.driving is not None and self.driving.images:
            summary["driving"] = self.driving.compute()
        if self.detection is not None and self.detection.images:
            summary["detection"] = self.detection.compute()
            summary["detection"]["classes"] = "vehicle (merged)" if self.merge_vehicles else "by name"
        if self.semantic is not None and self.semantic.images:
            summary["semantic"] = self.semantic.compute()
        if self.panoptic is not None and self.panoptic.images:
            summary["panoptic"] = self.panoptic.compute()
        if self.ground.frames:
            summary["ground"] = self.ground.compute()
        if self._latencies:
            summary["latency_ms"] = _percentiles(self._latencies)
            mean = summary["latency_ms"]["mean"]
            summary["throughput_fps"] = 1000.0 / mean if mean > 0 else math.inf
        return summary
