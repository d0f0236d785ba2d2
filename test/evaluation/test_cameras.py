"""Metrics per camera plus overall: each camera scored as if evaluated alone, the overall over all frames."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_perception.core.labels import DRIVING_MASKS
from panoptic_perception.core.types import Capability, PerceptionResult
from panoptic_perception.evaluation.cameras import CameraEvaluator, camera_of_frame, camera_runs, evaluator_for
from panoptic_perception.evaluation.evaluator import Evaluator

CAPABILITIES = {Capability.DRIVABLE_AREA, Capability.LANE_LINES}


def masks(seed: int, shape=(24, 32)) -> PerceptionResult:
    """Random driving masks, so that every frame scores differently."""
    rng = np.random.default_rng(seed)
    return PerceptionResult(shape[::-1], "m", drivable_mask=rng.integers(0, 2, shape, np.uint8),
                            lane_mask=rng.integers(0, 2, shape, np.uint8))


def test_each_camera_scores_as_if_evaluated_alone_and_overall_as_all_frames():
    frames = [(f"{camera}/frame_{k:06d}", masks(10 * k + i), masks(100 + 10 * k + i), 5.0 + i)
              for k in range(3) for i, camera in enumerate(("front", "rear"))]
    evaluator = CameraEvaluator(DRIVING_MASKS, CAPABILITIES, ["front", "rear", "silent"])
    alone = {camera: Evaluator(DRIVING_MASKS, CAPABILITIES) for camera in ("front", "rear")}
    overall = Evaluator(DRIVING_MASKS, CAPABILITIES)
    for name, prediction, truth, latency in frames:
        evaluator.add(name, prediction, truth, latency)
        alone[camera_of_frame(name)].add(name, prediction, truth, latency)
        overall.add(name, prediction, truth, latency)
    summary = evaluator.compute()
    cameras = summary.pop("cameras")
    assert summary == overall.compute()
    assert cameras == {"front": alone["front"].compute(), "rear": alone["rear"].compute(), "silent": {"frames": 0}}
    assert cameras["front"]["driving"]["drivable_miou"] != cameras["rear"]["driving"]["drivable_miou"]
    assert cameras["rear"]["latency_ms"]["median"] == 6.0
    assert [f["frame"] for f in evaluator.frames] == [name for name, *_ in frames]


def test_a_frame_of_no_known_camera_is_refused_and_counted_nowhere():
    evaluator = CameraEvaluator(DRIVING_MASKS, CAPABILITIES, ["front"])
    for name in ("rear/frame_000000", "frame_000000"):
        with pytest.raises(ValueError, match=f"{name}: not a frame of the cameras front"):
            evaluator.add(name, masks(0), masks(1))
    assert evaluator.compute() == {"frames": 0, "cameras": {"front": {"frames": 0}}}


def test_a_shape_mismatch_counts_in_neither_the_camera_nor_the_overall():
    evaluator = CameraEvaluator(DRIVING_MASKS, CAPABILITIES, ["front"])
    with pytest.raises(ValueError, match="the prediction's drivable_mask is 32x24, the truth's 16x8"):
        evaluator.add("front/frame_000000", masks(0), masks(1, (8, 16)))
    assert evaluator.compute() == {"frames": 0, "cameras": {"front": {"frames": 0}}}


def test_one_camera_keeps_the_plain_evaluator_and_its_summary():
    assert type(evaluator_for(DRIVING_MASKS, CAPABILITIES, ["front"])) is Evaluator
    assert type(evaluator_for(DRIVING_MASKS, CAPABILITIES, ())) is Evaluator
    assert type(evaluator_for(DRIVING_MASKS, CAPABILITIES, ["front", "rear"])) is CameraEvaluator


def test_camera_runs_split_a_run_into_overall_and_one_run_per_camera():
    run = {"name": "tln", "backend": {"backend": "twinlitenet"},
           "summary": {"frames": 3, "cameras": {"front": {"frames": 2}, "rear": {"frames": 1}}},
           "frames": [{"frame": "front/frame_000000"}, {"frame": "rear/frame_000000"}, {"frame": "front/frame_000001"}],
           "failed": [{"frame": "rear/frame_000001", "stage": "read", "error": "x"}]}
    overall, front, rear = camera_runs(run)
    assert overall == {**run, "summary": {"frames": 3}}
    assert (front["name"], front["summary"], front["failed"]) == ("tln@front", {"frames": 2}, [])
    assert [f["frame"] for f in front["frames"]] == ["front/frame_000000", "front/frame_000001"]
    assert (rear["name"], [f["frame"] for f in rear["frames"]], rear["failed"]) == ("tln@rear", ["rear/frame_000000"], run["failed"])
    assert rear["backend"] == run["backend"]
    single = {"name": "tln", "summary": {"frames": 1}, "frames": [{"frame": "frame_000000"}], "failed": []}
    assert camera_runs(single) == [single]
