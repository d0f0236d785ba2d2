"""Review of issue 40 (INT8): defects found by using `quantize` and the INT8 runtime as a user would."""

from __future__ import annotations

import cv2
import pytest

from panoptic_perception.cli import main
from panoptic_perception.data.synthetic import generate_scene


def test_quantize_accepts_a_held_out_bag_of_other_frames(tmp_path, onnx_cache):
    """Two bags of different drives: their frames share names (frame_000000, ...) but not one pixel; the
    held-out check compares names and refuses to score the second bag."""
    from panoptic_perception.ros.bags import make_bag

    make_bag("synthetic:2+0", tmp_path / "calibration_bag", size=(320, 180))
    make_bag("synthetic:2+100", tmp_path / "evaluation_bag", size=(320, 180))
    status = main(["-q", "quantize", "--backend", "twinlitenet", "--input-size", "160x96", "--calibration",
                   str(tmp_path / "calibration_bag"), "--evaluate", str(tmp_path / "evaluation_bag"), "--limit", "2",
                   "--runs", "0", "--output", str(tmp_path / "model.int8.onnx")])
    assert status == 0, "a bag of other frames is held out, whatever its frames are named"


def test_quantize_refuses_to_score_the_calibration_frames_under_other_names(tmp_path, onnx_cache):
    """The same frames as a folder of PNGs (calibration) and as a bag (--evaluate): the report calls them
    held out (README: --evaluate "held out"; the issue: "calibrated on other frames than those scored")."""
    from panoptic_perception.ros.bags import make_bag

    folder = tmp_path / "frames"
    folder.mkdir()
    for seed in (0, 1):
        cv2.imwrite(str(folder / f"scene_{seed}.png"), generate_scene(seed, 320, 180).image)
    make_bag("synthetic:2+0", tmp_path / "bag", size=(320, 180))
    status = main(["-q", "quantize", "--backend", "twinlitenet", "--input-size", "160x96", "--calibration", str(folder),
                   "--evaluate", str(tmp_path / "bag"), "--limit", "2", "--runs", "0",
                   "--output", str(tmp_path / "model.int8.onnx")])
    assert status == 2, "the frames scored are the calibration frames: not held out"


def test_a_damaged_cached_int8_model_is_quantized_again_not_used(onnx_cache):
    """Bytes of the cached INT8 model's largest weight overwritten (the file still parses, its metadata
    intact): the next backend on the same frames must not run it ("quantized now if missing or unusable")."""
    import numpy as np
    import onnx

    from panoptic_perception import create_backend

    options = dict(runtime="onnxruntime", precision="int8", calibration="synthetic:2@320x180+0", input_size=(160, 96))
    images = [generate_scene(seed, 320, 180).image for seed in (5_000_100, 5_000_101)]
    first = create_backend("twinlitenet", **options)
    expected = first.process(images)
    path = first.run_network.path
    largest = max(onnx.load(str(path)).graph.initializer, key=lambda tensor: len(tensor.raw_data)).raw_data
    data = bytearray(open(path, "rb").read())
    start = data.find(largest)
    assert start > 0 and len(largest) > 1000
    data[start:start + len(largest)] = bytes(len(largest))  # the weight zeroed, the file the same length
    open(path, "wb").write(data)

    again = create_backend("twinlitenet", **options)
    results = again.process(images)
    agreement = np.mean([(a.drivable_mask == b.drivable_mask).mean() for a, b in zip(results, expected)])
    assert agreement >= 0.999, f"the damaged cached INT8 model was run: drivable pixels {agreement:.3f} as before"


def test_the_tensorrt_calibration_cache_is_not_shared_by_two_networks_of_the_same_file_name(tmp_path):
    """`--onnx model.onnx` exported again after retraining (same name, other weights), calibrated on the same
    frames: the calibration cache is named by the file's stem and the frames only, so the new engine reads
    the old network's scales ("a rebuild never calibrates again")."""
    import numpy as np

    from panoptic_perception.deploy.quantize import CalibrationSet
    from panoptic_perception.deploy.tensorrt import calibration_cache_path

    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    (tmp_path / "before" / "model.onnx").write_bytes(b"network trained once")
    (tmp_path / "after" / "model.onnx").write_bytes(b"network trained again")
    frames = CalibrationSet("frames/", (160, 96), [np.zeros((1, 3, 96, 160), np.float32)], ["a"], "ab" * 32)
    cache = tmp_path / "cache"
    assert calibration_cache_path(cache, tmp_path / "before" / "model.onnx", frames) != \
        calibration_cache_path(cache, tmp_path / "after" / "model.onnx", frames)


def test_entropy_calibration_is_not_minmax(tmp_path, onnx_cache):
    """`--method entropy`: ONNX Runtime's Entropy calibrator defaults to 128 histogram bins for 128 quantized
    bins, so its search has one candidate, the whole range: every activation scale is MinMax's (README: "Entropy
    ... measured once: 98.68 %, lane 99.72 %", MinMax's very numbers)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from panoptic_perception import create_backend
    from panoptic_perception.deploy.quantize import calibration_frames, quantize_onnx

    backend = create_backend("twinlitenet", runtime="onnxruntime", input_size=(160, 96))
    frames = calibration_frames(backend, "synthetic:2@320x180+0")

    def activation_scales(method: str) -> dict:
        path = quantize_onnx(backend.run_network.path, tmp_path / f"{method}.onnx", frames, method)
        return {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer
                if tensor.name.endswith("_scale") and numpy_helper.to_array(tensor).size == 1}

    minmax, entropy = activation_scales("minmax"), activation_scales("entropy")
    same = sum(np.array_equal(minmax[name], entropy.get(name)) for name in minmax)
    assert same < len(minmax) / 2, f"entropy calibration gave MinMax's scale to {same} of {len(minmax)} activations"
