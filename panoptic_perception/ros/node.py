"""The perception node: camera frames in, detections / masks / panoptic images out, for any backend.

A ``rclpy.lifecycle`` managed node named ``panoptic_perception``:

- configure: loads and warms up the backend, creates the (lifecycle) publishers, only for outputs the
  backend can produce; activate: subscribes to the cameras, starts the inference worker and enables the
  publishers; deactivate: stops all three (nothing is published after it); cleanup: frees the model. With
  ``autostart`` (default) it configures and activates itself.
- Cameras: with ``cameras`` empty, one camera on ``image`` (or ``image/compressed``), outputs under
  ``~/``; otherwise one subscription per named camera (``cameras.<name>.*`` parameters) and its outputs
  under ``~/<name>/``, each message with its own camera's header; ``~/label_info`` once for the node.
- The subscription callbacks only store each camera's newest frame (:class:`CameraFrames`); one worker
  thread takes the fresh frames of all cameras as one batch (``batch_policy``, ``max_batch``), runs them
  through the backend in one forward pass and publishes per camera, dropping frames older than
  ``max_frame_age_ms``. Nothing queues up, so latency stays bounded when the backend is slower than the
  cameras; a silent, slow or broken camera never delays the others.
- The worker never dies silently: a fault in one batch (building or publishing messages, a backend that
  fails on a frame, which then runs alone so that the rest of the batch goes on) is counted, logged once
  per kind and shown in ``/diagnostics``, and the next batch goes on. A backend reload runs on the worker
  while the executor goes on (diagnostics, services); frames arriving meanwhile are dropped and counted.
- Outputs nobody subscribes to are not built. ``/diagnostics`` reports, at 1 Hz, one status for the node
  (rates, latency, stage timings, batch sizes, backend and ground-step time per batch, drops, faults) and, with named
  cameras, one per camera (input and output rate, latency, drops by reason, rejects, last frame age).

Parameters are described in :mod:`panoptic_perception.ros.parameters`.
"""

from __future__ import annotations

import collections
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import InvalidTopicNameException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.expand_topic_name import expand_topic_name
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rclpy.validate_full_topic_name import validate_full_topic_name
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from ..backends import Backend
from ..backends.base import parse_options, resolve_device
from ..core.memory import memory_values, release_freed_memory
from ..core.messages import RejectedImage, check_image_msg, compressed_to_bgr, image_to_bgr
from ..core.streaming import Batch, BatchPolicy, CameraFrames, FrameCounters, RateMeter, RollingSamples, WorkerThread
from ..factory import create_backend
from .conversions import label_info_msg, message_class, perception_messages
from .ground import GroundOutputs
from .parameters import (
    CAMERA_PARAMETERS,
    PARAMETERS,
    THRESHOLD_PARAMETERS,
    OnChange,
    check_mount,
    check_values,
    given_thresholds,
)
from .topics import ground_topics_of, topics_of

NODE_NAME = "panoptic_perception"
RELOAD_PARAMETERS = frozenset(spec.name for spec in PARAMETERS if spec.on_change is OnChange.RELOAD)
BATCH_PARAMETERS = frozenset({"batch_policy", "max_batch", "sync_tolerance_ms", "sync_timeout_ms"})
WARMUP_SIZE = (640, 360)
NO_INPUT_WARNING_S = 5.0


#: Outputs: reliable (matches reliable and best-effort subscribers), volatile, only the newest kept.
OUTPUT_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=2,
                        durability=DurabilityPolicy.VOLATILE)
LABEL_INFO_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _descriptor(spec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.on_change is OnChange.READ_ONLY)
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(c or '(empty)' for c in spec.choices)}"
    if spec.minimum is not None:
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum))]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    return descriptor


def _empty_array_type(spec) -> Parameter.Type:
    """The declared type of a list parameter whose default is empty (an empty list cannot say its type)."""
    return Parameter.Type.DOUBLE_ARRAY if spec.element is float else Parameter.Type.STRING_ARRAY


def batch_policy(settings: dict[str, Any]) -> BatchPolicy:
    """The :class:`BatchPolicy` the node's parameters describe."""
    return BatchPolicy(settings["batch_policy"], settings["max_batch"], settings["sync_tolerance_ms"] / 1e3,
                       settings["sync_timeout_ms"] / 1e3)


