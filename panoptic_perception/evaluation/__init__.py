"""Metrics with the papers' definitions, and latency measurement."""

from .segmentation import DrivingSegmentationMetrics, confusion_matrix, iou_per_class

__all__ = ["DrivingSegmentationMetrics", "confusion_matrix", "iou_per_class"]
