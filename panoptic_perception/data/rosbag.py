"""rosbag2 bags (sqlite3 or MCAP) as evaluation data, read with ``rosbags`` (pure Python, no ROS needed).

A bag holds camera frames on one or several image topics (``sensor_msgs/Image`` or ``CompressedImage``)
and, optionally, ground truth on the topics of :data:`GROUND_TRUTH_TOPICS`, stamped like the frame it
labels (``panoptic-perception make-bag`` writes bags of this form). A camera is named by the first
segment of its image topic (``/front/image_raw`` → ``front``); its ground truth is on
``/ground_truth/<camera>/*``, or, where the bag has none of those and one image topic is read, on
``/ground_truth/*``. Each frame becomes a :class:`~panoptic_perception.data.sample.Sample` whose truth
holds what the bag labels.

``vision_msgs`` and this package's messages are not in rosbags' type store; their definitions are
read from the ``.msg`` files of the installed packages (``<prefix>/share/<package>/msg``, the ROS
install or the project's virtual environment) or of this repository.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

from ..core.messages import RejectedImage, compressed_to_bgr, image_to_bgr, result_from_messages
from ..errors import ConfigurationError
from .sample import Sample

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
GROUND_TRUTH_PREFIX = "/ground_truth"
#: The perception node's outputs (replay writes them under it): images there are results, not cameras.
NODE_OUTPUTS = "/panoptic_perception"
#: Ground-truth topics (under ``/ground_truth/`` or ``/ground_truth/<camera>/``) and types; each labels the
#: camera frame with the same header stamp.
GROUND_TRUTH_TOPICS = {
    "drivable_area": ("sensor_msgs/msg/Image", "mono8 0/1"),
    "lane_lines": ("sensor_msgs/msg/Image", "mono8 0/1"),
    "semantic": ("sensor_msgs/msg/Image", "mono8 class ids"),
    "panoptic": ("panoptic_perception/msg/PanopticSegmentation", "32SC1 class * 1000 + instance"),
    "detections": ("vision_msgs/msg/Detection2DArray", "boxes, class_id as the numeric id"),
    "label_info": ("vision_msgs/msg/LabelInfo", "class names of the ids, once"),
}
CUSTOM_PACKAGES = ("vision_msgs", "panoptic_perception")
_REPO = Path(__file__).resolve().parents[2]


def message_definition_dir(package: str) -> Path:
    """The ``msg/`` folder of ``package``: installed share folders first, then this repository."""
    prefixes = [Path(sys.prefix), *(Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p)]
    candidates = [prefix / "share" / package / "msg" for prefix in prefixes]
    candidates += [_REPO / "msg"] if package == "panoptic_perception" else [_REPO / ".ci" / package / "msg"]
    for folder in candidates:
        if any(folder.glob("*.msg")):
            return folder
    raise FileNotFoundError(f"no message definitions of {package} (looked in {', '.join(map(str, candidates))})")


@lru_cache(maxsize=1)
def typestore():
    """rosbags' ROS 2 Jazzy type store plus ``vision_msgs`` and this package's messages."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for package in CUSTOM_PACKAGES:
        for path in sorted(message_definition_dir(package).glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


@dataclass
class BagFrame:
    """One camera frame of a bag: the decoded sample, and the raw message to copy it into another bag."""

    sample: Sample
    topic: str
    msgtype: str
    raw: bytes
    log_time_ns: int


def camera_of_topic(topic: str) -> str:
    """The camera of an image topic: its first segment (``/front/image_raw/compressed`` → ``front``)."""
    return topic.strip("/").split("/", 1)[0]


class BagDataset:
    """The camera frames of a bag, in recording order, with their ground truth.

    ``image_topic``: one image topic, several, or None for every image topic of the bag outside
    ``/ground_truth`` and ``/panoptic_perception`` (the node's outputs). Frames of one topic are named
    ``frame_000000``, ``frame_000001``, ...; of several, ``<camera>/frame_000000``, ... counted per
    camera. A frame whose image message does not deserialize or cannot be decoded, or whose ground truth
    cannot be read, is a ``Sample`` with ``image=None`` and the reason in ``error``; the frames after it
    are read as usual. A ground-truth message that does not deserialize (its stamp unknown) fails the
    frame recorded at the same log time, as ``make-bag`` writes them.

    Raises FileNotFoundError for a missing bag, ConfigurationError for a bag without image topics, a
    chosen topic that is not one, or two chosen topics of one camera.
    """

    def __init__(self, path: str | Path, image_topic: str | Sequence[str] | None = None) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag not found: {self.path}")
        self._reader_type = Reader
        with Reader(self.path) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            counts = {c.topic: c.msgcount for c in reader.connections}
        #: Every topic of the bag → its message type (``sensor_msgs/msg/Image``).
        self.topics = topics
        images = sorted(t for t, m in topics.items()
                        if m in IMAGE_TYPES and not t.startswith((GROUND_TRUTH_PREFIX + "/", NODE_OUTPUTS + "/")))
        chosen = [image_topic] if isinstance(image_topic, str) else list(dict.fromkeys(image_topic or images))
        if not chosen:
            raise ConfigurationError(f"{self.path}: no image topic (topics: {sorted(topics)})")
        for topic in chosen:
            if topics.get(topic) not in IMAGE_TYPES:
                raise ConfigurationError(f"{self.path}: {topic} is not an image topic (image topics: {images})")
        cameras = [camera_of_topic(topic) for topic in chosen]
        repeated = sorted({c for c in cameras if cameras.count(c) > 1})
        if repeated:
            raise ConfigurationError(f"{self.path}: choose one image topic of camera {repeated[0]} among "
                                     f"{[t for t, c in zip(chosen, cameras) if c == repeated[0]]}")
        self.image_topics = tuple(chosen)
        #: Camera names, one per image topic; the frames' names carry them where there are several.
        self.cameras = tuple(cameras)
        self._truth: dict[str, tuple[str, str]] = {}  # ground-truth topic → (image topic it labels, its name)
        labels = [name for name in GROUND_TRUTH_TOPICS if name != "label_info"]
        for topic, camera in zip(chosen, cameras):
            own = {f"{GROUND_TRUTH_PREFIX}/{camera}/{name}": name for name in labels}
            if not own.keys() & topics.keys() and len(chosen) == 1:
                own = {f"{GROUND_TRUTH_PREFIX}/{name}": name for name in labels}
            self._truth.update({truth: (topic, name) for truth, name in own.items() if truth in topics})
        # The class names: make-bag writes them once for the bag; a bag may also have them per camera.
        self._label_info = {f"{GROUND_TRUTH_PREFIX}/label_info", *(f"{GROUND_TRUTH_PREFIX}/{c}/label_info" for c in cameras)} & topics.keys()
        self._length = sum(counts[topic] for topic in chosen)
        self.window_ns = 2_000_000_000

    @property
    def image_topic(self) -> str:
        """The image topic read; ConfigurationError where several are read."""
        if len(self.image_topics) > 1:
            raise ConfigurationError(f"{self.path}: several image topics are read ({', '.join(self.image_topics)}); choose one")
        return self.image_topics[0]

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[Sample]:
        return (frame.sample for frame in self.frames())

    def frames(self) -> Iterator[BagFrame]:
        """Frames with their raw messages, streamed: a frame waits at most :attr:`window_ns` of log time
        for ground truth with its header stamp (``make-bag`` writes both at the same log time)."""
        store = typestore()
        wanted = {*self.image_topics, *self._truth, *self._label_info}
        names: dict[int, str] = {}
        truth: dict[tuple[str, int], tuple[int, dict[str, object]]] = {}  # (image topic, header stamp) → (log time, messages)
        unreadable: dict[int, str] = {}  # log time → why a ground-truth message logged then does not deserialize
        waiting: deque[tuple[int | None, BagFrame, object]] = deque()  # msg: the error if it does not deserialize
        counted = {topic: 0 for topic in self.image_topics}
        several = len(self.image_topics) > 1
        camera_of = dict(zip(self.image_topics, self.cameras))

        def ready(now: int | None) -> Iterator[BagFrame]:
            while waiting and (now is None or waiting[0][1].log_time_ns < now - self.window_ns):
                stamp, frame, msg = waiting.popleft()
                index = counted[frame.topic]
                counted[frame.topic] += 1
                name = f"{camera_of[frame.topic]}/frame_{index:06d}" if several else f"frame_{index:06d}"
                frame.sample = self._sample(name, stamp, msg, truth.pop((frame.topic, stamp), (0, None))[1], names,
                                            unreadable.pop(frame.log_time_ns, None))
                yield frame
            for key in [k for k, (t, _) in truth.items() if now is not None and t < now - 2 * self.window_ns]:
                del truth[key]  # labels of frames the bag does not hold

        with self._reader_type(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in wanted]
            for connection, log_time, raw in reader.messages(connections=connections):
                try:
                    msg = store.deserialize_cdr(raw, connection.msgtype)
                except Exception as error:  # a corrupt message: its frame is reported, the others read on
                    problem = f"the {connection.topic} message does not deserialize: {type(error).__name__}: {error}"
                    if connection.topic in counted:
                        frame = BagFrame(Sample("", None), connection.topic, connection.msgtype, bytes(raw), log_time)
                        waiting.append((None, frame, problem))
                    else:
                        unreadable[log_time] = problem
                    yield from ready(log_time)
                    continue
                if connection.topic in self._label_info:
                    names = {int(c.class_id): c.class_name for c in msg.class_map}
                    continue
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if connection.topic in counted:
                    waiting.append((stamp, BagFrame(Sample("", None), connection.topic, connection.msgtype, bytes(raw), log_time), msg))
                else:
                    image_topic, name = self._truth[connection.topic]
                    truth.setdefault((image_topic, stamp), (log_time, {}))[1][name] = msg
                yield from ready(log_time)
        yield from ready(None)

    def raw_messages(self, topics: set[str]) -> Iterator[tuple[str, int, bytes]]:
        """The messages of ``topics`` (any type), in recording order: (topic, log time ns, serialized CDR)."""
        with self._reader_type(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in topics]
            for connection, log_time, raw in reader.messages(connections=connections):
                yield connection.topic, log_time, bytes(raw)

    def _sample(self, name: str, stamp: int | None, msg, truth: dict | None, names: dict[int, str],
                unreadable_truth: str | None) -> Sample:
        """Frame ``name``; ``msg`` is the reason as a string where the image message does not deserialize."""
        if isinstance(msg, str):
            return Sample(name, None, error=msg)
        if unreadable_truth is not None:
            return Sample(name, None, stamp_ns=stamp, error=f"its ground truth cannot be read: {unreadable_truth}",
                          frame_id=msg.header.frame_id)
        try:
            image = compressed_to_bgr(msg) if hasattr(msg, "format") else image_to_bgr(msg)
        except RejectedImage as error:
            return Sample(name, None, stamp_ns=stamp, error=str(error), frame_id=msg.header.frame_id)
        size = (image.shape[1], image.shape[0])
        result = None
        if truth:
            try:
                result = result_from_messages(
                    size, "ground truth", truth.get("drivable_area"), truth.get("lane_lines"), truth.get("semantic"),
                    truth.get("panoptic"), truth.get("detections"), names,
                )
            except Exception as error:  # malformed labels of one frame: that frame is reported, the others read on
                return Sample(name, None, stamp_ns=stamp, error=f"its ground truth cannot be read: {type(error).__name__}: {error}",
                              frame_id=msg.header.frame_id)
        return Sample(name, image, result, stamp_ns=stamp, frame_id=msg.header.frame_id)


def is_bag(path: str | Path) -> bool:
    """A rosbag2 folder (with metadata.yaml) or an .mcap / .db3 file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix in (".mcap", ".db3")
