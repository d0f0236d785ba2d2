"""Ground-plane outputs of the node across processes (real rclpy and Fast DDS): two cameras, each publishing
an overlapping crop of one synthetic scene with its exact CameraInfo (ROI set), one placed by /tf_static from
this process and one by its mount parameter, fused into one grid in base_link; a third camera with a zero K
keeps its image outputs, gives no ground output and says why in its diagnostics. Then objects: two cameras of
a detection backend (bundled yolopv2 weights), each showing its own scene with its exact CameraInfo and
mount, publish ~/ground/objects at the true things' ground positions and ~/ground/markers of them."""

from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built (scripts/bootstrap.sh --ros)")

import cv2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import TransformStamped  # noqa: E402
from harness import NODE, Process, cli, stamp_ns  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from test_node_cameras import camera_statuses  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from panoptic_perception.core.ground import (  # noqa: E402
    FREE,
    CameraCalibration,
    GroundGrid,
    GroundProjection,
    Mount,
    lane_points,
    occupancy,
)
from panoptic_perception.data.synthetic import generate_scene  # noqa: E402

SIZE, SEED, FRAMES = (640, 360), 0, 8
#: Two overlapping crops of one scene (x, y, w, h): two cameras, one world.
ROIS = {"left": (0, 0, 400, 360), "right": (240, 0, 400, 360)}
#: The optical frame in its camera body (x forward, y left, z up), as a quaternion x y z w.
OPTICAL_IN_BODY = (-0.5, 0.5, -0.5, 0.5)


def transform(parent: str, child: str, translation, rotation) -> TransformStamped:
    msg = TransformStamped(child_frame_id=child)
    msg.header.frame_id = parent
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = translation
    q.x, q.y, q.z, q.w = rotation
    return msg


