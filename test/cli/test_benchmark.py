"""``benchmark``: the report's numbers, its table, and the options it refuses."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from panoptic_perception.cli import main


def test_benchmark_json_reports_both_paths_and_their_ratio(small_weights, capsys):
    assert main(["benchmark", "--weights", small_weights, "--runs", "3", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # a camera frame by default, whatever the network's input size
    assert report["input_size"] == [96, 56] and report["image_size"] == [1280, 720] and report["runs"] == 3
    for path in ("fast", "plain"):
        stats = report["paths"][path]
        assert stats["total_ms"]["median"] >= stats["inference_ms"]["median"] > 0
        assert stats["total_ms"]["p90"] >= stats["total_ms"]["median"]
        assert stats["fps"]["median"] == pytest.approx(1000 / stats["total_ms"]["median"])
        assert stats["postprocess_ratio"] == pytest.approx(stats["postprocess_ms"]["median"] / stats["inference_ms"]["median"])
    assert report["speedup_total"] == pytest.approx(
        report["paths"]["plain"]["total_ms"]["median"] / report["paths"]["fast"]["total_ms"]["median"]
    )


def test_benchmark_table(small_weights, capsys):
    argv = ["benchmark", "--weights", small_weights, "--runs", "2", "--warmup", "0", "--paths", "fast", "--input-size", "64x48",
            "--size", "200x100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "network input 64x48, image 200x100" in out and "fast   inference" in out and "speed-up" not in out
    assert "fast: post-processing / network (medians) " in out


def test_benchmark_resizes_the_given_image_to_the_given_size(small_weights, tmp_path, capsys):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((90, 160, 3), np.uint8))
    argv = ["benchmark", "--weights", small_weights, "--runs", "1", "--warmup", "0", "--paths", "fast", "--json"]
    assert main([*argv, "--image", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == [160, 90]
    assert main([*argv, "--image", str(image), "--size", "320x180"]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == [320, 180]


def test_benchmark_reports_parameters_and_flops_of_a_random_variant(capsys):
    argv = ["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "width=0.25", "--option", "depth=0.33",
            "--input-size", "320x192", "--size", "320x180", "--runs", "2", "--warmup", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"]["source"] == "random" and report["input_size"] == [320, 192]
    fast, plain = report["paths"]["fast"], report["paths"]["plain"]
    assert 2.0e6 < fast["parameters"] < plain["parameters"] < 2.5e6, "folding removes BatchNorm parameters"
    assert 1.0 < fast["gflops"] < 3.0 and plain["gflops"] >= fast["gflops"]


@pytest.mark.parametrize("backend", ["fusion_panoptic", "cyclenet"])
def test_benchmark_runs_the_bundled_weights_of_the_new_backends(backend, capsys):
    argv = ["benchmark", "--backend", backend, "--runs", "1", "--warmup", "0", "--paths", "fast", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    fast = report["paths"]["fast"]
    assert report["weights"]["source"] == "bundled" and fast["parameters"] > 5e5 and fast["gflops"] > 0.1


def test_benchmark_reports_nms_candidates_next_to_the_network_time(yolopv2_small_checkpoint, capsys):
    """The randomized small checkpoint at 640x384: every one of the 15,120 anchors is a candidate."""
    path, _ = yolopv2_small_checkpoint
    argv = ["benchmark", "--backend", "yolopv2", "--weights", path, "--input-size", "640x384", "--runs", "2", "--warmup", "1",
            "--paths", "fast"]
    assert main([*argv, "--json"]) == 0
    fast = json.loads(capsys.readouterr().out)["paths"]["fast"]
    assert fast["candidates"] == {"median": 15120.0, "max": 15120.0}
    assert fast["postprocess_ms"]["median"] > 0
    assert main([*argv, "--score-threshold", "0.99", "--max-detections", "5"]) == 0
    out = capsys.readouterr().out
    assert "ms median for 0 NMS candidates (max 0), next to" in out  # nothing passes a 0.99 score


def test_benchmark_refuses_one_onnx_file_for_both_paths(tmp_path, capsys):
    onnx = str(tmp_path / "twinlitenet.onnx")  # refused before it is read
    assert main(["benchmark", "--runtime", "onnxruntime", "--onnx", onnx]) == 2  # default --paths fast,plain
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("panoptic-perception: error: --onnx is the export of one path: give --paths fast, or --paths plain "
                    "for a file exported with --plain")
