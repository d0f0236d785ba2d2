"""Message conversions with the real generated ROS 2 message classes (no DDS needed)."""

from __future__ import annotations

import array
import math

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from panoptic_perception.core.labels import DRIVING_MASKS  # noqa: E402
from panoptic_perception.core.types import Detections, PerceptionResult, SegmentInfo, StageTimings  # noqa: E402
from panoptic_perception.msg import DrivingPerception  # noqa: E402
from panoptic_perception.core.messages import RejectedImage, compressed_to_bgr, image_to_bgr  # noqa: E402
from panoptic_perception.ros.conversions import (  # noqa: E402
    detections_to_msg,
    label_info_msg,
    mask_to_image,
    panoptic_to_msg,
    result_to_msg,
)

BGR = np.random.default_rng(0).integers(0, 255, (5, 7, 3), np.uint8)


def make_image(data: np.ndarray, encoding: str, padding: int = 0) -> Image:
    height, width = data.shape[:2]
    row = data.reshape(height, -1)
    padded = np.concatenate([row, np.full((height, padding), 77, np.uint8)], 1)
    msg = Image(height=height, width=width, encoding=encoding, step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())
    return msg


@pytest.mark.parametrize(
    "encoding, data",
    [
        ("bgr8", BGR),
        ("rgb8", BGR[..., ::-1]),
        ("bgra8", np.dstack([BGR, np.full(BGR.shape[:2], 9, np.uint8)])),
        ("rgba8", np.dstack([BGR[..., ::-1], np.full(BGR.shape[:2], 9, np.uint8)])),
    ],
)
@pytest.mark.parametrize("padding", [0, 3])
def test_colour_encodings_become_bgr_and_row_padding_is_honoured(encoding, data, padding):
    assert np.array_equal(image_to_bgr(make_image(np.ascontiguousarray(data), encoding, padding)), BGR)


def test_mono8_becomes_grey_bgr():
    grey = BGR[..., 0].copy()
    out = image_to_bgr(make_image(grey, "mono8", padding=1))
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 2], grey)


@pytest.mark.parametrize(
    "change, cause",
    [
        ({"encoding": "16UC1"}, "unsupported encoding"),
        ({"height": 0}, "zero size"),
        ({"step": 5}, "bad step"),
        ({"height": 6}, "data too short"),
    ],
)
def test_bad_raw_images_are_rejected_with_a_cause(change, cause):
    msg = make_image(BGR, "bgr8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(RejectedImage) as error:
        image_to_bgr(msg)
    assert error.value.cause == cause


@pytest.mark.parametrize("fmt, ext", [("jpeg", ".jpg"), ("png", ".png"), ("bgr8; jpeg compressed bgr8", ".jpg")])
def test_compressed_images_decode(fmt, ext):
    big = cv2.resize(BGR, (70, 50), interpolation=cv2.INTER_NEAREST)
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", cv2.imencode(ext, big)[1].tobytes())
    out = compressed_to_bgr(msg)
    assert out.shape == (50, 70, 3)
    if ext == ".png":
        assert np.array_equal(out, big)


def test_corrupt_and_unsupported_compressed_images_are_rejected():
    corrupt = CompressedImage(format="jpeg")
    corrupt.data = array.array("B", b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(RejectedImage, match="corrupt data"):
        compressed_to_bgr(corrupt)
    with pytest.raises(RejectedImage, match="unsupported format"):
        compressed_to_bgr(CompressedImage(format="tiff"))


def test_masks_and_panoptic_images_have_the_right_layout():
    header = Header(frame_id="camera")
    mask = np.zeros((3, 4), np.uint8)
    mask[1, 2] = 1
    msg = mask_to_image(mask, header)
    assert (msg.encoding, msg.step, msg.width, msg.height, msg.header.frame_id) == ("mono8", 4, 4, 3, "camera")
    assert np.array_equal(np.frombuffer(msg.data, np.uint8).reshape(3, 4), mask)
    panoptic = np.array([[7000, 26001], [0, 26002]], np.int32)
    segments = [SegmentInfo(26001, 26, True, 1, (1, 0, 1, 1), 0.9)]
    pan = panoptic_to_msg(panoptic, segments, header)
    assert pan.panoptic.encoding == "32SC1" and pan.panoptic.step == 8 and pan.label_divisor == 1000
    assert np.array_equal(np.frombuffer(pan.panoptic.data, "<i4").reshape(2, 2), panoptic)
    s = pan.segments[0]
    assert (s.id, s.category_id, s.is_thing, s.area, s.bbox.x_offset, s.bbox.width) == (26001, 26, True, 1, 1, 1)
    assert s.score == pytest.approx(0.9)


def test_detections_use_centre_size_boxes_and_numeric_class_ids():
    detections = Detections(np.array([[10, 20, 30, 60]], np.float32), np.array([0.75], np.float32), np.array([26]), ["car"])
    msg = detections_to_msg(detections, Header(frame_id="cam"))
    (d,) = msg.detections
    assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) == (20, 40, 20, 40)
    assert d.results[0].hypothesis.class_id == "26" and d.results[0].hypothesis.score == pytest.approx(0.75)
    assert d.header.frame_id == "cam"


def test_label_info_lists_the_label_map():
    msg = label_info_msg(DRIVING_MASKS, 0.5, Header())
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(1, "drivable_area"), (2, "lane_line")]


