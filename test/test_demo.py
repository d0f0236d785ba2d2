import json

import cv2
import numpy as np

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
