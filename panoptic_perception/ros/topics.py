"""The perception node's output topics, as data: the one table of which capability each topic needs, its
message type and the :class:`~panoptic_perception.core.types.PerceptionResult` field it carries.

The node's publishers, the message building (:mod:`.conversions`), the ``publish_<topic>`` parameters
(:mod:`.parameters`), replay and ``make-bag`` all derive from it. Kept free of ROS imports (message types
by their ROS names, e.g. ``sensor_msgs/msg/Image``) so that the parameter table, the README and the
launch-file tests read it without a ROS installation.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.types import Capability

IMAGE = "sensor_msgs/msg/Image"
DETECTIONS = "vision_msgs/msg/Detection2DArray"
PANOPTIC = "panoptic_perception/msg/PanopticSegmentation"
RESULT = "panoptic_perception/msg/DrivingPerception"
OCCUPANCY_GRID = "nav_msgs/msg/OccupancyGrid"
POINT_CLOUD = "sensor_msgs/msg/PointCloud2"
DETECTIONS_3D = "vision_msgs/msg/Detection3DArray"
MARKERS = "visualization_msgs/msg/MarkerArray"


@dataclass(frozen=True)
class OutputTopic:
    """An output ``~/<name>``.

    ``capability``: the backends that have it publish the topic, and ``~/result`` carries it in its field
    of the same name; None: every backend publishes it (``result``, ``overlay``, built from the others).
    ``result_field``: the :class:`PerceptionResult` attribute converted into the message ("" for those
    built from the others).
    """

    name: str
    msg_type: str
    capability: Capability | None = None
    result_field: str = ""


#: Every output by name, in the order of the README's topic table.
OUTPUT_TOPICS: dict[str, OutputTopic] = {topic.name: topic for topic in (
    OutputTopic("detections", DETECTIONS, Capability.DETECTION, "detections"),
    OutputTopic("drivable_area", IMAGE, Capability.DRIVABLE_AREA, "drivable_mask"),
    OutputTopic("lane_lines", IMAGE, Capability.LANE_LINES, "lane_mask"),
    OutputTopic("semantic", IMAGE, Capability.SEMANTIC, "semantic"),
    OutputTopic("panoptic", PANOPTIC, Capability.PANOPTIC, "panoptic"),
    OutputTopic("result", RESULT),
    OutputTopic("overlay", IMAGE),
)}

#: The outputs of one capability each, by capability.
CAPABILITY_TOPICS: dict[Capability, OutputTopic] = {
    topic.capability: topic for topic in OUTPUT_TOPICS.values() if topic.capability is not None
}


def topics_of(capabilities: frozenset[Capability] | set[Capability]) -> list[OutputTopic]:
    """The outputs a backend with ``capabilities`` publishes, in table order (``result`` and ``overlay``
    always)."""
    return [topic for topic in OUTPUT_TOPICS.values() if topic.capability is None or topic.capability in capabilities]


@dataclass(frozen=True)
class GroundTopic:
    """A ground-plane output ``~/ground/<name>`` of the node (one for all its cameras, in ``target_frame``):
    advertised when the backend has any of ``capabilities``."""

    name: str
    msg_type: str
    capabilities: frozenset[Capability]


#: The ground-plane outputs by name (``ground/drivable``, ...), in the order of the README's topic table.
GROUND_TOPICS: dict[str, GroundTopic] = {topic.name: topic for topic in (
    # A semantic map with a road class gives the drivable grid too (core.ground.result_occupancy).
    GroundTopic("ground/drivable", OCCUPANCY_GRID, frozenset({Capability.DRIVABLE_AREA, Capability.SEMANTIC})),
    GroundTopic("ground/lane_lines", POINT_CLOUD, frozenset({Capability.LANE_LINES})),
    GroundTopic("ground/objects", DETECTIONS_3D, frozenset({Capability.DETECTION, Capability.PANOPTIC})),
    GroundTopic("ground/markers", MARKERS, frozenset({Capability.LANE_LINES, Capability.DETECTION, Capability.PANOPTIC})),
)}


def ground_topics_of(capabilities: frozenset[Capability] | set[Capability]) -> list[GroundTopic]:
    """The ground-plane outputs a backend with ``capabilities`` publishes, in table order."""
    return [topic for topic in GROUND_TOPICS.values() if topic.capabilities & set(capabilities)]


def camera_info_topic(image_topic: str) -> str:
    """The ``sensor_msgs/CameraInfo`` topic beside an image topic, where camera drivers publish it:
    ``/front/image_raw`` (or ``/front/image_raw/compressed``) → ``/front/camera_info``."""
    raw = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return f"{raw.rsplit('/', 1)[0]}/camera_info"
