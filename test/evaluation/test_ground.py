"""Ground-plane metrics: the drivable IoU over the cells a camera sees, nearest-first matching within the
gate, range error and recall over things whose contact is in view, and the synthetic scenes' truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panoptic_perception.core.ground import CalibrationError, CameraCalibration, Mount
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.types import Capability, Detections, PerceptionResult
from panoptic_perception.evaluation.evaluator import Evaluator
from panoptic_perception.evaluation.ground import (
    GroundMetrics,
    GroundTruth,
    drivable_grid,
    drivable_iou,
    ground_truth_of,
    match_gate,
    match_nearest,
)

# A level 64x48 camera 1.5 m up: a ground point x metres ahead, y to the left is seen at column
# 31.5 - 32 y / x, row 23.5 + 48 / x.
CALIBRATION = CameraCalibration.checked(64, 48, [[32.0, 0, 31.5], [0, 32.0, 23.5], [0, 0, 1]])
MOUNT = Mount.from_xyz_rpy(0, 0, 1.5)


def truth(road: np.ndarray | None = None, panoptic: np.ndarray | None = None, things=()) -> GroundTruth:
    """``things``: (panoptic id, x, y, class name)."""
    shape = drivable_grid(MOUNT).shape
    return GroundTruth(CALIBRATION, MOUNT, np.ones(shape, bool) if road is None else road,
                       np.zeros((48, 64), np.int32) if panoptic is None else panoptic, tuple(t[0] for t in things),
                       np.array([t[1:3] for t in things], np.float64).reshape(-1, 2), tuple(t[3] for t in things))


def drivable(mask: np.ndarray) -> PerceptionResult:
    return PerceptionResult((64, 48), "test", drivable_mask=mask.astype(np.uint8))


def test_drivable_iou_counts_only_the_scored_cells():
    predicted = np.array([[1, 1, 0, 0, 1]], bool)
    true = np.array([[1, 0, 1, 0, 1]], bool)
    assert drivable_iou(predicted, true, np.array([[1, 1, 1, 1, 0]], bool)) == pytest.approx(1 / 3)
    assert drivable_iou(predicted, true, np.ones((1, 5), bool)) == pytest.approx(2 / 4)
    assert math.isnan(drivable_iou(predicted, true, np.zeros((1, 5), bool)))


def test_the_drivable_iou_is_over_the_cells_the_camera_sees_within_40_m_that_no_true_thing_hides():
    metrics = GroundMetrics(CITYSCAPES)
    grid = drivable_grid(MOUNT)
    assert (grid.x_min, grid.x_max, grid.y_min, grid.y_max, grid.resolution) == (0, 40, -40, 40, 0.1)
    x, y = grid.centres()
    everything = np.ones((48, 64), bool)
    assert metrics.add(drivable(everything), truth())["ground_drivable_iou"] == 1.0
    # The camera looks straight ahead from the middle of the image: it sees as much left as right.
    # (up to the rounding of pixel centres at the image edges: ties go to the even pixel)
    assert metrics.add(drivable(everything), truth(road=y > 0))["ground_drivable_iou"] == pytest.approx(0.5, abs=0.002)
    # A thing standing on the left half of the image hides the road there: those cells are not scored.
    panoptic = np.zeros((48, 64), np.int32)
    panoptic[:, :32] = 26001
    assert metrics.add(drivable(everything), truth(road=y < 0, panoptic=panoptic))["ground_drivable_iou"] == 1.0
    # Cells the prediction leaves unknown (behind a thing it sees) count as not drivable.
    hidden_half = PerceptionResult((64, 48), "test", drivable_mask=everything.astype(np.uint8),
                                   panoptic=np.where(np.arange(64) >= 32, 26001, 0).astype(np.int32)[None].repeat(48, 0))
    assert metrics.add(hidden_half, truth())["ground_drivable_iou"] == pytest.approx(0.5, abs=0.002)
    summary = metrics.compute()
    assert summary["drivable_iou"] == pytest.approx(0.75, abs=0.001) and summary["drivable_frames"] == 4
    # The panoptic prediction has objects (one, cut by the bottom edge); the truth has no things.
    assert summary["true_objects"] == 0 and math.isnan(summary["range_error_median"])
    assert "true_objects" not in GroundMetrics(CITYSCAPES).compute(), "no prediction with objects, no object figures"
    assert metrics.add(PerceptionResult((64, 48), "test"), truth()) == {}, "nothing to score"


def test_matching_pairs_nearest_first_one_to_one_within_the_gate_and_the_class():
    predicted = np.array([[10.0, 0.0], [10.5, 0.0], [30.0, 0.0], [20.0, 5.0]])
    true = np.array([[10.4, 0.0], [10.0, 0.2], [36.5, 0.0], [20.0, 5.0]])
    gates = match_gate(np.linalg.norm(true, axis=1))
    np.testing.assert_allclose(gates, [2.08, 0.2 * math.hypot(10, 0.2), 7.3, 0.2 * math.hypot(20, 5)])
    pairs = match_nearest(predicted, ["car", "car", "car", "person"], true, ["car", "car", "car", "car"], gates)
    # (1, 0) at 0.1 m first, then (0, 1) at 0.2 m; 30 m is 6.5 m from 36.5 m (within 7.3 m); the person
    # stands on a car's spot but is no car.
    assert pairs == [(1, 0), (0, 1), (2, 2)]
    assert match_nearest(predicted[:1], ["car"], np.array([[12.5, 0.0]]), ["car"], match_gate([12.5])) == [(0, 0)]
    assert match_nearest(predicted[:1], ["car"], np.array([[12.6, 0.0]]), ["car"], match_gate([12.6])) == []
    assert match_nearest(np.zeros((0, 2)), [], true, ["car"] * 4, gates) == []


def person_truth(*things) -> GroundTruth:
    """People standing at (x, y) metres; each one's mask a column of pixels whose lowest row is
    ``lowest`` (None: at its ground contact)."""
    panoptic = np.zeros((48, 64), np.int32)
    entries = []
    for k, (x, y, lowest) in enumerate(things, start=1):
        column = round(31.5 - 32 * y / x)
        bottom = round(23.5 + 48 / x) if lowest is None else lowest
        panoptic[bottom - 3: bottom + 1, column] = 24000 + k
        entries.append((24000 + k, x, y, "person"))
    return truth(panoptic=panoptic, things=entries)


def boxes_at(*contacts: tuple[float, float], names=None) -> PerceptionResult:
    """Detections whose boxes' bottom centres are the ground points (x, y) metres."""
    boxes = [[31.5 - 32 * y / x - 1, 10.0, 31.5 - 32 * y / x + 1, 23.5 + 48 / x] for x, y in contacts]
    names = names or ["person"] * len(boxes)
    return PerceptionResult((64, 48), "test", detections=Detections(
        np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32),
        np.array([CITYSCAPES.id_of(n) for n in names], np.int64), names))


