"""Choosing what runs a backend's network part: eager torch, ONNX Runtime or TensorRT.

``runtime`` is a backend option (``create_backend(name, runtime="onnxruntime")``), a command-line flag
(``--runtime``) and a node parameter. With ``onnxruntime`` or ``tensorrt`` the backend's network part is
exported to ONNX (:func:`~panoptic_perception.deploy.onnx_export.export_onnx`, dynamic batch) into the cache,
or taken from a given ``onnx_path`` after :func:`~panoptic_perception.deploy.onnx_export.check_exported`; the
pre- and post-processing are the backend's own, in Python.

Cache: ``$PANOPTIC_PERCEPTION_CACHE``, else ``$XDG_CACHE_HOME/panoptic_perception``, else
``~/.cache/panoptic_perception``; ONNX files under ``onnx/``, named by a SHA-256 of the network's digest
(weights, config, fast path, input size, code), the opset, the dynamic batch and the torch version, so a
changed network is exported anew and never confused with an old file. Each cached file has a sidecar
``.sha256`` written with it; a cached file whose bytes no longer match it (a weight edited, the metadata
intact) or that fails :func:`~panoptic_perception.deploy.onnx_export.check_exported` (truncated) is logged
and made again, never run, while a given ``onnx_path`` that fails it is refused. A given file exported without a dynamic batch
runs one image at a time (a batch is refused naming ``--dynamic-batch``, see
:mod:`panoptic_perception.deploy.onnx_export`). TensorRT engines: see
:mod:`panoptic_perception.deploy.tensorrt`.

INT8 (``precision="int8"``, :mod:`panoptic_perception.deploy.quantize`): ONNX Runtime runs either a given
``onnx_path`` quantized by ``panoptic-perception quantize`` (its metadata says ``precision`` ``int8``), or
the cached export quantized into the cache on ``calibration`` frames (a data spec: a folder, video, bag or
``synthetic:N``), named by a SHA-256 of the export's key, the calibration frames' digest, the calibration
method, the onnxruntime version and the quantization code: a model calibrated on other frames is never
reused. TensorRT calibrates its engine on ``calibration`` frames (an entropy calibrator with a calibration
cache). A file's precision must be the one asked for: an INT8 file is refused as ``fp32`` and the other way.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.io import sha256_of
from ..errors import ConfigurationError, PanopticPerceptionError
from .onnx_export import OPSET, ExportError, check_exported, export_onnx, network_digest

if TYPE_CHECKING:
    from ..backends.base import Backend
    from .quantize import CalibrationSet

RUNTIMES = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
#: What each precision runs in (fp32 everywhere).
PRECISION_RUNTIMES = {"fp32": RUNTIMES, "fp16": ("tensorrt",), "int8": ("onnxruntime", "tensorrt")}


class RuntimeUnavailableError(PanopticPerceptionError, RuntimeError):
    """A runtime this machine cannot run (TensorRT without a CUDA device or without its package)."""


def cache_dir() -> Path:
    """The folder of exported ONNX files and TensorRT engines (see the module docstring); not created."""
    if os.environ.get("PANOPTIC_PERCEPTION_CACHE"):
        return Path(os.environ["PANOPTIC_PERCEPTION_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "panoptic_perception"


def check_runtime(runtime: str, onnx_path: str | None, precision: str, calibration: str | None = None) -> None:
    """Raises ConfigurationError (a ValueError) for an unknown runtime or precision, an ONNX file, a
    precision or calibration frames where they do not apply."""
    if runtime not in RUNTIMES:
        raise ConfigurationError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime == "torch" and onnx_path:
        raise ConfigurationError("an ONNX file needs runtime onnxruntime or tensorrt, not torch")
    if runtime not in PRECISION_RUNTIMES[precision]:
        raise ConfigurationError(f"precision {precision} is an option of runtime {' or '.join(PRECISION_RUNTIMES[precision])}; "
                                 f"runtime {runtime} runs fp32")
    if calibration and precision != "int8":
        raise ConfigurationError(f"calibration frames are for precision int8, not {precision}")


def check_int8_source(runtime: str, onnx_path: str | None, calibration: str | None) -> None:
    """Raises ConfigurationError where INT8 has nothing to calibrate on: TensorRT without ``calibration``,
    ONNX Runtime with neither ``calibration`` nor a (quantized) ``onnx_path``."""
    if calibration:
        return
    if runtime == "tensorrt":
        raise ConfigurationError("precision int8 with runtime tensorrt needs calibration frames (calibration=DATA: "
                                 "a folder, video, bag or synthetic:N)")
    if not onnx_path:
        raise ConfigurationError("precision int8 needs calibration frames (calibration=DATA: a folder, video, bag or "
                                 "synthetic:N) or onnx_path of a model made by `panoptic-perception quantize`")


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
        try:  # the cache's own file, damaged (truncated, edited): made again, never used
            return path, check_exported(_intact(path), backend)
        except ExportError as error:
            backend.log.warning("%s: the cached export is unusable (%s); exporting again", backend.name, error)
    backend.log.info("%s: exporting the network to %s (once per network)", backend.name, path)
    export_onnx(backend, path, dynamic_batch=True)
    return _seal(path), check_exported(path, backend)


def _seal(path: Path) -> Path:
    """Record the SHA-256 of the cached file ``path`` in its sidecar ``.sha256``."""
    path.with_suffix(".sha256").write_text(sha256_of(path) + "\n")
    return path


def _intact(path: Path) -> Path:
    """``path``, a cached file, if its bytes are those :func:`_seal` recorded. Raises ExportError otherwise."""
    sidecar = path.with_suffix(".sha256")
    if not sidecar.is_file():  # e.g. cached by a version before the sidecars
        raise ExportError(f"{path.name} has no {sidecar.name}: it cannot be told from a damaged file")
    if sidecar.read_text().strip() != sha256_of(path):
        raise ExportError(f"{path.name} is not the file written to the cache (its SHA-256 differs from {sidecar.name}'s)")
    return path


def quantized_onnx(backend: Backend, source: Path, calibration: CalibrationSet) -> Path:
    """The cached INT8 model of the float export ``source`` calibrated on ``calibration`` (see the module
    docstring), quantized now if missing or unusable.

    Raises:
        ExportError: see :func:`~panoptic_perception.deploy.quantize.quantize_onnx`.
    """
    import onnxruntime

    from .quantize import DEFAULT_METHOD, code_digest, quantize_onnx

    key = hashlib.sha256(f"{sha256_of(source)}:{calibration.digest}:{DEFAULT_METHOD}:{onnxruntime.__version__}:"
                         f"{code_digest()}".encode()).hexdigest()
    path = cache_dir() / "onnx" / f"{backend.name}-int8-{key[:32]}.onnx"
    if path.is_file():
        try:
            if check_exported(_intact(path), backend).get("calibration") == calibration.digest:
                return path
        except ExportError as error:
            backend.log.warning("%s: the cached INT8 model is unusable (%s); quantizing again", backend.name, error)
    backend.log.info("%s: quantizing the network to %s on %d frames of %s (once per network and frames)",
                     backend.name, path, len(calibration.batches), calibration.source)
    return _seal(quantize_onnx(source, path, calibration))


def attach_runtime(backend: Backend, runtime: str = "torch", onnx_path: str | None = None,
                   precision: str = "fp32", calibration: str | None = None) -> Backend:
    """Run ``backend``'s network part (:meth:`~panoptic_perception.backends.base.Backend.forward`) in
    ``runtime``: ``torch`` leaves it as built; ``onnxruntime`` and ``tensorrt`` run its ONNX export (see the
    module docstring), behind the backend's own pre- and post-processing; ``calibration``: the frames an
    INT8 model or engine is calibrated on (a data spec). Returns the backend, changed in place
    (``run_network``, ``runtime``, ``precision``; batches then come contiguous, as the exported graph takes
    them).

    Raises:
        ConfigurationError: see :func:`check_runtime` and :func:`check_int8_source`; unreadable calibration
            frames.
        FileNotFoundError, ExportError: see :func:`exported_onnx`; a file of the wrong precision (an INT8
            model outside ONNX Runtime int8, a float file as ONNX Runtime int8 without calibration frames).
        RuntimeUnavailableError: TensorRT without a CUDA device or without its package.
    """
    check_runtime(runtime, onnx_path, precision, calibration)
    if runtime == "torch":
        return backend
    if precision == "int8":
        check_int8_source(runtime, onnx_path, calibration)
    if runtime == "tensorrt":  # before a possibly long export
        from .tensorrt import check_tensorrt

        check_tensorrt(backend.device)
    path, metadata = exported_onnx(backend, onnx_path)
    quantized = metadata.get("precision") == "int8"
    if quantized and (runtime, precision, calibration) != ("onnxruntime", "int8", None):
        raise ExportError(f"{path} is an INT8 model (made by `quantize`): run it with runtime onnxruntime and precision "
                          "int8, without calibration frames")
    if precision == "int8" and not quantized and not calibration:
        raise ExportError(f"{path} is a float32 export: quantize it with `panoptic-perception quantize`, or give "
                          "calibration frames")
    frames = None
    if precision == "int8" and calibration:
        from .quantize import calibration_frames

        frames = calibration_frames(backend, calibration)
    if runtime == "onnxruntime":
        from .onnxruntime import OnnxRuntimeNetwork

        if frames is not None:
            path = quantized_onnx(backend, path, frames)
        runner = OnnxRuntimeNetwork(path, backend.device, metadata["outputs"])
    else:
        from .tensorrt import MAX_BATCH, TensorRTNetwork

        max_batch = MAX_BATCH if json.loads(metadata["dynamic_batch"]) else 1  # a given file without --dynamic-batch
        runner = TensorRTNetwork(path, backend.device, metadata["outputs"], precision, cache_dir() / "tensorrt", max_batch,
                                 frames)
    backend.run_network, backend.runtime, backend.precision = runner, runtime, precision
    backend.channels_last = False  # the exported graph takes a contiguous batch
    return backend
