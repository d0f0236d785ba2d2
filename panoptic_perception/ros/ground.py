"""The node's ground-plane outputs: each camera's frames placed on the ground of ``target_frame``, fused over
the node's cameras (README, Ground plane; the geometry is :mod:`panoptic_perception.core.ground`).

- Calibration: each camera's ``sensor_msgs/CameraInfo``, matched to a frame by stamp among the last few
  received (the newest when none has the frame's stamp: a calibration that does not change).
- Mount, in this order: the camera's fixed ``mount`` parameter; tf2 at the image stamp where ``tf2_ros`` is
  installed; else the static transforms the node receives on ``/tf_static``, chained
  (:class:`~panoptic_perception.core.ground.StaticTransforms`: camera mounts do not move).
- A camera's lookup table is rebuilt only when its calibration or mount changes (~0.15-0.3 s at 1280x720
  on the default grid, on a busy 2-core machine), on the inference worker after the batch's image outputs
  are published: the next batch, of every camera, waits that long once.
- Bad input (a zero or NaN K, a size that differs from the image, an unknown distortion model, no
  transform, a camera at or below the ground plane, no CameraInfo): that camera's ground contribution is
  withdrawn, the image outputs go on, a warning is logged once per camera and kind, and its status says why.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from std_msgs.msg import Header

from ..core.ground import (
    CalibrationError,
    CameraCalibration,
    GroundObjects,
    GroundProjection,
    Mount,
    StaticTransforms,
    fuse_occupancy,
    lane_points,
    result_objects,
    result_occupancy,
)
from ..core.streaming import RollingSamples
from .conversions import (
    calibration_from_camera_info,
    ground_markers_msg,
    ground_objects_msg,
    occupancy_grid_msg,
    point_cloud_msg,
)
from .parameters import ground_grid

try:  # a ROS install; the PyPI core has no tf2
    import tf2_ros
except ImportError:
    tf2_ros = None

#: CameraInfo messages kept per camera to match frames by stamp.
INFO_HISTORY = 30
#: /tf_static as tf2 publishes and reads it: every static transform stays available to late subscribers.
TF_STATIC_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


@dataclass
class Contribution:
    """One camera's newest processed frame on the ground: its header, its occupancy values (None: not wanted
    or the backend has no drivable output), lane points (N, 3) float32 and objects (objects, class ids,
    scores)."""

    header: Header
    occupancy: np.ndarray | None
    lanes: np.ndarray | None
    objects: tuple[GroundObjects, np.ndarray, np.ndarray] | None


class CameraGround:
    """One camera's ground state: its recent CameraInfo, its calibration and lookup table (kept while the
    CameraInfo fields and the mount stay the same), its newest contribution, where its mount comes from and why its ground outputs stop, if they do."""

    def __init__(self, name: str, fixed_mount: Mount | None, source: str) -> None:
        self.name = name
        self.fixed_mount = fixed_mount
        self.source = "mount parameter" if fixed_mount is not None else source
        self.infos: collections.deque = collections.deque(maxlen=INFO_HISTORY)  # appended by the executor
        self.calibration: CameraCalibration | None = None  # of the CameraInfo fields calibration_key
        self.calibration_key: tuple | None = None
        self.projection: GroundProjection | None = None  # of that calibration, at projection.mount
        self.contribution: Contribution | None = None
        self.problem = ""  # why its ground outputs stop; "" when they do not
        self.status = "not requested"
        self.warned: set[str] = set()
        #: Milliseconds :meth:`GroundOutputs.update` took per frame placed (its grid, lane points and objects; a
        #: lookup table's rebuild included when the calibration or the mount changed).
        self.update_ms = RollingSamples()

    def info_for(self, header: Header):
        """The CameraInfo of the frame with ``header``: the one with its stamp, else the newest."""
        infos = list(self.infos)
        stamp = stamp_ns(header)
        return next((info for info in reversed(infos) if stamp_ns(info.header) == stamp), infos[-1] if infos else None)


class GroundStopped(Exception):
    """Why a camera's frame cannot be placed on the ground: ``kind`` (camera_info, calibration, size, transform
    or mount, e.g. a camera at or below the ground plane: warned once per camera each) and ``reason`` (one
    line)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _calibration_key(info) -> tuple:
    roi = info.roi
    return (info.width, info.height, tuple(info.k), tuple(info.d), info.distortion_model, info.binning_x,
            info.binning_y, roi.x_offset, roi.y_offset, roi.width, roi.height)


