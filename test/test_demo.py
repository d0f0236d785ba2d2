import json

import cv2

from panoptic_perception.cli import main


def test_demo_writes_panels_and_a_summary_with_real_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--frames", "2", "--size", "320x180", "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "twinlitenet" and summary["weights"]["source"] == "bundled"
    assert summary["frames"] == 2 and summary["metrics"]["images"] == 2
    assert 0.8 < summary["metrics"]["drivable_miou"] <= 1.0
    assert 0.0 < summary["metrics"]["lane_iou"] <= 1.0
    assert summary["latency_ms"]["median"] > 0
    panel = cv2.imread(str(out / "frame_001.jpg"))
    assert panel.shape == (360, 320, 3), "ground truth above the prediction"
    printed = capsys.readouterr().out
    assert "drivable_miou" in printed and str(out) in printed
