"""Fixtures of the ROS 2 tests (see harness.py): an isolated ROS environment, node, camera, probe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import Probe, Process, cli, node_command, ros_environment


@pytest.fixture(scope="session")
def ros_env(tmp_path_factory):
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
    pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")
    env = ros_environment(tmp_path_factory.mktemp("ros_log"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    fastdds = Path(sys.executable).with_name("fastdds")
    if fastdds.exists():
        subprocess.run([str(fastdds), "shm", "clean"], capture_output=True, timeout=30)


@pytest.fixture
def start_node(ros_env, tmp_path):
    """Start the perception node with ``-p name:=value`` overrides; the image topic is /camera/image_raw."""
    processes = []

    def start(**parameters: Any) -> Process:
        process = Process(node_command(**parameters), ros_env, tmp_path / f"node_{len(processes)}.log")
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


@pytest.fixture
def start_camera(ros_env, tmp_path):
    """Publish synthetic 1280x720 frames on /camera/image_raw (``camera --help`` for the options)."""
    processes = []

    def start(*args: str) -> Process:
        process = Process(cli("camera", "--topic", "/camera/image_raw", *args), ros_env, tmp_path / f"camera_{len(processes)}.log")
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


@pytest.fixture
def probe(ros_env):
    probe = Probe()
    yield probe
    probe.close()
