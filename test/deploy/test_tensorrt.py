"""TensorRT: the engine cache's rules here (no GPU needed); engine parity and reuse where CUDA and the
tensorrt package are present (skipped otherwise; scripts/gpu-check.sh runs them on a GPU machine)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from parity import BACKENDS, MASK_AGREEMENT, assert_outputs_close, assert_results_equal, backend_arguments

from panoptic_perception import create_backend
from panoptic_perception.core.preprocess import prepare_batch
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.deploy.onnx_export import flatten_outputs
from panoptic_perception.deploy.tensorrt import cached_engine, engine_key, engine_path, store_engine

GPU = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA device and the tensorrt package (scripts/gpu-check.sh)")


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an onnx graph")
    return path


def test_a_stored_engine_is_used_only_for_exactly_its_key(onnx_file, tmp_path):
    key = engine_key(onnx_file, "10.13.0", "NVIDIA H200 (sm_90)", "fp16")
    assert key == {"onnx_sha256": key["onnx_sha256"], "tensorrt": "10.13.0", "gpu": "NVIDIA H200 (sm_90)",
                   "precision": "fp16", "max_batch": "8"} and len(key["onnx_sha256"]) == 64
    path = engine_path(tmp_path / "cache", onnx_file, key)
    assert path.name.startswith("model-fp16-") and path.suffix == ".engine"
    assert cached_engine(path, key) is None, "nothing stored yet"
    store_engine(path, key, b"engine bytes")
    assert cached_engine(path, key) == b"engine bytes"
    assert json.loads(path.with_suffix(".json").read_text())["key"] == key

    # Another TensorRT version, GPU or precision is another file, and this file is never used for it.
    for change in ({"tensorrt": "10.14.0"}, {"gpu": "NVIDIA A100 (sm_80)"}, {"precision": "fp32"}):
        other = {**key, **change}
        assert engine_path(tmp_path / "cache", onnx_file, other) != path
        assert cached_engine(path, other) is None, change
    # A changed ONNX file changes the key.
    onnx_file.write_bytes(b"another onnx graph")
    assert engine_key(onnx_file, "10.13.0", "NVIDIA H200 (sm_90)", "fp16")["onnx_sha256"] != key["onnx_sha256"]


def test_an_edited_engine_or_sidecar_is_not_used(onnx_file, tmp_path):
    key = engine_key(onnx_file, "10.13.0", "GPU (sm_90)", "fp32")
    path = engine_path(tmp_path, onnx_file, key)
    store_engine(path, key, b"engine bytes")
    path.write_bytes(b"engine bytes, truncated or replaced")
    assert cached_engine(path, key) is None
    store_engine(path, key, b"engine bytes")
    path.with_suffix(".json").write_text("{not json")
    assert cached_engine(path, key) is None
    path.with_suffix(".json").unlink()
    assert cached_engine(path, key) is None


# fp32 engines may use TF32 tensor cores (TensorRT's default), 10 mantissa bits like fp16's: hence the bounds.
ENGINE_TOLERANCES = [("fp32", 1e-3, MASK_AGREEMENT), ("fp16", 2e-2, 0.99)]


@needs_gpu
@pytest.mark.parametrize("precision, relative_tolerance, agreement", ENGINE_TOLERANCES)
@pytest.mark.parametrize("name", BACKENDS)
def test_tensorrt_engine_equals_eager_cuda(name, precision, relative_tolerance, agreement, request, onnx_cache):
    """Every output tensor within ``relative_tolerance`` of eager's largest magnitude; masks, semantic and
    panoptic images (detections: see parity.py; on a GPU their NMS ties too)."""
    weights, options = backend_arguments(name, request)
    images = [generate_scene(seed, 640, 360).image for seed in (0, 1)]
    eager = create_backend(name, weights, device="cuda", **options)
    engine = create_backend(name, weights, device="cuda", runtime="tensorrt", precision=precision, **options)
    assert engine.describe()["precision"] == precision
    batch, _ = prepare_batch(images, eager.input_size, eager.resize_mode, device=eager.device)
    with torch.inference_mode():
        expected, _ = flatten_outputs(eager.forward(batch))
        actual, _ = flatten_outputs(engine.run_network(batch))
    assert_outputs_close(actual, expected, relative_tolerance, same_dtype=False)
    assert_results_equal(eager.process(images), engine.process(images), detections=False, agreement=agreement)


@needs_gpu
def test_a_cached_engine_is_reused_and_a_damaged_one_rebuilt(onnx_cache):
    image = generate_scene(0, 640, 360).image
    engine = create_backend("twinlitenet", device="cuda", runtime="tensorrt")
    path = engine.run_network.engine_path
    built = path.stat().st_mtime_ns
    again = create_backend("twinlitenet", device="cuda", runtime="tensorrt")
    assert again.run_network.engine_path == path and path.stat().st_mtime_ns == built, "the cached engine is reused"
    path.write_bytes(b"not an engine")
    rebuilt = create_backend("twinlitenet", device="cuda", runtime="tensorrt")
    assert path.stat().st_size > 1000, "rebuilt, never used"
    np.testing.assert_array_equal(rebuilt(image).drivable_mask, engine(image).drivable_mask)


def test_an_int8_engine_key_holds_the_calibration_frames(onnx_file, tmp_path):
    from panoptic_perception.deploy.quantize import CalibrationSet
    from panoptic_perception.deploy.tensorrt import calibration_cache_path

    first, other = "a" * 64, "b" * 64
    assert engine_key(onnx_file, "10.13.0", "gpu", "int8", calibration=first)["calibration"] == first
    assert engine_path(tmp_path, onnx_file, engine_key(onnx_file, "10.13.0", "gpu", "int8", calibration=first)) != \
        engine_path(tmp_path, onnx_file, engine_key(onnx_file, "10.13.0", "gpu", "int8", calibration=other))
    frames = CalibrationSet("synthetic:1", (160, 96), [], [], first)
    from panoptic_perception.core.io import sha256_of

    assert calibration_cache_path(tmp_path, onnx_file, frames) == \
        tmp_path / f"model-{sha256_of(onnx_file)[:16]}-{first[:32]}.calibration"


@needs_gpu
def test_an_int8_engine_calibrates_once_and_a_rebuild_reads_the_calibration_cache(onnx_cache):
    images = [generate_scene(seed, 640, 360).image for seed in (5_000_100, 5_000_101)]
    options = dict(device="cuda", runtime="tensorrt", precision="int8", calibration="synthetic:8@640x360+0")
    engine = create_backend("twinlitenet", **options)
    cache = engine.run_network.calibration_cache
    assert cache.is_file() and cache.stat().st_size > 0
    written = cache.stat().st_mtime_ns
    engine.run_network.engine_path.unlink()
    rebuilt = create_backend("twinlitenet", **options)
    assert rebuilt.run_network.engine_path.is_file() and cache.stat().st_mtime_ns == written, "not calibrated again"
    assert_results_equal(create_backend("twinlitenet", device="cuda").process(images), rebuilt.process(images),
                         detections=False, agreement=0.98)
