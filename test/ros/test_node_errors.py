"""A backend that fails on some frames: the node counts, reports and goes on (real rclpy node, in-process)."""

from __future__ import annotations

import array
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from panoptic_perception.ros.node import PerceptionNode  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402

FAILING_WIDTH = 13


class FailsOnSomeFrames:
    """Wraps the real backend; raises on frames FAILING_WIDTH pixels wide, as a crashing model would."""

    def __init__(self, backend) -> None:
        self._backend = backend

    def __call__(self, image):
        if image.shape[1] == FAILING_WIDTH:
            raise RuntimeError("simulated model failure")
        return self._backend(image)

    def __getattr__(self, name):
        return getattr(self._backend, name)


def frame(width: int) -> Image:
    msg = Image(height=8, width=width, encoding="bgr8", step=width * 3)
    msg.data = array.array("B", np.zeros(8 * width * 3, np.uint8).tobytes())
    msg.header.stamp = rclpy.clock.Clock().now().to_msg()
    return msg


def feed(node: PerceptionNode, width: int, timeout: float = 10.0) -> None:
    """Hand one frame to the node and wait until its worker has finished with it."""
    before = node.counters.processed + node.counters.backend_errors
    node._on_image(frame(width))
    deadline = time.monotonic() + timeout
    while node.counters.processed + node.counters.backend_errors == before:
        assert time.monotonic() < deadline, "the frame was not handled"
        time.sleep(0.01)


@pytest.fixture
def node(ros_env):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PerceptionNode(context=context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node.backend = FailsOnSomeFrames(node.backend)
        yield node
    finally:
        node.close()
        node.destroy_node()
        context.try_shutdown()


def test_backend_errors_are_counted_reported_and_the_node_goes_on(node):
    window = node.counters.snapshot()
    for _ in range(3):
        feed(node, FAILING_WIDTH)
    assert node.counters.backend_errors == 3 and node.counters.processed == 0
    level, message = node._status({k: v - window[k] for k, v in node.counters.snapshot().items()})
    assert level == DiagnosticStatus.ERROR and "fails on every frame" in message and "simulated model failure" in message

    window = node.counters.snapshot()
    feed(node, 32)  # a good frame after the failures is processed
    feed(node, FAILING_WIDTH)
    assert node.counters.processed == 1 and node.counters.backend_errors == 4
    level, message = node._status({k: v - window[k] for k, v in node.counters.snapshot().items()})
    assert level == DiagnosticStatus.WARN and "backend failed on 1 frames" in message
