"""ONNX Runtime's per-operator profile of a float32 and an INT8 model (README, Deployment: INT8)."""

from __future__ import annotations

import pytest

from panoptic_perception import create_backend
from panoptic_perception.core.preprocess import prepare_batch
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.evaluation.quantization import operator_profiles, profile_table

SMALL = {"input_size": (160, 96)}


def test_the_profile_shows_the_fused_int8_graph_and_the_time_per_operator(onnx_cache):
    fp32 = create_backend("twinlitenet", runtime="onnxruntime", **SMALL)
    int8 = create_backend("twinlitenet", runtime="onnxruntime", precision="int8", calibration="synthetic:2@320x180+0",
                          **SMALL)
    batch = prepare_batch([generate_scene(0, 320, 180).image], fp32.input_size, fp32.resize_mode, fp32.pad_value)[0].numpy()
    profiles = operator_profiles({"fp32": fp32.run_network.path, "int8": int8.run_network.path}, batch, threads=1, runs=3)
    float_profile, int8_profile = profiles["fp32"], profiles["int8"]
    # The graph ONNX Runtime runs: every convolution of the INT8 model fused to QLinearConv, none in the float one.
    assert int8_profile["nodes"].get("QLinearConv", 0) >= 40 and "Conv" not in int8_profile["nodes"]
    assert "QLinearConv" not in float_profile["nodes"] and float_profile["nodes"]["Conv"] >= 40
    assert int8_profile["nodes"]["PRelu"] == float_profile["nodes"]["PRelu"] > 0, "PReLU has no INT8 kernel"
    for profile in (float_profile, int8_profile):
        assert profile["runs"] == 3 and profile["threads"] == 1
        assert set(profile["ms"]) <= set(profile["nodes"]) and all(ms >= 0 for ms in profile["ms"].values())
        assert profile["total_ms"] == pytest.approx(sum(profile["ms"].values())) and profile["total_ms"] > 0
        assert profile["run_ms"] > 0
    lines = profile_table(float_profile, int8_profile)
    assert lines[0].split() == ["operator", "fp32", "nodes", "fp32", "ms", "int8", "nodes", "int8", "ms"]
    assert any(line.split()[0] == "QLinearConv" and line.split()[1:3] == ["0", "0.0"] for line in lines)
    assert lines[-2].split()[:2] == ["all", "operators"] and lines[-1].split()[:2] == ["whole", "run"]
    with pytest.raises(ValueError, match="at least 1 run"):
        operator_profiles({"fp32": fp32.run_network.path}, batch, runs=0)