@dataclass
class CameraInput:
    """One camera the node serves: where its frames come from, its outputs and what happened to its frames.

    ``name`` is "" for the single-camera node (``cameras`` empty): topic ``image``, outputs under ``~/``.
    ``mount``: its fixed mount parameter ([x, y, z, roll, pitch, yaw]; empty: TF).
    """

    name: str
    image_topic: str
    transport: str
    camera_info_topic: str = ""
    mount: list[float] = field(default_factory=list)
    counters: FrameCounters = field(default_factory=FrameCounters)
    window_start: FrameCounters = field(default_factory=FrameCounters)  # the counters at the last status
    input_rate: RateMeter = field(default_factory=RateMeter)
    output_rate: RateMeter = field(default_factory=RateMeter)
    latency: RollingSamples = field(default_factory=RollingSamples)
    last_frame: float | None = None  # time.monotonic() of the last frame received
    publishers: dict[str, Any] = field(default_factory=dict)
    subscription: Any = None
    info_subscription: Any = None

    def output(self, topic: str) -> str:
        return f"~/{self.name}/{topic}" if self.name else f"~/{topic}"


class PerceptionNode(LifecycleNode):
    #: How often the node hands freed heap pages back to the system (glibc ``malloc_trim``, 0.2 ms when little
    #: is free, ~20 ms for 200 MB), so that its resident memory follows the heap in use after a burst (subscribers
    #: that come and go, a batch of dense frames) and not the burst's peak. It did not lower the 1-hour soak's
    #: level between faults (anon pages less the heap in use: 260-280 MB with it and without): what grew there is
    #: not malloc's free chunks.
    memory_release_period_s: float = 10.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.settings: dict[str, Any] = {}
        for spec in PARAMETERS:
            # An empty list cannot say its type: the cameras list is declared as a string array, unset by default.
            value = _empty_array_type(spec) if spec.default == [] else spec.default
            declared = self.declare_parameter(spec.name, value, _descriptor(spec))
            self.settings[spec.name] = spec.default if declared.type_ == Parameter.Type.NOT_SET else declared.value
        self.settings["cameras"] = list(self.settings["cameras"])
        check_values(self.settings)
        self.cameras = self._declare_cameras()
        self.ground = GroundOutputs(self, self.settings, {name: camera.mount for name, camera in self.cameras.items()})
        self._ground_publishers: dict[str, Any] = {}
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Every torch computation (building, warming up, inference) runs on this one thread.
        self._worker: WorkerThread[tuple[Any, Time]] = WorkerThread(
            self._process_batch, CameraFrames(batch_policy(self.settings)), name="inference", on_fault=self._worker_fault)
        self._worker.call(self._apply_threads, self.settings["threads"])

        self.backend: Backend | None = None
        self.backend_error: str | None = None
        self._backend_lock = threading.Lock()  # swapped by a reload while the worker runs
        self._reloading: dict[str, Any] | None = None  # the settings of a reload in progress
        self._reload_error = ""
        self._label_info_publisher = None
        self._active = False
        self._logged_causes: set[str] = set()
        self._reject_lock = threading.Lock()
        self._last_backend_error = ""
        self._last_input = time.monotonic()

        self.counters = FrameCounters()  # all cameras together
        self._window_start = FrameCounters()
        self._faults: collections.Counter[str] = collections.Counter()
        self._faults_window_start: collections.Counter[str] = collections.Counter()
        self._last_fault = ""
        self._input_rate = RateMeter()
        self._output_rate = RateMeter()
        self._latency = RollingSamples()
        self._overhead = RollingSamples()
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._batch_ms = RollingSamples()  # the backend's time per batch
        self._ground_ms = RollingSamples()  # the ground step's time per batch (every camera placed, fused, built)
        self._stages = {name: RollingSamples() for name in ("preprocess_ms", "inference_ms", "postprocess_ms")}
        # The node's own stages around the backend: waiting for the worker, decoding, publishing.
        self._node_stages = {name: RollingSamples() for name in ("queue_wait_ms", "decode_ms", "publish_ms")}

        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(self.memory_release_period_s, release_freed_memory)

    def _declare_cameras(self) -> dict[str, CameraInput]:
        """The cameras of the ``cameras`` parameter, each from its ``cameras.<name>.*`` parameters; the one
        unnamed camera of the single-camera node when it is empty."""
        if not self.settings["cameras"]:
            return {"": CameraInput("", "image", self.settings["input_transport"], "camera_info", list(self.settings["mount"]))}
        cameras = {}
        for name in self.settings["cameras"]:
            values = {}
            for spec in CAMERA_PARAMETERS:
                default = spec.default.format(name=name) if isinstance(spec.default, str) else spec.default
                declared = self.declare_parameter(f"cameras.{name}.{spec.name}",
                                                  _empty_array_type(spec) if default == [] else default, _descriptor(spec))
                values[spec.name] = default if declared.type_ == Parameter.Type.NOT_SET else declared.value
                if spec.choices and values[spec.name] not in spec.choices:
                    raise ValueError(f"cameras.{name}.{spec.name} must be one of "
                                     f"{', '.join(repr(c) for c in spec.choices)}, got {values[spec.name]!r}")
                if spec.name.endswith("_topic") and values[spec.name]:
                    try:
                        validate_full_topic_name(expand_topic_name(values[spec.name], self.get_name(), self.get_namespace()))
                    except (InvalidTopicNameException, ValueError) as error:
                        raise ValueError(f"cameras.{name}.{spec.name}: {str(error).splitlines()[0]}") from None
            check_mount(f"cameras.{name}.mount", values["mount"])
            cameras[name] = CameraInput(name, values["image_topic"], values["transport"] or self.settings["input_transport"],
                                        values["camera_info_topic"], list(values["mount"]))
        return cameras

    # -- parameters --------------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        # Values equal to the settings change nothing (a failed reload sets its parameters back that way).
        changes = {p.name: p.value for p in parameters if p.name in self.settings and p.value != self.settings[p.name]}
        try:
            if not self._worker.alive:
                raise RuntimeError(f"the inference worker has stopped ({self._worker.ended_by or 'unknown cause'}): "
                                   "restart the node")
            merged = {**self.settings, **changes}
            check_values(merged)
            reload = self.backend is not None and bool(RELOAD_PARAMETERS & changes.keys())
            if reload:
                self._check_reload(merged)
            elif self.backend is not None and THRESHOLD_PARAMETERS.keys() & changes.keys():
                self._apply_thresholds(self.backend, merged)
                self._publish_label_info()  # its threshold is the score threshold
            if BATCH_PARAMETERS & changes.keys():
                self._worker.frames.policy = batch_policy(merged)
            if "threads" in changes:  # submitted, not awaited: a reload may hold the worker for minutes
                self._worker.submit(self._apply_threads, changes["threads"])
            if reload:
                self._start_reload(merged, {name: self.settings[name] for name in RELOAD_PARAMETERS})
            self.settings.update(changes)
        except Exception as error:  # any failure leaves the node as it was
            reason = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
            self.get_logger().warning(f"rejected parameter change {changes}: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    @staticmethod
    def _apply_threads(threads: int) -> None:
        if threads > 0:
            torch.set_num_threads(threads)

    # -- backend -----------------------------------------------------------------------------------
    def _build_backend(self, settings: dict[str, Any]) -> Backend:
        size = tuple(settings["input_size"])
        backend = create_backend(
            settings["backend"],
            settings["weights"] or None,
            settings["device"],
            fast=settings["fast"],
            input_size=size if all(size) else None,
            runtime=settings["runtime"],
            onnx_path=settings["onnx_path"] or None,
            precision=settings["precision"],
            calibration=settings["calibration"] or None,
            **parse_options([settings["backend_options"]]),
        )
        self._apply_thresholds(backend, settings)
        # Warm-up: the first call allocates memory and selects kernels; do it before frames arrive.
        backend(np.zeros((WARMUP_SIZE[1], WARMUP_SIZE[0], 3), np.uint8))
        return backend

    def _check_reload(self, settings: dict[str, Any]) -> None:
        """What can be checked of a reload at once: no other reload runs, the device is available, the weights
        file exists. Raises ValueError (and ConfigurationError) naming the problem."""
        if self._reloading is not None:
            raise ValueError("a backend reload is in progress; change the parameters again when it has finished")
        resolve_device(settings["device"])
        if settings["weights"] and not Path(settings["weights"]).is_file():
            raise ValueError(f"weights file not found: {settings['weights']}")

    def _start_reload(self, settings: dict[str, Any], previous: dict[str, Any]) -> None:
        """Build the backend of ``settings`` on the worker, without waiting (a TensorRT engine may take
        minutes): the executor goes on, the old backend runs until the new one is ready, and frames arriving
        meanwhile wait and are dropped (superseded, stale). The outcome is handled on the executor thread,
        after the parameter callback has returned (:meth:`_finish_reload`); ``previous``: the reload
        parameters before the change, set back if the build fails."""
        future = self._worker.submit(self._build_backend, dict(settings))
        self._reloading, self._reload_error = dict(settings), ""
        self.get_logger().info(f"reloading the backend ({settings['backend']}); the old one runs until it is ready")

        def on_executor(_future) -> None:  # a one-shot timer: runs after the parameter callback has returned
            timer = self.create_timer(0.0, lambda: (self.destroy_timer(timer), self._finish_reload(future, previous)))

        future.add_done_callback(on_executor)

    def _finish_reload(self, future, previous: dict[str, Any]) -> None:
        """Swap in the new backend, or keep the old one, say why and set the parameters back."""
        self._reloading = None
        error = future.exception()
        if error is None:
            backend = future.result()
            self._apply_thresholds(backend, self.settings)  # thresholds changed while it was being built
            self._swap_backend(backend)
            self.get_logger().info(f"reloaded backend: {self.backend.describe()}")
            return
        self._reload_error = f"{type(error).__name__}: {error}"
        self.get_logger().error(f"backend reload failed, the previous backend runs on: {self._reload_error}")
        self.settings.update(previous)  # what runs; setting the parameters to equal values then changes nothing
        self.set_parameters([Parameter(name, value=value) for name, value in previous.items()])

    @staticmethod
    def _apply_thresholds(backend: Backend, settings: dict[str, Any]) -> None:
        """The thresholds the parameters set, the backend's own defaults for the others (also for a parameter
        set back to "the backend's default"). Raises ValueError for a value out of a threshold's range."""
        backend.set_thresholds(**{**asdict(backend.default_thresholds), **given_thresholds(settings)})

    def _swap_backend(self, backend: Backend) -> None:
        capabilities_changed = self.backend is None or backend.capabilities != self.backend.capabilities
        with self._backend_lock:
            old, self.backend = self.backend, backend
        self.backend_error = None
        if capabilities_changed and self._label_info_publisher is not None:
            self._between_batches(self._recreate_publishers)
        self._publish_label_info()
        del old
        self._between_batches(self._free_memory)  # after the batch that may still hold the old backend

    # -- publishers --------------------------------------------------------------------------------
    def _create_publishers(self) -> None:
        """Lifecycle publishers of the backend's outputs for every camera, and ~/label_info; enabled at
        once when the node is active (a reload that changes the outputs), else by activate."""
        publishers = []
        for camera in self.cameras.values():
            for topic in topics_of(self.backend.capabilities):
                camera.publishers[topic.name] = self.create_lifecycle_publisher(
                    message_class(topic.msg_type), camera.output(topic.name), OUTPUT_QOS,
                    event_callbacks=PublisherEventCallbacks(incompatible_qos=self._incompatible_publisher_qos(topic.name)),
                )
                publishers.append(camera.publishers[topic.name])
        for topic in ground_topics_of(self.backend.capabilities):
            self._ground_publishers[topic.name] = self.create_lifecycle_publisher(
                message_class(topic.msg_type), f"~/{topic.name}", OUTPUT_QOS,
                event_callbacks=PublisherEventCallbacks(incompatible_qos=self._incompatible_publisher_qos(topic.name)),
            )
            publishers.append(self._ground_publishers[topic.name])
        self._label_info_publisher = self.create_lifecycle_publisher(LabelInfo, "~/label_info", LABEL_INFO_QOS)
        publishers.append(self._label_info_publisher)
        if self._active:
            for publisher in publishers:
                publisher.on_activate(None)

    def _recreate_publishers(self) -> None:
        self._destroy_publishers()
        self._create_publishers()

    def _between_batches(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the worker between two batches (directly once the worker has ended): publishers
        are replaced or destroyed only while no batch is publishing on them."""
        if self._worker.alive:
            self._worker.call(function)
        else:
            function()

    def _destroy_publishers(self) -> None:
        for camera in self.cameras.values():
            for publisher in camera.publishers.values():
                self.destroy_lifecycle_publisher(publisher)
            camera.publishers.clear()
        for publisher in self._ground_publishers.values():
            self.destroy_lifecycle_publisher(publisher)
        self._ground_publishers.clear()
        if self._label_info_publisher is not None:
            self.destroy_lifecycle_publisher(self._label_info_publisher)
            self._label_info_publisher = None

    def _publish_label_info(self) -> None:
        if self._label_info_publisher is not None and self.backend is not None:
            header = Header(stamp=self.get_clock().now().to_msg())
            self._label_info_publisher.publish(
                label_info_msg(self.backend.label_map, self.backend.applied_thresholds().get("score", 0.0), header)
            )

    def _incompatible_publisher_qos(self, topic: str):
        def warn(event) -> None:
            self.get_logger().warning(
                f"a subscriber of ~/{topic} requests QoS this node does not offer (policy "
                f"{event.last_policy_kind.name}); the node offers reliable, volatile, keep-last: change the "
                "subscriber (e.g. durability volatile)"
            )

        return warn

    def _incompatible_input_qos(self, camera: CameraInput):
        def warn(event) -> None:
            reliability = self.settings["qos_reliability"]
            advice = (
                "the camera publishes best-effort: set this node's parameter qos_reliability:=best_effort "
                "(or make the publisher reliable)"
                if reliability == "reliable"
                else "change the publisher's QoS to match the node's subscription"
            )
            self.get_logger().warning(
                f"incompatible QoS with a publisher of {camera.subscription.topic_name} (policy "
                f"{event.last_policy_kind.name}); the node requests reliability={reliability}, "
                f"depth={self.settings['qos_depth']}: {advice}"
            )

        return warn

    # -- lifecycle ---------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.backend = self._worker.call(self._build_backend, self.settings)
        except Exception as error:
            self.backend_error = f"{type(error).__name__}: {error}"
            self.get_logger().error(f"cannot load the backend: {self.backend_error}")
            return TransitionCallbackReturn.FAILURE
        self.backend_error = None
        self._create_publishers()
        self.get_logger().info(f"configured: {self.backend.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        if not self._worker.alive:
            self.get_logger().error(f"cannot activate: the inference worker has stopped ({self._worker.ended_by}); "
                                    "restart the node")
            return TransitionCallbackReturn.FAILURE
        try:
            self._subscribe(state)
        except Exception as error:  # e.g. a topic name rclpy refuses
            self._stop()
            self.get_logger().error(f"cannot activate: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        self._active = True
        self._last_input = time.monotonic()
        self._worker.enable_frames(True)
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._publish_label_info()
        topics = ", ".join(camera.subscription.topic_name for camera in self.cameras.values())
        self.get_logger().info(f"active: subscribed to {topics}")
        return result

    def _subscribe(self, state: State) -> None:
        """One subscription per camera (and its camera info)."""
        reliability = ReliabilityPolicy.BEST_EFFORT if self.settings["qos_reliability"] == "best_effort" else ReliabilityPolicy.RELIABLE
        qos = QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=self.settings["qos_depth"],
                         durability=DurabilityPolicy.VOLATILE)
        for camera in self.cameras.values():
            compressed = camera.transport == "compressed"
            camera.subscription = self.create_subscription(
                CompressedImage if compressed else Image,
                f"{camera.image_topic}/compressed" if compressed else camera.image_topic,
                lambda msg, camera=camera: self._on_image(msg, camera),
                qos,
                event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._incompatible_input_qos(camera)),
            )
            if camera.camera_info_topic:
                camera.info_subscription = self.create_subscription(
                    CameraInfo, camera.camera_info_topic, lambda msg, infos=self.ground.cameras[camera.name].infos: infos.append(msg),
                    qos)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._between_batches(self._destroy_publishers)  # a batch still in flight after deactivate finishes first
        self._release_backend()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        self._between_batches(self._destroy_publishers)
        self._release_backend()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop processing and the worker thread (before destroying the node)."""
        self._stop()
        self._worker.stop()

    def _stop(self) -> None:
        self._active = False
        # A batch in progress finishes (deactivated publishers drop its outputs); waiting frames are dropped.
        for name in self._worker.enable_frames(False):
            self._count(self.cameras[name], "dropped_inactive")
        for camera in self.cameras.values():
            for name in ("subscription", "info_subscription"):
                if getattr(camera, name) is not None:
                    self.destroy_subscription(getattr(camera, name))
                    setattr(camera, name, None)

    def _release_backend(self) -> None:
        with self._backend_lock:
            device, self.backend = (self.backend.device if self.backend else None), None
        self._free_memory()
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()

    @staticmethod
    def _free_memory() -> None:
        """Collect a released backend (reference cycles) and hand its pages back to the system: else they stay
        resident, free in glibc's arenas (the 1-hour soak: RSS 568 -> 968 MB over its backend switches and
        reloads, the heap in use flat)."""
        gc.collect()
        release_freed_memory()

    # -- frames ------------------------------------------------------------------------------------
    def _count(self, camera: CameraInput, outcome: str) -> None:
        """One more frame of ``camera`` with ``outcome`` (a :class:`FrameCounters` field), and in the total."""
        setattr(camera.counters, outcome, getattr(camera.counters, outcome) + 1)
        setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)

    def _on_image(self, msg, camera: CameraInput | None = None) -> None:
        """A frame of ``camera`` (None: the node's only camera) arrived: checked, stored as its newest."""
        if camera is None:
            (camera,) = self.cameras.values()
        self._count(camera, "received")
        self._input_rate.tick()
        camera.input_rate.tick()
        self._last_input = camera.last_frame = time.monotonic()
        try:  # a malformed frame must not displace a good one waiting for the worker
            check_image_msg(msg)
        except RejectedImage as error:
            self._reject(camera, error)
            return
        received = self.get_clock().now()
        stamp = Time.from_msg(msg.header.stamp, clock_type=received.clock_type).nanoseconds
        if self._worker.frames.put(camera.name, (msg, received), (stamp or received.nanoseconds) / 1e9):
            self._count(camera, "dropped_superseded")

    def _reject(self, camera: CameraInput, error: RejectedImage) -> None:
        """Count a bad frame; log each kind of problem once (a bad camera must not flood the log)."""
        with self._reject_lock:  # header checks run in the executor, decoding in the worker
            self._count(camera, "rejected_bad")
            first = error.cause not in self._logged_causes
            self._logged_causes.add(error.cause)
        if first:
            source = f" of camera {camera.name}" if camera.name else ""
            self.get_logger().warning(f"rejected a bad input frame{source} ({error}); further frames with this "
                                      "problem are only counted")

    def _fault(self, kind: str, error: BaseException) -> None:
        """A fault of the node's own work (not of one frame's data): counted by kind, logged the first time
        a kind fails with an error type, shown in diagnostics."""
        self._faults[kind] += 1
        self._last_fault = f"{kind}: {type(error).__name__}: {error}"
        if (kind, type(error)) not in self._logged_causes:
            self._logged_causes.add((kind, type(error)))
            self.get_logger().error(f"{self._last_fault}; further {kind} faults of this type are only counted "
                                    "(diagnostics)")

    def _worker_fault(self, error: Exception) -> None:
        self._fault("worker", error)

    def _age_ms(self, header: Header, received: Time) -> float:
        stamp = Time.from_msg(header.stamp, clock_type=received.clock_type)
        reference = stamp if stamp.nanoseconds > 0 else received  # an unstamped frame ages from arrival
        return (self.get_clock().now() - reference).nanoseconds / 1e6

    def _process_batch(self, batch: Batch[tuple[Any, Time]]) -> None:
        """Decode the batch's fresh frames, run them through the backend together, publish per camera."""
        for name in batch.unsynchronized:
            self._count(self.cameras[name], "dropped_unsynchronized")
        frames = []  # (camera, header, received, image)
        for name, (msg, received) in batch.frames:
            camera = self.cameras[name]
            started = time.perf_counter()
            self._node_stages["queue_wait_ms"].add((self.get_clock().now() - received).nanoseconds / 1e6)
            max_age = self.settings["max_frame_age_ms"]
            if max_age > 0 and self._age_ms(msg.header, received) > max_age:
                self._count(camera, "dropped_stale")
                continue
            try:
                image = compressed_to_bgr(msg) if isinstance(msg, CompressedImage) else image_to_bgr(msg)
            except RejectedImage as error:
                self._reject(camera, error)
                continue
            self._node_stages["decode_ms"].add((time.perf_counter() - started) * 1e3)
            frames.append((camera, msg.header, received, image))
        with self._backend_lock:
            backend = self.backend
        if not frames or backend is None:
            return
        started = time.perf_counter()
        results = self._infer(backend, [image for *_, image in frames])
        if len(results) != len(frames):  # a broken backend contract: no frame's result is known to be its own
            for camera, *_ in frames:
                self._count(camera, "backend_errors")
            raise RuntimeError(f"the backend returned {len(results)} results for a batch of {len(frames)} frames")
        processed = []  # (camera, header, result) of the frames published
        self._batch_ms.add((time.perf_counter() - started) * 1e3)
        self._batch_sizes[len(frames)] += 1
        for (camera, header, received, image), result in zip(frames, results):
            if isinstance(result, Exception):
                self._count(camera, "backend_errors")
                self._last_backend_error = f"{type(result).__name__}: {result}"
                self.get_logger().error(f"backend failed on a frame: {self._last_backend_error}", throttle_duration_sec=5.0)
                continue
            published = time.perf_counter()
            try:
                self._publish(camera, header, image, result, backend)
            except Exception as error:
                if not self.context.ok():
                    return  # Ctrl-C shut the context down during this batch: there is nothing left to publish to
                self._count(camera, "publish_errors")
                self._fault("publish", error)
                continue
            self._node_stages["publish_ms"].add((time.perf_counter() - published) * 1e3)
            self._count(camera, "processed")
            processed.append((camera, header, result))
            self._output_rate.tick()
            camera.output_rate.tick()
            latency = self._age_ms(header, received)
            self._latency.add(latency)
            camera.latency.add(latency)
            self._overhead.add(latency - result.timings.total_ms)
            for name, samples in self._stages.items():
                samples.add(getattr(result.timings, name))
        try:  # after the image outputs: a camera's lookup table rebuilt here delays only the next batch
            self._publish_ground(processed, backend)
        except Exception as error:
            if self.context.ok():
                self._fault("ground", error)

    @staticmethod
    def _infer(backend: Backend, images: list[np.ndarray]) -> list[Any]:
        """The backend's result for each image, in one forward pass; where that raises, each image alone, so
        that one failing frame costs only itself (its exception in its place)."""
        if len(images) > 1:
            try:
                return backend(images)
            except Exception:
                pass  # found out below, frame by frame
        results = []
        for image in images:
            try:
                results.append(backend(image))
            except Exception as error:
                results.append(error)
        return results

    def _publish(self, camera: CameraInput, header: Header, image, result, backend: Backend) -> None:
        wanted = {topic for topic, publisher in camera.publishers.items()
                  if self.settings[f"publish_{topic}"] and publisher.get_subscription_count() > 0}
        messages = perception_messages(result, header, image, backend.label_map, wanted, self.settings["overlay_alpha"])
        for topic, message in messages.items():
            camera.publishers[topic].publish(message)

    def _publish_ground(self, frames: list[tuple[CameraInput, Header, Any]], backend: Backend) -> None:
        """Place the batch's processed frames on the ground and publish the fused ground outputs someone
        subscribes to (once per batch, when a frame of it contributed)."""
        wanted = {topic for topic, publisher in self._ground_publishers.items()
                  if self.settings[f"publish_{topic.replace('/', '_')}"] and publisher.get_subscription_count() > 0}
        started = time.perf_counter()
        contributed = [self.ground.update(camera.name, header, result, backend.label_map, wanted)
                       for camera, header, result in frames]
        if any(contributed):
            max_age_ns = int(self.settings["max_frame_age_ms"] * 1e6)
            messages = self.ground.messages(wanted, max_age_ns)
            self._ground_ms.add((time.perf_counter() - started) * 1e3)  # publishing is the node's publish stage
            for topic, message in messages.items():
                self._ground_publishers[topic].publish(message)

    # -- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self.counters.snapshot()
        window = {k: now[k] - v for k, v in self._window_start.snapshot().items()}
        self._window_start = FrameCounters(**now)
        faults = {kind: count - self._faults_window_start[kind] for kind, count in self._faults.items()}
        self._faults_window_start = collections.Counter(self._faults)
        level, message = self._status(window, faults)
        backend = self.backend
        values = {
            "backend": backend.name if backend else self.settings["backend"],
            "weights": (backend.weights_info.path or backend.weights_info.source) if backend else self.settings["weights"],
            "device": str(backend.device) if backend else self.settings["device"],
            "runtime": backend.runtime if backend else self.settings["runtime"],
            "onnx": str(getattr(backend.run_network, "path", "")) if backend else self.settings["onnx_path"],
            "precision": backend.precision if backend else self.settings["precision"],
            "input_size": "x".join(map(str, backend.input_size)) if backend else "",
            "backend_options": self.settings["backend_options"],
            "cameras": ",".join(self.settings["cameras"]),
            "input_rate_hz": f"{self._input_rate.rate():.2f}",
            "output_rate_hz": f"{self._output_rate.rate():.2f}",
            "latency_median_ms": f"{self._latency.median():.2f}",
            "latency_p95_ms": f"{self._latency.percentile(95):.2f}",
            "node_overhead_median_ms": f"{self._overhead.median():.2f}",
            **{f"{name[:-3]}_median_ms": f"{samples.median():.2f}" for name, samples in self._stages.items()},
            **{f"{name[:-3]}_median_ms": f"{samples.median():.2f}" for name, samples in self._node_stages.items()},
            "batch_sizes": " ".join(f"{size}:{count}" for size, count in sorted(self._batch_sizes.items())),
            "backend_per_batch_median_ms": f"{self._batch_ms.median():.2f}",
            "ground_per_batch_median_ms": f"{self._ground_ms.median():.2f}",
            **{name: str(value) for name, value in now.items()},
            **{f"faults_{kind}": str(count) for kind, count in sorted(self._faults.items())},
            **memory_values(),
            **(self._ground_values(self.cameras[""]) if "" in self.cameras else {}),
        }
        statuses = [DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: perception", message=message,
            hardware_id=values["device"], values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )]
        if self.settings["cameras"]:
            statuses += [self._camera_status(camera, values["device"]) for camera in self.cameras.values()]
        self._diagnostics_publisher.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                            status=statuses))

    def _camera_status(self, camera: CameraInput, device: str) -> DiagnosticStatus:
        age = time.monotonic() - camera.last_frame if camera.last_frame is not None else None
        values = {
            "image_topic": camera.subscription.topic_name if camera.subscription else camera.image_topic,
            "input_rate_hz": f"{camera.input_rate.rate():.2f}",
            "output_rate_hz": f"{camera.output_rate.rate():.2f}",
            "latency_median_ms": f"{camera.latency.median():.2f}",
            "latency_p95_ms": f"{camera.latency.percentile(95):.2f}",
            "last_frame_age_s": f"{age:.2f}" if age is not None else "never",
            **self._ground_values(camera),
            **{name: str(value) for name, value in camera.counters.snapshot().items()},
        }
        now = camera.counters.snapshot()
        unsynchronized = now["dropped_unsynchronized"] - camera.window_start.dropped_unsynchronized
        camera.window_start = FrameCounters(**now)
        silent = self._active and (age is None or age > NO_INPUT_WARNING_S)
        if not self._worker.alive:
            level, message = DiagnosticStatus.ERROR, "the inference worker has stopped"
        elif silent:
            level, message = DiagnosticStatus.WARN, "no frames" if age is None else f"no frames for {age:.0f} s"
        elif unsynchronized:
            level, message = DiagnosticStatus.WARN, f"{unsynchronized} frames out of sync with the other cameras dropped"
        elif self.ground.cameras[camera.name].problem:
            level, message = DiagnosticStatus.WARN, f"ground outputs stopped: {self.ground.cameras[camera.name].problem}"
        else:
            level, message = DiagnosticStatus.OK, "processing" if self._active else "inactive"
        return DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: camera {camera.name}",
                                message=message, hardware_id=device,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _ground_values(self, camera: CameraInput) -> dict[str, str]:
        """Whether a camera's CameraInfo has come (received or none), where its mount comes from (mount
        parameter, tf2 or tf_static), its ground status (ok, not requested, or why its ground outputs stop) and
        the median time to place one of its frames on the ground."""
        ground = self.ground.cameras[camera.name]
        return {"camera_info": "received" if ground.infos else "none", "ground_source": ground.source, "ground": ground.status,
                "ground_median_ms": f"{ground.update_ms.median():.2f}"}

    def _status(self, window: dict[str, int], faults: dict[str, int] | None = None) -> tuple[bytes, str]:
        if not self._worker.alive:
            return DiagnosticStatus.ERROR, f"the inference worker has stopped: {self._worker.ended_by or 'unknown cause'}"
        if self.backend is None:
            if self.backend_error:
                return DiagnosticStatus.ERROR, f"backend failed to load: {self.backend_error}"
            return DiagnosticStatus.OK, "not configured"
        if not self._active:
            return DiagnosticStatus.OK, "inactive"
        problems = []
        if self._reloading is not None:
            problems.append(f"reloading the backend ({self._reloading['backend']}); frames are dropped meanwhile")
        if self._reload_error:
            problems.append(f"the last backend reload failed: {self._reload_error}")
        if window["backend_errors"]:
            if window["processed"] == 0:
                return DiagnosticStatus.ERROR, f"the backend fails on every frame: {self._last_backend_error}"
            problems.append(f"backend failed on {window['backend_errors']} frames ({self._last_backend_error})")
        if faults := {kind: count for kind, count in (faults or {}).items() if count}:
            problems.append(f"{sum(faults.values())} faults ({self._last_fault})")
        if window["rejected_bad"]:
            problems.append(f"rejected {window['rejected_bad']} bad input frames")
        if "" in self.cameras and self.ground.cameras[""].problem:  # the single camera's (named ones: their status)
            problems.append(f"ground outputs stopped: {self.ground.cameras[''].problem}")
        if window["dropped_stale"]:
            problems.append(f"dropped {window['dropped_stale']} frames older than {self.settings['max_frame_age_ms']:g} ms")
        if time.monotonic() - self._last_input > NO_INPUT_WARNING_S:
            problems.append(f"no input frames for {time.monotonic() - self._last_input:.0f} s")
        if problems:
            return DiagnosticStatus.WARN, "; ".join(problems)
        return DiagnosticStatus.OK, "processing"


