"""The backend options every command that builds a backend shares: checked, and honoured alike."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from panoptic_perception.cli import main


def test_threshold_options_are_checked(capsys):
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--score-threshold", "1.5"]) == 2
    assert "score threshold must be in [0, 1]" in capsys.readouterr().err


def test_option_values_of_the_wrong_type_are_named(capsys):
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "width=abc"]) == 2
    assert "YOLOPv2Config option width must be float, got 'abc'" in capsys.readouterr().err
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "depth=true"]) == 2
    assert "option depth must be float, got True" in capsys.readouterr().err


def test_options_must_be_key_value(capsys):
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "width"]) == 2
    assert "backend options are KEY=VALUE" in capsys.readouterr().err


def test_runtimes_side_by_side_in_benchmark_infer_and_evaluate(tmp_path, small_weights, onnx_cache, capsys):
    argv = ["benchmark", "--weights", small_weights, "--runtime", "torch", "--runtime", "onnxruntime", "--paths", "fast",
            "--runs", "2", "--warmup", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["paths"]) == {"fast/torch", "fast/onnxruntime"}
    ratios = report["runtime_speedup"]["fast/onnxruntime"]
    expected = report["paths"]["fast/torch"]["total_ms"]["median"] / report["paths"]["fast/onnxruntime"]["total_ms"]["median"]
    assert ratios["total"] == pytest.approx(expected) and ratios["inference"] > 0
    assert report["paths"]["fast/onnxruntime"]["gflops"] == report["paths"]["fast/torch"]["gflops"] > 0

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "f0.png"), np.random.default_rng(0).integers(0, 255, (90, 160, 3), np.uint8))
    for runtime in ("torch", "onnxruntime"):
        assert main(["-q", "infer", "--weights", small_weights, "--runtime", runtime, str(frames), "--output",
                     str(tmp_path / runtime)]) == 0
    summary = json.loads((tmp_path / "onnxruntime" / "summary.json").read_text())
    assert summary["runtime"] == "onnxruntime" and summary["onnx"].startswith(str(onnx_cache))
    for mask in ("f0_drivable.png", "f0_lane.png"):
        torch_mask, ort_mask = (cv2.imread(str(tmp_path / r / mask), cv2.IMREAD_UNCHANGED) for r in ("torch", "onnxruntime"))
        assert (torch_mask == ort_mask).mean() >= 0.999

    assert main(["-q", "evaluate", "--weights", small_weights, "--runtime", "onnxruntime", "--data", "synthetic:1@160x96",
                 "--output", str(tmp_path / "report")]) == 0
    (run,) = json.loads((tmp_path / "report" / "metrics.json").read_text())["runs"]
    assert run["summary"]["frames"] == 1 and run["backend"]["runtime"] == "onnxruntime"


BACKEND_OPTIONS = ["--weights", "w.pth", "--device", "cpu", "--threads", "1", "--option", "a=1", "--options", "b=2,c=3"]
FRAME_OPTIONS = ["--score-threshold", "0.4", "--iou-threshold", "0.5", "--max-detections", "7", "--runtime", "onnxruntime",
                 "--onnx", "n.onnx", "--precision", "fp16"]


@pytest.mark.parametrize("command", [
    ["infer", "x.png", "--output", "o"], ["benchmark"], ["evaluate", "--data", "d", "--output", "o"], ["demo"],
    ["replay", "bag", "--output", "o"],
])
def test_every_command_that_runs_a_backend_takes_the_same_backend_options(command):
    """One flag means one thing everywhere: --option (or --options) is a backend option in every command."""
    from panoptic_perception.cli import parse_args

    args = parse_args([*command, *BACKEND_OPTIONS, *FRAME_OPTIONS])
    assert args.option == ["a=1", "b=2,c=3"] and args.device == "cpu" and args.threads == 1
    assert args.weights in ("w.pth", ["w.pth"]) and args.runtime in ("onnxruntime", ["onnxruntime"])
    assert (args.score_threshold, args.iou_threshold, args.max_detections) == (0.4, 0.5, 7)
    assert (args.onnx, args.precision) == ("n.onnx", "fp16")


def test_export_takes_the_backend_options_but_not_those_of_running_frames(capsys):
    from panoptic_perception.cli import parse_args

    args = parse_args(["export", "--size", "64x48", *BACKEND_OPTIONS])
    assert args.option == ["a=1", "b=2,c=3"] and args.weights == "w.pth"
    with pytest.raises(SystemExit):
        parse_args(["export", "--size", "64x48", "--score-threshold", "0.4"])
    assert "unrecognized arguments: --score-threshold" in capsys.readouterr().err
