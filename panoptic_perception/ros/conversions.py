"""Conversions between ROS 2 messages and numpy images / perception results (no cv_bridge).

Image data is moved as ``array.array('B')`` built from the numpy buffer: the generated message
classes accept that without a per-byte Python check, which for a 720p image would cost more than the
inference of a small network.
"""

from __future__ import annotations

import array
import importlib
import math

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Quaternion
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)
from visualization_msgs.msg import Marker, MarkerArray

from ..core.ground import CameraCalibration, GroundGrid, GroundObjects
from ..core.labels import LabelMap
from ..core.types import PANOPTIC_LABEL_DIVISOR, Detections, PerceptionResult, SegmentInfo
from ..core.visualize import draw_overlay
from ..msg import DrivingPerception, PanopticSegment, PanopticSegmentation
from .topics import CAPABILITY_TOPICS, DETECTIONS, PANOPTIC, OutputTopic


def message_class(type_name: str) -> type:
    """The rclpy class of a ROS message type name such as ``sensor_msgs/msg/Image`` (as in
    :mod:`.topics`); raises ImportError or AttributeError for a type that is not installed."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def _byte_array(data: np.ndarray) -> array.array:
    values = array.array("B")
    values.frombytes(np.ascontiguousarray(data).view(np.uint8).data)
    return values


def numpy_to_image(data: np.ndarray, encoding: str, header: Header) -> Image:
    """An (H, W) or (H, W, C) array → sensor_msgs/Image with unpadded rows (little-endian)."""
    msg = Image(header=header, height=data.shape[0], width=data.shape[1], encoding=encoding, is_bigendian=0)
    msg.step = data.shape[1] * (data.shape[2] if data.ndim == 3 else 1) * data.dtype.itemsize
    msg.data = _byte_array(data)
    return msg


def bgr_to_image(image: np.ndarray, header: Header) -> Image:
    return numpy_to_image(image, "bgr8", header)


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """A 0/1 (or class id) uint8 map → mono8 Image."""
    return numpy_to_image(mask.astype(np.uint8, copy=False), "mono8", header)


def detections_to_msg(detections: Detections, header: Header) -> Detection2DArray:
    """Boxes in input-image pixels; ``class_id`` is the numeric class id as a string."""
    msg = Detection2DArray(header=header)
    for box, score, class_id in zip(detections.boxes, detections.scores, detections.class_ids):
        x1, y1, x2, y2 = (float(v) for v in box)
        detection = Detection2D(header=header)
        detection.bbox = BoundingBox2D(size_x=x2 - x1, size_y=y2 - y1)
        detection.bbox.center.position.x = (x1 + x2) / 2
        detection.bbox.center.position.y = (y1 + y2) / 2
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(int(class_id))
        hypothesis.hypothesis.score = float(score)
        detection.results.append(hypothesis)
        msg.detections.append(detection)
    return msg


def segment_to_msg(segment: SegmentInfo) -> PanopticSegment:
    x, y, w, h = segment.bbox
    return PanopticSegment(
        id=int(segment.id),
        category_id=int(segment.category_id),
        is_thing=bool(segment.is_thing),
        area=int(segment.area),
        bbox=RegionOfInterest(x_offset=int(x), y_offset=int(y), width=int(w), height=int(h)),
        score=float(segment.score),
    )


def panoptic_to_msg(panoptic: np.ndarray, segments: list[SegmentInfo], header: Header) -> PanopticSegmentation:
    return PanopticSegmentation(
        header=header,
        panoptic=numpy_to_image(panoptic.astype("<i4", copy=False), "32SC1", header),
        label_divisor=PANOPTIC_LABEL_DIVISOR,
        segments=[segment_to_msg(s) for s in segments],
    )


def label_info_msg(label_map: LabelMap, threshold: float, header: Header) -> LabelInfo:
    return LabelInfo(
        header=header,
        class_map=[VisionClass(class_id=c.id, class_name=c.name) for c in label_map.classes],
        threshold=float(threshold),
    )


def output_msg(topic: OutputTopic, result: PerceptionResult, header: Header) -> object | None:
    """The message of the output ``topic`` (one of :data:`~.topics.CAPABILITY_TOPICS`) for one frame;
    None when ``result`` lacks that output."""
    value = getattr(result, topic.result_field)
    if value is None:
        return None
    if topic.msg_type == PANOPTIC:
        return panoptic_to_msg(value, result.segments or [], header)
    if topic.msg_type == DETECTIONS:
        return detections_to_msg(value, header)
    return mask_to_image(value, header)


def _empty_msg(topic: OutputTopic, header: Header) -> object:
    msg = message_class(topic.msg_type)(header=header)
    if topic.msg_type == PANOPTIC:
        msg.label_divisor = PANOPTIC_LABEL_DIVISOR  # how any reader decodes ids, even of an empty image
    return msg


def result_to_msg(result: PerceptionResult, header: Header, parts: dict[str, object] | None = None) -> DrivingPerception:
    """The bundle of one frame: each per-capability output in the field named as its topic. ``parts``
    (messages by topic name) are reused; outputs the result lacks stay empty messages."""
    parts = parts or {}
    msg = DrivingPerception(header=header, backend=result.backend)
    for topic in CAPABILITY_TOPICS.values():
        part = parts.get(topic.name) or output_msg(topic, result, header)
        setattr(msg, topic.name, part or _empty_msg(topic, header))
    msg.preprocess_ms = float(result.timings.preprocess_ms)
    msg.inference_ms = float(result.timings.inference_ms)
    msg.postprocess_ms = float(result.timings.postprocess_ms)
    return msg


def perception_messages(
    result: PerceptionResult,
    header: Header,
    image: np.ndarray,
    label_map: LabelMap,
    topics: set[str],
    overlay_alpha: float = 0.5,
) -> dict[str, object]:
    """The node's output messages for one frame, for the requested topics (names as in ``~/<topic>``).

    Topics whose output the result lacks are skipped; ``result`` and ``overlay`` are built from the
    other parts, which are converted once.
    """
    parts = {topic.name: msg for topic in CAPABILITY_TOPICS.values()
             if topic.name in topics and (msg := output_msg(topic, result, header)) is not None}
    messages = dict(parts)
    if "result" in topics:
        messages["result"] = result_to_msg(result, header, parts)
    if "overlay" in topics:
        messages["overlay"] = bgr_to_image(draw_overlay(image, result, label_map, overlay_alpha), header)
    return messages


def camera_info_msg(width: int, height: int, K: np.ndarray, D: np.ndarray, distortion_model: str, header: Header,
                    roi: tuple[int, int, int, int] = (0, 0, 0, 0)):
    """A monocular camera's ``sensor_msgs/CameraInfo``: (3, 3) ``K`` and ``D`` of the full ``width`` x ``height``
    sensor, R the identity, P = [K | 0]; ``roi`` (x, y, w, h; zeros: the whole image) the part published."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, np.float64)
    msg = CameraInfo(header=header, width=int(width), height=int(height), distortion_model=distortion_model)
    msg.k = K.ravel().tolist()
    msg.d = np.asarray(D, np.float64).ravel().tolist()
    msg.r = np.eye(3).ravel().tolist()
    msg.p = np.hstack([K, np.zeros((3, 1))]).ravel().tolist()
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = (int(v) for v in roi)
    return msg


