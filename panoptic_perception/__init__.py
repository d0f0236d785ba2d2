"""panoptic_perception: camera-based driving perception with swappable deep-learning backends.

The core library (this package without ``ros``) needs no ROS: ``create_backend(name, weights)``
(:mod:`panoptic_perception.factory`) returns a backend that turns BGR images into :class:`~panoptic_perception.core.PerceptionResult`.
"""

import pkgutil

# The generated ROS interfaces (panoptic_perception.msg) may be installed in another directory of the
# same name (a colcon or CMake install next to a pip install of this package): look there too.
__path__ = pkgutil.extend_path(__path__, __name__)

from .backends import Backend, WeightsError, list_backends
from .core import Capability, Detections, InvalidImageError, PerceptionResult, SegmentInfo
from .errors import ConfigurationError, PanopticPerceptionError
from .factory import create_backend

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Capability",
    "ConfigurationError",
    "Detections",
    "InvalidImageError",
    "PanopticPerceptionError",
    "PerceptionResult",
    "SegmentInfo",
    "WeightsError",
    "create_backend",
    "list_backends",
]
