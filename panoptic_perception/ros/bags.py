"""Writing rosbag2 bags (MCAP or sqlite3) from rclpy messages, and ``make-bag``.

Messages are built with the node's own conversions and serialized by rclpy, so a bag holds exactly
what the node publishes; ``rosbags`` writes the container (the ros2 bag CLI is not needed).
``make-bag`` turns synthetic scenes, image files, folders or a video into a bag: camera frames on
``/camera/image_raw`` (or ``/camera/image_raw/compressed``), plus, for synthetic scenes, the ground
truth on the ``/ground_truth/*`` topics read by :class:`~panoptic_perception.data.rosbag.BagDataset`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Header

from ..core.io import FrameSource
from ..core.labels import CITYSCAPES
from ..data.rosbag import GROUND_TRUTH_PREFIX, typestore
from ..data.synthetic import SyntheticScenes
from .camera import compressed_msg
from .conversions import bgr_to_image, label_info_msg, perception_messages

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
            raise ValueError(f"storage must be one of {', '.join(STORAGE)}, got {storage!r}")
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


def _frames(source: str, size: tuple[int, int], first_seed: int) -> Iterator[tuple[np.ndarray, object]]:
    """(image, synthetic scene or None) for ``synthetic:N`` or image files / folders / a video."""
    if source.startswith("synthetic:"):
        for scene in SyntheticScenes(int(source.split(":", 1)[1]), *size, first_seed=first_seed):
            yield scene.image, scene
        return
    for frame in FrameSource([source]):
        if frame.image is not None:
            yield frame.image, None


def make_bag(
    source: str,
    output: str | Path,
    storage: str = "mcap",
    rate: float = 10.0,
    size: tuple[int, int] = (1280, 720),
    compressed: bool = False,
    first_seed: int = 0,
    start_ns: int = DEFAULT_START_NS,
    topic: str = "/camera/image_raw",
    frame_id: str = "camera",
) -> dict:
    """Write the frames of ``source`` (``synthetic:N``, image files, a folder or a video) as a bag."""
    period_ns = int(round(1e9 / rate))
    frames = 0
    with BagWriter(output, storage) as bag:
        for index, (image, scene) in enumerate(_frames(source, size, first_seed)):
            stamp = start_ns + index * period_ns
            header = stamp_header(stamp, frame_id)
            if compressed:
                bag.write(f"{topic}/compressed", stamp, compressed_msg(image, header))
            else:
                bag.write(topic, stamp, bgr_to_image(image, header))
            if scene is not None:
                if index == 0:
                    bag.write(f"{GROUND_TRUTH_PREFIX}/label_info", stamp, label_info_msg(CITYSCAPES, 0.0, header))
                truth = perception_messages(scene.to_result(), header, image, CITYSCAPES,
                                            {"detections", "drivable_area", "lane_lines", "semantic", "panoptic"})
                for name, msg in truth.items():
                    bag.write(f"{GROUND_TRUTH_PREFIX}/{name}", stamp, msg)
            frames += 1
    if frames == 0:
        raise ValueError(f"no frames could be read from {source}")
    return {"bag": str(output), "frames": frames, "messages": bag.messages, "storage": storage}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="panoptic-perception make-bag", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="synthetic:N, image files, a folder or a video")
    parser.add_argument("--output", required=True, help="bag to create (a folder)")
    parser.add_argument("--storage", choices=sorted(STORAGE), default="mcap")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second of the stamps")
    parser.add_argument("--size", default="1280x720", help="synthetic frame WxH")
    parser.add_argument("--compressed", action="store_true", help="store JPEG (sensor_msgs/CompressedImage)")
    parser.add_argument("--first-seed", type=int, default=0, help="first synthetic scene")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    summary = make_bag(args.source, args.output, args.storage, args.rate, (width, height), args.compressed, args.first_seed)
    print(f"{summary['frames']} frames ({summary['messages']} messages) written to {summary['bag']}")
    return 0
