"""The node's ground-plane side (ros/ground.py) in this process, without DDS: what a camera that cannot be placed
on the ground does to its contribution and status (real message classes; node=None, as replay uses it)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built")

from builtin_interfaces.msg import Time  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from panoptic_perception.core.labels import DRIVING_MASKS  # noqa: E402
from panoptic_perception.core.types import PerceptionResult  # noqa: E402
from panoptic_perception.ros.conversions import camera_info_msg  # noqa: E402
from panoptic_perception.ros.ground import GroundOutputs  # noqa: E402
from panoptic_perception.ros.parameters import PARAMETERS  # noqa: E402

K = [[320.0, 0, 319.5], [0, 320.0, 179.5], [0, 0, 1]]
WANTED = {"ground/drivable"}


def test_a_camera_at_or_below_the_ground_plane_stops_its_ground_outputs_and_says_why():
    # A mount without its height (z = 0): refused as a calibration error, so the camera contributes no cell,
    # its status says why and the warning comes once; the good camera's grid is the fused one.
    warnings = []
    settings = {spec.name: spec.default for spec in PARAMETERS}
    outputs = GroundOutputs(None, settings, {"low": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "good": [0.0, 0.0, 1.5, 0.0, 0.0, 0.0]},
                            warnings.append)
    result = PerceptionResult(image_size=(640, 360), backend="test", drivable_mask=np.ones((360, 640), np.uint8))
    for stamp in (1, 2):
        for name in ("low", "good"):
            header = Header(stamp=Time(sec=stamp), frame_id=f"{name}_optical")
            outputs.cameras[name].infos.append(camera_info_msg(640, 360, np.array(K), np.zeros(5), "plumb_bob", header))
            outputs.update(name, header, result, DRIVING_MASKS, WANTED)
    low = outputs.cameras["low"]
    assert low.contribution is None and low.projection is None
    assert low.status == ("stopped: the camera is 0 m above the ground plane: it must be above it (a mount or "
                          "transform without the camera's height, or ground_height above it?)")
    assert len(warnings) == 1 and "ground outputs of camera low stop: the camera is 0 m above" in warnings[0]
    assert outputs.cameras["good"].status == "ok"
    grid = outputs.messages(WANTED)["ground/drivable"]
    values = np.asarray(grid.data, np.int8)
    assert np.array_equal(values, outputs.cameras["good"].contribution.occupancy.ravel()) and (values == 0).sum() > 1000


def test_the_fused_stamp_never_returns_to_an_older_published_one_when_a_camera_stops_contributing():
    """The 1-hour soak: each ground output once carried a stamp it had published before, out of order. Camera b
    gave the newest stamp, then its CameraInfo turned bad: the fusion fell back to camera a's older contribution,
    already published. Now nothing is published until a camera places a frame; a clock that jumps back (a
    looping bag) still takes the stamps back with it."""
    settings = {spec.name: spec.default for spec in PARAMETERS}
    level = [0.0, 0.0, 1.5, 0.0, 0.0, 0.0]
    outputs = GroundOutputs(None, settings, {"a": level, "b": level}, lambda text: None)
    result = PerceptionResult(image_size=(640, 360), backend="test", drivable_mask=np.ones((360, 640), np.uint8))

    def place(name, stamp, k=K):
        header = Header(stamp=Time(sec=stamp), frame_id=f"{name}_optical")
        outputs.cameras[name].infos.append(camera_info_msg(640, 360, np.array(k), np.zeros(5), "plumb_bob", header))
        outputs.update(name, header, result, DRIVING_MASKS, WANTED)
        return [message.header.stamp.sec for message in outputs.messages(WANTED).values()]

    assert place("a", 10) == [10]
    assert place("b", 11) == [11]
    assert place("b", 12, k=np.zeros((3, 3))) == [] and outputs.cameras["b"].contribution is None
    assert place("a", 13) == [13]
    assert place("a", 2) == [2], "a clock that jumped back"
