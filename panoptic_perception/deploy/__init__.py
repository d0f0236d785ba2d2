"""Deployment: ONNX export of a backend's network part, and the runtimes that run it (ONNX Runtime,
TensorRT) behind the same pre- and post-processing as eager torch."""

from .onnx_export import OPSET, ExportError, export_onnx
from .runtime import PRECISIONS, RUNTIMES, RuntimeUnavailableError, cache_dir

__all__ = ["OPSET", "PRECISIONS", "RUNTIMES", "ExportError", "RuntimeUnavailableError", "cache_dir", "export_onnx"]