def test_result_bundle_leaves_missing_outputs_empty_and_survives_serialization():
    mask = np.ones((4, 6), np.uint8)
    result = PerceptionResult((6, 4), "twinlitenet", drivable_mask=mask, lane_mask=mask * 0,
                              timings=StageTimings(1.0, 2.0, 3.0))
    msg = result_to_msg(result, Header(frame_id="cam"))
    back = deserialize_message(serialize_message(msg), DrivingPerception)
    assert back.backend == "twinlitenet" and back.header.frame_id == "cam"
    assert (back.drivable_area.width, back.drivable_area.height, back.drivable_area.encoding) == (6, 4, "mono8")
    assert back.semantic.width == 0 and back.panoptic.panoptic.width == 0 and len(back.detections.detections) == 0
    assert back.panoptic.label_divisor == 1000, "how a reader decodes ids, even of an empty image"
    assert (back.preprocess_ms, back.inference_ms, back.postprocess_ms) == (1.0, 2.0, 3.0)


def test_every_output_topic_names_an_installed_message_type_and_the_bundle_has_a_field_per_capability():
    from panoptic_perception.ros.bags import ros_type_name
    from panoptic_perception.ros.conversions import message_class
    from panoptic_perception.ros.topics import CAPABILITY_TOPICS, OUTPUT_TOPICS

    for topic in OUTPUT_TOPICS.values():
        assert ros_type_name(message_class(topic.msg_type)()) == topic.msg_type
    fields = DrivingPerception.get_fields_and_field_types()
    for topic in CAPABILITY_TOPICS.values():
        package, _, name = topic.msg_type.split("/")
        assert fields[topic.name] in (f"{package}/{name}", name), topic.name  # the package's own types unqualified


def test_camera_info_becomes_the_cores_calibration_and_an_uncalibrated_one_is_refused():
    from sensor_msgs.msg import CameraInfo

    from panoptic_perception.core.ground import CalibrationError
    from panoptic_perception.ros.conversions import calibration_from_camera_info

    info = CameraInfo(width=1280, height=720, distortion_model="plumb_bob", binning_x=2, binning_y=2)
    info.k = [720.0, 0.0, 639.5, 0.0, 720.0, 359.5, 0.0, 0.0, 1.0]
    info.d = [-0.2, 0.05, 0.0, 0.0, 0.0]
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 320, 180, 640, 360
    calibration = calibration_from_camera_info(info)
    assert calibration.image_size == (320, 180) and calibration.K[0, 2] == 639.5 and calibration.D[0] == -0.2
    with pytest.raises(CalibrationError, match="positive focal lengths"):
        calibration_from_camera_info(CameraInfo(width=1280, height=720, distortion_model="plumb_bob"))


# -- ground plane ---------------------------------------------------------------------------------------
def _synthetic_projection(seed: int = 3):
    """A synthetic scene (its truth as the result) and its exact camera's projection on the default grid."""
    from panoptic_perception.core.ground import CameraCalibration, GroundGrid, GroundProjection, Mount
    from panoptic_perception.data.synthetic import generate_scene

    scene = generate_scene(seed, 640, 360)
    camera = scene.camera
    calibration = CameraCalibration.checked(camera.width, camera.height, camera.K, camera.D)
    mount = Mount.from_xyz_rpy(0.0, 0.0, camera.height_above_ground)
    return scene, GroundProjection(calibration, mount, GroundGrid())


