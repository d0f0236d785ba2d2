"""Fixtures of the ROS 2 tests (see harness.py): an isolated ROS environment, node, camera, probe."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

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
    with _processes(ros_env, tmp_path, "node") as started:
        yield lambda **parameters: started(node_command(**parameters))


@pytest.fixture
def start_camera(ros_env, tmp_path):
    """Publish synthetic 1280x720 frames on /camera/image_raw (``camera --help`` for the options)."""
    with _processes(ros_env, tmp_path, "camera") as started:
        yield lambda *args: started(cli("camera", "--topic", "/camera/image_raw", *args))


@contextlib.contextmanager
def _processes(ros_env, tmp_path, kind: str):
    """Starts commands as processes logging to ``<kind>_<n>.log``; stops them all on exit."""
    processes = []

    def start(command: list[str]) -> Process:
        processes.append(Process(command, ros_env, tmp_path / f"{kind}_{len(processes)}.log"))
        return processes[-1]

    try:
        yield start
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def probe(ros_env):
    probe = Probe()
    yield probe
    probe.close()
