"""Writing rosbag2 bags (MCAP or sqlite3) from rclpy messages, and ``make-bag``.

Messages are built with the node's own conversions and serialized by rclpy, so a bag holds exactly
what the node publishes; ``rosbags`` writes the container (the ros2 bag CLI is not needed).
``make-bag`` turns synthetic scenes (by default the held-out evaluation scenes of ``synthetic:N``),
image files, folders or a video into a bag: camera frames on
``/camera/image_raw`` (or ``/camera/image_raw/compressed``), plus, for synthetic scenes, the ground
truth on the ``/ground_truth/*`` topics read by :class:`~panoptic_perception.data.rosbag.BagDataset`.

With ``--cameras front,left,right`` (synthetic scenes only; ``NAME@WxH`` gives a camera its own size)
the bag holds N frames of each camera: camera ``c`` (the i-th of n) on ``/c/image_raw`` with frame_id
``c`` and its ground truth on ``/ground_truth/c/*`` (``/ground_truth/label_info`` once for the bag);
its frame k is the scene of seed ``first_seed + k * n + i`` stamped ``start + k / rate + i / (n * rate)``,
so the cameras' frames interleave in time and, read in recording order, the bag's scenes are those of
``synthetic:n*N``.

With ``--camera-info`` (synthetic scenes only) each frame's exact camera is written beside it, as a camera
driver and ``robot_state_publisher`` would: its ``sensor_msgs/CameraInfo`` on ``<camera>/camera_info``
(:func:`~.topics.camera_info_topic`) and its mount on ``/tf_static`` (``base_link`` → the frame_id, a level
camera at the scene's height on the ground frame's origin). A scene's camera height is its own, so
``/tf_static`` is written again before each frame (a static transform given again replaces the old one, in
tf2 as in the node); ``replay`` then writes the ground-plane topics.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from ..core.io import FrameSource, frame_size
from ..core.labels import CITYSCAPES
from ..data.rosbag import GROUND_TRUTH_PREFIX, typestore
from ..data.sources import EVALUATION_FIRST_SEED, parse_synthetic
from ..data.synthetic import generate_scene
from ..errors import ConfigurationError
from .camera import compressed_msg
from .conversions import bgr_to_image, camera_info_msg, label_info_msg, perception_messages
from .topics import CAPABILITY_TOPICS, camera_info_topic

#: A level camera's optical frame (z forward, x right, y down) in base_link (x forward, y left, z up), x y z w.
LEVEL_OPTICAL_QUATERNION = (-0.5, 0.5, -0.5, 0.5)
#: The frame the synthetic cameras' mounts are written in (the node's default target_frame).
BASE_FRAME = "base_link"
#: First stamp of a made bag (2026-01-01T00:00:00Z): fixed, so that a bag is reproducible.
DEFAULT_START_NS = 1_767_225_600 * 1_000_000_000
STORAGE = {"mcap": "MCAP", "sqlite3": "SQLITE3"}


def ros_type_name(msg: object) -> str:
    """``sensor_msgs/msg/Image`` for an rclpy ``sensor_msgs.msg.Image``."""
    return f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"


def stamp_header(stamp_ns: int, frame_id: str) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


class BagWriter:
    """A rosbag2 bag being written; ``write`` takes an rclpy message (or raw CDR bytes and their type)."""

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGE:
            raise ConfigurationError(f"storage must be one of {', '.join(STORAGE)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists already")
        self._writer = Writer(self.path, version=9, storage_plugin=getattr(StoragePlugin, STORAGE[storage]))
        self._connections: dict[str, object] = {}
        self.messages = 0

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, time_ns: int, msg: object = None, *, raw: bytes | None = None, msgtype: str | None = None) -> None:
        msgtype = msgtype or ros_type_name(msg)
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._connections[topic] = connection
        self._writer.write(connection, time_ns, raw if raw is not None else serialize_message(msg))
        self.messages += 1


def _given_once(what: str, in_spec, argument):
    """The value the synthetic spec or the argument gives (None if neither); ValueError if they disagree."""
    if in_spec is not None and argument is not None and in_spec != argument:
        raise ConfigurationError(f"the synthetic spec and the {what} argument give different values ({in_spec} and {argument})")
    return in_spec if in_spec is not None else argument


#: A camera name: one segment of a ROS topic name.
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
RESERVED_CAMERA_NAMES = {GROUND_TRUTH_PREFIX.strip("/"): "the ground truth", "panoptic_perception": "the node's outputs"}


class _Camera(NamedTuple):
    topic: str  # image topic, without /compressed
    frame_id: str
    truth_prefix: str  # its ground-truth topics are <truth_prefix>/<name>
    frames: Iterator[tuple[np.ndarray, object]]  # (BGR image, synthetic scene or None)


def _cameras(source: str, size: tuple[int, int] | None, first_seed: int | None, cameras: dict[str, tuple[int, int] | None] | None,
             topic: str, frame_id: str) -> list[_Camera]:
    """The cameras to write for ``synthetic:N[@WxH][+SEED]`` or image files / folders / a video (one camera).

    ``cameras`` (synthetic only): name → its own (width, height) or None for the common size; camera i of n
    gets the seeds ``first + k * n + i`` (one camera: ``first + k``). Checks ``source`` and ``cameras`` now (before a bag is created),
    renders or reads the frames as they are iterated. Raises ConfigurationError for a malformed spec or
    camera name, a negative first seed, a size or seed given differently in the spec and as an argument,
    or ``cameras`` with a source other than synthetic scenes."""
    if not source.startswith("synthetic:"):
        if cameras:
            raise ConfigurationError(f"several cameras are made from synthetic scenes only (synthetic:N), got {source}")
        frames = ((frame.image, None) for frame in FrameSource([source]) if frame.image is not None)
        return [_Camera(topic, frame_id, GROUND_TRUTH_PREFIX, frames)]
    spec = parse_synthetic(source)
    size = _given_once("size", spec.size, size) or (1280, 720)
    first_seed = _given_once("first seed", spec.first_seed, first_seed)
    first_seed = EVALUATION_FIRST_SEED if first_seed is None else first_seed
    if first_seed < 0:
        raise ConfigurationError(f"the first seed must be non-negative, got {first_seed}")
    for name in cameras or ():
        if not CAMERA_NAME.fullmatch(name):
            raise ConfigurationError(f"a camera name is a letter then letters, digits or _ (e.g. front_left), got {name!r}")
    layout = ([(f"/{name}/image_raw", name, f"{GROUND_TRUTH_PREFIX}/{name}", own or size) for name, own in cameras.items()]
              if cameras else [(topic, frame_id, GROUND_TRUTH_PREFIX, size)])

    def frames(index: int, width: int, height: int) -> Iterator[tuple[np.ndarray, object]]:
        for k in range(spec.count):
            scene = generate_scene(first_seed + k * len(layout) + index, width, height)
            yield scene.image, scene

    return [_Camera(camera_topic, camera_frame, prefix, frames(index, *camera_size))
            for index, (camera_topic, camera_frame, prefix, camera_size) in enumerate(layout)]


def make_bag(
    source: str,
    output: str | Path,
    storage: str = "mcap",
    rate: float = 10.0,
    size: tuple[int, int] | None = None,
    compressed: bool = False,
    first_seed: int | None = None,
    start_ns: int = DEFAULT_START_NS,
    topic: str = "/camera/image_raw",
    frame_id: str = "camera",
    cameras: dict[str, tuple[int, int] | None] | None = None,
    camera_info: bool = False,
) -> dict:
    """Write the frames of ``source`` (``synthetic:N[@WxH][+SEED]``, image files, a folder or a video) as a bag.

    Synthetic scenes are ``size`` (width, height) or the spec's, default 1280x720, with seeds from
    ``first_seed`` or the spec's, by default the held-out evaluation seeds
    (:data:`~panoptic_perception.data.sources.EVALUATION_FIRST_SEED`), so that a bag evaluates the scenes
    ``evaluate --data synthetic:N`` does. ``rate``: frames per second of each camera. ``cameras``: camera
    name → its own (width, height) or None, for N synthetic frames of each camera in the layout of the
    module docstring (``topic`` and ``frame_id`` then unused). ``camera_info``: each synthetic frame's
    CameraInfo and mount beside it (module docstring). Returns the bag, the frames written (all
    cameras), the messages, the storage and the image topics. Raises ConfigurationError for a malformed
    spec or camera name, a negative first seed, a size or seed given differently in the spec and as an
    argument, cameras or ``camera_info`` of a source other than synthetic scenes, or a source without frames.
    """
    if camera_info and not source.startswith("synthetic:"):
        raise ConfigurationError(f"--camera-info needs synthetic scenes (synthetic:N), whose camera is known; got {source}")
    period_ns = int(round(1e9 / rate))
    frames = 0
    streams = _cameras(source, size, first_seed, cameras, topic, frame_id)
    with BagWriter(output, storage) as bag:
        for index, images in enumerate(zip(*(camera.frames for camera in streams))):
            for position, (camera, (image, scene)) in enumerate(zip(streams, images)):
                stamp = start_ns + index * period_ns + position * period_ns // len(streams)
                header = stamp_header(stamp, camera.frame_id)
                if camera_info:  # before the frame, as a driver publishes them
                    bag.write("/tf_static", stamp, _level_mount(scene.camera.height_above_ground, header))
                    bag.write(camera_info_topic(camera.topic), stamp, camera_info_msg(
                        scene.camera.width, scene.camera.height, scene.camera.K, scene.camera.D,
                        scene.camera.distortion_model, header))
                if compressed:
                    bag.write(f"{camera.topic}/compressed", stamp, compressed_msg(image, header))
                else:
                    bag.write(camera.topic, stamp, bgr_to_image(image, header))
                if scene is not None:
                    if frames == 0:
                        bag.write(f"{GROUND_TRUTH_PREFIX}/label_info", stamp, label_info_msg(CITYSCAPES, 0.0, header))
                    truth = perception_messages(scene.to_result(), header, image, CITYSCAPES,
                                                {topic.name for topic in CAPABILITY_TOPICS.values()})
                    for name, msg in truth.items():
                        bag.write(f"{camera.truth_prefix}/{name}", stamp, msg)
                frames += 1
    if frames == 0:
        raise ConfigurationError(f"no frames could be read from {source}")
    return {"bag": str(output), "frames": frames, "messages": bag.messages, "storage": storage,
            "image_topics": [f"{camera.topic}/compressed" if compressed else camera.topic for camera in streams]}


def _level_mount(height: float, header: Header):
    """``/tf_static``'s tf2_msgs/TFMessage placing the optical frame ``header.frame_id`` level, ``height`` metres
    above the origin of :data:`BASE_FRAME`, stamped ``header.stamp``."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    transform = TransformStamped(header=Header(stamp=header.stamp, frame_id=BASE_FRAME), child_frame_id=header.frame_id)
    transform.transform.translation.z = float(height)
    q = transform.transform.rotation
    q.x, q.y, q.z, q.w = LEVEL_OPTICAL_QUATERNION
    return TFMessage(transforms=[transform])


