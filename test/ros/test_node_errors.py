"""A backend that fails on some frames: the node counts, reports and goes on (real rclpy node, in-process); the
node module run as a script refuses bad parameters at start (its own process)."""

from __future__ import annotations

import array
import os
import subprocess
import sys
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


def spin_until(node: PerceptionNode, condition, what: str, timeout: float = 120.0) -> None:
    """Run the node's callbacks (the executor's part of a reload) until ``condition()`` holds."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        executor.spin_once(timeout_sec=0.1)
    executor.remove_node(node)


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


class FailsEveryThirdInPostprocessing:
    """Wraps the real backend; its post-processing raises on every third frame."""

    def __init__(self, backend) -> None:
        self._backend, self.calls = backend, 0

    def __call__(self, image):
        self.calls += 1
        if self.calls % 3 == 0:
            raise RuntimeError("simulated post-processing failure")
        return self._backend(image)

    def __getattr__(self, name):
        return getattr(self._backend, name)


def test_a_backend_failing_every_third_frame_costs_only_those_frames(node):
    node.backend = FailsEveryThirdInPostprocessing(node.backend)
    for _ in range(6):
        feed(node, 32)
    assert node.counters.processed == 4 and node.counters.backend_errors == 2
    assert node._worker.alive


def test_a_message_conversion_that_raises_is_a_counted_fault_and_the_worker_goes_on(node, monkeypatch, caplog):
    from panoptic_perception.ros import node as node_module

    real, calls = node_module.perception_messages, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) % 2:
            raise KeyError("simulated conversion failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(node_module, "perception_messages", flaky)
    window = node.counters.snapshot()
    for _ in range(4):
        before = node.counters.processed + node.counters.publish_errors
        node._on_image(frame(32))
        deadline = time.monotonic() + 10
        while node.counters.processed + node.counters.publish_errors == before:
            assert time.monotonic() < deadline, "the frame was not handled"
            time.sleep(0.01)
    assert node.counters.publish_errors == 2 and node.counters.processed == 2 and node._worker.alive
    assert node._faults["publish"] == 2
    level, message = node._status({k: v - window[k] for k, v in node.counters.snapshot().items()},
                                  {"publish": 2})
    assert level == DiagnosticStatus.WARN and "2 faults (publish: KeyError" in message


def test_a_fault_outside_any_frame_is_counted_and_the_next_batch_goes_on(node, monkeypatch):
    real = node._process_batch
    failed = []

    def broken_once(batch):
        if not failed:
            failed.append(1)
            raise IndexError("simulated bug in the node")
        return real(batch)

    node._worker._process_batch = broken_once
    node._on_image(frame(32))
    deadline = time.monotonic() + 10
    while node._worker.faults == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    feed(node, 32)
    assert node._faults["worker"] == 1 and node.counters.processed == 1


def test_a_worker_that_ended_makes_diagnostics_error_and_parameter_changes_fail_clearly(node):
    from rclpy.parameter import Parameter

    def pulled_out(batch):
        raise SystemExit("simulated end of the thread")

    node._worker._process_batch = pulled_out
    node._on_image(frame(32))
    deadline = time.monotonic() + 10
    while node._worker.alive:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    level, message = node._status(node.counters.snapshot())
    assert level == DiagnosticStatus.ERROR and "the inference worker has stopped: SystemExit" in message
    for change in (Parameter("threads", value=1), Parameter("backend", value="yolopv2"),
                   Parameter("max_frame_age_ms", value=400.0)):
        result = node._on_set_parameters([change])
        assert not result.successful and "the inference worker has stopped (SystemExit" in result.reason
    assert node.settings["backend"] == "twinlitenet" and node._reloading is None, "a refused change changes nothing"
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() != TransitionCallbackReturn.SUCCESS, "no activation without the worker"


def test_a_reload_does_not_wait_for_the_build_and_frames_meanwhile_are_counted(node):
    """The worker is held busy (as by a TensorRT engine build): the parameter change is accepted at once,
    diagnostics say a reload runs, and the reload completes once the worker is free."""
    import threading

    from rclpy.parameter import Parameter

    release = threading.Event()
    node._worker.submit(release.wait, 60)
    result = node._on_set_parameters([Parameter("backend", value="yolopv2")])
    assert result.successful, result.reason
    assert node.backend.name == "twinlitenet" and node._reloading is not None
    level, message = node._status(node.counters.snapshot())
    assert "reloading the backend (yolopv2)" in message
    again = node._on_set_parameters([Parameter("backend", value="cyclenet")])
    assert not again.successful and "reload is in progress" in again.reason
    node._on_image(frame(32))  # waits while the worker is busy, then is processed or dropped: counted
    release.set()
    spin_until(node, lambda: node.backend.name == "yolopv2", "the reload to complete")
    assert node._reloading is None and node.settings["backend"] == "yolopv2"
    counted = node.counters
    deadline = time.monotonic() + 60
    while counted.received != counted.processed + counted.dropped_stale + counted.dropped_superseded:
        assert time.monotonic() < deadline, f"the frame that waited for the reload has no outcome: {counted}"
        time.sleep(0.01)


def test_a_reload_that_fails_later_keeps_the_old_backend_and_sets_the_parameter_back(node, tmp_path):
    from rclpy.parameter import Parameter

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    result = node._on_set_parameters([Parameter("weights", value=str(broken))])
    assert result.successful, result.reason  # the file exists: what is wrong shows in the build
    spin_until(node, lambda: node._reloading is None and node.get_parameter("weights").value == "",
               "the failed reload to be handled")
    assert node.settings["weights"] == "" and node.backend.weights_info.source == "bundled"
    level, message = node._status(node.counters.snapshot())
    assert level == DiagnosticStatus.WARN and "the last backend reload failed: WeightsError" in message
    feed(node, 32)
    assert node.counters.processed >= 1


def test_outputs_are_lifecycle_publishers_that_publish_nothing_while_inactive(node):
    publishers = [*node.cameras[""].publishers.values(), node._label_info_publisher]
    assert publishers and all(p.is_activated for p in publishers)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert not any(p.is_activated for p in publishers), "a batch finishing after deactivate publishes nothing"
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert all(p.is_activated for p in publishers)


def test_cleanup_waits_for_the_batch_in_flight_before_destroying_its_publishers(node, monkeypatch):
    """A batch still publishing when cleanup came found its publishers gone (``publish: KeyError``, seen in the
    soak's lifecycle fault); now cleanup destroys them between batches."""
    import threading

    from panoptic_perception.ros import node as node_module

    (camera,) = node.cameras.values()
    publisher = next(iter(camera.publishers.values()))
    node.create_subscription(publisher.msg_type, publisher.topic_name, lambda msg: None, 10)
    deadline = time.monotonic() + 10
    while publisher.get_subscription_count() == 0:  # the batch computes its wanted outputs from this
        assert time.monotonic() < deadline, "the subscription was not matched"
        time.sleep(0.01)
    converting, release, real = threading.Event(), threading.Event(), node_module.perception_messages

    def held(*args, **kwargs):
        converting.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(node_module, "perception_messages", held)
    node._on_image(frame(32))
    assert converting.wait(30), "the frame never reached its conversion"
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    outcome = []
    cleanup = threading.Thread(target=lambda: outcome.append(node.trigger_cleanup()))
    cleanup.start()
    cleanup.join(0.5)
    assert cleanup.is_alive() and camera.publishers, "cleanup went ahead while the batch was publishing"
    release.set()
    cleanup.join(60)
    assert outcome == [TransitionCallbackReturn.SUCCESS] and not camera.publishers
    assert node.counters.processed == 1 and node._faults["publish"] == 0 and node._faults["ground"] == 0


def test_a_frame_with_a_negative_stamp_is_rejected_not_fatal(node):
    msg = frame(32)
    msg.header.stamp.sec = -1
    node._on_image(msg)  # in the executor: must not raise
    assert node.counters.rejected_bad == 1
    feed(node, 32)
    assert node.counters.processed == 1


def test_frames_waiting_at_deactivate_are_counted(node):
    node._worker.submit(time.sleep, 0.5)  # the worker is busy: the next frame waits
    node._on_image(frame(32))
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    counted = node.counters
    assert counted.received == 1 and counted.dropped_inactive + counted.processed == 1


def test_thresholds_changed_during_a_reload_apply_to_the_new_backend(node):
    import threading

    from rclpy.parameter import Parameter

    release = threading.Event()
    node._worker.submit(release.wait, 60)
    assert node._on_set_parameters([Parameter("backend", value="yolopv2")]).successful
    assert node._on_set_parameters([Parameter("score_threshold", value=0.8)]).successful
    release.set()
    spin_until(node, lambda: node.backend.name == "yolopv2", "the reload to complete")
    assert node.backend.thresholds.score == 0.8


def test_bad_camera_parameters_are_refused_at_start_saying_which(ros_env):
    for arguments, message in (
        (["-p", "cameras:=[front]", "-p", "cameras.front.image_topic:=bad//topic"],
         "cameras.front.image_topic: Invalid topic name: topic name must not contain repeated '/'"),
        (["-p", "cameras:=[front, front]"], "camera names repeat"),
        (["-p", "cameras:=[front]", "-p", "cameras.front.transport:=jpeg"],
         "cameras.front.transport must be one of '', 'raw', 'compressed', got 'jpeg'"),
    ):
        context = rclpy.Context()
        rclpy.init(args=["--ros-args", *arguments], context=context)
        try:
            with pytest.raises(ValueError) as error:
                PerceptionNode(context=context)
            assert message in str(error.value)
        finally:
            context.try_shutdown()


def test_python_m_ros_node_runs_the_node_and_refuses_a_ground_grid_too_large_in_one_line(ros_env):
    # `python -m panoptic_perception.ros.node` is `panoptic-perception node`: here it starts, checks its
    # parameters and stops at once on a grid of 32 million cells (0.01 m on the default extents).
    result = subprocess.run([sys.executable, "-m", "panoptic_perception.ros.node", "--ros-args", "-p", "ground_resolution:=0.01"],
                            env={**os.environ, **ros_env}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "[panoptic_perception] error: a ground grid of 4000x8000 cells of 0.01 m is more than 4000000 cells (each "
        "camera's lookup table takes ~500 bytes a cell to build): use a coarser ground_resolution or smaller extents")


def test_a_backend_returning_too_few_results_is_a_worker_fault_and_every_frame_has_an_outcome(node):
    """A batch's result list one short (a backend bug): zip() paired the frames with the wrong results and the
    last frame got no outcome; now each frame counts as a backend error and the batch's fault reaches the worker
    loop, which counts it and goes on."""
    from panoptic_perception.core.streaming import Batch

    class OneShort:
        def __init__(self, backend) -> None:
            self._backend = backend

        def __call__(self, images):
            results = self._backend(images)
            return results[:-1] if isinstance(images, list) else results

        def __getattr__(self, name):
            return getattr(self._backend, name)

    node.backend = OneShort(node.backend._backend)  # unwrapped: the fixture's wrapper takes one image
    received = node.get_clock().now()
    before = node.counters.snapshot()
    batch = Batch([("", (frame(32), received)), ("", (frame(32), received))], [])
    node._worker.submit(node._worker._process, batch).result(30)
    after = node.counters.snapshot()
    assert after["backend_errors"] - before["backend_errors"] == 2
    assert after["processed"] == before["processed"]
    assert node._faults["worker"] == 1 and node._worker.alive
    feed(node, 32)
