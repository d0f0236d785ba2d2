"""The node's table of output topics (panoptic_perception/ros/topics.py), without ROS: one topic per
capability, the result fields it names, and the documents and tables that must agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from panoptic_perception.core.types import Capability, PerceptionResult
from panoptic_perception.data.rosbag import GROUND_TRUTH_TOPICS
from panoptic_perception.ros.parameters import PARAMETERS_BY_NAME
from panoptic_perception.ros.topics import CAPABILITY_TOPICS, OUTPUT_TOPICS, topics_of

REPO = Path(__file__).resolve().parents[2]


def test_every_capability_has_one_topic_carrying_a_field_of_the_result():
    assert set(CAPABILITY_TOPICS) == set(Capability)
    fields = {f.name for f in dataclasses.fields(PerceptionResult)}
    for capability, topic in CAPABILITY_TOPICS.items():
        assert OUTPUT_TOPICS[topic.name] is topic and topic.result_field in fields, topic
    assert {name for name, topic in OUTPUT_TOPICS.items() if topic.capability is None} == {"result", "overlay"}


def test_a_backend_publishes_the_topics_of_its_capabilities_and_the_bundle():
    names = [topic.name for topic in topics_of(frozenset({Capability.DRIVABLE_AREA, Capability.LANE_LINES}))]
    assert names == ["drivable_area", "lane_lines", "result", "overlay"]


def test_every_topic_has_a_publish_switch():
    for name in OUTPUT_TOPICS:
        assert PARAMETERS_BY_NAME[f"publish_{name}"].default is True, name


def test_readme_and_ground_truth_topics_name_the_same_message_types():
    readme = (REPO / "README.md").read_text()
    for name, topic in OUTPUT_TOPICS.items():
        # The README writes ROS 2 types without the /msg/ part, as `ros2 topic` does not.
        assert f"| `~/{name}` | `{topic.msg_type.replace('/msg/', '/')}` |" in readme, name
    # Ground truth in bags is written with the node's conversions, under the same names.
    truth = {name: msg_type for name, (msg_type, _) in GROUND_TRUTH_TOPICS.items() if name in OUTPUT_TOPICS}
    assert truth == {topic.name: topic.msg_type for topic in CAPABILITY_TOPICS.values()}


def test_the_camera_info_topic_lies_beside_the_image_topic_of_either_transport():
    from panoptic_perception.ros.topics import camera_info_topic

    assert camera_info_topic("/front/image_raw") == "/front/camera_info"
    assert camera_info_topic("/front/image_raw/compressed") == "/front/camera_info"
    assert camera_info_topic("/car/left/image_rect") == "/car/left/camera_info"
