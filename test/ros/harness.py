"""Real ROS 2 test harness: the node and the camera run as separate processes, the test is a third.

(Helpers for test/ros; the fixtures using them are in conftest.py.)

Isolation: a ROS_DOMAIN_ID unique to this run, localhost-only discovery, logs in a temporary folder,
the package's Fast DDS profile (large images over shared memory) in every process, and Fast DDS
shared-memory files removed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from panoptic_perception.core.memory import rss_mb


REPO = Path(__file__).resolve().parents[2]
FASTDDS_PROFILE = REPO / "config" / "fastdds_large_data.xml"
NODE = "/panoptic_perception"


def ros_environment(log_dir: Path) -> dict[str, str]:
    return {
        "ROS_DOMAIN_ID": str(1 + os.getpid() % 100),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(log_dir),
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),  # Fast DDS 2.x (Jazzy) reads this name
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
        "PYTHONUNBUFFERED": "1",
    }


class Process:
    """A child process with its output in a file; stopped with SIGINT, then killed."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = open(log, "w")
        self.popen = subprocess.Popen(args, env={**os.environ, **env}, stdout=self._file, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._file.closed:
            self._file.flush()
        return self.log.read_text()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._file.close()

    def rss_mb(self) -> float:
        value = rss_mb(self.pid)
        if not value:
            raise RuntimeError(f"no VmRSS for process {self.pid}")
        return value


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "panoptic_perception.cli", *args]


def node_command(**parameters: Any) -> list[str]:
    """The perception node's command line with ``-p name:=value`` overrides; the image topic is /camera/image_raw."""
    args = ["node", "--ros-args", "-r", "image:=/camera/image_raw", "-r", "image/compressed:=/camera/image_raw/compressed"]
    for name, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    return cli(*args)


class Probe:
    """The test's own ROS 2 participant: records messages with their arrival time, calls services."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"probe_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutting down
                if not self.context.ok():
                    return
                raise

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def record(self, msg_type, topic: str, qos=None) -> list[tuple[int, Any]]:
        """Subscribe; returns the live list of (arrival ns, message)."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        received: list[tuple[int, Any]] = []

        def keep(msg) -> None:
            with self.lock:
                received.append((self.now_ns(), msg))

        self.node.create_subscription(msg_type, topic, keep, qos or QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        return received

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def settled_diagnostics(self, diagnostics: list, after_ns: int, timeout: float = 30.0):
        """Once input has stopped (before ``after_ns``): the first /diagnostics message stamped after
        ``after_ns`` in which every received frame has an outcome (processed, dropped, rejected or failed)
        and whose counters equal the previous message's: the node has taken in and finished with
        everything it will get (waited for, not slept for)."""

        def settled():
            later = [diagnostic_counters(m) for _, m in diagnostics if stamp_ns(m.header) > after_ns]
            return next((
                b for a, b in zip(later, later[1:])
                if a == b and b[0] == sum(b[1:])  # received == the sum of the outcomes
            ), None)

        self.wait_for(lambda: settled() is not None, timeout, "diagnostics to settle after the input stopped")
        counters = settled()
        return next(m for _, m in diagnostics if stamp_ns(m.header) > after_ns and diagnostic_counters(m) == counters)

    def wait_for_node(self, process: Process, timeout: float = 60.0) -> None:
        """Until the perception node's outputs are advertised (it is configured)."""
        self.wait_for(
            lambda: self.node.count_publishers(f"{NODE}/result") > 0 or process.popen.poll() is not None,
            timeout, "the node to come up",
        )
        assert process.popen.poll() is None, f"the node exited:\n{process.output()}"

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            future = client.call_async(request)
            self.wait_for(future.done, timeout, f"a reply from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, **values: Any):
        """Set node parameters one by one through its service; returns the list of SetParametersResult."""
        from rcl_interfaces.srv import SetParameters

        request = SetParameters.Request(parameters=self._parameter_msgs(values))
        return self.call(SetParameters, f"{NODE}/set_parameters", request).results

    def set_parameters_atomically(self, **values: Any):
        """Set node parameters all at once (one change for the node); returns one SetParametersResult."""
        from rcl_interfaces.srv import SetParametersAtomically

        request = SetParametersAtomically.Request(parameters=self._parameter_msgs(values))
        return self.call(SetParametersAtomically, f"{NODE}/set_parameters_atomically", request).result

    @staticmethod
    def _parameter_msgs(values: dict[str, Any]) -> list:
        from rclpy.parameter import Parameter

        return [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]

    def topics(self) -> set[str]:
        return {name for name, _ in self.node.get_topic_names_and_types()}

    def close(self) -> None:
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(5)


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


COUNTERS = ("received", "processed", "dropped_stale", "dropped_superseded", "rejected_bad", "backend_errors",
            "dropped_unsynchronized", "dropped_inactive", "publish_errors")


def diagnostic_counters(array_msg) -> tuple[int, ...]:
    values = diagnostic_values(array_msg)[2]
    return tuple(int(values[name]) for name in COUNTERS)


def diagnostic_values(array_msg) -> tuple[int, str, dict[str, str]]:
    status = array_msg.status[0]
    return status.level[0] if isinstance(status.level, bytes) else status.level, status.message, {kv.key: kv.value for kv in status.values}
