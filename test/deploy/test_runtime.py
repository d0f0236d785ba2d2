"""Choosing the runtime: option checks, the export cache, and TensorRT refusing cleanly without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest

from panoptic_perception import create_backend
from panoptic_perception.deploy import RuntimeUnavailableError, cache_dir
from panoptic_perception.deploy.onnx_export import read_metadata


def test_invalid_runtime_options_are_named():
    with pytest.raises(ValueError, match="unknown runtime 'openvino'; choose one of torch, onnxruntime, tensorrt"):
        create_backend("twinlitenet", runtime="openvino")
    with pytest.raises(ValueError, match="an ONNX file needs runtime onnxruntime or tensorrt"):
        create_backend("twinlitenet", onnx_path="model.onnx")
    with pytest.raises(ValueError, match="precision fp16 is an option of runtime tensorrt; runtime onnxruntime runs fp32"):
        create_backend("twinlitenet", runtime="onnxruntime", precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8"):
        create_backend("twinlitenet", runtime="tensorrt", precision="int4")
    with pytest.raises(ValueError, match="precision int8 with runtime tensorrt needs calibration frames"):
        create_backend("twinlitenet", runtime="tensorrt", precision="int8")


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PANOPTIC_PERCEPTION_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("PANOPTIC_PERCEPTION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "panoptic_perception"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "panoptic_perception"


def test_the_export_is_cached_per_network_and_reused(onnx_cache):
    first = create_backend("twinlitenet", runtime="onnxruntime")
    path = Path(first.describe()["onnx"])
    assert path.parent == onnx_cache / "onnx" and path.name.startswith("twinlitenet-")
    assert read_metadata(path)["dynamic_batch"] == "true"
    written = path.stat().st_mtime_ns
    again = create_backend("twinlitenet", runtime="onnxruntime")
    assert again.describe()["onnx"] == str(path) and path.stat().st_mtime_ns == written, "reused, not exported again"
    smaller = create_backend("twinlitenet", runtime="onnxruntime", input_size=(160, 96))
    assert smaller.describe()["onnx"] != str(path), "another input size is another export"
    assert len(list((onnx_cache / "onnx").glob("twinlitenet-*.onnx"))) >= 2


def test_tensorrt_refuses_cleanly_without_cuda():
    with pytest.raises(RuntimeUnavailableError, match="runtime tensorrt needs a CUDA device, got cpu"):
        create_backend("twinlitenet", runtime="tensorrt")