def test_two_cameras_give_one_grid_lane_points_and_markers_in_base_link_and_a_bad_calibration_only_stops_its_own(
        start_node, probe, ros_env, tmp_path):
    scene = generate_scene(SEED, *SIZE)
    height = scene.camera.height_above_ground
    assert np.allclose(Mount.from_quaternion((0, 0, 0), OPTICAL_IN_BODY).rotation, Mount.from_xyz_rpy(0, 0, 0).rotation)
    # left is placed by TF: base_link -> camera_link (the body, height m up) -> left_optical, chained by the node.
    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.node.create_publisher(TFMessage, "/tf_static", latched).publish(TFMessage(transforms=[
        transform("base_link", "camera_link", (0.0, 0.0, height), (0.0, 0.0, 0.0, 1.0)),
        transform("camera_link", "left_optical", (0.0, 0.0, 0.0), OPTICAL_IN_BODY)]))

    grids = probe.record(OccupancyGrid, f"{NODE}/ground/drivable")
    lanes = probe.record(PointCloud2, f"{NODE}/ground/lane_lines")
    markers = probe.record(MarkerArray, f"{NODE}/ground/markers")
    bad_outputs = probe.record(Image, f"{NODE}/bad/drivable_area")
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    node = start_node(**{"cameras": "[left,right,bad]", "qos_reliability": "reliable", "max_frame_age_ms": 0.0,
                         "cameras.right.mount": f"[0.0,0.0,{height},0.0,0.0,0.0]",
                         **{f"cameras.{name}.image_topic": f"/{name}/image_raw" for name in ("left", "right", "bad")},
                         **{f"cameras.{name}.camera_info_topic": f"/{name}/camera_info" for name in ("left", "right", "bad")}})
    probe.wait_for(lambda: probe.node.count_publishers(f"{NODE}/ground/drivable") > 0 or node.popen.poll() is not None,
                   120, "the node's ground outputs")
    assert node.popen.poll() is None, node.output()

    stamps = {name: tmp_path / f"{name}.stamps" for name in ROIS}
    cameras = [Process(cli("camera", "--topic", f"/{name}/image_raw", "--frame-id", f"{name}_optical", "--size",
                           "x".join(map(str, SIZE)), "--seed", str(SEED), "--distinct", "1", "--roi", ",".join(map(str, roi)),
                           "--camera-info", "--rate", "4", "--count", str(FRAMES), "--reliability", "reliable",
                           "--wait-for-subscriber", "120", "--stamps", str(stamps[name])), ros_env, tmp_path / f"{name}.log")
               for name, roi in ROIS.items()]

    # The bad camera: a CameraInfo with an all-zero K (an uncalibrated driver's), then frames.
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    info_publisher = probe.node.create_publisher(CameraInfo, "/bad/camera_info", reliable)
    image_publisher = probe.node.create_publisher(Image, "/bad/image_raw", reliable)
    probe.wait_for(lambda: info_publisher.get_subscription_count() and image_publisher.get_subscription_count(), 60,
                   "the node's bad camera subscriptions")
    info_publisher.publish(CameraInfo(width=SIZE[0], height=SIZE[1], distortion_model="plumb_bob"))
    probe.wait_for(lambda: any(values["camera_info"] == "received" for _, m in diagnostics[-1:]
                               for name, (_, _, values) in camera_statuses(m).items() if name == "bad"),
                   30, "the bad camera's CameraInfo to arrive")
    for _ in range(3):
        bad = Image(height=SIZE[1], width=SIZE[0], encoding="bgr8", step=3 * SIZE[0],
                    data=array.array("B", scene.image.tobytes()))
        bad.header.frame_id = "bad_optical"
        bad.header.stamp = probe.node.get_clock().now().to_msg()
        image_publisher.publish(bad)
    for camera in cameras:
        assert camera.wait(120) == 0, camera.output()[-2000:]
    sent = {name: {int(line) for line in path.read_text().split()} for name, path in stamps.items()}
    probe.wait_for(lambda: len(bad_outputs) >= 1, 60, "the bad camera's image outputs")

    def ground_statuses():
        statuses = camera_statuses(diagnostics[-1][1]) if diagnostics else {}
        return statuses if all(name in statuses and statuses[name][2]["ground"] != "not requested"
                               for name in ("left", "right", "bad")) else None

    probe.wait_for(lambda: grids and lanes and markers and ground_statuses(), 60, "ground outputs and their diagnostics")

    # Every ground message is of a good camera's frame, in base_link; never of the bad camera's.
    good = sent["left"] | sent["right"]
    for _, msg in grids + lanes + markers:
        header = msg.header if hasattr(msg, "header") else msg.markers[0].header
        assert header.frame_id == "base_link" and stamp_ns(header) in good
    grid = GroundGrid()
    msg = grids[-1][1]
    assert (msg.info.resolution, msg.info.width, msg.info.height) == (pytest.approx(0.1), 800, 400)
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == (pytest.approx(-20.0), pytest.approx(-20.0))
    values = np.array(msg.data, np.int8).reshape(msg.info.height, msg.info.width)

    # The truth: the whole scene's road and lanes through its exact camera, 5 to 30 m ahead.
    camera = scene.camera
    projection = GroundProjection(CameraCalibration.checked(camera.width, camera.height, camera.K, camera.D),
                                  Mount.from_xyz_rpy(0.0, 0.0, height), grid)
    truth = occupancy(projection.sample(scene.drivable_mask), projection.seen)
    x, _ = grid.centres()
    near = (x > 5) & (x < 30)
    road, free = near & (truth == FREE), near & (values == FREE)
    assert road.sum() > 1000 and (road & free).sum() / road.sum() > 0.8, "the road is drivable"
    assert (road & free).sum() / free.sum() > 0.8, "drivable cells are road"
    left_only = (x > 5) & projection.seen & ~GroundProjection(
        CameraCalibration.checked(camera.width, camera.height, camera.K, camera.D, roi=ROIS["right"]),
        Mount.from_xyz_rpy(0.0, 0.0, height), grid).seen
    assert (values[left_only] != -1).mean() > 0.9, "the left camera's (TF-placed) cells are known"

    cloud = lanes[-1][1]
    points = np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 3)
    assert len(points) > 50 and np.all(points[:, 2] == 0.0)
    rows, columns, inside = grid.cell_of(points[:, 0], points[:, 1])
    assert inside.all()
    truth_lanes = lane_points(projection, scene.lane_mask)
    lane_cells = np.zeros(grid.shape, np.uint8)
    r, c, _ = grid.cell_of(truth_lanes[:, 0], truth_lanes[:, 1])
    lane_cells[r, c] = 1
    lane_cells = cv2.dilate(lane_cells, np.ones((7, 7), np.uint8)).astype(bool)  # within 0.3 m
    assert lane_cells[rows, columns].mean() > 0.7, "lane points lie on the true lane lines"
    assert markers[-1][1].markers[0].action == Marker.DELETEALL
    assert any(m.ns == "lane_lines" and len(m.points) == len(points) for m in markers[-1][1].markers)

    statuses = ground_statuses()
    assert statuses["left"][2]["ground_source"] == "tf_static" and statuses["left"][2]["ground"] == "ok"
    assert statuses["right"][2]["ground_source"] == "mount parameter" and statuses["right"][2]["ground"] == "ok"
    level, message, values_bad = statuses["bad"]
    # WARN: "ground outputs stopped: ..." while its frames come, "no frames" once they have stopped.
    assert level == 1 and values_bad["ground"].startswith("stopped: bad CameraInfo") and "focal" in values_bad["ground"]
    assert int(values_bad["processed"]) >= 1, "the bad camera's image outputs go on"
    assert node.output().count("ground outputs of camera bad stop") == 1, "warned once"
    assert node.popen.poll() is None


