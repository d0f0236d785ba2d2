"""Controlling the running node: lifecycle transitions, runtime parameters, backend reloads, QoS advice."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from harness import NODE, diagnostic_values, stamp_ns  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from panoptic_perception.backends import save_checkpoint  # noqa: E402
from panoptic_perception.models.twinlitenet import TwinLiteNet  # noqa: E402


def lifecycle_state(probe) -> int:
    return probe.call(GetState, f"{NODE}/get_state", GetState.Request()).current_state.id


def transition(probe, transition_id: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition_id))
    return probe.call(ChangeState, f"{NODE}/change_state", request).success


def frames_arrive(probe, messages: list, within: float = 30.0) -> bool:
    """Whether a new message arrives within ``within`` seconds (returns as soon as one does)."""
    count = len(messages)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if len(messages) > count:
            return True
        time.sleep(0.05)
    return False


def stopped_publishing(probe, messages: list, window: float = 2.0) -> bool:
    """Whether, over the next ``window`` seconds, no output of a camera frame stamped after now arrives.

    Outputs of older frames may still come (the frame the node was working on when the change took
    effect, messages in transit); a slow machine can only make fewer messages arrive, never more.
    """
    now = probe.now_ns()
    time.sleep(window)
    return not any(stamp_ns(m.header) > now for _, m in messages)


def mask_of(msg) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width]


def test_lifecycle_transitions(start_node, start_camera, probe, tmp_path):
    node = start_node(autostart=False, weights=str(tmp_path / "missing.pth"))
    start_camera("--rate", "10")  # until stopped; starts up while the node does
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    probe.wait_for(lambda: f"{NODE}/get_state" in {n for n, _ in probe.node.get_service_names_and_types()}, 120,
                   "the lifecycle services")
    assert lifecycle_state(probe) == State.PRIMARY_STATE_UNCONFIGURED
    assert probe.node.count_publishers(f"{NODE}/drivable_area") == 0, "no outputs before configure"

    # A backend that cannot load: configure fails, the node stays unconfigured, alive, and says why.
    assert not transition(probe, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(probe) == State.PRIMARY_STATE_UNCONFIGURED and node.popen.poll() is None
    probe.wait_for(lambda: any("backend failed to load" in diagnostic_values(m)[1] for _, m in diagnostics), 30,
                   "the load error in diagnostics")
    level, message, _ = next(diagnostic_values(m) for _, m in diagnostics if "failed to load" in diagnostic_values(m)[1])
    assert level == 2 and "weights file not found" in message
    (result,) = probe.set_parameters(weights="")  # fixed while unconfigured, then configured again
    assert result.successful, result.reason

    assert transition(probe, Transition.TRANSITION_CONFIGURE)
    assert lifecycle_state(probe) == State.PRIMARY_STATE_INACTIVE
    drivable = probe.record(Image, f"{NODE}/drivable_area")
    probe.wait_for(lambda: probe.node.count_publishers(f"{NODE}/drivable_area") == 1, 10, "the configured publisher")
    assert not frames_arrive(probe, drivable, 2.0), "an inactive node publishes nothing"

    assert transition(probe, Transition.TRANSITION_ACTIVATE)
    assert lifecycle_state(probe) == State.PRIMARY_STATE_ACTIVE
    assert frames_arrive(probe, drivable), "an active node publishes"

    assert transition(probe, Transition.TRANSITION_DEACTIVATE)
    assert stopped_publishing(probe, drivable), "deactivated: no more outputs"

    assert transition(probe, Transition.TRANSITION_CLEANUP)
    assert lifecycle_state(probe) == State.PRIMARY_STATE_UNCONFIGURED
    probe.wait_for(lambda: probe.node.count_publishers(f"{NODE}/drivable_area") == 0, 10, "publishers to go")

    assert transition(probe, Transition.TRANSITION_CONFIGURE) and transition(probe, Transition.TRANSITION_ACTIVATE)
    assert frames_arrive(probe, drivable), "configured and activated again"
    assert node.popen.poll() is None


def test_runtime_parameters_apply_immediately_and_bad_values_are_rejected(start_node, start_camera, probe, tmp_path):
    node = start_node()
    start_camera("--rate", "10", "--size", "640x360")  # until stopped; starts up while the node does
    probe.wait_for_node(node, timeout=120)
    drivable = probe.record(Image, f"{NODE}/drivable_area")
    lanes = probe.record(Image, f"{NODE}/lane_lines")
    overlays = probe.record(Image, f"{NODE}/overlay")
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    assert frames_arrive(probe, drivable)

    # Invalid values are refused with a reason and change nothing.
    for values, reason in (
        ({"mask_threshold": 1.5}, "range"),
        ({"backend": "nope"}, "unknown backend 'nope'"),
        ({"qos_depth": 3}, "read-only"),
        ({"input_transport": "compressed"}, "read-only"),
        ({"weights": str(tmp_path / "missing.pth")}, "weights file not found"),
        ({"device": "cuda"}, "CUDA is not available"),
        ({"overlay_alpha": 1}, "type"),
    ):
        (result,) = probe.set_parameters(**values)
        assert not result.successful and reason in result.reason, (values, result.reason)

    # Thresholds: every pixel is drivable above probability 0.
    (result,) = probe.set_parameters(mask_threshold=0.0)
    assert result.successful
    probe.wait_for(lambda: mask_of(drivable[-1][1]).all(), 30, "all-drivable masks")

    # Output toggles.
    (result,) = probe.set_parameters(publish_lane_lines=False)
    assert result.successful
    assert stopped_publishing(probe, lanes) and frames_arrive(probe, drivable)

    # Overlay opacity: with every pixel drivable, alpha 1 paints the whole frame in the drivable colour.
    (result,) = probe.set_parameters(overlay_alpha=1.0)
    assert result.successful

    def painted() -> bool:
        msg = overlays[-1][1]
        image = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        return bool((image == image[0, 0]).all())

    probe.wait_for(painted, 30, "an overlay fully painted at alpha 1")

    # Maximum frame age: nothing is young enough at 0.001 ms; frames are dropped and diagnostics say so.
    (result,) = probe.set_parameters(max_frame_age_ms=0.001)
    assert result.successful
    assert stopped_publishing(probe, drivable)
    probe.wait_for(lambda: any("older than" in diagnostic_values(m)[1] for _, m in diagnostics), 30, "a stale-frame warning")
    level, _, values = next(diagnostic_values(m) for _, m in diagnostics if "older than" in diagnostic_values(m)[1])
    assert level == 1 and int(values["dropped_stale"]) > 0
    (result,) = probe.set_parameters(max_frame_age_ms=500.0)
    assert result.successful and frames_arrive(probe, drivable)

    # A weights switch reloads the backend in the same process: here to a checkpoint for 160x96 inputs.
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "small.pth", "twinlitenet", TwinLiteNet().state_dict(),
                              {"input_width": 160, "input_height": 96})
    pid = node.pid
    (result,) = probe.set_parameters(weights=str(weights))
    assert result.successful, result.reason
    probe.wait_for(lambda: diagnostic_values(diagnostics[-1][1])[2]["input_size"] == "160x96", 30, "the new backend")
    assert frames_arrive(probe, drivable) and node.pid == pid and node.popen.poll() is None
    result = probe.set_parameters_atomically(weights="", input_size=[256, 144])
    assert result.successful, result.reason
    probe.wait_for(lambda: diagnostic_values(diagnostics[-1][1])[2]["input_size"] == "256x144", 30, "bundled weights at 256x144")
    assert "reloaded backend" in node.output()


def test_incompatible_qos_warning_says_which_side_to_change(start_node, probe):
    node = start_node(qos_reliability="reliable")
    probe.wait_for_node(node)
    publisher = probe.node.create_publisher(Image, "/camera/image_raw", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    probe.wait_for(lambda: "incompatible QoS" in node.output(), 15, "the QoS warning")
    assert "qos_reliability:=best_effort" in node.output()
    probe.node.destroy_publisher(publisher)