def calibration_from_camera_info(msg) -> CameraCalibration:
    """A ``sensor_msgs/CameraInfo`` as the core's :class:`~panoptic_perception.core.ground.CameraCalibration`
    (K, D and its model, the full sensor size, binning and ROI). Raises CalibrationError for one that cannot
    place pixels on the ground (an uncalibrated camera's all-zero K, NaN, an unknown distortion model)."""
    roi = msg.roi
    return CameraCalibration.checked(msg.width, msg.height, list(msg.k), list(msg.d), msg.distortion_model,
                                     msg.binning_x, msg.binning_y, (roi.x_offset, roi.y_offset, roi.width, roi.height))


def occupancy_grid_msg(values: np.ndarray, grid: GroundGrid, header: Header) -> OccupancyGrid:
    """(rows, columns) int8 occupancy values (0 free, 100 occupied, -1 unknown) on ``grid`` → nav_msgs/OccupancyGrid
    (row-major from the (x_min, y_min) corner, origin on the ground plane, not rotated)."""
    msg = OccupancyGrid(header=header)
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.height, msg.info.width = (int(v) for v in values.shape)
    msg.info.origin.position.x, msg.info.origin.position.y = float(grid.x_min), float(grid.y_min)
    msg.info.origin.position.z = float(grid.ground_height)
    msg.info.origin.orientation.w = 1.0
    data = array.array("b")
    data.frombytes(np.ascontiguousarray(values, np.int8).data)
    msg.data = data
    return msg


