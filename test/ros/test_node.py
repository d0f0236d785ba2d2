"""The perception node against a real ROS 2 stack: node, camera and this test in separate processes."""

from __future__ import annotations

import array
import re
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from vision_msgs.msg import LabelInfo  # noqa: E402

from harness import NODE, Process, diagnostic_values, node_command, stamp_ns  # noqa: E402
from panoptic_perception.data.synthetic import generate_scene  # noqa: E402
from panoptic_perception.msg import DrivingPerception  # noqa: E402
from panoptic_perception.ros.camera import compressed_msg  # noqa: E402

FRAME = (1280, 720)


@pytest.fixture(scope="class")
def default_node(ros_env, tmp_path_factory):
    """One node with the default parameters for the tests of TestDefaultNode, which only watch it (started
    once: each start imports torch and loads the backend). Stopped when the class is done, before any other
    test starts a node of the same name."""
    node = Process(node_command(), ros_env, tmp_path_factory.mktemp("default_node") / "node.log")
    yield node
    node.stop()


class TestDefaultNode:
    """The node with its default parameters (bundled TwinLiteNet), shared by these tests."""

    def test_outputs_carry_the_input_header_and_have_the_right_format(self, default_node, start_camera, probe, tmp_path):
        node = default_node
        outputs = {topic: probe.record(Image, f"{NODE}/{topic}") for topic in ("drivable_area", "lane_lines", "overlay")}
        results = probe.record(DrivingPerception, f"{NODE}/result")
        diagnostics = probe.record(DiagnosticArray, "/diagnostics")
        # A deep history: this test process shares two cores with the node and the camera, and must not
        # lose camera frames itself while its executor waits for the CPU.
        inputs = probe.record(Image, "/camera/image_raw", QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
        camera_start = probe.now_ns()
        # Two readers of the camera: the node and this test's recorder; it starts up while the node does and
        # publishes once both have subscribed. 30 Hz until the test has what it needs.
        stamps_file = tmp_path / "stamps.txt"
        camera = start_camera("--rate", "30", "--wait-for-subscriber", "300", "--subscribers", "2", "--stamps", str(stamps_file))
        probe.wait_for_node(node, timeout=120)  # sharing the CPU with the camera starting up
        probe.wait_for(lambda: len(inputs) >= 90 and all(len(m) >= 5 for m in (*outputs.values(), results)), 120,
                       "90 camera frames and 5 outputs of each kind")
        camera.stop()
        camera_end = probe.now_ns()
        sent = int(re.search(r"published (\d+) frames", camera.output()).group(1))
        final = probe.settled_diagnostics(diagnostics, camera_end)

        published = {int(line) for line in stamps_file.read_text().split()}  # every frame the camera sent
        assert len(published) >= sent and len(inputs) >= 90, "this process saw the camera"
        assert {stamp_ns(m.header) for _, m in inputs} <= published
        for topic, encoding in (("drivable_area", "mono8"), ("lane_lines", "mono8"), ("overlay", "bgr8")):
            messages = [m for _, m in outputs[topic]]
            assert len(messages) >= 5, topic
            # Every output carries a camera frame's header: the stamp is exactly one the camera published.
            assert all(m.header.frame_id == "camera" and stamp_ns(m.header) in published for m in messages), topic
            for msg in messages:
                assert (msg.width, msg.height, msg.encoding) == (*FRAME, encoding), topic
                channels = 3 if encoding == "bgr8" else 1
                assert msg.step == FRAME[0] * channels and len(msg.data) == msg.step * msg.height
            if encoding == "mono8":
                values = set(np.unique(np.frombuffer(messages[-1].data, np.uint8)).tolist())
                assert values <= {0, 1} and (topic == "lane_lines" or values == {0, 1}), (topic, values)
        by_stamp = {stamp_ns(m.header): m for _, m in outputs["drivable_area"]}
        bundles = [m for _, m in results]
        assert len(bundles) >= 5
        assert all(stamp_ns(b.header) in published for b in bundles)
        for bundle in bundles:
            assert bundle.backend == "twinlitenet" and bundle.header.frame_id == "camera"
            assert bundle.inference_ms > 0 and bundle.preprocess_ms > 0 and bundle.postprocess_ms > 0
            assert (bundle.drivable_area.width, bundle.drivable_area.height) == FRAME
            assert bundle.semantic.width == 0 and bundle.panoptic.panoptic.width == 0 and not bundle.detections.detections
            if stamp_ns(bundle.header) in by_stamp:  # the same frame's mask, published twice, is identical
                assert bytes(bundle.drivable_area.data) == bytes(by_stamp[stamp_ns(bundle.header)].data)

        # Outputs the backend cannot produce are not advertised.
        topics = probe.topics()
        assert {f"{NODE}/{t}" for t in ("drivable_area", "lane_lines", "overlay", "result", "label_info")} <= topics
        assert not {f"{NODE}/{t}" for t in ("detections", "semantic", "panoptic")} & topics

        # Diagnostics: the node saw (nearly) every frame (best effort, 720p, across processes) and reports on it.
        level, message, values = diagnostic_values(final)
        assert int(values["received"]) >= 0.9 * sent, (sent, values)
        assert int(values["processed"]) >= 5 and int(values["rejected_bad"]) == 0
        for key in ("input_rate_hz", "output_rate_hz", "latency_median_ms", "latency_p95_ms", "inference_median_ms",
                    "preprocess_median_ms", "postprocess_median_ms", "dropped_stale", "dropped_superseded"):
            assert key in values, key
        assert float(values["latency_p95_ms"]) >= float(values["latency_median_ms"]) > 0
        assert values["backend"] == "twinlitenet" and values["device"] == "cpu" and values["input_size"] == "320x184"
        assert values["backend_options"] == ""
        # As a named camera's: its camera_info topic (/camera_info, not remapped here beside the image) is silent.
        assert values["camera_info"] == "none" and values["ground"] == "not requested"
        # While frames flow (before the camera starts the node rightly warns that no input arrives): the input
        # rate the node reports is the one this process saw, and nothing is wrong, except that on a machine
        # busy enough to make inference slower than max_frame_age_ms, frames rightly go stale.
        arrivals = [arrival for arrival, _ in inputs]
        seen_rate = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1e9)
        during = [diagnostic_values(m) for _, m in diagnostics
                  if camera_start < stamp_ns(m.header) < camera_end and int(diagnostic_values(m)[2]["received"]) > 0]
        assert any(float(v["input_rate_hz"]) > 0.7 * seen_rate for _, _, v in during), (seen_rate, during)
        assert all(level == 0 or (level == 1 and message.startswith("dropped") and "older than" in message and ";" not in message)
                   for level, message, _ in during), [(level, message) for level, message, _ in during]

    def test_late_subscriber_receives_label_info(self, default_node, probe):
        node = default_node
        probe.wait_for_node(node)
        time.sleep(1.0)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        label_info = probe.record(LabelInfo, f"{NODE}/label_info", latched)
        probe.wait_for(lambda: label_info, 10, "LabelInfo")
        classes = [(c.class_id, c.class_name) for c in label_info[0][1].class_map]
        assert classes == [(1, "drivable_area"), (2, "lane_line")]


