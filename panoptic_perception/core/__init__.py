"""Image and result types, pre/post-processing and label maps (no network code)."""

from .labels import CITYSCAPES, DRIVING_MASKS, LabelClass, LabelMap
from .preprocess import Geometry, InvalidImageError, ResizeMode, as_bgr_image, as_bgr_images, prepare_batch
from .types import PANOPTIC_LABEL_DIVISOR, Capability, Detections, PerceptionResult, SegmentInfo, StageTimings

__all__ = [
    "CITYSCAPES",
    "DRIVING_MASKS",
    "PANOPTIC_LABEL_DIVISOR",
    "Capability",
    "Detections",
    "Geometry",
    "InvalidImageError",
    "LabelClass",
    "LabelMap",
    "PerceptionResult",
    "ResizeMode",
    "SegmentInfo",
    "StageTimings",
    "as_bgr_image",
    "as_bgr_images",
    "prepare_batch",
]
