"""Replaying a bag offline through a backend and live into the running node."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

from panoptic_perception.backends import create_backend  # noqa: E402
from panoptic_perception.data.rosbag import typestore  # noqa: E402
from panoptic_perception.data.sources import EVALUATION_FIRST_SEED, open_dataset  # noqa: E402
from panoptic_perception.evaluation.evaluator import Evaluator  # noqa: E402
from panoptic_perception.ros.bags import DEFAULT_START_NS, make_bag  # noqa: E402
from panoptic_perception.ros.replay import replay_live, replay_offline  # noqa: E402

FRAMES, SIZE = 4, (320, 184)


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    """A bag of the same (held-out) synthetic scenes as ``synthetic:4@320x184``, with ground truth, at 10 Hz."""
    bag = tmp_path_factory.mktemp("bags") / "drive"
    make_bag(f"synthetic:{FRAMES}", bag, size=SIZE)
    return bag


def read_bag(path):
    from rosbags.rosbag2 import Reader

    store = typestore()
    messages = {}
    with Reader(path) as reader:
        for connection, log_time, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((log_time, connection.msgtype, store.deserialize_cdr(raw, connection.msgtype)))
    return messages


def test_offline_replay_writes_every_topic_and_scores_like_direct_evaluation(synthetic_bag, tmp_path):
    backend = create_backend("twinlitenet")
    summary = replay_offline(synthetic_bag, backend, tmp_path / "out", overlay=True, progress=False)
    messages = read_bag(tmp_path / "out")
    stamps = [DEFAULT_START_NS + i * 100_000_000 for i in range(FRAMES)]
    expected = {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/panoptic_perception/drivable_area": "sensor_msgs/msg/Image",
        "/panoptic_perception/lane_lines": "sensor_msgs/msg/Image",
        "/panoptic_perception/result": "panoptic_perception/msg/DrivingPerception",
        "/panoptic_perception/overlay": "sensor_msgs/msg/Image",
        "/panoptic_perception/label_info": "vision_msgs/msg/LabelInfo",
    }
    assert set(messages) == set(expected)
    for topic, msgtype in expected.items():
        entries = messages[topic]
        assert all(t == msgtype for _, t, _ in entries), topic
        if topic.endswith("label_info"):
            assert len(entries) == 1
            continue
        assert [log for log, _, _ in entries] == stamps, f"{topic}: original log times"
        assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, _, m in entries] == stamps
    result = messages["/panoptic_perception/result"][0][2]
    assert result.backend == "twinlitenet" and (result.drivable_area.width, result.drivable_area.height) == SIZE

    direct = Evaluator(backend.label_map, backend.capabilities)
    for sample in open_dataset(f"synthetic:{FRAMES}@{SIZE[0]}x{SIZE[1]}"):
        direct.add(sample.name, backend(sample.image), sample.truth)
    assert summary["frames"] == FRAMES and summary["failed"] == []
    for key, value in direct.compute()["driving"].items():
        assert summary["driving"][key] == pytest.approx(value, abs=1e-12), key


def test_live_replay_into_the_node_reports_latency_drops_and_accuracy(synthetic_bag, start_node, probe, tmp_path):
    # Reliable both ways and no age limit: every frame arrives, and the newest is always answered,
    # however busy the machine (which frames are superseded is the node's business).
    node = start_node(qos_reliability="reliable", max_frame_age_ms=0.0)
    probe.wait_for_node(node)
    summary = replay_live(synthetic_bag, tmp_path / "live", rate=1.0, publish_topic="/camera/image_raw", reliable=True,
                          progress=False)
    assert summary["frames_sent"] == FRAMES
    assert 0 < summary["frames_answered"] <= FRAMES and summary["drop_rate"] == pytest.approx(1 - summary["frames_answered"] / FRAMES)
    assert 0 < summary["latency_ms"]["median"] < 5000
    assert 0.8 < summary["driving"]["drivable_miou"] <= 1.0 and not math.isnan(summary["driving"]["lane_iou"])
    recorded = read_bag(tmp_path / "live")
    assert len(recorded["/camera/image_raw"]) == FRAMES
    assert len(recorded["/panoptic_perception/result"]) == summary["frames_answered"]


def test_make_bag_and_replay_from_the_command_line(tmp_path, capsys):
    import json

    from panoptic_perception.cli import main

    assert main(["make-bag", "synthetic:2", "--output", str(tmp_path / "bag"), "--size", "160x96", "--storage", "sqlite3"]) == 0
    assert "2 frames" in capsys.readouterr().out
    argv = ["-q", "replay", str(tmp_path / "bag"), "--output", str(tmp_path / "out"), "--report", str(tmp_path / "report")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 2 and summary["driving"]["drivable_miou"] > 0.5
    assert "| drivable mIoU (%) |" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "frames_twinlitenet.csv").read_text().count("\n") == 3


def test_replay_reports_a_frame_the_backend_fails_on_and_replays_the_others(synthetic_bag, tmp_path, monkeypatch, capsys):
    import json

    from support import fail_on_frame

    from panoptic_perception.cli import main
    from panoptic_perception.data.synthetic import generate_scene

    fail_on_frame(monkeypatch, generate_scene(EVALUATION_FIRST_SEED + 1, *SIZE).image)  # the bag's second frame
    argv = ["-q", "replay", str(synthetic_bag), "--output", str(tmp_path / "out"), "--report", str(tmp_path / "report")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.count("skipped frame_000001 (backend): RuntimeError: backend exploded") == 1
    summary = json.loads(captured.out)
    assert summary["frames"] == FRAMES - 1
    assert summary["failed"] == [{"frame": "frame_000001", "stage": "backend", "error": "RuntimeError: backend exploded"}]
    messages = read_bag(tmp_path / "out")
    stamps = [DEFAULT_START_NS + i * 100_000_000 for i in range(FRAMES)]
    assert [log for log, _, _ in messages["/camera/image_raw"]] == stamps, "every input frame is kept"
    assert [log for log, _, _ in messages["/panoptic_perception/result"]] == stamps[:1] + stamps[2:]
    assert "frame_000001 (backend): RuntimeError: backend exploded" in (tmp_path / "report" / "report.md").read_text()


def test_replay_reports_a_message_that_does_not_deserialize_and_replays_the_others(synthetic_bag, tmp_path):
    from support import copy_bag_cutting

    cut = copy_bag_cutting(synthetic_bag, tmp_path / "cut", {("/camera/image_raw", 0), ("/ground_truth/drivable_area", 2)})
    summary = replay_offline(cut, create_backend("twinlitenet"), tmp_path / "out", progress=False)
    assert [(f["frame"], f["stage"]) for f in summary["failed"]] == [("frame_000000", "read"), ("frame_000002", "read")]
    assert summary["failed"][0]["error"].startswith("the /camera/image_raw message does not deserialize: SerdeError: ")
    assert summary["frames"] == FRAMES - 2
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "out") as reader:  # log times only: the cut message is copied as it is
        logged = {c.topic: [t for _, t, _ in reader.messages(connections=[c])] for c in reader.connections}
    stamps = [DEFAULT_START_NS + i * 100_000_000 for i in range(FRAMES)]
    assert logged["/camera/image_raw"] == stamps, "every input frame is kept"
    assert logged["/panoptic_perception/result"] == [stamps[1], stamps[3]]
    assert len(logged["/panoptic_perception/label_info"]) == 1


def test_live_replay_scores_the_answers_after_one_it_cannot_read(tmp_path):
    """An answer of the node that cannot be converted is a failed frame, not the end of the executor's thread."""
    import types

    from std_msgs.msg import Header

    from panoptic_perception.core.failures import FrameFailures
    from panoptic_perception.core.labels import DRIVING_MASKS
    from panoptic_perception.core.types import Capability
    from panoptic_perception.data.synthetic import generate_scene
    from panoptic_perception.ros.conversions import perception_messages
    from panoptic_perception.ros.replay import _LiveRecorder

    clock = types.SimpleNamespace(now=lambda: types.SimpleNamespace(nanoseconds=2_000_000_000))
    node = types.SimpleNamespace(create_subscription=lambda *args: None, get_clock=lambda: clock)
    written = []
    writer = types.SimpleNamespace(write=lambda topic, time_ns, msg: written.append(topic))
    capabilities = {Capability.DRIVABLE_AREA, Capability.LANE_LINES}
    evaluator = Evaluator(DRIVING_MASKS, capabilities)
    lines = []
    failures = FrameFailures(report=lines.append)
    recorder = _LiveRecorder(node, writer, evaluator, capabilities, failures)
    for index in range(2):
        scene = generate_scene(EVALUATION_FIRST_SEED + index, 64, 48)
        header = Header()
        header.stamp.sec = index
        msg = perception_messages(scene.to_result(), header, scene.image, DRIVING_MASKS, {"result"})["result"]
        if index == 0:
            msg.drivable_area.data = msg.drivable_area.data[:10]  # truncated
        recorder.expect(index * 1_000_000_000, f"frame_{index:06d}", scene.to_result())
        recorder.on_result(msg)
    assert [f["frame"] for f in failures.to_list()] == ["frame_000000"]
    assert failures.to_list()[0]["stage"] == "scoring" and "data too short" in lines[0]
    assert [f["frame"] for f in evaluator.frames] == ["frame_000001"]
    assert evaluator.compute()["driving"]["drivable_miou"] == 1.0, "the truth's own messages score perfectly"
    assert recorder.answered == 2 and len(written) == 2