def _bad_image(**fields) -> Image:
    msg = Image(height=4, width=4, encoding="bgr8", step=12)
    msg.data = array.array("B", bytes(48))
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def _good_image(stamp_sec: int) -> Image:
    msg = Image(height=90, width=160, encoding="rgb8", step=160 * 3 + 4)  # padded rows
    msg.data = array.array("B", np.random.default_rng(0).integers(0, 255, 90 * (160 * 3 + 4), np.uint8).tobytes())
    msg.header = Header(frame_id="camera")
    msg.header.stamp.sec = stamp_sec
    return msg


def test_bad_frames_are_rejected_counted_logged_once_and_the_node_goes_on(start_node, probe):
    # Reliable on both sides: every frame published after the match arrives, however busy the machine.
    node = start_node(max_frame_age_ms=0.0, qos_reliability="reliable")  # hand-made stamps: never stale
    probe.wait_for_node(node)
    drivable = probe.record(Image, f"{NODE}/drivable_area")
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    publisher = probe.node.create_publisher(Image, "/camera/image_raw", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 20, "the node's subscription")
    bad = [
        _bad_image(encoding="yuv422"),
        _bad_image(encoding="yuv422"),
        _bad_image(height=5),  # data shorter than step * height
        _bad_image(height=0, width=0, step=0),
        _bad_image(step=4),
    ]
    # A good frame, then the bad ones straight after: they are rejected on arrival and cannot displace it.
    publisher.publish(_good_image(stamp_sec=41))
    for msg in bad:
        publisher.publish(msg)
    publisher.publish(_good_image(stamp_sec=42))
    probe.wait_for(lambda: any(m.header.stamp.sec == 42 for _, m in drivable), 30, "the last good frame's output")
    good = next(m for _, m in drivable if m.header.stamp.sec == 42)
    assert (good.width, good.height, good.step) == (160, 90, 160)

    level, message, values = diagnostic_values(probe.settled_diagnostics(diagnostics, probe.now_ns()))
    assert int(values["rejected_bad"]) == len(bad) and int(values["received"]) == len(bad) + 2, values
    assert int(values["processed"]) + int(values["dropped_superseded"]) == 2, values
    assert any("rejected" in diagnostic_values(m)[1] and diagnostic_values(m)[0] == 1 for _, m in diagnostics), "a WARN"
    log = node.output()
    for cause in ("unsupported encoding", "data too short", "zero size", "bad step"):
        assert log.count(f"rejected a bad input frame ({cause}") == 1, cause
    assert node.popen.poll() is None