class RosLogHandler(logging.Handler):
    """Forwards the library's Python logging to the node's ROS logger (console, log files, /rosout)."""

    def __init__(self, logger) -> None:
        super().__init__()
        self.ros_logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(message)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(message)
        elif record.levelno >= logging.INFO:
            self.ros_logger.info(message)
        else:
            self.ros_logger.debug(message)


def main(args: list[str] | None = None) -> int:
    """Run the node until shutdown (Ctrl-C). ``args``: ROS arguments, e.g. ``--ros-args -p backend:=...``."""
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except ValueError as error:  # a parameter the node refuses at start-up (camera names, topics, choices)
        print(f"[{NODE_NAME}] error: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    library_log = logging.getLogger("panoptic_perception")
    library_log.addHandler(RosLogHandler(node.get_logger()))
    library_log.setLevel(logging.INFO)
    library_log.propagate = False
    # One executor thread for all callbacks (each only stores a frame or answers a request) beside the
    # inference worker: measured to take and process more frames than a multi-threaded executor,
    # whose Python threads compete with the worker for the interpreter.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.settings["autostart"] and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        summary = f"frames: {node.counters.snapshot()}"
        if node.context.ok():
            node.get_logger().info(summary)
        else:  # after Ctrl-C the context is gone and /rosout with it
            print(f"[{NODE_NAME}] {summary}", file=sys.stderr)
        try:
            node.close()  # waits for the batch in flight (up to 30 s: a reload may be exporting a model)
        except KeyboardInterrupt:  # a second Ctrl-C: leave now (the worker is a daemon thread), no traceback
            print(f"[{NODE_NAME}] interrupted again: not waiting for the batch in flight", file=sys.stderr)
            return 130
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":  # python -m panoptic_perception.ros.node: as `panoptic-perception node`
    sys.exit(main())
