"""Replaying recorded drives: offline through a backend, or live into the running node.

Offline (:func:`replay_offline`): every frame of the bag, in order, through the backend, as fast as it
runs; the output MCAP bag holds the input frames as recorded and every perception topic the node
would publish (same message types, same names under ``/panoptic_perception``, the frame's original
header and log time), so it plays back in RViz or Foxglove. Deterministic. Of several image topics
(cameras) each camera's outputs are on ``/panoptic_perception/<camera>/<topic>``, the multi-camera
node's ``~/<camera>/<topic>`` (``~/label_info`` once), and the evaluation is given per camera too.
Where the bag has a camera's ``sensor_msgs/CameraInfo`` beside its image topic (``/front/image_raw`` →
``/front/camera_info``, as drivers and ``make-bag --camera-info`` write it), the output also holds the
node's ground-plane topics ``/panoptic_perception/ground/*``, built by the node's own
:class:`~.ground.GroundOutputs` with its default parameters (grid, ``target_frame`` ``base_link``, fusion of
the cameras' newest frames within the default ``max_frame_age_ms``), after each frame and stamped with the
newest contributing frame's stamp. A camera's mount is ``mounts``' (``--mount``), else the bag's
``/tf_static`` from ``target_frame`` to the image's frame_id, each given as recorded up to the frame.

Live (:func:`replay_live`): the frames are published to the running node at the recorded rate (times
``rate``), re-stamped with the time of publishing — a node drops frames older than
``max_frame_age_ms``, so the original stamps would all be stale — and the node's outputs are recorded,
matched to the frames by stamp, timed (end-to-end latency: result received minus publish stamp) and
scored against the bag's ground truth. Frames the node never answers count as dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from rclpy.serialization import deserialize_message, serialize_message
from tqdm import tqdm

from ..backends.base import Backend
from ..core.failures import FrameFailures, Stage
from ..core.ground import CalibrationError, parse_mount
from ..core.messages import result_from_messages
from ..core.types import Capability, PerceptionResult
from ..data.rosbag import NODE_OUTPUTS, BagDataset
from ..data.sample import Sample
from ..errors import ConfigurationError
from ..evaluation.cameras import camera_of_frame, evaluator_for
from ..evaluation.evaluator import Evaluator
from ..evaluation.loop import run_frames
from .bags import BagWriter, ros_type_name, stamp_header
from .conversions import label_info_msg, perception_messages
from .ground import GroundOutputs
from .parameters import PARAMETERS
from .topics import CAPABILITY_TOPICS, camera_info_topic, ground_topics_of

NODE = NODE_OUTPUTS
logger = logging.getLogger(__name__)


def output_topic(topic: str, camera: str | None = None) -> str:
    """The node's output ``topic`` (``result``, ``label_info``, ...) as a topic name: ``/panoptic_perception/<topic>``,
    or, of ``camera``, ``/panoptic_perception/<camera>/<topic>`` (the multi-camera node's ``~/<camera>/<topic>``)."""
    return f"{NODE}/{topic}" if camera is None else f"{NODE}/{camera}/{topic}"


def parse_mounts(texts: Sequence[str]) -> dict[str, list[float]]:
    """``--mount`` values, each ``X,Y,Z,ROLL,PITCH,YAW`` (every camera) or ``CAMERA=X,Y,Z,ROLL,PITCH,YAW`` (the
    camera of the bag's ``/CAMERA/...`` image topic) → camera (``""``: every camera) → the six numbers.
    Raises ConfigurationError naming the form for a malformed or repeated one."""
    mounts: dict[str, list[float]] = {}
    for text in texts:
        camera, _, values = text.rpartition("=")
        try:
            parse_mount(values)
        except CalibrationError as error:
            raise ConfigurationError(f"--mount takes [CAMERA=]X,Y,Z,ROLL,PITCH,YAW: {error}") from None
        if camera in mounts:
            raise ConfigurationError(f"--mount given twice for {camera or 'every camera'}")
        mounts[camera] = [float(v) for v in values.split(",")]
    return mounts


class _ReplayGround:
    """The ground-plane outputs of an offline replay (module docstring): the bag's CameraInfo and
    ``/tf_static`` messages, given to :class:`~.ground.GroundOutputs` in recording order up to each frame."""

    def __init__(self, dataset: BagDataset, backend: Backend, mounts: dict[str, list[float]]) -> None:
        from sensor_msgs.msg import CameraInfo

        info_topics = {camera_info_topic(topic): camera for topic, camera in zip(dataset.image_topics, dataset.cameras)
                       if camera_info_topic(topic) in dataset.topics}
        unknown = mounts.keys() - {"", *dataset.cameras}
        if unknown:
            raise ConfigurationError(f"--mount names a camera the replay does not read: {', '.join(sorted(unknown))} "
                                     f"(cameras: {', '.join(dataset.cameras)})")
        if mounts and not info_topics:
            raise ConfigurationError(f"--mount places cameras on the ground, which needs their CameraInfo: {dataset.path} has "
                                     f"none beside its image topics ({', '.join(camera_info_topic(t) for t in dataset.image_topics)})")
        self.enabled = bool(info_topics) and bool(ground_topics_of(backend.capabilities))
        if not self.enabled:
            return
        self.wanted = {topic.name for topic in ground_topics_of(backend.capabilities)}
        settings = {spec.name: spec.default for spec in PARAMETERS}
        self.max_age_ns = int(settings["max_frame_age_ms"] * 1e6)
        self.outputs = GroundOutputs(None, settings, {camera: mounts.get(camera, mounts.get("", []))
                                                      for camera in dataset.cameras}, warn=logger.warning)
        self._types = {topic: CameraInfo for topic in info_topics}
        self._info_camera = info_topics
        if "/tf_static" in dataset.topics:
            from tf2_msgs.msg import TFMessage

            self._types["/tf_static"] = TFMessage
        self._recorded = dataset.raw_messages(set(self._types))
        self._next = next(self._recorded, None)

    def messages(self, camera: str, log_time_ns: int, header, result, label_map) -> dict[str, Any]:
        """The fused ground messages after camera ``camera``'s frame (``header``, its ``result``) logged at
        ``log_time_ns``, by topic (``ground/drivable``, ...); empty when the frame does not contribute."""
        while self._next is not None and self._next[1] <= log_time_ns:
            topic, _, raw = self._next
            msg = deserialize_message(raw, self._types[topic])
            if topic == "/tf_static":
                self.outputs.add_static_transforms(msg.transforms)
            else:
                self.outputs.cameras[self._info_camera[topic]].infos.append(msg)
            self._next = next(self._recorded, None)
        if not self.outputs.update(camera, header, result, label_map, self.wanted):
            return {}
        return self.outputs.messages(self.wanted, self.max_age_ns)

    def summary(self) -> dict:
        """Camera → where its mount comes from and its ground status (ok or why its ground outputs stop)."""
        return {name: {"source": camera.source, "status": camera.status} for name, camera in self.outputs.cameras.items()}


def replay_offline(
    bag: str | Path, backend: Backend, output: str | Path, image_topic: str | Sequence[str] | None = None,
    overlay: bool = False, progress: bool = True, mounts: dict[str, list[float]] | None = None,
) -> dict:
    """Run ``backend`` on every frame of ``bag``; write ``output`` (MCAP); return the evaluation.

    ``image_topic``: the bag's image topic or topics to replay, None for all
    (:class:`~panoptic_perception.data.rosbag.BagDataset`). The frames go through
    :func:`~panoptic_perception.evaluation.loop.run_frames` (the first call a warm-up, left out of the
    latency): a frame that fails (its message does not deserialize or its image cannot be decoded, the
    backend raises, its messages cannot be built, written or scored) is reported on stderr and skipped;
    its input frame stays in the output bag. The summary's ``failed`` lists those frames. Of several
    cameras, each frame's outputs go to its camera's topics (:func:`output_topic`) and the summary has
    ``cameras``: camera → its own evaluation. Where the bag has CameraInfo (module docstring) the ground
    topics are written too and the summary's ``ground`` gives each camera's mount source and ground status;
    ``mounts``: :func:`parse_mounts`' result. Raises ConfigurationError for ``mounts`` of a camera not read
    or of a bag without CameraInfo.
    """
    failures = FrameFailures()
    dataset = BagDataset(bag, image_topic)
    ground = _ReplayGround(dataset, backend, mounts or {})
    topics = {CAPABILITY_TOPICS[c].name for c in backend.capabilities} | {"result"} | ({"overlay"} if overlay else set())
    evaluator = evaluator_for(backend.label_map, backend.capabilities, dataset.cameras)
    log_times: dict[str, int] = {}  # frame name → its log time in the bag, which its outputs keep
    with BagWriter(output, "mcap") as writer:

        def recorded_samples() -> Iterator[Sample]:
            """The bag's samples, each written to the output bag as recorded (label info before the first)."""
            for index, frame in enumerate(dataset.frames()):
                writer.write(frame.topic, frame.log_time_ns, raw=frame.raw, msgtype=frame.msgtype)
                if index == 0:  # no header stamp where the message does not deserialize: label_info takes the log time
                    sample = frame.sample
                    header = stamp_header(frame.log_time_ns if sample.stamp_ns is None else sample.stamp_ns, sample.frame_id)
                    writer.write(output_topic("label_info"), frame.log_time_ns,
                                 label_info_msg(backend.label_map, backend.applied_thresholds().get("score", 0.0), header))
                log_times[frame.sample.name] = frame.log_time_ns
                yield frame.sample

        def write_outputs(sample: Sample, result: PerceptionResult, stage: Stage) -> None:
            stage.name = "messages"  # all serialized before any is written: a frame's topics are written whole
            header = stamp_header(sample.stamp_ns, sample.frame_id)
            camera = camera_of_frame(sample.name)
            messages = [(output_topic(topic, camera), ros_type_name(msg), serialize_message(msg))
                        for topic, msg in perception_messages(result, header, sample.image, backend.label_map, topics).items()]
            if ground.enabled:
                stage.name = "ground"
                fused = ground.messages(camera or dataset.cameras[0], log_times[sample.name], header, result, backend.label_map)
                messages += [(output_topic(topic), ros_type_name(msg), serialize_message(msg)) for topic, msg in fused.items()]
            stage.name = "writing"
            for topic, msgtype, raw in messages:
                writer.write(topic, log_times[sample.name], raw=raw, msgtype=msgtype)

        run_frames(backend, recorded_samples(), failures, evaluator, on_result=write_outputs, progress=progress,
                   description="replay", total=len(dataset))
    return {"bag": str(bag), "output": str(output), "failed": failures.to_list(), "messages_written": writer.messages,
            **({"ground": ground.summary()} if ground.enabled else {}), **evaluator.compute(), "frames_detail": evaluator.frames}


class _LiveRecorder:
    """Receives the node's outputs (on the executor's thread) and scores them as they come."""

    def __init__(self, node, writer: BagWriter, evaluator: Evaluator, capabilities: set[Capability],
                 failures: FrameFailures) -> None:
        from panoptic_perception.msg import DrivingPerception

        self.node, self.writer, self.evaluator, self.failures = node, writer, evaluator, failures
        self.capabilities = capabilities
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[str, object, float]] = {}  # publish stamp → (frame, truth, publish time)
        self.latencies: list[float] = []
        self.answered = 0
        node.create_subscription(DrivingPerception, f"{NODE}/result", self.on_result, 10)

    def expect(self, stamp_ns: int, name: str, truth) -> None:
        with self.lock:
            self.pending[stamp_ns] = (name, truth, time.monotonic())

    def on_result(self, msg) -> None:
        received = self.node.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.writer.write(f"{NODE}/result", received, msg)
            frame = self.pending.pop(stamp, None)
        if frame is None:
            return
        name, truth, _ = frame
        latency = (received - stamp) / 1e6
        self.latencies.append(latency)
        self.answered += 1
        # On the executor's thread: an exception here would end the executor and lose every later answer.
        with self.failures.frame(name, "scoring"):
            width = msg.drivable_area.width or msg.lane_lines.width or msg.semantic.width or msg.panoptic.panoptic.width
            height = msg.drivable_area.height or msg.lane_lines.height or msg.semantic.height or msg.panoptic.panoptic.height
            result = result_from_messages(
                (width, height), msg.backend, msg.drivable_area, msg.lane_lines, msg.semantic, msg.panoptic,
                msg.detections if Capability.DETECTION in self.capabilities else None,
            )
            self.evaluator.add(name, result, truth, latency)

    def forget_older_than(self, seconds: float) -> None:
        """Frames unanswered for ``seconds`` were dropped by the node (superseded or stale)."""
        horizon = time.monotonic() - seconds
        with self.lock:
            for stamp in [s for s, (_, _, t) in self.pending.items() if t < horizon]:
                del self.pending[stamp]


