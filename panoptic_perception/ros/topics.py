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
