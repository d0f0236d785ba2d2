import json

import cv2
import numpy as np
from support import fail_on_frame

from panoptic_perception.cli import main
from panoptic_perception.core.types import Capability
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.demo import truth_of_outputs


def test_demo_writes_panels_and_a_summary_with_real_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--frames", "2", "--size", "320x180", "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "twinlitenet" and summary["weights"]["source"] == "bundled"
    assert summary["frames"] == 2 and summary["metrics"]["driving"]["images"] == 2
    assert 0.8 < summary["metrics"]["driving"]["drivable_miou"] <= 1.0
    assert 0.0 < summary["metrics"]["driving"]["lane_iou"] <= 1.0
    assert summary["latency_ms"]["median"] > 0
    panel = cv2.imread(str(out / "frame_001.jpg"))
    assert panel.shape == (360, 320, 3), "ground truth above the prediction"
    printed = capsys.readouterr().out
    assert "| drivable mIoU (%) |" in printed and str(out) in printed


def test_demo_of_a_semantic_backend_scores_and_shows_the_semantic_truth(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--backend", "cyclenet", "--frames", "1", "--size", "320x180", "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.5 < summary["metrics"]["semantic"]["miou"] <= 1.0 and "| semantic mIoU (%) |" in capsys.readouterr().out
    panel = cv2.imread(str(out / "frame_000.jpg")).astype(int)
    truth, prediction = panel[50:180], panel[230:]  # below the captions
    # The truth panel draws what the backend predicts (the semantic map; no boxes or lane lines), so the
    # two panels look alike where the prediction is right: 0.93 of the pixels, 0.84 when the truth panel
    # drew every output of the scene.
    assert (np.abs(truth - prediction).sum(axis=2) < 20).mean() > 0.9


def test_the_truth_panel_keeps_the_outputs_of_the_backend():
    scene = generate_scene(0, 64, 36)
    truth = truth_of_outputs(scene.to_result(), frozenset({Capability.SEMANTIC, Capability.DRIVABLE_AREA}))
    assert truth.semantic is scene.semantic and truth.drivable_mask is scene.drivable_mask
    assert truth.lane_mask is None and truth.detections is None and truth.panoptic is None and truth.segments is None


def test_demo_runs_the_shared_loop_a_warm_up_first_and_a_failing_frame_skipped(tmp_path, monkeypatch, capsys):
    from panoptic_perception import demo
    from panoptic_perception.evaluation import loop

    calls, loops = [], []
    fail_on_frame(monkeypatch, generate_scene(demo.DEMO_FIRST_SEED + 1, 160, 96).image, calls)  # the second frame

    def spy(*args, **kwargs):
        loops.append(kwargs)
        return loop.run_frames(*args, **kwargs)

    monkeypatch.setattr(demo, "run_frames", spy)
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--frames", "3", "--size", "160x96", "--output", str(out)]) == 1
    assert len(loops) == 1 and len(calls) == 1 + 3, "one untimed warm-up call, then one per frame"
    assert "skipped frame_001 (backend): RuntimeError: backend exploded" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [{"frame": "frame_001", "stage": "backend", "error": "RuntimeError: backend exploded"}]
    assert summary["metrics"]["frames"] == 2 and summary["latency_ms"]["median"] > 0
    assert sorted(p.name for p in out.glob("frame_*.jpg")) == ["frame_000.jpg", "frame_002.jpg"]


def test_demo_takes_the_backend_options_of_every_command(tmp_path):
    out = tmp_path / "demo"
    argv = ["-q", "demo", "--backend", "cross_cooperative", "--option", "output=top", "--frames", "1", "--size", "160x96",
            "--output", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["output"] == "top"
