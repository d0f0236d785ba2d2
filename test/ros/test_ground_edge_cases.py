"""Ground-plane messages found wrong by trying the ground outputs as a new user (real message classes, no DDS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built")

from std_msgs.msg import Header  # noqa: E402

from panoptic_perception.core.ground import (  # noqa: E402
    CameraCalibration,
    GroundGrid,
    GroundProjection,
    Mount,
    ground_objects,
)
from panoptic_perception.ros.conversions import ground_objects_msg  # noqa: E402


def _yaw(quaternion) -> float:
    return math.atan2(2 * (quaternion.w * quaternion.z + quaternion.x * quaternion.y),
                      1 - 2 * (quaternion.y ** 2 + quaternion.z ** 2))


def test_an_object_seen_by_a_sideways_camera_has_its_width_across_the_line_of_sight():
    # A camera looking left (yaw 90 degrees) sees a car 10 m to the left, 80 pixels wide: its 2.5 m width
    # spans base_link's x axis (across the line of sight), not y (towards the vehicle). The box of
    # ~/ground/objects (and its marker cube) must say so: width along the box's own y axis turned by the
    # bearing, or along base_link's x.
    calibration = CameraCalibration.checked(640, 360, [[320.0, 0, 319.5], [0, 320.0, 179.5], [0, 0, 1]])
    projection = GroundProjection(calibration, Mount.from_xyz_rpy(0.0, 0.0, 1.5, 0.0, 0.0, math.pi / 2), GroundGrid())
    bottom = 179.5 + 320.0 * 1.5 / 10.0  # the row of the ground 10 m ahead of the camera
    objects = ground_objects(projection, np.array([[279.5, bottom - 60, 359.5, bottom]]))
    assert objects.positions[0, :2] == pytest.approx([0.0, 10.0], abs=0.05)
    width = objects.sizes[0, 0]
    assert width == pytest.approx(2.5, rel=0.02)
    msg = ground_objects_msg(objects, np.array([26]), np.array([0.9]), ["left_optical:0"], Header(frame_id="base_link"))
    box = msg.detections[0].bbox
    yaw = _yaw(box.center.orientation)
    # The box's extent along base_link x and y (its size turned by its orientation).
    extent_x = abs(math.cos(yaw)) * box.size.x + abs(math.sin(yaw)) * box.size.y
    extent_y = abs(math.sin(yaw)) * box.size.x + abs(math.cos(yaw)) * box.size.y
    assert extent_x == pytest.approx(width, rel=0.05) and extent_y < 0.5 * width, (
        f"the box spans {extent_x:.2f} m along x and {extent_y:.2f} m along y (size {box.size.x:.2f}, "
        f"{box.size.y:.2f}, yaw {yaw:.2f}): its width lies along the line of sight")