def test_range_error_and_recall_over_the_things_whose_contact_is_in_view():
    metrics = GroundMetrics(CITYSCAPES)
    # In view: 10 m and 20 m ahead. Hidden feet: 15 m ahead, its lowest pixel 10 rows above its contact.
    # Beyond 50 m: 60 m ahead. Out of the image: 1.5 m ahead (its contact is below the bottom row).
    frame = person_truth((10.0, 1.0, None), (20.0, -1.0, None), (15.0, 0.0, 16), (60.0, 0.0, None), (1.5, 0.0, 40))
    # The first placed exactly, the second 1.1 m too far (5.5 %), and a car where nobody stands.
    record = metrics.add(boxes_at((10.0, 1.0), (21.1, -1.1), (30.0, 0.0), names=["person", "person", "car"]), frame)
    assert record == {"ground_objects_matched": 2, "ground_objects_true": 2}
    # A frame whose only object was missed.
    assert metrics.add(boxes_at(), person_truth((25.0, 2.0, None))) == {"ground_objects_matched": 0,
                                                                        "ground_objects_true": 1}
    summary = metrics.compute()
    second = abs(math.hypot(21.1, -1.1) - math.hypot(20, -1)) / math.hypot(20, -1)
    assert summary["range_error_count"] == 2 and summary["true_objects"] == 3 and summary["hidden_contacts"] == 2
    assert summary["object_recall"] == pytest.approx(2 / 3)
    assert summary["range_error_median"] == pytest.approx(second / 2, abs=1e-6)
    assert summary["range_error_p90"] == pytest.approx(0.9 * second, abs=1e-6)


def test_a_vehicle_detector_matches_cars_and_trucks_and_a_box_cut_by_the_bottom_edge_is_left_out():
    metrics = GroundMetrics(CITYSCAPES, merge_vehicles=True)
    frame = truth(things=[(26001, 10.0, 0.0, "car"), (27001, 20.0, 3.0, "truck")])
    frame.panoptic[28:33, 31] = 26001  # its wheels reach its contact row (28.3)
    frame.panoptic[22:26, 27] = 27001  # and the truck's (25.9)
    vehicles = boxes_at((10.0, 0.0), (20.0, 3.0), names=["car", "car"])
    vehicles.detections.class_names[:] = ["vehicle", "vehicle"]
    assert metrics.add(vehicles, frame) == {"ground_objects_matched": 2, "ground_objects_true": 2}
    truncated = boxes_at((10.0, 0.0), names=["car"])
    truncated.detections.boxes[0, 3] = 47.0  # its box reaches the bottom row: its contact is hidden
    truncated.detections.class_names[:] = ["vehicle"]
    assert metrics.add(truncated, frame) == {"ground_objects_matched": 0, "ground_objects_true": 2}
    assert metrics.compute()["range_error_median"] == pytest.approx(0, abs=1e-6)  # float32 boxes


def test_the_evaluator_scores_a_synthetic_scene_on_the_ground_and_refuses_another_size():
    from panoptic_perception.data.synthetic import generate_scene

    scene = generate_scene(5_000_000, 640, 360)
    evaluator = Evaluator(CITYSCAPES, {Capability.SEMANTIC, Capability.PANOPTIC, Capability.DETECTION})
    record = evaluator.add("s", scene.to_truth(), scene.to_truth())
    assert record["ground_drivable_iou"] > 0.95 and record["ground_objects_matched"] == record["ground_objects_true"] > 0
    ground = evaluator.compute()["ground"]
    assert ground["range_error_median"] < 0.03 and ground["object_recall"] == 1.0
    assert "ground" not in Evaluator(CITYSCAPES, {Capability.SEMANTIC}).compute(), "no truth in metres, no section"
    assert ground_truth_of(scene.to_result()) is None
    small = generate_scene(5_000_000, 320, 180).to_truth()
    with pytest.raises(CalibrationError, match="describes 640x360 images, the camera sends 320x180"):
        evaluator.add("small", small, scene.to_truth())
    assert len(evaluator.frames) == 1 and evaluator.ground.frames == 1, "a refused frame counts nowhere"
