"""Backends, one module per paper, behind one interface (:class:`~.base.Backend`)."""

from . import cross_cooperative, cyclenet, fusion_panoptic, twinlitenet, yolopv2  # noqa: F401  (registers the backends)
from .base import Backend
from .registry import backend_class, create_backend, list_backends, register_backend
from .weights import WeightsError, WeightsInfo, read_checkpoint, save_checkpoint

__all__ = [
    "Backend",
    "WeightsError",
    "WeightsInfo",
    "backend_class",
    "create_backend",
    "list_backends",
    "read_checkpoint",
    "register_backend",
    "save_checkpoint",
]