def test_an_occupancy_grid_lays_out_its_cells_as_nav_msgs_does_and_survives_serialization():
    from nav_msgs.msg import OccupancyGrid

    from panoptic_perception.core.ground import FREE, OCCUPIED, UNKNOWN, GroundGrid
    from panoptic_perception.ros.conversions import occupancy_grid_msg

    grid = GroundGrid(0.5, -2.0, 6.0, -3.0, 3.0, 0.25)
    values = np.full(grid.shape, UNKNOWN, np.int8)
    row, column, _ = grid.cell_of(np.array([4.1]), np.array([-2.9]))  # 4.1 m ahead, 2.9 m right
    values[row, column] = OCCUPIED
    values[0, 0] = FREE
    header = Header(frame_id="base_link")
    header.stamp.sec = 7
    msg = deserialize_message(serialize_message(occupancy_grid_msg(values, grid, header)), OccupancyGrid)
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (16, 12, 0.5)
    assert (msg.info.origin.position.x, msg.info.origin.position.y, msg.info.origin.position.z) == (-2.0, -3.0, 0.25)
    assert msg.info.origin.orientation.w == 1.0 and msg.header.frame_id == "base_link" and msg.info.map_load_time.sec == 7
    data = np.array(msg.data, np.int8).reshape(msg.info.height, msg.info.width)
    # nav_msgs: cell (r, c) covers x = origin.x + c * resolution, y = origin.y + r * resolution.
    assert data[0, 12] == OCCUPIED and data[0, 0] == FREE and (data == UNKNOWN).sum() == values.size - 2


def test_lane_points_become_an_xyz_float32_cloud():
    from sensor_msgs.msg import PointCloud2

    from panoptic_perception.ros.conversions import point_cloud_msg

    points = np.array([[1.0, 2.0, 0.0], [10.5, -3.25, 0.1]], np.float32)
    msg = deserialize_message(serialize_message(point_cloud_msg(points, Header(frame_id="base_link"))), PointCloud2)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_bigendian) == (1, 2, 12, 24, False)
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), "<f4").reshape(-1, 3), points)


def test_ground_objects_of_synthetic_truth_lie_near_the_true_positions_with_growing_covariance():
    from vision_msgs.msg import Detection3DArray

    from panoptic_perception.core.ground import result_objects
    from panoptic_perception.ros.conversions import ground_objects_msg

    scene, projection = _synthetic_projection()
    objects, class_ids, scores = result_objects(projection, scene.to_result())  # panoptic: the masks' lowest pixels
    things = [scene.things[segment.id] for segment in scene.segments if segment.is_thing]
    kept = [things[i] for i in objects.kept]
    assert len(kept) >= 2
    ids = [f"front:{i}" for i in range(len(kept))]
    msg = deserialize_message(serialize_message(ground_objects_msg(objects, class_ids, scores, ids, Header(frame_id="base_link"))),
                              Detection3DArray)
    assert len(msg.detections) == len(kept)
    variances = []
    for detection, thing, class_id in zip(msg.detections, kept, class_ids):
        (hypothesis,) = detection.results
        position = hypothesis.pose.pose.position
        if not detection.id.endswith(":truncated"):
            assert abs(np.hypot(position.x, position.y) - thing.range) <= 0.05 * thing.range, (thing, position)
            assert abs(position.y - thing.y) <= 0.5 and abs(position.z) < 1e-6
        assert hypothesis.hypothesis.class_id == str(int(class_id)) == str(thing.class_id)
        covariance = np.array(hypothesis.pose.covariance).reshape(6, 6)
        variances.append((thing.range, covariance[0, 0]))
        assert detection.bbox.center.position.z == pytest.approx(detection.bbox.size.z / 2)
        assert 0 < detection.bbox.size.y < 2 * thing.width + 0.5 and detection.bbox.size.x == 0.0
    near, far = min(variances), max(variances)
    assert far[1] > near[1], "the range variance grows with the range"


