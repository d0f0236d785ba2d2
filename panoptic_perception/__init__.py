"""panoptic_perception: camera-based driving perception with swappable deep-learning backends.

The core library (this package without ``ros``) needs no ROS: ``create_backend(name, weights)``
returns a backend that turns BGR images into :class:`~panoptic_perception.core.PerceptionResult`.
"""

from .backends import Backend, WeightsError, create_backend, list_backends
from .core import Capability, Detections, InvalidImageError, PerceptionResult, SegmentInfo

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Capability",
    "Detections",
    "InvalidImageError",
    "PerceptionResult",
    "SegmentInfo",
    "WeightsError",
    "create_backend",
    "list_backends",
]