def test_ctrl_c_while_frames_flow_ends_node_and_camera_cleanly(start_node, start_camera, probe):
    # Ctrl-C shuts the ROS context down at once, possibly while the inference thread or the camera is
    # publishing: both must still exit with status 0, print their summary, and show no traceback.
    masks = probe.record(Image, f"{NODE}/drivable_area")
    node = start_node()
    camera = start_camera("--rate", "30")  # until stopped
    probe.wait_for_node(node, timeout=120)
    probe.wait_for(lambda: len(masks) >= 3, 120, "outputs while frames flow")
    node.stop()  # frames still arrive: the node is stopped mid-stream
    camera.stop()
    for process, summary in ((node, "frames: {"), (camera, "published ")):
        output = process.output()
        assert process.popen.returncode == 0 and summary in output and "Traceback" not in output, output[-3000:]


def test_compressed_input(start_node, start_camera, probe):
    # Reliable input: the hand-published corrupt frames below cannot be lost, however busy the machine.
    lanes = probe.record(Image, f"{NODE}/lane_lines")
    node = start_node(input_transport="compressed", qos_reliability="reliable", max_frame_age_ms=0.0)  # never stale
    camera = start_camera("--compressed", "--rate", "15", "--reliability", "reliable")  # until stopped; starts up meanwhile
    probe.wait_for_node(node, timeout=120)  # sharing the CPU with the camera starting up
    probe.wait_for(lambda: len(lanes) >= 3, 120, "outputs of compressed frames")
    camera.stop()
    assert all((m.width, m.height) == FRAME and m.header.frame_id == "camera" for _, m in lanes)

    publisher = probe.node.create_publisher(CompressedImage, "/camera/image_raw/compressed",
                                            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    probe.wait_for(lambda: publisher.get_subscription_count() > 0, 20, "the node's subscription")
    corrupt = CompressedImage(format="jpeg")
    corrupt.data = array.array("B", b"\xff\xd8\xff\xe0 this is not a JPEG")
    for _ in range(3):  # logged once however often it comes (the newest at least is decoded)
        publisher.publish(corrupt)
    probe.wait_for(lambda: "rejected a bad input frame (corrupt data" in node.output(), 30, "the corrupt frame's log line")
    # Then a good frame, compressed as the camera does it: the node decodes and answers it.
    stamp = probe.node.get_clock().now().to_msg()
    publisher.publish(compressed_msg(generate_scene(0, *FRAME).image, Header(stamp=stamp, frame_id="camera")))
    probe.wait_for(lambda: any(m.header.stamp == stamp for _, m in lanes), 120, "the output of the good frame after the corrupt ones")
    assert node.output().count("rejected a bad input frame (corrupt data") == 1


def test_yolopv2_publishes_detections(start_node, start_camera, probe, yolopv2_small_checkpoint):
    from vision_msgs.msg import Detection2DArray

    path, _ = yolopv2_small_checkpoint
    detections = probe.record(Detection2DArray, f"{NODE}/detections")
    results = probe.record(DrivingPerception, f"{NODE}/result")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    label_info = probe.record(LabelInfo, f"{NODE}/label_info", latched)
    camera_start = probe.now_ns()
    node = start_node(backend="yolopv2", weights=path, max_detections=20)
    # Starts up while the node does; publishes once the node has subscribed, until stopped (the test waits for outputs).
    camera = start_camera("--rate", "5", "--wait-for-subscriber", "300")
    probe.wait_for_node(node, timeout=120)  # sharing the CPU with the camera starting up
    probe.wait_for(lambda: len(detections) >= 3 and len(results) >= 3, 120, "detections")
    camera.stop()

    for _, msg in detections:
        assert msg.header.frame_id == "camera" and stamp_ns(msg.header) >= camera_start
        assert 0 < len(msg.detections) <= 20
        for detection in msg.detections:
            box = detection.bbox
            x, y = box.center.position.x, box.center.position.y
            assert -1e-3 <= x - box.size_x / 2 < x + box.size_x / 2 <= FRAME[0] + 1e-3, "inside the input image"
            assert -1e-3 <= y - box.size_y / 2 < y + box.size_y / 2 <= FRAME[1] + 1e-3
            (hypothesis,) = detection.results
            assert hypothesis.hypothesis.class_id == "0" and hypothesis.hypothesis.score >= 0.3
    bundle = results[-1][1]
    assert bundle.backend == "yolopv2" and len(bundle.detections.detections) > 0
    assert (bundle.drivable_area.width, bundle.lane_lines.width) == (FRAME[0], FRAME[0])
    assert [(c.class_id, c.class_name) for c in label_info[0][1].class_map] == [(0, "vehicle")]
    assert label_info[0][1].threshold == pytest.approx(0.3), "the score threshold"
    topics = probe.topics()
    assert f"{NODE}/detections" in topics and f"{NODE}/semantic" not in topics and f"{NODE}/panoptic" not in topics
    # A new score threshold is announced again on ~/label_info; -1.0 goes back to the backend's own.
    (result,) = probe.set_parameters(score_threshold=0.6)
    assert result.successful, result.reason
    probe.wait_for(lambda: label_info[-1][1].threshold == pytest.approx(0.6), 30, "LabelInfo with the new threshold")
    (result,) = probe.set_parameters(score_threshold=-1.0)
    assert result.successful, result.reason
    probe.wait_for(lambda: label_info[-1][1].threshold == pytest.approx(0.3), 30, "LabelInfo with the backend's threshold")
    (result,) = probe.set_parameters(score_threshold=-0.5)
    assert not result.successful and "score threshold must be in [0, 1]" in result.reason, result.reason


def test_fusion_panoptic_publishes_panoptic_semantic_and_detections(start_node, start_camera, probe):
    from panoptic_perception.core.labels import CITYSCAPES
    from panoptic_perception.core.messages import image_values, panoptic_from_msg
    from panoptic_perception.msg import PanopticSegmentation
    from vision_msgs.msg import Detection2DArray

    panoptic = probe.record(PanopticSegmentation, f"{NODE}/panoptic")
    semantic = probe.record(Image, f"{NODE}/semantic")
    detections = probe.record(Detection2DArray, f"{NODE}/detections")
    results = probe.record(DrivingPerception, f"{NODE}/result")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    label_info = probe.record(LabelInfo, f"{NODE}/label_info", latched)
    node = start_node(backend="fusion_panoptic", max_frame_age_ms=0.0)  # bundled weights; a slow backend
    # Starts up while the node does; publishes once the node has subscribed, until stopped.
    camera = start_camera("--rate", "2", "--wait-for-subscriber", "300")
    probe.wait_for_node(node, timeout=120)
    probe.wait_for(lambda: all(len(m) >= 2 for m in (panoptic, semantic, detections, results)), 180, "two of each output")
    camera.stop()

    ids = set(CITYSCAPES.ids.tolist())
    for _, msg in panoptic:
        assert msg.header.frame_id == "camera" and msg.label_divisor == 1000
        values, segments = panoptic_from_msg(msg)
        assert values.shape == (FRAME[1], FRAME[0])
        present, counts = np.unique(values[values > 0], return_counts=True)
        assert sorted(s.id for s in segments) == present.tolist()
        assert {s.id: s.area for s in segments} == dict(zip(present.tolist(), counts.tolist()))
        assert all(s.category_id in ids and s.is_thing == (s.category_id in CITYSCAPES.thing_ids) for s in segments)
        assert any(not s.is_thing for s in segments), "stuff segments (road, sky, ...)"
    for _, msg in semantic:
        assert (msg.width, msg.height, msg.encoding) == (*FRAME, "mono8")
        assert set(np.unique(image_values(msg)).tolist()) <= ids
    for _, msg in detections:
        for detection in msg.detections:
            (hypothesis,) = detection.results
            # detector instances score >= 0.5; new instances of the fusion carry their semantic confidence
            assert int(hypothesis.hypothesis.class_id) in CITYSCAPES.thing_ids and 0 < hypothesis.hypothesis.score <= 1
    bundle = results[-1][1]
    assert bundle.backend == "fusion_panoptic" and bundle.panoptic.panoptic.width == FRAME[0]
    assert bundle.semantic.width == FRAME[0] and bundle.drivable_area.width == 0
    assert [c.class_name for c in label_info[0][1].class_map] == [c.name for c in CITYSCAPES.classes]
    # Started without a params file: the backend's own thresholds (Detectron2's and Mask R-CNN's), not another
    # backend's.
    assert label_info[0][1].threshold == pytest.approx(0.5), "fusion_panoptic's own score threshold"
    assert "'thresholds': {'score': 0.5, 'iou': 0.5, 'max_detections': 100, 'mask': 0.5}" in node.output()
    topics = probe.topics()
    assert f"{NODE}/panoptic" in topics and f"{NODE}/drivable_area" not in topics and f"{NODE}/lane_lines" not in topics


@pytest.mark.parametrize("backend", ["cyclenet", "cross_cooperative"])  # the semantic backends, bundled weights
def test_semantic_backends_publish_semantic_images(start_node, start_camera, probe, backend):
    from panoptic_perception.backends import backend_class
    from panoptic_perception.core.types import Capability
    from panoptic_perception.core.labels import CITYSCAPES
    from panoptic_perception.core.messages import image_values

    drives = Capability.DRIVABLE_AREA in backend_class(backend).capabilities
    semantic = probe.record(Image, f"{NODE}/semantic")
    # a subscription of the probe's own would put ~/drivable_area in the graph: only where it is published
    drivable = probe.record(Image, f"{NODE}/drivable_area") if drives else []
    results = probe.record(DrivingPerception, f"{NODE}/result")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    label_info = probe.record(LabelInfo, f"{NODE}/label_info", latched)
    node = start_node(backend=backend, max_frame_age_ms=0.0)
    # Starts up while the node does; publishes once the node has subscribed, until stopped.
    camera = start_camera("--rate", "2", "--wait-for-subscriber", "300")
    probe.wait_for_node(node, timeout=120)
    probe.wait_for(lambda: len(semantic) >= 2 and len(results) >= 2 and (len(drivable) >= 2 or not drives)
                   and label_info, 180, "two semantic images and results, LabelInfo")
    camera.stop()

    road = CITYSCAPES.id_of("road")
    by_stamp = {stamp_ns(m.header): image_values(m) for _, m in semantic}
    for values in by_stamp.values():
        assert values.shape == (FRAME[1], FRAME[0])
        assert set(np.unique(values).tolist()) <= set(CITYSCAPES.ids.tolist())
        assert (values == road).mean() > 0.1, "a dash-camera frame shows road"
    for _, msg in drivable:  # the road class, where the semantic image of the same frame was recorded
        if stamp_ns(msg.header) in by_stamp:
            np.testing.assert_array_equal(image_values(msg) > 0, by_stamp[stamp_ns(msg.header)] == road)
    bundle = results[-1][1]
    assert bundle.backend == backend and bundle.semantic.width == FRAME[0] and bundle.panoptic.panoptic.width == 0
    info = label_info[0][1]
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(c.id, c.name) for c in CITYSCAPES.classes]
    assert info.threshold == 0.0, "a class map by argmax applies no score threshold"
    topics = probe.topics()
    assert f"{NODE}/semantic" in topics and (f"{NODE}/drivable_area" in topics) == drives
    assert f"{NODE}/detections" not in topics and f"{NODE}/lane_lines" not in topics


