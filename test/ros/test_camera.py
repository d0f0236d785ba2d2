"""The stand-in camera's command line (its own process, real rclpy)."""

from __future__ import annotations

import subprocess
import sys
import time


def test_with_use_sim_time_the_camera_stamps_its_frames_from_clock_even_when_it_jumps_back(probe, tmp_path):
    """``--ros-args -p use_sim_time:=true`` reaches rclpy (argparse once took ``use_sim_time:=true`` for an
    input file), the camera publishes nothing before the first /clock message, and its stamps follow
    /clock, also back (a looping bag): the camera spins its node while it waits between frames."""
    from rosgraph_msgs.msg import Clock

    stamps = tmp_path / "stamps"
    camera = subprocess.Popen([sys.executable, "-m", "panoptic_perception.cli", "camera", "--count", "40", "--rate",
                               "20", "--size", "64x48", "--distinct", "1", "--stamps", str(stamps),
                               "--ros-args", "-p", "use_sim_time:=true"], stderr=subprocess.PIPE, text=True)
    clock = probe.node.create_publisher(Clock, "/clock", 10)
    try:
        def lines() -> list[int]:
            return [int(v) for v in stamps.read_text().split()] if stamps.exists() else []

        sim_ns = 1_000_000_000_000  # 1000 s
        while camera.poll() is None and len(lines()) < 10:
            assert all(stamp >= 1_000_000_000_000 for stamp in lines()), "a frame before /clock or from wall time"
            clock.publish(Clock(clock=_time(sim_ns)))
            sim_ns += 10_000_000
            time.sleep(0.01)
        jump_back = sim_ns = 500_000_000_000  # 500 s: the bag loops
        while camera.poll() is None:
            clock.publish(Clock(clock=_time(sim_ns)))
            sim_ns += 10_000_000
            time.sleep(0.01)
        assert camera.wait(60) == 0, camera.stderr.read()[-2000:]
    finally:
        if camera.poll() is None:
            camera.kill()
    sent = lines()
    assert len(sent) == 40 and min(sent) > 0
    back = [i for i in range(1, len(sent)) if sent[i] < sent[i - 1]]
    assert len(back) == 1 and sent[back[0]] >= jump_back, sent


def _time(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
