"""Metrics with the papers' definitions, the evaluator that applies them to a backend, the one loop that runs a
backend over frames (:mod:`.loop`), latency and reports."""

from .detection import DetectionMetrics
from .evaluator import Evaluator
from .panoptic import PanopticQuality
from .segmentation import DrivingSegmentationMetrics, confusion_matrix, iou_per_class
from .semantic import SemanticSegmentationMetrics

__all__ = [
    "DetectionMetrics",
    "DrivingSegmentationMetrics",
    "Evaluator",
    "PanopticQuality",
    "SemanticSegmentationMetrics",
    "confusion_matrix",
    "iou_per_class",
]