def _camera_list(text: str) -> dict[str, tuple[int, int] | None]:
    """``--cameras`` NAME[@WxH],... → name → (width, height) or None; argparse.ArgumentTypeError naming the
    form for a malformed or repeated name or size."""
    cameras: dict[str, tuple[int, int] | None] = {}
    for item in text.split(","):
        name, _, size = item.strip().partition("@")
        if not CAMERA_NAME.fullmatch(name) or name in cameras:
            raise argparse.ArgumentTypeError(f"expected NAME[@WxH],... with distinct names, each a letter then letters, "
                                             f"digits or _ (e.g. front@1280x720,left,right), got {text!r}")
        if name in RESERVED_CAMERA_NAMES:  # their topics would read as ground truth or the node's outputs
            raise argparse.ArgumentTypeError(f"{name} is not a camera name: /{name}/ holds "
                                             f"{RESERVED_CAMERA_NAMES[name]}")
        cameras[name] = frame_size(size) if size else None
    return cameras


def main(argv: Sequence[str] | None = None) -> int:
    """``make-bag``; a malformed argument exits with status 2 and argparse's one-line error."""
    parser = argparse.ArgumentParser(prog="panoptic-perception make-bag", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="synthetic:N, image files, a folder or a video")
    parser.add_argument("--output", required=True, help="bag to create (a folder)")
    parser.add_argument("--storage", choices=sorted(STORAGE), default="mcap")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second of the stamps (of each camera)")
    parser.add_argument("--size", type=frame_size, help="synthetic frame WxH (default 1280x720; or synthetic:N@WxH)")
    parser.add_argument("--compressed", action="store_true", help="store JPEG (sensor_msgs/CompressedImage)")
    parser.add_argument("--first-seed", type=int, help=f"seed of the first synthetic scene (or synthetic:N+SEED; default "
                        f"{EVALUATION_FIRST_SEED}, the held-out evaluation scenes of evaluate --data synthetic:N)")
    parser.add_argument("--cameras", type=_camera_list, metavar="NAME[@WxH],...",
                        help="synthetic: N frames of each camera on /NAME/image_raw, ground truth on /ground_truth/NAME/*, "
                             "frames interleaved in time; camera i of n shows the scenes of seeds FIRST + k*n + i")
    parser.add_argument("--camera-info", action="store_true",
                        help="synthetic: each frame's exact CameraInfo on <camera>/camera_info and its mount on /tf_static "
                             "(base_link -> frame_id), so that replay writes the ground-plane topics")
    args = parser.parse_args(argv)
    summary = make_bag(args.source, args.output, args.storage, args.rate, args.size, args.compressed, args.first_seed,
                       cameras=args.cameras, camera_info=args.camera_info)
    print(f"{summary['frames']} frames ({summary['messages']} messages) written to {summary['bag']}")
    return 0
