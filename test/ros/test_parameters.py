"""The node's runtime parameters (precision, onnx_path, calibration) and their checks, without ROS; the node test runs
them in a real node (test_node_runtime.py)."""

from __future__ import annotations

import pytest

from panoptic_perception.deploy import PRECISIONS
from panoptic_perception.ros.parameters import PARAMETERS_BY_NAME, OnChange, check_values


def settings(**changes):
    return {**{name: spec.default for name, spec in PARAMETERS_BY_NAME.items()}, **changes}


def test_precision_and_onnx_path_are_parameters_that_reload_the_backend():
    precision, onnx_path = PARAMETERS_BY_NAME["precision"], PARAMETERS_BY_NAME["onnx_path"]
    assert precision.default == "fp32" and precision.choices == PRECISIONS and precision.on_change is OnChange.RELOAD
    assert onnx_path.default == "" and onnx_path.on_change is OnChange.RELOAD
    assert PARAMETERS_BY_NAME["calibration"].default == "" and PARAMETERS_BY_NAME["calibration"].on_change is OnChange.RELOAD
    assert "ONNX Runtime takes it at the next configure or backend reload" in PARAMETERS_BY_NAME["threads"].description


@pytest.mark.parametrize("changes, message", [
    ({"precision": "int4"}, "precision must be one of fp32, fp16, int8, got 'int4'"),
    ({"precision": "fp16"}, "precision fp16 is an option of runtime tensorrt; runtime torch runs fp32"),
    ({"runtime": "onnxruntime", "precision": "fp16"}, "precision fp16 is an option of runtime tensorrt"),
    ({"precision": "int8"}, "precision int8 is an option of runtime onnxruntime or tensorrt; runtime torch runs fp32"),
    ({"onnx_path": "/data/twinlitenet.onnx"}, "an ONNX file needs runtime onnxruntime or tensorrt, not torch"),
    ({"runtime": "openvino"}, "runtime must be one of torch, onnxruntime, tensorrt"),
    ({"runtime": "onnxruntime", "precision": "int8"}, "precision int8 needs calibration frames"),
    ({"runtime": "tensorrt", "precision": "int8", "onnx_path": "/data/twinlitenet.onnx"},
     "runtime tensorrt needs calibration frames"),
    ({"runtime": "onnxruntime", "calibration": "frames/"}, "calibration frames are for precision int8, not fp32"),
    ({"runtime": "onnxruntime", "precision": "int8", "backend_options": "calibration=frames/"},
     "backend_options sets calibration: set the node parameter of that name instead"),
    ({"backend_options": "fusion=kirillov, runtime=onnxruntime"}, "backend_options sets runtime"),
])
def test_values_that_do_not_go_together_are_refused_with_the_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        check_values(settings(**changes))


def test_valid_runtime_settings_pass():
    check_values(settings())
    check_values(settings(runtime="onnxruntime", onnx_path="/data/twinlitenet.onnx"))
    check_values(settings(runtime="tensorrt", precision="fp16"))
    check_values(settings(runtime="onnxruntime", precision="int8", calibration="frames/"))
    check_values(settings(runtime="onnxruntime", precision="int8", onnx_path="/data/twinlitenet.int8.onnx"))
    check_values(settings(runtime="tensorrt", precision="int8", calibration="synthetic:32"))
    check_values(settings(backend_options="fusion=kirillov"))
    check_values({"precision": "fp16"})  # alone (no runtime given): only its choices are checked


def test_thresholds_left_at_their_default_are_the_backends_and_set_ones_override_it():
    from panoptic_perception.backends.base import Thresholds
    from panoptic_perception.ros.parameters import THRESHOLD_PARAMETERS, given_thresholds

    assert given_thresholds(settings()) == {}, "by default every backend runs its own thresholds"
    assert given_thresholds(settings(score_threshold=0.6, max_detections=20)) == {"score": 0.6, "max_detections": 20}
    assert given_thresholds({"score_threshold": 0.0}) == {"score": 0.0}, "0 is a threshold, not the default"
    # The stand-in value is outside each threshold's valid range: no threshold, so no backend default, equals it.
    for parameter, name in THRESHOLD_PARAMETERS.items():
        spec = PARAMETERS_BY_NAME[parameter]
        assert spec.minimum == spec.default and spec.on_change is OnChange.APPLY
        with pytest.raises(ValueError):
            Thresholds(**{name: spec.default})


def test_a_mount_is_six_finite_numbers_or_empty_and_the_ground_grid_needs_an_extent():
    check_values({"mount": []})
    check_values({"mount": [0.0, 0.0, 1.5, 0.0, 0.05, 0.0]})
    for bad in ([0.0, 0.0, 1.5], [0.0, 0.0, 1.5, 0.0, 0.0, float("nan")]):
        with pytest.raises(ValueError, match=r"mount must be \[x, y, z, roll, pitch, yaw\]"):
            check_values({"mount": bad})
    check_values({"ground_ahead": 60.0, "ground_behind": 0.0, "ground_side": 20.0})
    with pytest.raises(ValueError, match="the ground grid needs an extent"):
        check_values({"ground_ahead": 0.0, "ground_behind": 0.0, "ground_side": 20.0})



def test_a_ground_grid_of_more_than_four_million_cells_is_refused_in_one_line():
    # 0.01 m cells on the default extents (80 x 40 m): 32 million cells, ~16 GB to build each camera's table.
    check_values(settings(ground_resolution=0.04))  # 1000 x 2000 cells
    with pytest.raises(ValueError) as error:
        check_values(settings(ground_resolution=0.01))
    assert str(error.value) == ("a ground grid of 4000x8000 cells of 0.01 m is more than 4000000 cells (each camera's "
                                "lookup table takes ~500 bytes a cell to build): use a coarser ground_resolution or "
                                "smaller extents")
