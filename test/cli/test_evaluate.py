"""``evaluate``: runs side by side, thresholds, run names, synthetic specs, bad frames skipped."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from support import fail_on_frame

from panoptic_perception.cli import main


def test_evaluate_two_weights_side_by_side(tmp_path, small_weights, capsys):
    out = tmp_path / "report"
    argv = ["-q", "evaluate", "--weights", "-", "--weights", small_weights, "--data", "synthetic:2@160x96", "--output", str(out)]
    assert main(argv) == 0
    text = (out / "report.md").read_text()
    assert "| metric | twinlitenet_bundled | twinlitenet_tiny |" in text
    metrics = json.loads((out / "metrics.json").read_text())
    bundled, tiny = (run["summary"]["driving"]["drivable_miou"] for run in metrics["runs"])
    assert bundled > 0.8 and bundled > tiny, "trained weights beat random ones"


def test_evaluate_applies_the_given_detection_thresholds_and_records_them(tmp_path, yolopv2_small_checkpoint):
    path, _ = yolopv2_small_checkpoint
    reports = {}
    for name, thresholds in (("default", []), ("protocol", ["--score-threshold", "0.001", "--iou-threshold", "0.6",
                                                            "--max-detections", "7"])):
        argv = ["-q", "evaluate", "--backend", "yolopv2", "--weights", path, "--data", "synthetic:1@160x96",
                "--output", str(tmp_path / name), *thresholds]
        assert main(argv) == 0
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())["runs"][0]
    assert reports["default"]["backend"]["thresholds"]["score"] == 0.3
    assert {k: reports["protocol"]["backend"]["thresholds"][k] for k in ("score", "iou", "max_detections")} == {
        "score": 0.001, "iou": 0.6, "max_detections": 7}
    assert reports["protocol"]["frames"][0]["detections"] == 7, "a random detector has thousands of candidates above 0.001"
    assert "thresholds: score 0.001, iou 0.6, max_detections 7, mask 0.5" in (tmp_path / "protocol" / "report.md").read_text()


def test_evaluate_names_runs_of_weights_with_the_same_file_name_by_their_folders(tmp_path, small_weights):
    for run in ("stage1", "stage2"):
        (tmp_path / run).mkdir()
        shutil.copy(small_weights, tmp_path / run / "best.pth")
    argv = ["-q", "evaluate", "--weights", str(tmp_path / "stage1" / "best.pth"), "--weights",
            str(tmp_path / "stage2" / "best.pth"), "--data", "synthetic:1@160x96", "--output", str(tmp_path / "report")]
    assert main(argv) == 0
    assert "| metric | twinlitenet_stage1-best | twinlitenet_stage2-best |" in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_skips_frames_that_cannot_be_read(tmp_path, small_weights, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "good.png"), np.zeros((48, 64, 3), np.uint8))
    (frames / "bad.jpg").write_bytes(b"not a jpeg")
    assert main(["-q", "evaluate", "--weights", small_weights, "--data", str(frames), "--output", str(tmp_path / "r")]) == 1
    assert "twinlitenet: skipped bad (read): cannot decode image" in capsys.readouterr().err
    run = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"][0]
    assert run["summary"]["frames"] == 1 and run["failed"][0]["frame"] == "bad"


def test_evaluate_reports_a_frame_the_backend_fails_on_and_scores_the_others(tmp_path, small_weights, monkeypatch, capsys):
    from panoptic_perception.data.sources import EVALUATION_FIRST_SEED
    from panoptic_perception.data.synthetic import generate_scene

    fail_on_frame(monkeypatch, generate_scene(EVALUATION_FIRST_SEED + 1, 64, 48).image)  # the second of synthetic:3@64x48
    argv = ["-q", "evaluate", "--weights", small_weights, "--data", "synthetic:3@64x48", "--output", str(tmp_path / "r")]
    assert main(argv) == 1
    name = f"synthetic_{EVALUATION_FIRST_SEED + 1}"
    assert capsys.readouterr().err.count(f"skipped {name} (backend): RuntimeError: backend exploded") == 1
    run = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"][0]
    assert [f["frame"] for f in run["frames"]] == [f"synthetic_{EVALUATION_FIRST_SEED}", f"synthetic_{EVALUATION_FIRST_SEED + 2}"]
    assert run["summary"]["frames"] == 2 and run["failed"] == [{"frame": name, "stage": "backend",
                                                                  "error": "RuntimeError: backend exploded"}]
    assert f"- twinlitenet: {name} (backend): RuntimeError: backend exploded" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("spec", ["synthetic:abc", "synthetic:2@640", "synthetic:0", "synthetic:2@0x10", "synthetic:2+-1",
                                  "synthetic:2+7@64x48"])
def test_evaluate_rejects_a_malformed_synthetic_spec(tmp_path, spec, capsys):
    assert main(["-q", "evaluate", "--data", spec, "--output", str(tmp_path / "r")]) == 2
    assert "synthetic data is synthetic:N[@WxH][+SEED] with positive N, W and H" in capsys.readouterr().err


@pytest.mark.parametrize("spec, seeds", [("synthetic:2@64x48", [5_000_000, 5_000_001]), ("synthetic:2@64x48+7", [7, 8])])
def test_evaluate_synthetic_scenes_are_the_held_out_ones_unless_a_first_seed_is_given(tmp_path, small_weights, spec, seeds):
    assert main(["-q", "evaluate", "--weights", small_weights, "--data", spec, "--output", str(tmp_path / "r")]) == 0
    frames = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"][0]["frames"]
    assert [f["frame"] for f in frames] == [f"synthetic_{seed}" for seed in seeds]


def test_variants_are_runs_side_by_side_and_options_apply_to_every_run(tmp_path):
    """--variant KEY=VALUE is one more run of every backend; --option (also spelt --options, as in every
    command) is a backend option of all of them."""
    argv = ["-q", "evaluate", "--backend", "cross_cooperative", "--data", "synthetic:1@160x96", "--output", str(tmp_path / "r"),
            "--variant", "output=top", "--variant", "output=bottom", "--options", "output_stride=8,input_width=160,input_height=96"]
    assert main(argv) == 0
    runs = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"]
    assert [run["name"] for run in runs] == ["cross_cooperative[output=top]", "cross_cooperative[output=bottom]"]
    assert [run["backend"]["config"]["output"] for run in runs] == ["top", "bottom"]
    assert all(run["backend"]["config"]["output_stride"] == 8 and run["backend"]["input_size"] == [160, 96] for run in runs)


def test_evaluate_runs_the_shared_loop_timed(tmp_path, small_weights, monkeypatch):
    from panoptic_perception.evaluation import loop

    calls = []
    run_frames = loop.run_frames

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return run_frames(*args, **kwargs)

    monkeypatch.setattr(loop, "run_frames", spy)
    argv = ["-q", "evaluate", "--weights", small_weights, "--data", "synthetic:2@64x48", "--limit", "1", "--output", str(tmp_path / "r")]
    assert main(argv) == 0
    assert len(calls) == 1 and calls[0].get("timed", True) and calls[0]["total"] == 1
    (run,) = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"]
    assert run["summary"]["frames"] == 1, "--limit"


def test_evaluate_a_bag_of_three_cameras_gives_metrics_per_camera_and_overall(tmp_path):
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
    pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")
    from panoptic_perception.ros.bags import make_bag

    make_bag("synthetic:2", tmp_path / "bag", size=(160, 96), cameras=dict.fromkeys(("front", "left", "right")))
    assert main(["-q", "evaluate", "--data", str(tmp_path / "bag"), "--output", str(tmp_path / "all")]) == 0
    runs = json.loads((tmp_path / "all" / "metrics.json").read_text())["runs"]
    assert [run["name"] for run in runs] == ["twinlitenet", "twinlitenet@front", "twinlitenet@left", "twinlitenet@right"]
    assert [run["summary"]["frames"] for run in runs] == [6, 2, 2, 2]
    assert [f["frame"] for f in runs[2]["frames"]] == ["left/frame_000000", "left/frame_000001"]
    assert (tmp_path / "all" / "frames_twinlitenet@right.csv").read_text().splitlines()[1].startswith("right/frame_000000,")
    assert "| metric | twinlitenet | twinlitenet@front | twinlitenet@left | twinlitenet@right |" in (
        tmp_path / "all" / "report.md").read_text()
    # In recording order the bag's scenes are those of synthetic:6 (camera i of 3, frame k: seed first + 3k + i).
    assert main(["-q", "evaluate", "--data", "synthetic:6@160x96", "--output", str(tmp_path / "synthetic")]) == 0
    alone = json.loads((tmp_path / "synthetic" / "metrics.json").read_text())["runs"][0]["summary"]["driving"]
    assert runs[0]["summary"]["driving"] == alone
    assert len({run["summary"]["driving"]["drivable_miou"] for run in runs[1:]}) == 3, "each camera its own scenes"

    argv = ["-q", "evaluate", "--data", str(tmp_path / "bag"), "--output", str(tmp_path / "two"),
            "--image-topic", "/right/image_raw", "--image-topic", "/front/image_raw"]
    assert main(argv) == 0
    chosen = json.loads((tmp_path / "two" / "metrics.json").read_text())["runs"]
    assert [(run["name"], run["summary"]["frames"]) for run in chosen] == [
        ("twinlitenet", 4), ("twinlitenet@right", 2), ("twinlitenet@front", 2)]
    assert chosen[1]["summary"]["driving"] == runs[3]["summary"]["driving"], "a camera scores the same chosen or not"


def test_evaluate_reports_ground_plane_metrics_on_synthetic_scenes(tmp_path):
    out = tmp_path / "report"
    assert main(["-q", "evaluate", "--data", "synthetic:2@640x360", "--output", str(out)]) == 0  # bundled twinlitenet
    run = json.loads((out / "metrics.json").read_text())["runs"][0]
    ground = run["summary"]["ground"]
    assert ground["drivable_frames"] == 2 and 0.7 < ground["drivable_iou_min"] <= ground["drivable_iou"] < 1
    assert "range_error_median" not in ground, "twinlitenet has no objects"
    assert all(0.7 < frame["ground_drivable_iou"] < 1 for frame in run["frames"])
    assert "| ground drivable IoU within 40 m, mean (%) |" in (out / "report.md").read_text()