def test_markers_delete_the_previous_ones_then_draw_objects_and_lane_points():
    from visualization_msgs.msg import Marker

    from panoptic_perception.core.ground import lane_points, result_objects
    from panoptic_perception.ros.conversions import ground_markers_msg, ground_objects_msg

    scene, projection = _synthetic_projection()
    objects, class_ids, scores = result_objects(projection, scene.to_result())
    header = Header(frame_id="base_link")
    detections = ground_objects_msg(objects, class_ids, scores, [str(i) for i in range(len(class_ids))], header)
    lanes = lane_points(projection, scene.lane_mask)
    msg = ground_markers_msg(detections, lanes, 0.1, header)
    assert msg.markers[0].action == Marker.DELETEALL
    cubes = [m for m in msg.markers if m.ns == "objects"]
    assert len(cubes) == len(class_ids) and all(m.type == Marker.CUBE and m.header.frame_id == "base_link" for m in cubes)
    (points,) = [m for m in msg.markers if m.ns == "lane_lines"]
    assert points.type == Marker.POINTS and len(points.points) == len(lanes) > 0
    assert len(ground_markers_msg(None, None, 0.1, header).markers) == 1  # nothing left drawn


def test_an_object_seen_by_a_sideways_camera_has_its_width_across_the_line_of_sight():
    # A camera looking left (yaw 90 degrees) sees a car 10 m to the left, 80 pixels wide: its 2.5 m width
    # spans base_link's x axis (across the line of sight), not y (towards the vehicle). The box of
    # ~/ground/objects, its hypothesis' pose and its marker cube are turned by the line of sight's yaw; the
    # position covariance, in base_link, is longest along the line of sight (base_link y).
    from visualization_msgs.msg import Marker

    from panoptic_perception.core.ground import CameraCalibration, GroundGrid, GroundProjection, Mount, ground_objects
    from panoptic_perception.ros.conversions import ground_markers_msg, ground_objects_msg

    def yaw(quaternion) -> float:
        return math.atan2(2 * (quaternion.w * quaternion.z + quaternion.x * quaternion.y),
                          1 - 2 * (quaternion.y ** 2 + quaternion.z ** 2))

    calibration = CameraCalibration.checked(640, 360, [[320.0, 0, 319.5], [0, 320.0, 179.5], [0, 0, 1]])
    projection = GroundProjection(calibration, Mount.from_xyz_rpy(0.0, 0.0, 1.5, 0.0, 0.0, math.pi / 2), GroundGrid())
    bottom = 179.5 + 320.0 * 1.5 / 10.0  # the row of the ground 10 m ahead of the camera
    objects = ground_objects(projection, np.array([[279.5, bottom - 60, 359.5, bottom]]))
    assert objects.positions[0, :2] == pytest.approx([0.0, 10.0], abs=0.05)
    assert objects.bearings[0] == pytest.approx(math.pi / 2, abs=0.01)
    width = objects.sizes[0, 0]
    assert width == pytest.approx(2.5, rel=0.02)
    header = Header(frame_id="base_link")
    msg = ground_objects_msg(objects, np.array([26]), np.array([0.9]), ["left_optical:0"], header)
    box = msg.detections[0].bbox
    box_yaw = yaw(box.center.orientation)
    # The box's extent along base_link x and y (its size turned by its orientation).
    extent_x = abs(math.cos(box_yaw)) * box.size.x + abs(math.sin(box_yaw)) * box.size.y
    extent_y = abs(math.sin(box_yaw)) * box.size.x + abs(math.cos(box_yaw)) * box.size.y
    assert extent_x == pytest.approx(width, rel=0.05) and extent_y < 0.5 * width, (
        f"the box spans {extent_x:.2f} m along x and {extent_y:.2f} m along y (size {box.size.x:.2f}, "
        f"{box.size.y:.2f}, yaw {box_yaw:.2f}): its width lies along the line of sight")
    (hypothesis,) = msg.detections[0].results
    assert yaw(hypothesis.pose.pose.orientation) == pytest.approx(math.pi / 2, abs=0.01)
    covariance = np.array(hypothesis.pose.covariance).reshape(6, 6)
    assert covariance[1, 1] > 10 * covariance[0, 0] > 0, "the range (base_link y here) is the uncertain direction"
    (cube,) = [m for m in ground_markers_msg(msg, None, 0.1, header).markers if m.type == Marker.CUBE]
    assert yaw(cube.pose.orientation) == pytest.approx(math.pi / 2, abs=0.01) and cube.scale.y == pytest.approx(width)