class GroundOutputs:
    """The ground-plane side of the node: call :meth:`update` with each processed frame (on the worker), then
    :meth:`messages` for the fused outputs to publish.

    ``cameras``: camera name → its mount parameter (empty: from TF). ``node`` creates the /tf_static
    subscription or tf2 listener (only when some camera has no fixed mount) and logs the warnings; without
    one (``None``: ``replay``, offline) the caller gives the static transforms to :meth:`add_static_transforms`
    and ``warn`` takes the warnings.
    """

    def __init__(self, node, settings: dict[str, Any], cameras: dict[str, list[float]],
                 warn: Callable[[str], None] | None = None) -> None:
        self.warn = warn or (lambda text: node.get_logger().warning(text))
        self.target_frame = settings["target_frame"]
        self.max_range = settings["ground_max_range"]
        self.grid = ground_grid(settings)
        self._lock = threading.Lock()  # the static transforms: written by the executor, read by the worker
        self._static = StaticTransforms()
        self._warned: set[str] = set()
        self._tf_buffer = None
        needs_tf = any(not mount for mount in cameras.values())
        if needs_tf and node is not None and tf2_ros is not None:
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, node)
        elif needs_tf and node is not None:
            from tf2_msgs.msg import TFMessage

            node.create_subscription(TFMessage, "/tf_static", lambda msg: self.add_static_transforms(msg.transforms),
                                     TF_STATIC_QOS)
        source = "tf2" if self._tf_buffer is not None else "tf_static"
        self.cameras = {name: CameraGround(name, Mount.from_xyz_rpy(*mount) if mount else None, source)
                        for name, mount in cameras.items()}
        self._published_ns = -1  # the stamp of the last fused messages
        self._fresh: set[str] = set()  # the cameras that contributed since then

    def add_static_transforms(self, transforms) -> None:
        """``geometry_msgs/TransformStamped`` messages of ``/tf_static`` (a transform given again replaces the
        old one); a degenerate one is ignored with a warning."""
        with self._lock:
            for transform in transforms:
                t, q = transform.transform.translation, transform.transform.rotation
                try:
                    self._static.add(transform.header.frame_id, transform.child_frame_id, (t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
                except CalibrationError as error:  # a degenerate transform: that edge stays unknown
                    if "tf_static" not in self._warned:
                        self._warned.add("tf_static")
                        self.warn(f"ignored a transform on /tf_static: {error} (logged once)")

    def _mount(self, camera: CameraGround, header: Header) -> Mount:
        """The camera's optical frame (the image's frame_id) in the target frame at the image's stamp. Raises
        CalibrationError when there is no transform."""
        if camera.fixed_mount is not None:
            return camera.fixed_mount
        if not header.frame_id:
            raise CalibrationError("the image has no frame_id to look its transform up")
        if self._tf_buffer is not None:
            try:
                transform = self._tf_buffer.lookup_transform(self.target_frame, header.frame_id, Time.from_msg(header.stamp))
            except Exception as error:  # tf2's lookup, connectivity and extrapolation exceptions
                raise CalibrationError(f"no transform from {header.frame_id} to {self.target_frame}: {error}") from None
            t, q = transform.transform.translation, transform.transform.rotation
            return Mount.from_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
        with self._lock:
            return self._static.lookup(self.target_frame, header.frame_id)

    def _projection(self, camera: CameraGround, header: Header, image_size: tuple[int, int]) -> GroundProjection:
        """The camera's lookup table for this frame, rebuilt when the calibration or the mount changed. Raises
        GroundStopped (its kind: camera_info, calibration, size, transform or mount) when the frame cannot be
        placed on the ground."""
        info = camera.info_for(header)
        if info is None:
            raise GroundStopped("camera_info", "no CameraInfo received")
        key = _calibration_key(info)
        if camera.calibration_key != key:
            camera.calibration = camera.calibration_key = camera.projection = None  # never a table of another one
            try:
                camera.calibration = calibration_from_camera_info(info)
            except CalibrationError as error:
                raise GroundStopped("calibration", f"bad CameraInfo: {error}") from None
            camera.calibration_key = key
        try:
            camera.calibration.check_image(*image_size)
        except CalibrationError as error:
            raise GroundStopped("size", str(error)) from None
        try:
            mount = self._mount(camera, header)
        except CalibrationError as error:
            raise GroundStopped("transform", str(error)) from None
        if camera.projection is None or not (np.array_equal(camera.projection.mount.rotation, mount.rotation)
                                             and np.array_equal(camera.projection.mount.translation, mount.translation)):
            try:
                camera.projection = GroundProjection(camera.calibration, mount, self.grid, self.max_range)
            except CalibrationError as error:  # a camera at or below the ground plane
                raise GroundStopped("mount", str(error)) from None
        return camera.projection

    def update(self, name: str, header: Header, result, label_map, wanted: set[str]) -> bool:
        """Place camera ``name``'s processed frame on the ground, for the outputs ``wanted`` (topic names such as
        ``ground/drivable``); when it cannot be placed, withdraw the camera's contribution and say why. True
        when the frame contributes."""
        camera = self.cameras[name]
        if not wanted:
            camera.status, camera.problem, camera.contribution = "not requested", "", None
            return False
        started = time.perf_counter()
        try:
            projection = self._projection(camera, header, result.image_size)
        except GroundStopped as stopped:
            camera.contribution, camera.problem = None, stopped.reason
            camera.status = f"stopped: {stopped.reason}"
            if stopped.kind not in camera.warned:
                camera.warned.add(stopped.kind)
                self.warn(f"ground outputs of camera {name or header.frame_id} stop: {stopped.reason} "
                          "(its image outputs go on; logged once, see /diagnostics)")
            return False
        occupancy = result_occupancy(projection, result, label_map) if "ground/drivable" in wanted else None
        lanes = (lane_points(projection, result.lane_mask)
                 if result.lane_mask is not None and wanted & {"ground/lane_lines", "ground/markers"} else None)
        objects = result_objects(projection, result) if wanted & {"ground/objects", "ground/markers"} else None
        camera.contribution = Contribution(header, occupancy, lanes, objects)
        self._fresh.add(name)
        camera.problem, camera.status = "", "ok"
        camera.update_ms.add((time.perf_counter() - started) * 1e3)
        return True

    def messages(self, wanted: set[str], max_age_ns: int = 0) -> dict[str, Any]:
        """The fused ground messages of ``wanted`` topics from every camera's newest contribution (those older
        than ``max_age_ns`` before the newest left out; 0: none), stamped with the newest contributing image's
        stamp, in ``target_frame``. Empty when no camera contributes, and when the newest contribution is older
        than the last messages and came before them: a camera whose contribution was withdrawn (its ground
        outputs stopped) would otherwise send the fusion back to a stamp already published. Stamps go back only
        with a frame placed since the last messages (a clock that jumped back)."""
        fresh, self._fresh = self._fresh, set()
        cameras = [c for c in self.cameras.values() if c.contribution is not None]
        if not cameras:
            return {}
        newest_camera = max(cameras, key=lambda c: stamp_ns(c.contribution.header))
        newest = newest_camera.contribution
        if stamp_ns(newest.header) < self._published_ns and newest_camera.name not in fresh:
            return {}
        self._published_ns = stamp_ns(newest.header)
        contributions = [c.contribution for c in cameras]
        if max_age_ns > 0:
            contributions = [c for c in contributions if stamp_ns(newest.header) - stamp_ns(c.header) <= max_age_ns]
        header = Header(stamp=newest.header.stamp, frame_id=self.target_frame)
        messages: dict[str, Any] = {}
        grids = [c.occupancy for c in contributions if c.occupancy is not None]
        if "ground/drivable" in wanted and grids:
            messages["ground/drivable"] = occupancy_grid_msg(fuse_occupancy(grids), self.grid, header)
        lanes = [c.lanes for c in contributions if c.lanes is not None]
        # Cameras that see one cell give its centre once.
        fused_lanes = np.unique(np.concatenate(lanes), axis=0) if lanes else None
        if "ground/lane_lines" in wanted and fused_lanes is not None:
            messages["ground/lane_lines"] = point_cloud_msg(fused_lanes, header)
        with_objects = [c for c in contributions if c.objects is not None]
        objects_msg = None
        if with_objects:
            objects_msg = ground_objects_msg(*self._fused_objects(with_objects), header)
            if "ground/objects" in wanted:
                messages["ground/objects"] = objects_msg
        if "ground/markers" in wanted and (with_objects or lanes):
            messages["ground/markers"] = ground_markers_msg(objects_msg, fused_lanes, self.grid.resolution, header)
        return messages

    def _fused_objects(self, contributions: list[Contribution]) -> tuple[GroundObjects, np.ndarray, np.ndarray, list[str]]:
        """The objects of every contribution in one list (no association across cameras), with ids
        ``<camera frame_id>:<index>`` (``:truncated`` added for an object cut by the image's bottom edge)."""
        parts = [c.objects for c in contributions]
        ids = [f"{c.header.frame_id}:{index}" + (":truncated" if truncated else "")
               for c in contributions for index, truncated in zip(c.objects[0].kept, c.objects[0].truncated)]
        objects = GroundObjects(*(np.concatenate([getattr(p[0], name) for p in parts])
                                  for name in ("positions", "bearings", "sizes", "covariances", "truncated", "kept")))
        return objects, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), ids