def replay_live(
    bag: str | Path, output: str | Path, rate: float = 1.0, image_topic: str | Sequence[str] | None = None,
    publish_topic: str | None = None,
    reliable: bool = False, result_timeout_s: float = 5.0, discovery_timeout_s: float = 30.0, progress: bool = True,
) -> dict:
    """Play ``bag`` into the running node; record its outputs to ``output``; report latency, drops, accuracy.

    A frame that cannot be published (its recorded message does not deserialize) or whose answer cannot
    be scored is reported and listed in the summary's ``failed``; the replay goes on.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image
    from vision_msgs.msg import LabelInfo

    if rate <= 0:
        raise ConfigurationError(f"rate must be positive, got {rate}")
    dataset = BagDataset(bag, image_topic)
    if len(dataset.image_topics) > 1:
        raise ConfigurationError(f"live replay plays one camera into the node: choose it with --image-topic among "
                                 f"{', '.join(dataset.image_topics)}")
    publish_topic = publish_topic or dataset.image_topic
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("panoptic_perception_replay", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + discovery_timeout_s
        while node.count_publishers(f"{NODE}/result") == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {NODE} node found (no publisher of {NODE}/result): start the node first")
            time.sleep(0.1)
        capabilities = {c for c, topic in CAPABILITY_TOPICS.items() if node.count_publishers(f"{NODE}/{topic.name}") > 0}
        label_map = _label_map(node, LabelInfo, deadline)
        evaluator = Evaluator(label_map, capabilities)
        failures = FrameFailures()
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        with BagWriter(output, "mcap") as writer:
            recorder = _LiveRecorder(node, writer, evaluator, capabilities, failures)
            publisher = None
            sent, first_log, started = 0, None, time.monotonic()
            for frame in tqdm(dataset.frames(), total=len(dataset), disable=not progress, desc="live replay"):
                msg_type = CompressedImage if frame.msgtype.endswith("CompressedImage") else Image
                if publisher is None:
                    publisher = node.create_publisher(msg_type, publish_topic, QoSProfile(depth=10, reliability=reliability))
                    while publisher.get_subscription_count() == 0:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"nobody subscribes to {publish_topic}: is the node listening there?")
                        time.sleep(0.05)
                    if not reliable:  # matched is not yet ready: the first best-effort frames could be lost
                        time.sleep(0.5)
                    first_log, started = frame.log_time_ns, time.monotonic()
                time.sleep(max(0.0, started + (frame.log_time_ns - first_log) / 1e9 / rate - time.monotonic()))
                with failures.frame(frame.sample.name, "publishing"):
                    msg = deserialize_message(frame.raw, msg_type)
                    stamp = node.get_clock().now().nanoseconds
                    msg.header.stamp = stamp_header(stamp, msg.header.frame_id).stamp
                    recorder.expect(stamp, frame.sample.name, frame.sample.truth)
                    with recorder.lock:
                        writer.write(publish_topic, stamp, msg)
                    publisher.publish(msg)
                    sent += 1
                recorder.forget_older_than(result_timeout_s)
            end = time.monotonic() + result_timeout_s
            while recorder.pending and time.monotonic() < end:
                time.sleep(0.05)
        metrics = evaluator.compute() if recorder.answered else {}
        return {
            "bag": str(bag), "output": str(output), "frames_sent": sent, "frames_answered": recorder.answered,
            "drop_rate": 1 - recorder.answered / sent if sent else 0.0, "failed": failures.to_list(), **metrics,
            "frames_detail": evaluator.frames,
        }
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


def _label_map(node, label_info_type, deadline: float):
    """The node's label map, from its transient-local ``~/label_info``."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from ..core.labels import LabelClass, LabelMap

    received = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    subscription = node.create_subscription(label_info_type, f"{NODE}/label_info", received.append, qos)
    while not received:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {NODE}/label_info received")
        time.sleep(0.05)
    node.destroy_subscription(subscription)
    return LabelMap("node", tuple(LabelClass(c.class_id, c.class_name, (255, 255, 0)) for c in received[0].class_map))
