"""Per-frame failures: reported once, recorded with the stage reached, and the loop goes on."""

from __future__ import annotations

import pytest

from panoptic_perception.core.failures import FrameFailures


def test_a_failing_frame_ends_only_its_own_block_and_is_recorded_with_its_stage():
    lines, done = [], []
    failures = FrameFailures(report=lines.append)
    for name in ("a", "b", "c"):
        with failures.frame(name, "backend", source=f"{name}.png") as stage:
            stage.name = "writing"
            if name == "b":
                raise OSError("disk full")
            done.append(name)
    assert done == ["a", "c"]
    assert failures.to_list() == [{"frame": "b", "stage": "writing", "error": "OSError: disk full", "source": "b.png"}]
    assert lines == ["skipped b (writing): OSError: disk full"]
    assert len(failures) == 1


def test_failures_added_directly_and_a_run_label():
    lines = []
    failures = FrameFailures(label="twinlitenet", report=lines.append)
    failures.add("frame_000003", "read", "cannot decode image x.jpg")
    assert failures.to_list() == [{"frame": "frame_000003", "stage": "read", "error": "cannot decode image x.jpg"}]
    assert lines == ["twinlitenet: skipped frame_000003 (read): cannot decode image x.jpg"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_interrupts_still_stop_the_run(stop):
    failures = FrameFailures(report=lambda line: None)
    with pytest.raises(stop):
        with failures.frame("a", "backend"):
            raise stop()
    assert len(failures) == 0


def test_reports_go_to_stderr_by_default(capsys):
    with FrameFailures().frame("f1", "backend"):
        raise RuntimeError("fusion failed")
    assert capsys.readouterr().err == "skipped f1 (backend): RuntimeError: fusion failed\n"
