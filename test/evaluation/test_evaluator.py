"""The evaluator's choice of what to compare, and the report it feeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from panoptic_perception.core.labels import CITYSCAPES, DRIVING_MASKS, LabelClass, LabelMap
from panoptic_perception.core.types import Capability, Detections, PerceptionResult
from panoptic_perception.evaluation.evaluator import Evaluator
from panoptic_perception.evaluation.report import write_report

VEHICLE = LabelMap("yolopv2", (LabelClass(0, "vehicle", (255, 0, 0), True),))


def detections(boxes, names, ids, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes, np.asarray(scores if scores is not None else [1.0] * len(boxes), np.float32),
                      np.asarray(ids, np.int64), list(names))


def test_a_vehicle_only_backend_is_scored_on_merged_vehicle_classes():
    evaluator = Evaluator(VEHICLE, {Capability.DETECTION})
    truth = PerceptionResult((100, 100), "truth", detections=detections(
        [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], ["car", "truck", "person"], [26, 27, 24]))
    prediction = PerceptionResult((100, 100), "p", detections=detections(
        [[0, 0, 10, 10], [20, 20, 40, 40]], ["vehicle", "vehicle"], [0, 0], [0.9, 0.8]))
    record = evaluator.add("f", prediction, truth, 12.0)
    assert record["truth_objects"] == 2, "the person is not a vehicle"
    summary = evaluator.compute()
    assert summary["detection"]["classes"] == "vehicle (merged)"
    assert summary["detection"]["map50"] == pytest.approx(1.0) and summary["detection"]["recall"] == 1.0
    assert summary["latency_ms"]["median"] == 12.0


def test_classes_are_matched_by_name_and_unknown_truth_classes_left_out():
    label_map = LabelMap("m", (LabelClass(5, "car", (0, 0, 0), True), LabelClass(6, "person", (0, 0, 0), True)))
    evaluator = Evaluator(label_map, {Capability.DETECTION})
    truth = PerceptionResult((100, 100), "t", detections=detections(
        [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], ["car", "person", "bicycle"], [26, 24, 33]))
    prediction = PerceptionResult((100, 100), "p", detections=detections(
        [[0, 0, 10, 10], [20, 20, 30, 30]], ["car", "car"], [5, 5], [0.9, 0.9]))
    evaluator.add("f", prediction, truth)
    coco = evaluator.compute()["detection"]
    assert coco["per_class_AP"][5] == pytest.approx(1.0) and coco["per_class_AP"][6] == pytest.approx(0.0)


def test_driving_masks_per_frame_and_report_files(tmp_path):
    evaluator = Evaluator(DRIVING_MASKS, {Capability.DRIVABLE_AREA, Capability.LANE_LINES})
    truth = np.zeros((4, 4), np.uint8)
    truth[2:] = 1
    prediction = truth.copy()
    prediction[1, 0] = 1  # one false positive pixel: IoU 8/9
    lanes = np.zeros((4, 4), np.uint8)
    record = evaluator.add("f", PerceptionResult((4, 4), "p", drivable_mask=prediction, lane_mask=lanes),
                           PerceptionResult((4, 4), "t", drivable_mask=truth, lane_mask=lanes), 3.0)
    assert record["drivable_iou"] == pytest.approx(8 / 9, abs=1e-5)
    summary = evaluator.compute()
    runs = [{"name": name, "summary": summary, "frames": evaluator.frames, "backend": {"backend": "twinlitenet"}}
            for name in ("first", "second")]
    report = write_report(runs, tmp_path, "toy")
    text = report.read_text()
    assert "| metric | first | second |" in text and "| drivable mIoU (%) |" in text
    assert (tmp_path / "per_class_iou.png").stat().st_size > 1000 and (tmp_path / "latency.png").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["runs"][0]["summary"]["driving"]["drivable_iou"] == pytest.approx(8 / 9)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "metric,first,second" and any(r.startswith("driving.drivable_iou,0.888889") for r in rows)
    assert (tmp_path / "frames_first.csv").read_text().splitlines()[0] == "frame,latency_ms,drivable_iou,lane_iou"


def test_semantic_and_panoptic_sections(tmp_path):
    label_map = LabelMap("c", tuple(c for c in CITYSCAPES.classes if c.id in (7, 26)))
    evaluator = Evaluator(label_map, {Capability.SEMANTIC, Capability.PANOPTIC})
    semantic = np.full((4, 4), 7, np.uint8)
    semantic[:2, :2] = 26
    panoptic = np.where(semantic == 26, 26001, 7000).astype(np.int32)
    result = PerceptionResult((4, 4), "p", semantic=semantic, panoptic=panoptic)
    evaluator.add("f", result, PerceptionResult((4, 4), "t", semantic=semantic, panoptic=panoptic))
    summary = evaluator.compute()
    assert summary["semantic"]["miou"] == pytest.approx(1.0)
    assert summary["panoptic"]["all"]["pq"] == pytest.approx(1.0)
    # The report's table shows them side by side, as fusion comparisons need (PQ with things and stuff, SQ, RQ).
    runs = [{"name": name, "summary": summary, "frames": evaluator.frames, "backend": {},
             "class_names": {c.id: c.name for c in label_map.classes}} for name in ("a", "b")]
    text = write_report(runs, tmp_path, "toy").read_text()
    for label in ("semantic mIoU", "PQ", "PQ things", "PQ stuff", "SQ", "RQ"):
        assert f"| {label} (%) | 100.00 | 100.00 |" in text, label
    # Per class by name: a table in the report, rows in the CSV in the label map's order (road 7, car 26).
    assert "| semantic IoU per class (%) | a | b |" in text and "| car | 100.00 | 100.00 |" in text
    metrics = [row.split(",")[0] for row in (tmp_path / "metrics.csv").read_text().splitlines()]
    per_class = [m for m in metrics if m.startswith("semantic.per_class_iou.")]
    assert per_class == ["semantic.per_class_iou.road (7)", "semantic.per_class_iou.car (26)"]


def test_a_frame_whose_maps_do_not_fit_the_truth_is_refused_whole():
    evaluator = Evaluator(CITYSCAPES, {Capability.SEMANTIC, Capability.PANOPTIC})
    truth = PerceptionResult((4, 2), "t", semantic=np.full((2, 4), 7, np.uint8), panoptic=np.full((2, 4), 7000, np.int32))
    good = PerceptionResult((4, 2), "p", semantic=np.full((2, 4), 7, np.uint8), panoptic=np.full((2, 4), 7000, np.int32))
    # The semantic map fits; the panoptic one does not: nothing of this frame may be counted.
    bad = PerceptionResult((4, 2), "p", semantic=np.full((2, 4), 8, np.uint8), panoptic=np.full((3, 4), 7000, np.int32))
    evaluator.add("a", good, truth, 5.0)
    with pytest.raises(ValueError, match="b: the prediction's panoptic is 4x3, the truth's 4x2"):
        evaluator.add("b", bad, truth, 50.0)
    summary = evaluator.compute()
    assert [f["frame"] for f in evaluator.frames] == ["a"] and summary["frames"] == 1
    assert summary["semantic"]["miou"] == 1.0 and summary["latency_ms"]["max"] == 5.0
