"""The soak harness: its parts (serialized headers, durations, memory slope, schedule) and the suite profile
run end to end (node, cameras and harness as separate processes over real DDS, every fault injected)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from panoptic_perception.ros.soak import (
    FAULTS,
    PROFILES,
    Harness,
    cdr_detection_count,
    cdr_stamp_ns,
    memory_slope_mb_per_h,
    parse_duration,
)


def test_durations_read_with_units():
    assert [parse_duration(text) for text in ("90", "90s", "5m", "1h", "1.5h")] == [90, 90, 300, 3600, 5400]
    with pytest.raises(ValueError, match="a duration is a number with s, m or h"):
        parse_duration("an hour")


def test_the_stamp_and_detection_count_are_read_from_serialized_messages():
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
    from rclpy.serialization import serialize_message
    from vision_msgs.msg import Detection2D, Detection2DArray

    for frame_id in ("", "cam0", "camera_front"):  # every alignment of the field after the frame_id
        msg = Detection2DArray(detections=[Detection2D() for _ in range(7)])
        msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 1_700_000_123, 456_789, frame_id
        data = serialize_message(msg)
        assert cdr_stamp_ns(data) == 1_700_000_123_000_456_789
        assert cdr_detection_count(data) == 7


def test_memory_slope_follows_the_floor_not_the_swings():
    hour = [(t, 500.0 + 10 * t / 3600 + (40.0 if t % 7 == 0 else 0.0)) for t in range(0, 3600, 5)]
    assert memory_slope_mb_per_h(hour) == pytest.approx(10.0, abs=1.0)
    assert math.isnan(memory_slope_mb_per_h(hour[:10]))


def test_every_fault_comes_in_every_round_and_the_lifecycle_cycles_add_up(tmp_path):
    full = Harness(PROFILES["full"], 3600.0, tmp_path).schedule()
    kinds = [kind for _, kind, _, _ in full]
    assert all(kinds.count(spec.kind) == 6 for spec in FAULTS)
    assert sum(cycles for *_, cycles in full) == 100
    times = [at for at, *_ in full]
    assert times == sorted(times) and times[0] >= PROFILES["full"].settle_s and times[-1] < 3600
    short = Harness(PROFILES["full"], 300.0, tmp_path).schedule()  # 5 minutes: one round, 8 cycles
    assert len(short) == len(FAULTS) and sum(cycles for *_, cycles in short) == 8


@pytest.mark.usefixtures("ros_env")
def test_the_suite_profile_passes_with_every_fault_survived(tmp_path):
    """Three minutes (two cameras, 640x360 at 15 Hz): the verdict, every fault injected and survived, and the
    counters that prove it (bad frames rejected, backend errors and publish faults counted, no stamp that was
    never sent, 300 detections a frame)."""
    output = tmp_path / "soak"
    done = subprocess.run([sys.executable, "-m", "panoptic_perception.cli", "soak", "--profile", "suite",
                           "--output", str(output)], capture_output=True, text=True, timeout=1500)
    report = json.loads((output / "report.json").read_text())
    assert done.returncode == 0 and report["passed"], done.stdout[-4000:] + done.stderr[-3000:]
    assert set(report["faults_injected"]) == {spec.kind for spec in FAULTS}
    assert all(t["survived"] == t["injected"] >= 1 for t in report["faults_injected"].values())
    faults = {f["kind"]: f["detail"] for f in report["faults"]}
    assert faults["bad_frames"]["rejected"] >= faults["bad_frames"]["sent"] // 2
    assert faults["backend_faults"]["backend_errors"] >= 3 and faults["backend_faults"]["publish_faults"] >= 2
    for camera in report["cameras"].values():
        assert camera["outputs"]["result"] > 0 and camera["stamps_never_sent"] == camera["stamps_twice"] == 0
    assert report["node_counters"]["rejected_bad"] > 0 and report["node_counters"]["processed"] > 0
    assert report["detections_per_frame"]["max"] == 300 and report["detections_per_frame"]["min"] == 100
    assert (output / "report.md").read_text().startswith("# Soak: PASSED") and (output / "soak.png").stat().st_size > 0
