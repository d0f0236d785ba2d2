"""The stand-in camera's command line (its own process, real rclpy)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.usefixtures("ros_env")
def test_ros_arguments_after_the_camera_s_own_reach_rclpy(tmp_path):
    """``--ros-args -p use_sim_time:=true``: argparse took ``use_sim_time:=true`` for an input file and the
    camera refused to start; now rclpy gets it (no /clock: every stamp is 0)."""
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
    stamps = tmp_path / "stamps"
    done = subprocess.run([sys.executable, "-m", "panoptic_perception.cli", "camera", "--count", "3", "--rate", "50",
                           "--size", "64x48", "--distinct", "1", "--camera-info", "--stamps", str(stamps),
                           "--ros-args", "-p", "use_sim_time:=true"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert stamps.read_text().split() == ["0", "0", "0"]
