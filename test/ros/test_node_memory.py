"""The node hands freed heap pages back to the system while it runs, not only when it lets a backend go (real
rclpy node, in-process: the memory freed is this process's)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

import rclpy  # noqa: E402

from panoptic_perception.core.memory import heap_in_use_mb, release_freed_memory, rss_mb  # noqa: E402
from panoptic_perception.ros.node import PerceptionNode  # noqa: E402
from test_node_errors import spin_until  # noqa: E402


@pytest.mark.skipif(heap_in_use_mb() is None, reason="needs glibc (malloc_trim, mallinfo2)")
def test_chunks_freed_between_reloads_leave_resident_memory_within_a_period(ros_env, monkeypatch):
    monkeypatch.setattr(PerceptionNode, "memory_release_period_s", 0.5)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PerceptionNode(context=context)
    try:
        chunks = [np.ones(100_000, np.uint8) for _ in range(1500)]  # 143 MiB from the arenas, every page touched
        pin = chunks.pop()  # still held: the arena's top cannot shrink past it, so only a trim gives the rest back
        release_freed_memory()
        held = rss_mb()
        del chunks
        freed = rss_mb()
        assert freed - held > -20, "freed chunks stay resident until they are handed back"
        spin_until(node, lambda: rss_mb() - freed < -120, "the node to hand the freed chunks back", timeout=30)
        del pin
    finally:
        node.close()
        node.destroy_node()
        context.try_shutdown()
