"""The perception node: camera frames in, detections / masks / panoptic images out, for any backend.

A ``rclpy.lifecycle`` managed node named ``panoptic_perception``:

- configure: loads and warms up the backend, creates the publishers (only for outputs the backend
  can produce); activate: subscribes to the camera and starts the inference worker; deactivate: stops
  both; cleanup: frees the model. With ``autostart`` (default) it configures and activates itself.
- The subscription callback only stores the newest frame (:class:`LatestFrameSlot`); one worker
  thread runs inference on the newest frame, dropping frames older than ``max_frame_age_ms``. Nothing
  queues up, so latency stays bounded when the backend is slower than the camera.
- Every output carries the input frame's header (stamp and frame_id). Outputs nobody subscribes to
  are not built. ``/diagnostics`` reports rates, latency, stage timings, drops and status at 1 Hz.

Parameters are described in :mod:`panoptic_perception.ros.parameters`.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

from ..backends import Backend
from ..factory import create_backend
from ..backends.base import parse_options
from ..core.streaming import FrameCounters, RateMeter, RollingSamples, WorkerThread
from ..core.messages import RejectedImage, check_image_msg, compressed_to_bgr, image_to_bgr
from .conversions import label_info_msg, message_class, perception_messages
from .parameters import PARAMETERS, THRESHOLD_PARAMETERS, OnChange, check_values, given_thresholds
from .topics import topics_of

NODE_NAME = "panoptic_perception"
RELOAD_PARAMETERS = frozenset(spec.name for spec in PARAMETERS if spec.on_change is OnChange.RELOAD)
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
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.minimum is not None:
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum))]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    return descriptor


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.settings: dict[str, Any] = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        check_values(self.settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Every torch computation (building, warming up, inference) runs on this one thread.
        self._worker: WorkerThread[tuple[Any, Time]] = WorkerThread(self._process_item, name="inference")
        self._worker.call(self._apply_threads, self.settings["threads"])

        self.backend: Backend | None = None
        self.backend_error: str | None = None
        self._backend_lock = threading.Lock()  # swapped by parameter changes while the worker runs
        self._output_publishers: dict[str, Any] = {}
        self._label_info_publisher = None
        self._subscription = None
        self._active = False
        self._logged_causes: set[str] = set()
        self._reject_lock = threading.Lock()
        self._last_backend_error = ""
        self._last_input = time.monotonic()

        self.counters = FrameCounters()
        self._window_start = FrameCounters()
        self._input_rate = RateMeter()
        self._output_rate = RateMeter()
        self._latency = RollingSamples()
        self._overhead = RollingSamples()
        self._stages = {name: RollingSamples() for name in ("preprocess_ms", "inference_ms", "postprocess_ms")}
        # The node's own stages around the backend: waiting for the worker, decoding, publishing.
        self._node_stages = {name: RollingSamples() for name in ("queue_wait_ms", "decode_ms", "publish_ms")}

        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)

    # -- parameters --------------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in self.settings}
        try:
            check_values({**self.settings, **changes})
            if self.backend is not None and RELOAD_PARAMETERS & changes.keys():
                backend = self._worker.call(self._build_backend, {**self.settings, **changes})
                self._swap_backend(backend)
            elif self.backend is not None and THRESHOLD_PARAMETERS.keys() & changes.keys():
                self._apply_thresholds(self.backend, {**self.settings, **changes})
                self._publish_label_info()  # its threshold is the score threshold
        except Exception as error:  # any failure leaves the node as it was
            reason = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
            self.get_logger().warning(f"rejected parameter change {changes}: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        self.settings.update(changes)
        if "threads" in changes:
            self._worker.call(self._apply_threads, changes["threads"])
        if RELOAD_PARAMETERS & changes.keys() and self.backend is not None:
            self.get_logger().info(f"reloaded backend: {self.backend.describe()}")
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
            **parse_options([settings["backend_options"]]),
        )
        self._apply_thresholds(backend, settings)
        # Warm-up: the first call allocates memory and selects kernels; do it before frames arrive.
        backend(np.zeros((WARMUP_SIZE[1], WARMUP_SIZE[0], 3), np.uint8))
        return backend

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
        if capabilities_changed and self._output_publishers:
            self._destroy_publishers()
            self._create_publishers()
        self._publish_label_info()
        del old
        gc.collect()

    # -- publishers --------------------------------------------------------------------------------
    def _create_publishers(self) -> None:
        for topic in topics_of(self.backend.capabilities):
            self._output_publishers[topic.name] = self.create_publisher(
                message_class(topic.msg_type), f"~/{topic.name}", OUTPUT_QOS,
                event_callbacks=PublisherEventCallbacks(incompatible_qos=self._incompatible_publisher_qos(topic.name)),
            )
        self._label_info_publisher = self.create_publisher(LabelInfo, "~/label_info", LABEL_INFO_QOS)

    def _destroy_publishers(self) -> None:
        for publisher in self._output_publishers.values():
            self.destroy_publisher(publisher)
        self._output_publishers.clear()
        if self._label_info_publisher is not None:
            self.destroy_publisher(self._label_info_publisher)
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

    def _incompatible_input_qos(self, event) -> None:
        reliability = self.settings["qos_reliability"]
        advice = (
            "the camera publishes best-effort: set this node's parameter qos_reliability:=best_effort "
            "(or make the publisher reliable)"
            if reliability == "reliable"
            else "change the publisher's QoS to match the node's subscription"
        )
        self.get_logger().warning(
            f"incompatible QoS with a publisher of {self._subscription.topic_name} (policy "
            f"{event.last_policy_kind.name}); the node requests reliability={reliability}, "
            f"depth={self.settings['qos_depth']}: {advice}"
        )

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
        self._publish_label_info()
        self.get_logger().info(f"configured: {self.backend.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        reliability = ReliabilityPolicy.BEST_EFFORT if self.settings["qos_reliability"] == "best_effort" else ReliabilityPolicy.RELIABLE
        qos = QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=self.settings["qos_depth"],
                         durability=DurabilityPolicy.VOLATILE)
        compressed = self.settings["input_transport"] == "compressed"
        self._subscription = self.create_subscription(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image",
            self._on_image,
            qos,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._incompatible_input_qos),
        )
        self._active = True
        self._last_input = time.monotonic()
        self._worker.enable_frames(True)
        self.get_logger().info(f"active: subscribed to {self._subscription.topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._destroy_publishers()
        self._release_backend()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        self._destroy_publishers()
        self._release_backend()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop processing and the worker thread (before destroying the node)."""
        self._stop()
        self._worker.stop()

    def _stop(self) -> None:
        self._active = False
        self._worker.enable_frames(False)  # a frame in progress finishes; its outputs may still go out
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None

    def _release_backend(self) -> None:
        with self._backend_lock:
            device, self.backend = (self.backend.device if self.backend else None), None
        gc.collect()
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()

    # -- frames ------------------------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        self.counters.received += 1
        self._input_rate.tick()
        self._last_input = time.monotonic()
        try:  # a malformed frame must not displace a good one waiting for the worker
            check_image_msg(msg)
        except RejectedImage as error:
            self._reject(error)
            return
        if self._worker.slot.put((msg, self.get_clock().now())):
            self.counters.dropped_superseded += 1

    def _reject(self, error: RejectedImage) -> None:
        """Count a bad frame; log each kind of problem once (a bad camera must not flood the log)."""
        with self._reject_lock:  # header checks run in the executor, decoding in the worker
            self.counters.rejected_bad += 1
            first = error.cause not in self._logged_causes
            self._logged_causes.add(error.cause)
        if first:
            self.get_logger().warning(f"rejected a bad input frame ({error}); further frames with this problem are only counted")

    def _process_item(self, item: tuple[Any, Time]) -> None:
        self._process(*item)

    def _age_ms(self, header: Header, received: Time) -> float:
        stamp = Time.from_msg(header.stamp, clock_type=received.clock_type)
        reference = stamp if stamp.nanoseconds > 0 else received  # an unstamped frame ages from arrival
        return (self.get_clock().now() - reference).nanoseconds / 1e6

    def _process(self, msg, received: Time) -> None:
        started = time.perf_counter()
        self._node_stages["queue_wait_ms"].add((self.get_clock().now() - received).nanoseconds / 1e6)
        max_age = self.settings["max_frame_age_ms"]
        if max_age > 0 and self._age_ms(msg.header, received) > max_age:
            self.counters.dropped_stale += 1
            return
        try:
            image = compressed_to_bgr(msg) if isinstance(msg, CompressedImage) else image_to_bgr(msg)
        except RejectedImage as error:
            self._reject(error)
            return
        decoded = time.perf_counter()
        self._node_stages["decode_ms"].add((decoded - started) * 1e3)
        with self._backend_lock:
            backend = self.backend
        if backend is None:
            return
        try:
            result = backend(image)
        except Exception as error:
            self.counters.backend_errors += 1
            self._last_backend_error = f"{type(error).__name__}: {error}"
            self.get_logger().error(f"backend failed on a frame: {self._last_backend_error}", throttle_duration_sec=5.0)
            return
        published = time.perf_counter()
        try:
            self._publish(msg.header, image, result, backend)
        except Exception:
            if self.context.ok():
                raise
            return  # Ctrl-C shut the context down during this frame: there is nothing left to publish to
        self._node_stages["publish_ms"].add((time.perf_counter() - published) * 1e3)
        self.counters.processed += 1
        self._output_rate.tick()
        latency = self._age_ms(msg.header, received)
        self._latency.add(latency)
        self._overhead.add(latency - result.timings.total_ms)
        for name, samples in self._stages.items():
            samples.add(getattr(result.timings, name))

    def _wanted(self, topic: str) -> Any:
        """The publisher of ``topic`` if it exists, is switched on and someone listens; else None."""
        publisher = self._output_publishers.get(topic)
        if publisher is None or not self.settings[f"publish_{topic}"] or publisher.get_subscription_count() == 0:
            return None
        return publisher

    def _publish(self, header: Header, image, result, backend: Backend) -> None:
        wanted = {topic for topic in self._output_publishers if self._wanted(topic) is not None}
        messages = perception_messages(result, header, image, backend.label_map, wanted, self.settings["overlay_alpha"])
        for topic, message in messages.items():
            self._output_publishers[topic].publish(message)

    # -- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now = self.counters.snapshot()
        window = {k: now[k] - v for k, v in self._window_start.snapshot().items()}
        self._window_start = FrameCounters(**now)
        level, message = self._status(window)
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
            "input_rate_hz": f"{self._input_rate.rate():.2f}",
            "output_rate_hz": f"{self._output_rate.rate():.2f}",
            "latency_median_ms": f"{self._latency.median():.2f}",
            "latency_p95_ms": f"{self._latency.percentile(95):.2f}",
            "node_overhead_median_ms": f"{self._overhead.median():.2f}",
            **{f"{name[:-3]}_median_ms": f"{samples.median():.2f}" for name, samples in self._stages.items()},
            **{f"{name[:-3]}_median_ms": f"{samples.median():.2f}" for name, samples in self._node_stages.items()},
            **{name: str(value) for name, value in now.items()},
        }
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: perception", message=message,
            hardware_id=values["device"], values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        self._diagnostics_publisher.publish(
            DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status])
        )

    def _status(self, window: dict[str, int]) -> tuple[bytes, str]:
        if self.backend is None:
            if self.backend_error:
                return DiagnosticStatus.ERROR, f"backend failed to load: {self.backend_error}"
            return DiagnosticStatus.OK, "not configured"
        if not self._active:
            return DiagnosticStatus.OK, "inactive"
        problems = []
        if window["backend_errors"]:
            if window["processed"] == 0:
                return DiagnosticStatus.ERROR, f"the backend fails on every frame: {self._last_backend_error}"
            problems.append(f"backend failed on {window['backend_errors']} frames ({self._last_backend_error})")
        if window["rejected_bad"]:
            problems.append(f"rejected {window['rejected_bad']} bad input frames")
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
    node = PerceptionNode()
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
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
