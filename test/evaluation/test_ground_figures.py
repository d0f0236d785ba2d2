"""The README's ground-plane figures: the truth scores near perfectly, a backend row beside it."""

from __future__ import annotations

import json

from panoptic_perception.evaluation.ground_figures import main


def test_the_figures_score_the_truth_and_each_backend_asked_for(tmp_path, capsys):
    assert main(["--scenes", "2", "--size", "640x360", "--backend", "yolopv2", "--json", str(tmp_path / "g.json")]) == 0
    rows = json.loads((tmp_path / "g.json").read_text())["rows"]
    assert list(rows) == ["ground truth (masks)", "ground truth (boxes)", "yolopv2"]
    masks = rows["ground truth (masks)"]
    assert masks["drivable_iou_min"] > 0.95 and masks["range_error_median"] < 0.03 and masks["object_recall"] == 1
    assert rows["yolopv2"]["drivable_iou"] > 0.6 and rows["yolopv2"]["true_objects"] == masks["true_objects"] > 0
    table = capsys.readouterr().out
    assert "| outputs | drivable IoU ≤ 40 m, mean (min) |" in table and "| yolopv2 | 0." in table
