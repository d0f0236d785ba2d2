"""The one loop over frames: warm-up left out of the latency, bad frames skipped and counted, progress."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panoptic_perception.core.failures import FrameFailures
from panoptic_perception.core.labels import DRIVING_MASKS
from panoptic_perception.core.types import Capability, PerceptionResult, StageTimings
from panoptic_perception.data.sample import Sample
from panoptic_perception.evaluation.evaluator import Evaluator
from panoptic_perception.evaluation.loop import run_frames

CAPABILITIES = {Capability.DRIVABLE_AREA, Capability.LANE_LINES}


class ScriptedBackend:
    """Masks of ones; the first call takes 1000 ms, every later one 10 ms; raises on images whose first
    pixel is ``fail_on``."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls, self.fail_on = 0, fail_on

    def __call__(self, image: np.ndarray) -> PerceptionResult:
        self.calls += 1
        if self.fail_on is not None and image[0, 0, 0] == self.fail_on:
            raise RuntimeError("backend exploded")
        ones = np.ones(image.shape[:2], np.uint8)
        inference_ms = 1000.0 if self.calls == 1 else 10.0
        return PerceptionResult((image.shape[1], image.shape[0]), "scripted", drivable_mask=ones, lane_mask=ones,
                                timings=StageTimings(inference_ms=inference_ms))


def sample(name: str, value: int | None) -> Sample:
    """A 4x6 frame of ``value`` (None: a frame its reader could not decode) whose truth is all ones."""
    if value is None:
        return Sample(name, None, error="cannot decode image")
    ones = np.ones((4, 6), np.uint8)
    return Sample(name, np.full((4, 6, 3), value, np.uint8), PerceptionResult((6, 4), "truth", drivable_mask=ones, lane_mask=ones))


def quiet_failures() -> tuple[FrameFailures, list[str]]:
    lines: list[str] = []
    return FrameFailures(report=lines.append), lines


def test_the_cold_first_call_is_a_warm_up_left_out_of_the_latency():
    backend, (failures, _) = ScriptedBackend(), quiet_failures()
    evaluator = Evaluator(DRIVING_MASKS, CAPABILITIES)
    assert run_frames(backend, [sample("a", 1), sample("b", 2)], failures, evaluator) == 2
    assert backend.calls == 3, "one warm-up call, then one per frame"
    assert [frame["latency_ms"] for frame in evaluator.frames] == [10.0, 10.0]
    assert evaluator.compute()["latency_ms"]["max"] == 10.0


def test_untimed_runs_have_no_warm_up_and_no_latency():
    backend, (failures, _) = ScriptedBackend(), quiet_failures()
    evaluator = Evaluator(DRIVING_MASKS, CAPABILITIES)
    assert run_frames(backend, [sample("a", 1), sample("b", 2)], failures, evaluator, timed=False) == 2
    assert backend.calls == 2 and "latency_ms" not in evaluator.compute()
    assert [frame["frame"] for frame in evaluator.frames] == ["a", "b"] and "latency_ms" not in evaluator.frames[0]


def test_bad_frames_are_reported_counted_and_skipped_and_the_others_scored():
    backend, (failures, lines) = ScriptedBackend(fail_on=2), quiet_failures()
    evaluator = Evaluator(DRIVING_MASKS, CAPABILITIES)
    frames = [sample("a", 1), sample("unreadable", None), sample("b", 2), sample("c", 3)]
    assert run_frames(backend, frames, failures, evaluator) == 2
    assert [frame["frame"] for frame in evaluator.frames] == ["a", "c"]
    assert failures.to_list() == [{"frame": "unreadable", "stage": "read", "error": "cannot decode image"},
                                  {"frame": "b", "stage": "backend", "error": "RuntimeError: backend exploded"}]
    assert lines == ["skipped unreadable (read): cannot decode image", "skipped b (backend): RuntimeError: backend exploded"]


def test_the_warm_up_waits_for_a_frame_that_goes_through():
    """A first frame the backend fails on is not a warm-up: the next frame's first call is."""
    backend, (failures, _) = ScriptedBackend(fail_on=1), quiet_failures()
    evaluator = Evaluator(DRIVING_MASKS, CAPABILITIES)
    run_frames(backend, [sample("a", 1), sample("b", 2), sample("c", 3)], failures, evaluator)
    assert backend.calls == 1 + 2 + 1 and [frame["latency_ms"] for frame in evaluator.frames] == [10.0, 10.0]


def test_the_callers_work_runs_before_scoring_and_names_its_stage():
    backend, (failures, _) = ScriptedBackend(), quiet_failures()
    evaluator = Evaluator(DRIVING_MASKS, CAPABILITIES)
    seen = []

    def write(frame, result, stage) -> None:
        stage.name = "writing"
        if frame.name == "b":
            raise OSError("disk full")
        seen.append((frame.name, result.backend))

    assert run_frames(backend, [sample("a", 1), sample("b", 2)], failures, evaluator, on_result=write) == 1
    assert seen == [("a", "scripted")] and [frame["frame"] for frame in evaluator.frames] == ["a"]
    assert failures.to_list() == [{"frame": "b", "stage": "writing", "error": "OSError: disk full"}]


def test_a_frame_that_cannot_be_scored_is_reported_at_the_scoring_stage():
    backend, (failures, _) = ScriptedBackend(), quiet_failures()
    evaluator = Evaluator(DRIVING_MASKS, CAPABILITIES)
    small = sample("small", 1)
    small.truth.drivable_mask = np.ones((2, 3), np.uint8)  # not the prediction's size
    assert run_frames(backend, [small], failures, evaluator) == 0
    assert failures.to_list()[0]["stage"] == "scoring" and not evaluator.frames


def test_a_failure_names_the_frames_source_where_it_has_one():
    @dataclass
    class Frame:
        name: str
        source: str
        image: np.ndarray | None = None
        error: str | None = "cannot decode image"

    failures, _ = quiet_failures()
    run_frames(ScriptedBackend(), [Frame("x", "/data/x.jpg")], failures)
    assert failures.to_list() == [{"frame": "x", "stage": "read", "error": "cannot decode image", "source": "/data/x.jpg"}]


def test_progress_is_shown_only_when_asked(capsys):
    failures, _ = quiet_failures()
    run_frames(ScriptedBackend(), [sample("a", 1), sample("b", 2)], failures, progress=True, description="scoring", total=2)
    err = capsys.readouterr().err
    assert "scoring" in err and "2/2" in err
    run_frames(ScriptedBackend(), [sample("a", 1)], failures, progress=False, description="silent", total=1)
    assert "silent" not in capsys.readouterr().err