def point_cloud_msg(points: np.ndarray, header: Header) -> PointCloud2:
    """(N, 3) points (metres) → an unordered sensor_msgs/PointCloud2 of float32 x, y, z (little-endian)."""
    points = np.ascontiguousarray(points, "<f4").reshape(-1, 3)
    msg = PointCloud2(header=header, height=1, width=len(points), is_bigendian=False, point_step=12,
                      row_step=12 * len(points), is_dense=True)
    msg.fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, name in enumerate("xyz")]
    msg.data = _byte_array(points)
    return msg


def ground_objects_msg(objects: GroundObjects, class_ids: np.ndarray, scores: np.ndarray, ids: list[str],
                       header: Header) -> Detection3DArray:
    """Objects on the ground (:class:`~panoptic_perception.core.ground.GroundObjects`, their numeric class ids,
    scores and ids, M each) → vision_msgs/Detection3DArray: the hypothesis' pose is the ground contact turned
    by the yaw of the camera's line of sight to it (x along the ray, y across it) with its position covariance
    in the message's frame (6x6 row-major; the object's own heading is unknown: rotation variance
    ``UNKNOWN_VARIANCE``), the class id the numeric id as a string; the box stands on the contact with the same
    orientation, ``size`` (depth along the line of sight unknown: 0, width across it, height) in metres."""
    msg = Detection3DArray(header=header)
    for i in range(len(objects.positions)):
        x, y, z = (float(v) for v in objects.positions[i])
        width, height = (float(v) for v in objects.sizes[i])
        half_yaw = float(objects.bearings[i]) / 2
        orientation = Quaternion(z=math.sin(half_yaw), w=math.cos(half_yaw))
        detection = Detection3D(header=header, id=ids[i])
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(int(class_ids[i]))
        hypothesis.hypothesis.score = float(scores[i])
        hypothesis.pose.pose.position.x, hypothesis.pose.pose.position.y, hypothesis.pose.pose.position.z = x, y, z
        hypothesis.pose.pose.orientation = orientation
        covariance = np.zeros((6, 6))
        covariance[:3, :3] = objects.covariances[i]
        covariance[3:, 3:] = np.eye(3) * UNKNOWN_VARIANCE
        hypothesis.pose.covariance = covariance.ravel().tolist()
        detection.results.append(hypothesis)
        detection.bbox.center.position.x, detection.bbox.center.position.y = x, y
        detection.bbox.center.position.z = z + height / 2
        detection.bbox.center.orientation = orientation
        detection.bbox.size.y, detection.bbox.size.z = width, height
        msg.detections.append(detection)
    return msg


#: The variance that stands for "unknown" in a covariance (the orientation of an object seen from one side).
UNKNOWN_VARIANCE = 1e6
#: Depth of an object's cube in ~/ground/markers: the camera sees one face (metres).
MARKER_DEPTH = 0.3


def ground_markers_msg(objects: Detection3DArray | None, lane_points: np.ndarray | None, resolution: float,
                       header: Header) -> MarkerArray:
    """RViz markers of the ground outputs: DELETEALL first (markers of the previous message vanish), then a cube
    per object (namespace ``objects``, id its index; posed as its box, ``MARKER_DEPTH`` deep along the line of
    sight) and the lane points as one POINTS marker (namespace ``lane_lines``) of ``resolution`` squares; each
    lives 1 s, so that nothing stays behind when the node stops publishing."""
    msg = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    for i, detection in enumerate(objects.detections if objects is not None else []):
        box = detection.bbox
        cube = Marker(header=header, ns="objects", id=i, type=Marker.CUBE, action=Marker.ADD, pose=box.center,
                      frame_locked=False, lifetime=Duration(sec=1))
        cube.scale.x, cube.scale.y, cube.scale.z = MARKER_DEPTH, max(box.size.y, 0.05), max(box.size.z, 0.05)
        cube.color = ColorRGBA(r=1.0, g=0.3, b=0.1, a=0.8)
        msg.markers.append(cube)
    if lane_points is not None and len(lane_points):
        points = Marker(header=header, ns="lane_lines", id=0, type=Marker.POINTS, action=Marker.ADD, lifetime=Duration(sec=1))
        points.pose.orientation.w = 1.0
        points.scale.x = points.scale.y = float(resolution)
        points.color = ColorRGBA(r=1.0, g=1.0, b=0.0, a=1.0)
        points.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in lane_points]
        msg.markers.append(points)
    return msg
