"""``create_backend``: a backend by name, its network part in the runtime asked for.

The one entry point users and the applications (command line, node, demo) call: it builds the backend
(:func:`panoptic_perception.backends.registry.create_backend`, torch) and attaches the runtime
(:func:`panoptic_perception.deploy.runtime.attach_runtime`), so that backends never import the deploy
layer.
"""

from __future__ import annotations

from typing import Any

from . import backends
from .backends.base import Backend
from .deploy.runtime import attach_runtime, check_int8_source, check_runtime


def create_backend(name: str, weights: str | None = None, device: str = "cpu", *, runtime: str = "torch",
                   onnx_path: str | None = None, precision: str = "fp32", calibration: str | None = None,
                   **options: Any) -> Backend:
    """The backend ``name`` with ``weights`` (a path; None for its bundled default weights), its network part
    run by ``runtime``: ``torch`` (eager), ``onnxruntime`` or ``tensorrt`` (its ONNX export, ``onnx_path``
    if given; ``precision`` ``fp32``, ``int8`` (ONNX Runtime and TensorRT: calibrated on ``calibration``, a
    data spec such as a folder, video, bag or ``synthetic:N``, or for ONNX Runtime an ``onnx_path`` made by
    ``panoptic-perception quantize``) or, for TensorRT, ``fp16``). ``**options``: as
    :func:`panoptic_perception.backends.registry.create_backend` (``input_size``, ``fast``,
    ``thresholds``, ``allow_random_weights``, ``network``, config options).

    Raises:
        ValueError: an unknown runtime or precision, or one that does not apply (checked before anything
            is built); bad options.
        UnknownBackendError, WeightsError: see :func:`panoptic_perception.backends.registry.create_backend`.
        ExportError, RuntimeUnavailableError: see :func:`panoptic_perception.deploy.runtime.attach_runtime`.
    """
    check_runtime(runtime, onnx_path, precision, calibration)
    if precision == "int8":
        check_int8_source(runtime, onnx_path, calibration)
    return attach_runtime(backends.create_backend(name, weights, device, **options), runtime, onnx_path, precision,
                          calibration)
