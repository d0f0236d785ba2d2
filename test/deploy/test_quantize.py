"""INT8 through ONNX Runtime: `quantize` on a folder, a video and a bag; the INT8 runtime and its cache key;
the refusals; TwinLiteNet's official weights on the reference frames (README, Deployment: INT8)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from panoptic_perception import create_backend
from panoptic_perception.cli import main
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.deploy.onnx_export import ExportError, read_metadata
from panoptic_perception.deploy.quantize import calibration_frames, float_nodes, quantize_onnx
from panoptic_perception.errors import ConfigurationError

SMALL = {"input_size": (160, 96)}  # the bundled TwinLiteNet, small: a quantization takes a few seconds
MASK_AGREEMENT = 0.98
HELD_OUT = [generate_scene(seed, 320, 180).image for seed in (5_000_100, 5_000_101, 5_000_102)]


def agreement(first, second) -> dict[str, float]:
    """Share of equal pixels per mask over the frames of two result lists."""
    return {mask: float(np.mean([(getattr(a, mask) == getattr(b, mask)).mean() for a, b in zip(first, second)]))
            for mask in ("drivable_mask", "lane_mask")}


def write_source(kind: str, folder):
    """Four synthetic 320x180 frames (seeds 0-3) as a folder of PNGs, an MJPG video or an MCAP bag."""
    frames = [generate_scene(seed, 320, 180).image for seed in range(4)]
    if kind == "folder":
        folder.mkdir()
        for i, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"frame_{i}.png"), frame)
        return folder
    if kind == "video":
        video = folder.with_suffix(".avi")
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
        for frame in frames:
            writer.write(frame)
        writer.release()
        return video
    from panoptic_perception.ros.bags import make_bag

    make_bag("synthetic:4+0", folder, size=(320, 180))
    return folder


@pytest.mark.parametrize("kind", ["folder", "video", "bag"])
def test_quantize_calibrates_on_a_folder_a_video_and_a_bag(kind, tmp_path, onnx_cache, capsys):
    source = write_source(kind, tmp_path / "frames")
    output = tmp_path / "model.int8.onnx"
    status = main(["-q", "quantize", "--backend", "twinlitenet", "--input-size", "160x96", "--calibration", str(source),
                   "--output", str(output), "--evaluate", "synthetic:3@320x180", "--limit", "3", "--runs", "2", "--profile"])
    assert status == 0
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["calibration"]["frames"] == 4 and report["accuracy"]["frames"] == 3
    assert min(report["accuracy"]["agreement"].values()) >= MASK_AGREEMENT
    assert report["speed"]["fp32_ms"] > 0 and report["speed"]["int8_ms"] > 0 and report["speed"]["threads"] == 2
    assert "drivable mIoU" in report["accuracy"]["metric_loss"]
    printed = capsys.readouterr().out
    assert "network time, ONNX Runtime, 2 threads, 1280x720" in printed
    assert "ONNX Runtime's profile, median of 2 runs, 2 threads" in printed
    assert report["profile"]["int8"]["nodes"]["QLinearConv"] > 0 and report["profile"]["fp32"]["total_ms"] > 0
    metadata = read_metadata(output)
    assert metadata["precision"] == "int8" and metadata["calibration"] == report["calibration"]["digest"]

    int8 = create_backend("twinlitenet", runtime="onnxruntime", precision="int8", onnx_path=str(output), **SMALL)
    fp32 = create_backend("twinlitenet", runtime="onnxruntime", **SMALL)
    assert int8.describe()["onnx"] == str(output)
    assert min(agreement(int8.process(HELD_OUT), fp32.process(HELD_OUT)).values()) >= MASK_AGREEMENT


def test_the_int8_cache_key_covers_the_calibration_frames(onnx_cache):
    first = create_backend("twinlitenet", runtime="onnxruntime", precision="int8", calibration="synthetic:2@320x180+0", **SMALL)
    same = create_backend("twinlitenet", runtime="onnxruntime", precision="int8", calibration="synthetic:2@320x180+0", **SMALL)
    other = create_backend("twinlitenet", runtime="onnxruntime", precision="int8", calibration="synthetic:2@320x180+7", **SMALL)
    assert first.run_network.path == same.run_network.path != other.run_network.path
    assert read_metadata(first.run_network.path)["calibration"] != read_metadata(other.run_network.path)["calibration"]
    assert first.describe()["precision"] == "int8"
    fp32 = create_backend("twinlitenet", runtime="onnxruntime", **SMALL)
    assert min(agreement(first.process(HELD_OUT), fp32.process(HELD_OUT)).values()) >= MASK_AGREEMENT


def test_calibration_frames_are_the_backends_input_and_their_digest_follows_them():
    backend = create_backend("twinlitenet", **SMALL)
    frames = calibration_frames(backend, "synthetic:3@320x180+0", limit=2)
    assert len(frames.batches) == 2 and frames.names == ["synthetic_0", "synthetic_1"]
    assert frames.batches[0].shape == (1, 3, 96, 160) and frames.batches[0].dtype == np.float32
    assert 0 <= frames.batches[0].min() and frames.batches[0].max() <= 1
    assert calibration_frames(backend, "synthetic:2@320x180+0").digest == frames.digest
    assert calibration_frames(backend, "synthetic:2@320x180+1").digest != frames.digest
    with pytest.raises(ConfigurationError, match="synthetic:N"):
        calibration_frames(backend, "synthetic:none")


def test_the_heads_and_the_attention_stay_in_float(onnx_cache):
    import onnx

    backend = create_backend("twinlitenet", runtime="onnxruntime", **SMALL)
    model = onnx.load(backend.run_network.path)
    kept = set(float_nodes(model))
    producers = {name: node for node in model.graph.node for name in node.output}
    assert all(producers[output.name].name in kept for output in model.graph.output)
    assert {node.name for node in model.graph.node if node.op_type in ("MatMul", "Softmax")} <= kept
    assert sum(node.op_type in ("Conv", "ConvTranspose") and node.name in kept for node in model.graph.node) >= 2  # one a head
    assert len(kept) < len(model.graph.node) / 4


def test_int8_is_refused_where_it_has_nothing_to_run_on(tmp_path, onnx_cache):
    with pytest.raises(ConfigurationError, match="calibration frames"):
        create_backend("twinlitenet", runtime="onnxruntime", precision="int8", **SMALL)
    with pytest.raises(ConfigurationError, match="calibration frames"):
        create_backend("twinlitenet", runtime="tensorrt", precision="int8", **SMALL)
    with pytest.raises(ConfigurationError, match="runtime onnxruntime or tensorrt"):
        create_backend("twinlitenet", runtime="torch", precision="int8", **SMALL)
    with pytest.raises(ConfigurationError, match="for precision int8"):
        create_backend("twinlitenet", runtime="onnxruntime", calibration="synthetic:2", **SMALL)
    float_export = create_backend("twinlitenet", runtime="onnxruntime", **SMALL).run_network.path
    with pytest.raises(ExportError, match="float32 export"):
        create_backend("twinlitenet", runtime="onnxruntime", precision="int8", onnx_path=float_export, **SMALL)
    int8 = create_backend("twinlitenet", runtime="onnxruntime", precision="int8", calibration="synthetic:2@320x180+0", **SMALL)
    with pytest.raises(ExportError, match="is an INT8 model"):
        create_backend("twinlitenet", runtime="onnxruntime", onnx_path=int8.run_network.path, **SMALL)


def test_official_twinlitenet_int8_agrees_with_fp32_on_the_reference_frames(reference_dir, official_twinlitenet_weights,
                                                                             onnx_cache):
    """Calibrated on synthetic scenes, scored on the 14 real frames: >= 99 % of mask pixels as fp32."""
    weights = str(official_twinlitenet_weights)
    int8 = create_backend("twinlitenet", weights, runtime="onnxruntime", precision="int8",
                          calibration="synthetic:8@1280x720+0")
    fp32 = create_backend("twinlitenet", weights, runtime="onnxruntime")
    images = [cv2.imread(str(path)) for path in sorted((reference_dir / "images").glob("*.jpg"))]
    assert len(images) == 14
    agreed = agreement(int8.process(images), fp32.process(images))
    assert agreed["drivable_mask"] >= 0.99 and agreed["lane_mask"] >= 0.99, agreed


def test_every_calibration_method_offered_gives_scales_of_its_own(tmp_path, onnx_cache, capsys):
    """`--method entropy` was MinMax: ONNX Runtime's Entropy calibrator, as quantize_static runs it, has 128
    histogram bins for 128 quantized bins, one candidate threshold, the whole range (found in review). It is
    no longer offered; each method that is gives scales of its own."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from panoptic_perception import create_backend
    from panoptic_perception.deploy.quantize import CALIBRATION_METHODS

    backend = create_backend("twinlitenet", runtime="onnxruntime", input_size=(160, 96))
    frames = calibration_frames(backend, "synthetic:2@320x180+0")

    def activation_scales(method: str) -> dict:
        path = quantize_onnx(backend.run_network.path, tmp_path / f"{method}.onnx", frames, method)
        return {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer
                if tensor.name.endswith("_scale") and numpy_helper.to_array(tensor).size == 1}

    minmax = activation_scales("minmax")
    for method in set(CALIBRATION_METHODS) - {"minmax"}:
        scales = activation_scales(method)
        same = sum(np.array_equal(minmax[name], scales.get(name)) for name in minmax)
        assert same < len(minmax) / 2, f"{method} calibration gave MinMax's scale to {same} of {len(minmax)} activations"
    with pytest.raises(SystemExit):
        main(["quantize", "--backend", "twinlitenet", "--calibration", "synthetic:2", "--method", "entropy",
              "--output", str(tmp_path / "model.int8.onnx")])
    assert "invalid choice: 'entropy'" in capsys.readouterr().err