#: Two cameras of a detection backend, each showing its own synthetic scene (seed: the camera's name), level at
#: that scene's height: every object the bundled yolopv2 finds at 320x192 in them stands at a true thing.
OBJECT_SCENES = {"cam7": 7, "cam9": 9}
OBJECT_SIZE, OBJECT_FRAMES = (640, 360), 3


def test_objects_of_a_detection_backend_stand_on_the_ground_where_the_true_things_are(start_node, probe):
    from vision_msgs.msg import Detection3DArray

    from panoptic_perception.core.labels import CITYSCAPES
    from panoptic_perception.evaluation.ground import match_gate, match_nearest
    from panoptic_perception.ros.bags import stamp_header
    from panoptic_perception.ros.conversions import bgr_to_image, camera_info_msg

    scenes = {name: generate_scene(seed, *OBJECT_SIZE) for name, seed in OBJECT_SCENES.items()}
    objects = probe.record(Detection3DArray, f"{NODE}/ground/objects")
    markers = probe.record(MarkerArray, f"{NODE}/ground/markers")
    diagnostics = probe.record(DiagnosticArray, "/diagnostics")
    node = start_node(**{"backend": "yolopv2", "input_size": "[320, 192]", "cameras": f"[{','.join(scenes)}]",
                         "qos_reliability": "reliable", "max_frame_age_ms": 0.0,
                         **{f"cameras.{name}.mount": f"[0.0,0.0,{scene.camera.height_above_ground},0.0,0.0,0.0]"
                            for name, scene in scenes.items()},
                         **{f"cameras.{name}.image_topic": f"/{name}/image_raw" for name in scenes},
                         **{f"cameras.{name}.camera_info_topic": f"/{name}/camera_info" for name in scenes}})
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {name: (probe.node.create_publisher(CameraInfo, f"/{name}/camera_info", reliable),
                         probe.node.create_publisher(Image, f"/{name}/image_raw", reliable)) for name in scenes}
    probe.wait_for(lambda: node.popen.poll() is not None
                   or all(p.get_subscription_count() for pair in publishers.values() for p in pair), 120,
                   "the node's camera subscriptions")
    probe.wait_for(lambda: node.popen.poll() is not None or (probe.node.count_publishers(f"{NODE}/ground/objects")
                                                              and probe.node.count_publishers(f"{NODE}/ground/markers")),
                   120, "the node's ground outputs")
    assert node.popen.poll() is None, node.output()

    sent: dict[int, str] = {}  # image stamp -> camera
    for _ in range(OBJECT_FRAMES):  # each pair answered before the next: no frame superseded
        pair = []
        for name, scene in scenes.items():
            header = stamp_header(probe.now_ns(), f"{name}_optical")
            camera = scene.camera
            info, image = publishers[name]
            info.publish(camera_info_msg(camera.width, camera.height, camera.K, camera.D, camera.distortion_model, header))
            image.publish(bgr_to_image(scene.image, header))
            sent[stamp_ns(header)] = name
            pair.append(stamp_ns(header))
        probe.wait_for(lambda: any(stamp_ns(m.header) in pair for _, m in list(objects)), 60, "the pair's objects")

    def marked_stamps() -> set[int]:
        return {stamp_ns(m.markers[0].header) for _, m in list(markers)}

    probe.wait_for(lambda: marked_stamps() >= {stamp_ns(m.header) for _, m in list(objects)}, 30,
                   "the markers of every objects message")

    with_both = 0
    for _, msg in list(objects):
        assert msg.header.frame_id == "base_link" and stamp_ns(msg.header) in sent
        by_camera: dict[str, list] = {}
        for detection in msg.detections:
            assert detection.header.frame_id == "base_link"
            by_camera.setdefault(detection.id.split("_optical:")[0], []).append(detection)
        with_both += set(by_camera) == set(scenes)
        for name, detections in by_camera.items():
            things = list(scenes[name].things.values())
            true_positions = np.array([[t.x, t.y] for t in things])
            hypotheses = [d.results[0] for d in detections]
            positions = np.array([[h.pose.pose.position.x, h.pose.pose.position.y] for h in hypotheses])
            assert all(h.pose.pose.position.z == 0.0 for h in hypotheses), "on the ground plane"
            classes = [int(h.hypothesis.class_id) for h in hypotheses]
            assert set(classes) <= set(CITYSCAPES.thing_ids) and all(0.3 <= h.hypothesis.score <= 1.0 for h in hypotheses)
            # The tolerance: the evaluation's gate, max(2 m, 20 % of the true range), same class.
            matches = match_nearest(positions, classes, true_positions, [t.class_id for t in things],
                                    match_gate(np.hypot(*true_positions.T)))
            assert len(matches) == len(detections), f"{name}: {positions.round(1).tolist()} vs {true_positions.round(1).tolist()}"
            # The position covariance grows with the range (the planar 2x2 block's trace).
            spread = [np.trace(np.reshape(h.pose.covariance, (6, 6))[:2, :2]) for h in hypotheses]
            order = np.argsort(np.hypot(*positions.T))
            assert np.all(np.diff(np.asarray(spread)[order]) > 0), "covariance grows with range"
            assert all(d.bbox.size.y > 0.2 and d.bbox.size.z > 0.5 for d in detections), "width and height in metres"
        # Its cubes are in a markers message of its stamp. Not necessarily the first one: a batch whose frames
        # are all older than the newest contribution republishes the fusion under that same newest stamp.
        centres = [(d.bbox.center.position.x, d.bbox.center.position.y) for d in msg.detections]
        assert any([(c.pose.position.x, c.pose.position.y) for c in marked.markers if c.ns == "objects"] == centres
                   for _, marked in list(markers) if stamp_ns(marked.markers[0].header) == stamp_ns(msg.header))
    assert with_both >= 1 and sum(len(m.detections) for _, m in objects) >= 7, "both cameras' objects"

    # The ground step's cost in the diagnostics: per batch (node) and per frame placed (each camera).
    def ground_times():
        if not diagnostics:
            return None
        msg = diagnostics[-1][1]
        node_values = {kv.key: kv.value for kv in msg.status[0].values}
        times = [float(node_values["ground_per_batch_median_ms"]),
                 *(float(values["ground_median_ms"]) for _, _, values in camera_statuses(msg).values())]
        return times if len(times) == 1 + len(scenes) and all(np.isfinite(times)) else None

    probe.wait_for(lambda: ground_times() is not None, 30, "the ground step's times in /diagnostics")
    assert all(0 < t < 5000 for t in ground_times())
    assert node.popen.poll() is None
