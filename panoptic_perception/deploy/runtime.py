"""Choosing what runs a backend's network part: eager torch, ONNX Runtime or TensorRT.

``runtime`` is a backend option (``create_backend(name, runtime="onnxruntime")``), a command-line flag
(``--runtime``) and a node parameter. With ``onnxruntime`` or ``tensorrt`` the backend's network part is
exported to ONNX (:func:`~panoptic_perception.deploy.onnx_export.export_onnx`, dynamic batch) into the cache,
or taken from a given ``onnx_path`` after :func:`~panoptic_perception.deploy.onnx_export.check_exported`; the
pre- and post-processing are the backend's own, in Python.

Cache: ``$PANOPTIC_PERCEPTION_CACHE``, else ``$XDG_CACHE_HOME/panoptic_perception``, else
``~/.cache/panoptic_perception``; ONNX files under ``onnx/``, named by a SHA-256 of the network's digest
(weights, config, fast path, input size, code), the opset, the dynamic batch and the torch version, so a
changed network is exported anew and never confused with an old file; a cached file that fails
:func:`~panoptic_perception.deploy.onnx_export.check_exported` (truncated, edited) is logged and exported
again, while a given ``onnx_path`` that fails it is refused. A given file exported without a dynamic batch
runs one image at a time (a batch is refused naming ``--dynamic-batch``, see
:mod:`panoptic_perception.deploy.onnx_export`). TensorRT engines: see
:mod:`panoptic_perception.deploy.tensorrt`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigurationError, PanopticPerceptionError
from .onnx_export import OPSET, ExportError, check_exported, export_onnx, network_digest

if TYPE_CHECKING:
    from ..backends.base import Backend

RUNTIMES = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")


class RuntimeUnavailableError(PanopticPerceptionError, RuntimeError):
    """A runtime this machine cannot run (TensorRT without a CUDA device or without its package)."""


def cache_dir() -> Path:
    """The folder of exported ONNX files and TensorRT engines (see the module docstring); not created."""
    if os.environ.get("PANOPTIC_PERCEPTION_CACHE"):
        return Path(os.environ["PANOPTIC_PERCEPTION_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "panoptic_perception"


def check_runtime(runtime: str, onnx_path: str | None, precision: str) -> None:
    """Raises ValueError for an unknown runtime or precision, an ONNX file or fp16 where they do not apply."""
    if runtime not in RUNTIMES:
        raise ConfigurationError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime == "torch" and onnx_path:
        raise ConfigurationError("an ONNX file needs runtime onnxruntime or tensorrt, not torch")
    if runtime != "tensorrt" and precision != "fp32":
        raise ConfigurationError(f"precision {precision} is a TensorRT option; runtime {runtime} runs fp32")


def exported_onnx(backend: Backend, onnx_path: str | None = None) -> tuple[Path, dict[str, str]]:
    """The ONNX file of ``backend``'s network part and its metadata: ``onnx_path`` if given (checked to be
    an export of this very network; refused otherwise), else the cached export, made now if missing or if
    the cached file fails the check (damaged: logged and exported again).

    Raises:
        FileNotFoundError, ExportError: see :func:`~panoptic_perception.deploy.onnx_export.check_exported`
            and :func:`~panoptic_perception.deploy.onnx_export.export_onnx`.
    """
    if onnx_path:
        return Path(onnx_path), check_exported(onnx_path, backend)
    key = hashlib.sha256(f"{network_digest(backend)}:opset{OPSET}:dynamic:{torch.__version__}".encode()).hexdigest()
    path = cache_dir() / "onnx" / f"{backend.name}-{key[:32]}.onnx"
    if path.is_file():
        try:
            return path, check_exported(path, backend)
        except ExportError as error:  # the cache's own file, damaged (truncated, edited): made again, never used
            backend.log.warning("%s: the cached export is unusable (%s); exporting again", backend.name, error)
    backend.log.info("%s: exporting the network to %s (once per network)", backend.name, path)
    export_onnx(backend, path, dynamic_batch=True)
    return path, check_exported(path, backend)


def attach_runtime(backend: Backend, runtime: str = "torch", onnx_path: str | None = None,
                   precision: str = "fp32") -> Backend:
    """Run ``backend``'s network part (:meth:`~panoptic_perception.backends.base.Backend.forward`) in
    ``runtime``: ``torch`` leaves it as built; ``onnxruntime`` and ``tensorrt`` run its ONNX export (see the
    module docstring), behind the backend's own pre- and post-processing. Returns the backend, changed in
    place (``run_network``, ``runtime``, ``precision``; batches then come contiguous, as the exported graph
    takes them).

    Raises:
        ValueError: see :func:`check_runtime`.
        FileNotFoundError, ExportError: see :func:`exported_onnx`.
        RuntimeUnavailableError: TensorRT without a CUDA device or without its package.
    """
    check_runtime(runtime, onnx_path, precision)
    if runtime == "torch":
        return backend
    if runtime == "tensorrt":  # before a possibly long export
        from .tensorrt import check_tensorrt

        check_tensorrt(backend.device)
    path, metadata = exported_onnx(backend, onnx_path)
    if runtime == "onnxruntime":
        from .onnxruntime import OnnxRuntimeNetwork

        runner = OnnxRuntimeNetwork(path, backend.device, metadata["outputs"])
    else:
        from .tensorrt import MAX_BATCH, TensorRTNetwork

        max_batch = MAX_BATCH if json.loads(metadata["dynamic_batch"]) else 1  # a given file without --dynamic-batch
        runner = TensorRTNetwork(path, backend.device, metadata["outputs"], precision, cache_dir() / "tensorrt", max_batch)
    backend.run_network, backend.runtime, backend.precision = runner, runtime, precision
    backend.channels_last = False  # the exported graph takes a contiguous batch
    return backend