def test_quantize_accepts_a_held_out_bag_of_other_frames(tmp_path, onnx_cache):
    """Two bags of different drives: their frames share names (frame_000000, ...) but not one pixel; the
    held-out check compared names and refused to score the second bag (found in review)."""
    from panoptic_perception.ros.bags import make_bag

    make_bag("synthetic:2+0", tmp_path / "calibration_bag", size=(320, 180))
    make_bag("synthetic:2+100", tmp_path / "evaluation_bag", size=(320, 180))
    status = main(["-q", "quantize", "--backend", "twinlitenet", "--input-size", "160x96", "--calibration",
                   str(tmp_path / "calibration_bag"), "--evaluate", str(tmp_path / "evaluation_bag"), "--limit", "2",
                   "--runs", "0", "--output", str(tmp_path / "model.int8.onnx")])
    assert status == 0, "a bag of other frames is held out, whatever its frames are named"


def test_quantize_refuses_to_score_the_calibration_frames_under_other_names(tmp_path, onnx_cache, capsys):
    """The same frames as a folder of PNGs (calibration) and as a bag (--evaluate): the report calls them
    called them held out (found in review; the issue: "calibrated on other frames than those scored")."""
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
    assert "--evaluate shares 2 frames with --calibration (e.g. frame_000000)" in capsys.readouterr().err