def test_replay_takes_the_runtime_options_and_thresholds_of_infer_and_runs_the_shared_loop(
        synthetic_bag, yolopv2_small_checkpoint, onnx_cache, tmp_path, monkeypatch, capsys):
    import json

    from panoptic_perception.cli import main
    from panoptic_perception.evaluation import loop
    from panoptic_perception.ros import replay

    backends = []

    def spy(backend, *args, **kwargs):
        backends.append((backend, kwargs))
        return loop.run_frames(backend, *args, **kwargs)

    monkeypatch.setattr(replay, "run_frames", spy)
    path, _ = yolopv2_small_checkpoint
    argv = ["-q", "replay", str(synthetic_bag), "--output", str(tmp_path / "out"), "--backend", "yolopv2", "--weights", path,
            "--runtime", "onnxruntime", "--option", "input_width=320,input_height=192", "--score-threshold", "0.9",
            "--max-detections", "3"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == FRAMES
    ((backend, kwargs),) = backends
    assert kwargs.get("timed", True), "timed: the first call a warm-up"
    described = backend.describe()
    assert described["runtime"] == "onnxruntime" and described["onnx"].startswith(str(onnx_cache))
    assert described["input_size"] == [320, 192]
    assert (described["thresholds"]["score"], described["thresholds"]["max_detections"]) == (0.9, 3)
    ((_, _, label_info),) = read_bag(tmp_path / "out")["/panoptic_perception/label_info"]
    assert label_info.threshold == pytest.approx(0.9)


#: Three cameras of different sizes (width, height); frame k of camera i is the held-out scene of seed first + 3k + i.
CAMERAS = {"front": (160, 96), "left": (96, 64), "right": (128, 72)}


@pytest.fixture(scope="module")
def cameras_bag(tmp_path_factory):
    bag = tmp_path_factory.mktemp("bags") / "cameras"
    make_bag("synthetic:2", bag, cameras=CAMERAS)
    return bag


def header_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_offline_replay_of_three_cameras_writes_each_cameras_outputs_with_its_header_and_scores_per_camera(cameras_bag, tmp_path):
    from panoptic_perception.data.rosbag import BagDataset
    from panoptic_perception.data.synthetic import generate_scene

    backend = create_backend("twinlitenet")
    summary = replay_offline(cameras_bag, backend, tmp_path / "out", progress=False)
    messages = read_bag(tmp_path / "out")
    assert len(messages["/panoptic_perception/label_info"]) == 1, "once for the node"
    outputs = ("drivable_area", "lane_lines", "result")
    assert set(messages) == {"/panoptic_perception/label_info", *(f"/{c}/image_raw" for c in CAMERAS),
                             *(f"/panoptic_perception/{c}/{topic}" for c in CAMERAS for topic in outputs)}
    for camera, size in CAMERAS.items():
        inputs = messages[f"/{camera}/image_raw"]
        for topic in outputs:
            entries = messages[f"/panoptic_perception/{camera}/{topic}"]
            assert [log for log, _, _ in entries] == [log for log, _, _ in inputs], f"{camera}/{topic}: its input's log times"
            assert [header_ns(m) for _, _, m in entries] == [header_ns(m) for _, _, m in inputs], f"{camera}/{topic}"
            assert {m.header.frame_id for _, _, m in entries} == {camera}, f"{camera}/{topic}"
        assert {(m.drivable_area.width, m.drivable_area.height) for _, _, m in messages[f"/panoptic_perception/{camera}/result"]} == {size}

    assert summary["frames"] == 6 and summary["failed"] == []
    assert sum(c["frames"] for c in summary["cameras"].values()) == summary["frames"]
    for i, (camera, size) in enumerate(CAMERAS.items()):
        direct = Evaluator(backend.label_map, backend.capabilities)
        for k in range(2):
            scene = generate_scene(EVALUATION_FIRST_SEED + 3 * k + i, *size)
            direct.add(f"{k}", backend(scene.image), scene.to_result())
        for key, value in direct.compute()["driving"].items():
            assert summary["cameras"][camera]["driving"][key] == pytest.approx(value, abs=1e-12), (camera, key)
    assert BagDataset(tmp_path / "out").cameras == tuple(CAMERAS), "the node's output images are no cameras"


def test_replay_of_chosen_cameras_reports_a_failure_in_its_camera_only(cameras_bag, tmp_path, monkeypatch, capsys):
    import json

    from support import fail_on_frame

    from panoptic_perception.cli import main
    from panoptic_perception.data.synthetic import generate_scene

    fail_on_frame(monkeypatch, generate_scene(EVALUATION_FIRST_SEED + 3 + 1, *CAMERAS["left"]).image)  # left's second frame
    argv = ["-q", "replay", str(cameras_bag), "--output", str(tmp_path / "out"), "--report", str(tmp_path / "report"),
            "--image-topic", "/left/image_raw", "--image-topic", "/front/image_raw"]
    assert main(argv) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed"] == [{"frame": "left/frame_000001", "stage": "backend", "error": "RuntimeError: backend exploded"}]
    assert (summary["frames"], summary["cameras"]["left"]["frames"], summary["cameras"]["front"]["frames"]) == (3, 1, 2)
    assert list(summary["cameras"]) == ["left", "front"]
    messages = read_bag(tmp_path / "out")
    assert "/right/image_raw" not in messages and len(messages["/left/image_raw"]) == 2, "chosen cameras, every input frame"
    assert [header_ns(m) for _, _, m in messages["/panoptic_perception/left/result"]] == [
        header_ns(messages["/left/image_raw"][0][2])]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| metric | twinlitenet | twinlitenet@left | twinlitenet@front |" in report
    assert "- twinlitenet@left: left/frame_000001 (backend): RuntimeError: backend exploded" in report


def test_one_camera_chosen_keeps_the_single_camera_names_and_live_replay_takes_one_camera(cameras_bag, tmp_path, capsys):
    from panoptic_perception.cli import main
    from panoptic_perception.errors import ConfigurationError

    summary = replay_offline(cameras_bag, create_backend("twinlitenet"), tmp_path / "out", "/right/image_raw", progress=False)
    assert "cameras" not in summary and [f["frame"] for f in summary["frames_detail"]] == ["frame_000000", "frame_000001"]
    assert {m.header.frame_id for _, _, m in read_bag(tmp_path / "out")["/panoptic_perception/result"]} == {"right"}
    with pytest.raises(ConfigurationError, match="live replay plays one camera into the node: choose it with --image-topic "
                                                 "among /front/image_raw, /left/image_raw, /right/image_raw"):
        replay_live(cameras_bag, tmp_path / "live", progress=False)
    assert main(["replay", str(cameras_bag), "--live", "--output", str(tmp_path / "live")]) == 2
    assert "live replay plays one camera" in capsys.readouterr().err and not (tmp_path / "live").exists()


def test_offline_replay_writes_the_ground_topics_from_the_bags_camera_info_tf_static_and_mount(tmp_path):
    from panoptic_perception.core.ground import GroundGrid
    from panoptic_perception.core.labels import CITYSCAPES
    from panoptic_perception.data.synthetic import generate_scene
    from panoptic_perception.errors import ConfigurationError
    from panoptic_perception.evaluation.ground import match_gate, match_nearest
    from panoptic_perception.ros.replay import parse_mounts

    # Two cameras, each frame's CameraInfo and its mount on /tf_static (each scene's own height); camera b placed
    # by --mount instead (1.5 m, near its scenes' heights).
    bag, frames, size = tmp_path / "drive", 3, (640, 360)
    make_bag(f"synthetic:{frames}@{size[0]}x{size[1]}+7", bag, cameras={"a": None, "b": None}, camera_info=True)
    summary = replay_offline(bag, create_backend("yolopv2", input_size=(320, 192)), tmp_path / "out", progress=False,
                             mounts=parse_mounts(["b=0,0,1.5,0,0,0"]))
    assert summary["failed"] == [] and summary["ground"] == {"a": {"source": "tf_static", "status": "ok"},
                                                             "b": {"source": "mount parameter", "status": "ok"}}
    messages = read_bag(tmp_path / "out")
    inputs = sorted((log, camera) for camera in "ab" for log, _, _ in messages[f"/{camera}/image_raw"])
    types = {"drivable": "nav_msgs/msg/OccupancyGrid", "lane_lines": "sensor_msgs/msg/PointCloud2",
             "objects": "vision_msgs/msg/Detection3DArray", "markers": "visualization_msgs/msg/MarkerArray"}
    for name, msgtype in types.items():
        entries = messages[f"/panoptic_perception/ground/{name}"]
        assert [t for _, t, _ in entries] == [msgtype] * 2 * frames
        # After each frame, stamped with it (the newest contributing frame), at its log time.
        assert [log for log, _, _ in entries] == [log for log, _ in inputs]
        for _, _, msg in entries:
            stamped = msg.markers[0] if name == "markers" else msg
            assert stamped.header.frame_id == "base_link" and header_ns(stamped) in {log for log, _ in inputs}
    for (log, _), (_, _, grid) in zip(inputs, messages["/panoptic_perception/ground/drivable"]):
        assert header_ns(grid) == log
        assert (grid.info.width, grid.info.height, grid.info.resolution) == (800, 400, pytest.approx(0.1))
        values = grid.data.reshape(grid.info.height, grid.info.width)
        assert set(np.unique(values).tolist()) == {-1, 0, 100} and (values == 0).sum() > 5000
    for _, _, cloud in messages["/panoptic_perception/ground/lane_lines"]:
        points = np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 3)
        assert len(points) > 50 and GroundGrid().cell_of(points[:, 0], points[:, 1])[2].all()

    # Camera a's objects, placed by the bag's /tf_static: at its scenes' true things (the evaluation's gate).
    seeds = {log: 7 + 2 * k for k, (log, _, _) in enumerate(messages["/a/image_raw"])}
    matched = 0
    for _, _, msg in messages["/panoptic_perception/ground/objects"]:
        if header_ns(msg) not in seeds:
            continue
        things = list(generate_scene(seeds[header_ns(msg)], *size).things.values())
        own = [d.results[0] for d in msg.detections if d.id.startswith("a:")]
        positions = np.array([[h.pose.pose.position.x, h.pose.pose.position.y] for h in own]).reshape(-1, 2)
        classes = [int(h.hypothesis.class_id) for h in own]
        assert set(classes) <= set(CITYSCAPES.thing_ids)
        true = np.array([[t.x, t.y] for t in things])
        matches = match_nearest(positions, classes, true, [t.class_id for t in things], match_gate(np.hypot(*true.T)))
        assert len(matches) == len(own)
        matched += len(matches)
    assert matched >= 5

    with pytest.raises(ConfigurationError, match="needs their CameraInfo"):
        replay_offline(make_bag("synthetic:1@64x48", tmp_path / "plain")["bag"], create_backend("twinlitenet"),
                       tmp_path / "none", progress=False, mounts=parse_mounts(["0,0,1.5,0,0,0"]))
    with pytest.raises(ConfigurationError, match=r"\[CAMERA=\]X,Y,Z,ROLL,PITCH,YAW"):
        parse_mounts(["a=0,0,1.5"])