def test_runtime_onnxruntime_runs_the_onnx_export_and_matches_eager(start_node, start_camera, probe, onnx_cache):
    from panoptic_perception import create_backend
    from panoptic_perception.core.messages import image_to_bgr, image_values

    # Exported here into the session's cache (PANOPTIC_PERCEPTION_CACHE, inherited by the node), which the
    # node then reuses: the same network in another process has the same digest.
    create_backend("twinlitenet", runtime="onnxruntime")
    exports = set((onnx_cache / "onnx").glob("twinlitenet-*.onnx"))
    lanes = probe.record(Image, f"{NODE}/lane_lines")
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    inputs = probe.record(Image, "/camera/image_raw", QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
    node = start_node(runtime="onnxruntime", max_frame_age_ms=0.0)
    # Starts up while the node does; publishes once the node and this test have subscribed, until stopped.
    camera = start_camera("--rate", "5", "--wait-for-subscriber", "300", "--subscribers", "2")
    probe.wait_for_node(node, timeout=180)
    frames = lambda: {stamp_ns(m.header) for _, m in inputs}  # noqa: E731
    probe.wait_for(lambda: sum(stamp_ns(m.header) in frames() for _, m in lanes) >= 3, 120,
                   "three lane images of frames this process also recorded")
    camera.stop()

    assert set((onnx_cache / "onnx").glob("twinlitenet-*.onnx")) == exports, "the node reused the export"
    assert diagnostic_values(diagnostics[-1][1])[2]["runtime"] == "onnxruntime"
    eager = create_backend("twinlitenet")  # in this process, eager torch, on the same camera frames
    images = {stamp_ns(m.header): image_to_bgr(m) for _, m in inputs}
    compared = [(image_values(m), images[stamp_ns(m.header)]) for _, m in lanes if stamp_ns(m.header) in images]
    assert len(compared) >= 3
    for published, image in compared:
        assert published.shape == (FRAME[1], FRAME[0])
        assert (published == eager(image).lane_mask).mean() >= 0.999
