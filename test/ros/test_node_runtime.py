"""The node's runtime parameters in a real node: a given ONNX file (onnx_path), precision, and the checks
that refuse combinations that cannot run."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from harness import diagnostic_values  # noqa: E402


def test_onnxruntime_runs_the_onnx_path_and_runtime_combinations_are_checked(start_node, probe, twinlitenet_batch_one):
    backend, path = twinlitenet_batch_one  # TwinLiteNet at 160x96 exported without --dynamic-batch (test/conftest.py)
    assert backend.input_size == (160, 96)
    path = str(path)
    node = start_node(runtime="onnxruntime", onnx_path=path, input_size=[160, 96])
    probe.wait_for_node(node, timeout=300)
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    latest = lambda: diagnostic_values(diagnostics[-1][1])[2] if diagnostics else {}  # noqa: E731
    probe.wait_for(lambda: latest().get("onnx") == path, 60, "diagnostics naming the given ONNX file")
    assert latest()["runtime"] == "onnxruntime" and latest()["precision"] == "fp32"

    for values, reason in (
        ({"precision": "fp16"}, "precision fp16 is an option of runtime tensorrt; runtime onnxruntime runs fp32"),
        ({"precision": "int4"}, "precision must be one of fp32, fp16, int8"),
        ({"runtime": "torch"}, "an ONNX file needs runtime onnxruntime or tensorrt, not torch"),
    ):
        (result,) = probe.set_parameters(**values)
        assert not result.successful and reason in result.reason, (values, result.reason)
    result = probe.set_parameters_atomically(runtime="torch", onnx_path="")
    assert result.successful, result.reason
    probe.wait_for(lambda: latest().get("runtime") == "torch" and latest().get("onnx") == "", 120, "eager torch")
    assert node.popen.poll() is None
