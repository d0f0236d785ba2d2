"""Soak: the node under dense multi-camera traffic for hours, faults injected, a report and a verdict.

``panoptic-perception soak`` samples the node from outside while it runs. Processes, as on a vehicle: the node (this module run as a script: the production node with the harness's
dense backend registered, :func:`node_main`), one ``camera`` process per camera (synthetic frames, stamps
written as they are sent, the scene's exact CameraInfo beside each frame, the camera's mount given to the node
so that the ground outputs are on) and this process, which subscribes to every output of every camera and the
node's ground outputs (the lists are :data:`~panoptic_perception.ros.topics.OUTPUT_TOPICS` and ``GROUND_TOPICS``,
so new outputs join by themselves; serialized, only the header is read), reads ``/diagnostics``, samples the node's ``/proc`` entry and ``/dev/shm``, injects the
faults of :data:`FAULTS` and writes the report (:func:`write_report`: ``report.json``, ``report.md``, plots).

The dense backend ``soak_dense`` is bundled TwinLiteNet plus ``detections`` (300) synthetic boxes a frame,
so that every frame carries the dense case's messages; its options ``fail_every=K`` (the backend raises on
every K-th frame, and again whenever the node retries that frame alone: a frame that crashes the
model), ``bad_result_every=K`` (every K-th call returns a result without timings, which
breaks the node's message building: a per-frame publish fault) and ``short_result_every=K`` (every K-th call of
several frames returns one result too few: an exception the node raises per batch, outside every per-frame guard,
which reaches the inference worker's loop, as the issue's known defect did) are set at runtime through the
production ``backend_options`` parameter, which reloads it.

Pass criteria (:func:`verdict`): the node never dies nor hangs (``/diagnostics`` silent for ``hang_s`` while
no service call of the harness is in flight, a service call unanswered within its timeout; after a hang no
more faults are injected); no camera starves (no output for ``starve_s`` outside the faults that interrupt
it, each excusing its own span and ``starve_s`` after); latency p99 of the last window at most 20 % above the
first window's (windows of ``duration / 6``: 10 minutes of an hour), or at most 20 % beyond the change of the
network's own median time per batch between them (the same work all run: the machine's speed, which moves on a
shared host); after warm-up, the heap in use (the node's ``/diagnostics``, :mod:`panoptic_perception.core.memory`)
grows by at most the profile's slope, and the node's own resident pages (anon + file) by at most that plus two
standard errors of their line (they also count the chunks the allocator keeps, in steps of tens of MB; the
shared pages, the Fast DDS segments it maps, fill as frames pass up to what is mapped: reported apart), both read between faults and after the heap has regrown from a rebuild of the
backend (``Profile.regrowth_s``); every camera reported and each of its received frames has an outcome; every output's
stamp was sent by its camera, at most as often as it was sent (the fused ground outputs: by some camera; a
message may repeat the previous message's stamp, otherwise a stamp comes back at most as often as it was sent).
"""

from __future__ import annotations

import argparse
import array
import collections
import dataclasses
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.io import frame_size
from ..core.memory import rss_parts_mb
from ..core.streaming import FrameCounters
from .benchmark import process_environment, stop_processes, with_parent
from .topics import GROUND_TOPICS, MARKERS, OUTPUT_TOPICS

NODE = "/panoptic_perception"
DENSE_BACKEND = "soak_dense"
SHM = Path("/dev/shm")
#: Node-level outputs (the fused ground outputs) are kept under this camera name.
NODE_LEVEL = ""
#: The node's frame counters in /diagnostics; what can become of a received frame: those besides ``received``.
FRAME_COUNTERS = tuple(FrameCounters().snapshot())
OUTCOMES = tuple(name for name in FRAME_COUNTERS if name != "received")


@dataclass(frozen=True)
class FaultSpec:
    """One kind of fault: what it does, and which cameras' outputs it may interrupt ("one": the camera it
    is applied to, "all", "paused": those it lists in its event's ``detail["paused"]``, "none"), which excuses
    their silence while it lasts (and ``starve_s`` after) and keeps that time out of the latency windows."""

    kind: str
    description: str
    interrupts: str = "none"


#: The fault schedule, as data: each round injects every kind once, in this order.
FAULTS: tuple[FaultSpec, ...] = (
    FaultSpec("runtime", "runtime torch -> onnxruntime -> torch (reloads)", "all"),
    FaultSpec("backend_switch", "backend soak_dense -> twinlitenet -> soak_dense (reloads, outputs change)", "all"),
    FaultSpec("lifecycle", "deactivate, cleanup, configure, activate (cycles per round: see the profile)", "all"),
    FaultSpec("bad_frames", "truncated, wrong-encoding and zero-size raw frames; corrupt JPEGs on the compressed "
              "camera, each camera paused (SIGSTOP) meanwhile so that no good frame supersedes a bad one before "
              "decoding; each camera must reject and count those sent to it", "paused"),
    FaultSpec("camera_stop", "a camera stops (SIGINT) until the node reports it silent, then comes back", "one"),
    FaultSpec("subscribers", "three extra participants subscribe to every output and leave again"),
    FaultSpec("backend_faults", "backend_options fail_every / bad_result_every / short_result_every (a reload): the "
              "backend raises, a result breaks the node's message building, a batch's result list is one short (a "
              "fault that reaches the worker loop); then a parameter change must work; then back", "all"),
    FaultSpec("thresholds", "score / mask threshold and max_detections changed under load, then back"),
    FaultSpec("sim_time", "use_sim_time on, node and cameras (restarted), with a /clock that loops back every few "
              "seconds (a looping bag: image stamps jump back too), then off", "all"),
    FaultSpec("bad_camera_info", "a camera restarted without its CameraInfo, then CameraInfo with an all-zero K, zero "
              "size, NaN distortion: each must stop its ground contribution; then its own again restores it", "one"),
    FaultSpec("camera_kill", "SIGKILL of a camera process (leaves Fast DDS shared memory), restarted", "one"),
)
FAULTS_BY_KIND = {spec.kind: spec for spec in FAULTS}
#: Faults that build the backend anew (a reload, a switch, a configure, which also makes the publishers and
#: subscriptions again); first in a round. The first of each loads code or memory once (warm-up for the memory
#: slope); after each, the node's heap regrows for a few minutes (``Profile.regrowth_s``).
REBUILDING_KINDS = ("runtime", "backend_switch", "lifecycle")


@dataclass(frozen=True)
class Profile:
    """A soak run: load, length, how often each fault comes (``rounds`` at ``duration_s``, scaled with the
    duration actually asked for, at least 1) and the limits of the verdict."""

    name: str
    duration_s: float
    cameras: int
    size: tuple[int, int]
    rate: float
    rounds: int
    lifecycle_cycles: int  # in all, spread over the rounds
    memory_slope_mb_per_h: float
    latency_growth: float = 0.2  # the most the last window's p99 may exceed the first's (0.2: 20 %)
    starve_s: float = 10.0
    hang_s: float = 15.0
    settle_s: float = 30.0  # first seconds left out of the latency windows (discovery, first frames)
    # Memory judged between faults (each fault's span and starve_s after it left out), not during them.
    memory_between_faults: bool = True
    # ... and this long after a fault that rebuilds the backend left out too. A lifecycle cycle gives back what
    # the faults since the last one had grown (44-52 MB in the 4th 1-hour run; readers that come and go leave the
    # publishers ~25-30 MB larger until a cycle makes them anew: README); the faults that follow it grow that
    # again, over ~3 minutes, and then it stays (heap medians by minute since the last cycle: 248, 264, 282, 286,
    # then 285-290 MB up to 15 minutes). Read across that regrowth, the rounds (in the first 50 minutes) against
    # the quiet end made a flat plateau read +20.8 MB/h.
    regrowth_s: float = 240.0


PROFILES = {
    # The load: 4 cameras (the last compressed) at 30 Hz, 1280x720; every fault 6 times an hour.
    "full": Profile("full", 3600.0, 4, (1280, 720), 30.0, 6, 100, 5.0),
    # The test suite's: 2 cameras (one compressed) at 640x360 and 15 Hz, so that a busy 2-core machine keeps
    # up; every fault once. 3 minutes cannot resolve 5 MB/h (the allocator's working set swings by tens of
    # MB), nor 20 % of a p99 over 30 s windows on a shared CPU: its limits only catch a gross leak and a
    # queue that grows (latency doubling). Its faults come back to back (one round in ~100 s): the ~20 s between
    # the last of them and the end hold too few samples for a line, so its memory is judged over every sample
    # after warm-up.
    "suite": Profile("suite", 180.0, 2, (640, 360), 15.0, 1, 2, 6000.0, latency_growth=1.0,
                     memory_between_faults=False),
}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h``, ``1.5h`` → seconds. Raises ValueError."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", text)
    if not match:
        raise ValueError(f"a duration is a number with s, m or h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def positive(parse: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``parse``'s value, refused unless a finite number above 0."""
    def parse_positive(text: str) -> float:
        value = parse(text)
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
        return value
    parse_positive.__name__ = parse.__name__  # argparse names the type in its errors
    return parse_positive


# -- the node process ------------------------------------------------------------------------------
def register_dense_backend() -> None:
    """Register ``soak_dense`` (see the module docstring) in this process's backend registry."""
    from ..backends.registry import list_backends, register_backend
    from ..backends.twinlitenet import TwinLiteNetBackend
    from ..core.types import Capability, Detections
    from ..models.twinlitenet import TwinLiteNetConfig

    if DENSE_BACKEND in list_backends():
        return

    @dataclass(frozen=True)
    class DenseConfig(TwinLiteNetConfig):
        detections: int = 300
        fail_every: int = 0
        bad_result_every: int = 0
        short_result_every: int = 0

    @register_backend(DENSE_BACKEND)
    class DenseBackend(TwinLiteNetBackend):
        """Bundled TwinLiteNet plus ``detections`` boxes a frame (at most ``max_detections``), with injectable faults."""

        capabilities = TwinLiteNetBackend.capabilities | {Capability.DETECTION}
        config_type = DenseConfig
        thresholds_used = ("score", "iou", "max_detections", "mask")
        calls = frames = 0
        poisoned = 0  # the buffer address of the frame that raises

        @classmethod
        def _resolve_weights(cls, weights, allow_random):  # TwinLiteNet's checkpoint, named for it
            return TwinLiteNetBackend._resolve_weights.__func__(TwinLiteNetBackend, weights, allow_random)

        def process(self, images):
            self.calls += 1
            addresses = [image.__array_interface__["data"][0] for image in images]
            if self.config.fail_every and self.poisoned not in addresses:
                hits = [a for i, a in enumerate(addresses, self.frames + 1) if i % self.config.fail_every == 0]
                self.frames += len(addresses)
                self.poisoned = hits[0] if hits else self.poisoned
            if self.config.fail_every and self.poisoned in addresses:
                raise RuntimeError(f"soak: injected backend fault (frame {self.frames})")
            results = super().process(images)
            for result in results:
                result.detections = self._boxes(*result.image_size)
            if self.config.bad_result_every and self.calls % self.config.bad_result_every == 0:
                results[0].timings = None  # the node's message building fails: a per-frame publish fault
            if self.config.short_result_every and len(results) > 1 and self.calls % self.config.short_result_every == 0:
                return results[:-1]  # a batch's fault: the node cannot pair frames with results
            return results

        def _boxes(self, width: int, height: int) -> Detections:
            count = min(self.config.detections, self.thresholds.max_detections)
            columns = max(1, math.ceil(math.sqrt(count * width / max(height, 1))))
            index = np.arange(count)
            x, y = (index % columns) * width / columns, (index // columns) * height / math.ceil(count / columns)
            boxes = np.stack([x, y, x + width / columns * 0.8, y + 8.0], 1).astype(np.float32)
            class_ids = 3 + index % 7
            return Detections(boxes, np.linspace(0.99, 0.31, count, dtype=np.float32), class_ids.astype(np.int64),
                              [f"object_{c}" for c in class_ids])


def node_main(argv: Sequence[str]) -> int:
    """The node process of a soak run: the production node (:func:`panoptic_perception.ros.node.main`) with
    ``soak_dense`` available. ``argv``: ROS arguments."""
    register_dense_backend()
    from .node import main

    return main(["panoptic-perception-soak-node", *argv])


# -- reading outputs without deserializing them ----------------------------------------------------
def cdr_stamp_ns(data: bytes, offset: int = 4) -> int:
    """The ``header.stamp`` (ns) of a serialized message whose first field is a ``std_msgs/Header``
    (little-endian CDR; ``offset`` 8: of the first element of a sequence of such messages, as in
    ``visualization_msgs/MarkerArray``). Raises ValueError for another encoding."""
    if data[1] != 1:
        raise ValueError(f"not little-endian CDR (encapsulation {data[:4].hex()})")
    sec, nanosec = struct.unpack_from("<iI", data, offset)
    return sec * 1_000_000_000 + nanosec


def cdr_output_stamp_ns(data: bytes, msg_type: str) -> int | None:
    """The stamp of a serialized output of type ``msg_type``: its header's, or for a MarkerArray its first
    marker's (None when it has none)."""
    if msg_type == MARKERS:
        return cdr_stamp_ns(data, 8) if struct.unpack_from("<I", data, 4)[0] else None
    return cdr_stamp_ns(data)


def cdr_detection_count(data: bytes) -> int:
    """The number of detections of a serialized ``vision_msgs/Detection2DArray`` (little-endian CDR)."""
    (length,) = struct.unpack_from("<I", data, 12)  # the frame_id string after the stamp
    offset = 16 + length
    offset += -(offset - 4) % 4  # CDR aligns to the field's size, counted after the 4-byte encapsulation
    return struct.unpack_from("<I", data, offset)[0]


def shm_mapped(pid: int) -> dict[str, int]:
    """The /dev/shm files process ``pid`` has mapped (its Fast DDS segments and the ports of those it sends
    to), each with the bytes it maps of it; {} when it is gone."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {}
    mapped: dict[str, int] = collections.Counter()
    for line in maps.splitlines():
        if f" {SHM}/" in line:
            begin, end = (int(address, 16) for address in line.split(" ", 1)[0].split("-"))
            mapped[line.split(f"{SHM}/", 1)[1].split(" ")[0]] += end - begin
    return dict(mapped)


def own_segments(names: Sequence[str]) -> list[str]:
    """Of /dev/shm names, a Fast DDS participant's own segments and their locks (``fastrtps_<id>``,
    ``fastrtps_<id>_el``), not the domain's port files (``fastrtps_port<N>``), which every participant of
    the domain, of this run or another, shares."""
    return [name for name in names if name.startswith("fastrtps_") and not name.startswith("fastrtps_port")]


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class FaultEvent:
    kind: str
    camera: str  # "" for none in particular
    start: float  # time.time()
    end: float = 0.0
    survived: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


class Harness:
    """The soak run's own ROS participant and its processes; :meth:`run` is the whole run."""

    def __init__(self, profile: Profile, duration_s: float, output: Path, log=print) -> None:
        self.profile, self.duration_s, self.output, self.log = profile, duration_s, output, log
        self.cameras = [f"cam{i}" for i in range(profile.cameras)]
        # The last camera compressed (corrupt JPEGs), where there are two or more.
        self.compressed = {self.cameras[-1]} if profile.cameras > 1 else set()
        self.node_args = self._node_args()  # first: a size no scene can have is refused (ValueError) before anything starts
        self.interrupted = False
        self.lock = threading.Lock()
        # (camera, topic) -> (arrival ns, stamp ns); the ground outputs under (NODE_LEVEL, "ground/...")
        self.outputs: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self.detection_counts: list[int] = []
        self.diagnostics: list[tuple[float, dict[str, tuple[int, str, dict[str, str]]]]] = []
        self.samples: list[dict[str, float]] = []
        self.events: list[FaultEvent] = []
        self.problems: list[str] = []  # hangs and deaths, as they are seen
        self.hung = False  # set at the first hang: no more faults, waits end at once, the report says failed
        self.calls_in_flight = 0  # the harness's own service calls (a configure may block the node's executor)
        self.last_call_end = 0.0
        self.camera_runs: dict[str, list[tuple[Any, Path]]] = {camera: [] for camera in self.cameras}
        self.node_process: subprocess.Popen | None = None
        self.node_shutdown: dict[str, float | int | None] = {}  # its exit status and seconds from SIGINT to exit
        self.started = 0.0
        self.window_s = duration_s / 6  # an hour's 10 minutes

    # -- processes ---------------------------------------------------------------------------------
    def _node_args(self) -> list[str]:
        from ..data.synthetic import generate_scene

        parameters = {"backend": DENSE_BACKEND, "cameras": f"[{','.join(self.cameras)}]"}
        for seed, camera in enumerate(self.cameras):
            parameters[f"cameras.{camera}.image_topic"] = f"/soak/{camera}/image_raw"
            parameters[f"cameras.{camera}.camera_info_topic"] = f"/soak/{camera}/camera_info"
            # Its scene's camera: level, at the scene's height (as make-bag --camera-info writes on /tf_static).
            height = generate_scene(seed, *self.profile.size).camera.height_above_ground
            parameters[f"cameras.{camera}.mount"] = f"[0.0,0.0,{height:.4f},0.0,0.0,0.0]"
            if camera in self.compressed:
                parameters[f"cameras.{camera}.transport"] = "compressed"
        return [sys.executable, "-m", __name__, "--ros-args", *sum((["-p", f"{k}:={v}"] for k, v in parameters.items()), [])]

    def start_camera(self, camera: str, camera_info: bool = True, sim_time: bool = False) -> None:
        """Start a (new) process of ``camera``: one synthetic scene (seed: the camera's index), so that its exact
        CameraInfo, sent beside every frame, stays the same (as a real camera's does; the node rebuilds a
        camera's ground lookup table when it changes); ``sim_time``: stamped by /clock."""
        run = len(self.camera_runs[camera])
        stamps = self.output / "logs" / f"{camera}_{run}.stamps"
        width, height = self.profile.size
        args = [sys.executable, "-m", "panoptic_perception.cli", "camera", "--topic", f"/soak/{camera}/image_raw",
                "--frame-id", camera, "--rate", str(self.profile.rate), "--size", f"{width}x{height}", "--distinct", "1",
                "--seed", str(self.cameras.index(camera)), "--stamps", str(stamps),
                *(["--compressed"] if camera in self.compressed else []), *(["--camera-info"] if camera_info else []),
                *(["--ros-args", "-p", "use_sim_time:=true"] if sim_time else [])]
        process = subprocess.Popen(with_parent(args), env=self.env, stdout=open(self.output / "logs" / f"{camera}_{run}.log", "w"),
                                   stderr=subprocess.STDOUT)
        self.camera_runs[camera].append((process, stamps))

    def camera_process(self, camera: str):
        return self.camera_runs[camera][-1][0]

    def restart_camera(self, camera: str, **options: bool) -> None:
        """Stop ``camera``'s process (SIGINT, as Ctrl-C) and start a new one with ``options`` (:meth:`start_camera`)."""
        stop_processes([self.camera_process(camera)])
        self.start_camera(camera, **options)

    def pause_cameras(self, cameras: Sequence[str], paused: bool) -> None:
        """SIGSTOP / SIGCONT the running processes of ``cameras`` (no frames while paused)."""
        for camera in cameras:
            for process, _ in self.camera_runs[camera][-1:]:
                if process.poll() is None:
                    process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    # -- ROS ---------------------------------------------------------------------------------------
    def _start_ros(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions

        from .conversions import message_class

        self.rclpy = rclpy
        self.context = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C raises KeyboardInterrupt, which ends the run (see run).
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.ros = rclpy.create_node("soak", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.ros)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        subscriptions = [((camera, topic.name, topic.msg_type), f"{NODE}/{camera}/{topic.name}")
                         for camera in self.cameras for topic in OUTPUT_TOPICS.values()]
        subscriptions += [((NODE_LEVEL, topic.name, topic.msg_type), f"{NODE}/{topic.name}") for topic in GROUND_TOPICS.values()]
        for (camera, name, msg_type), topic in subscriptions:
            self.outputs[camera, name] = []
            self.ros.create_subscription(message_class(msg_type), topic,
                                         lambda data, key=(camera, name), t=msg_type: self._on_output(key, t, data), qos, raw=True)
        self.ros.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.spinner = threading.Thread(target=self._spin, daemon=True)
        self.spinner.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not self.context.ok():
                    return
                raise

    def _on_output(self, key: tuple[str, str], msg_type: str, data: bytes) -> None:
        arrival, stamp = time.time_ns(), cdr_output_stamp_ns(data, msg_type)
        if stamp is None:  # an empty MarkerArray: nothing stamped
            return
        with self.lock:
            self.outputs[key].append((arrival, stamp))
            if key[1] == "detections":
                self.detection_counts.append(cdr_detection_count(data))

    def _on_diagnostics(self, msg) -> None:
        statuses = {}
        for status in msg.status:
            if not status.name.startswith(f"{NODE}:"):
                continue
            level = status.level[0] if isinstance(status.level, bytes) else status.level
            key = status.name.rsplit(" ", 1)[1] if ": camera " in status.name else ""
            statuses[key] = (level, status.message, {kv.key: kv.value for kv in status.values})
        if statuses:
            with self.lock:
                self.diagnostics.append((time.time(), statuses))

    def latest(self, camera: str = "", after: float = 0.0) -> tuple[int, str, dict[str, str]] | None:
        """The newest status of the node ("") or a camera that arrived after ``after`` (time.time())."""
        with self.lock:
            for arrival, statuses in reversed(self.diagnostics):
                if arrival <= after:
                    return None
                if camera in statuses:
                    return statuses[camera]
        return None

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> bool:
        """Wait for ``condition`` (sampling meanwhile); False, with a problem noted, on timeout or node death."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.node_process.poll() is not None or self.hung:
                return False
            if time.monotonic() > deadline:
                self.problems.append(f"timed out after {timeout:.0f} s waiting for {what}")
                self.log(f"soak: {self.problems[-1]}")
                return False
            self.sample()
            time.sleep(0.1)
        return True

    def call(self, srv_type, name: str, request, timeout: float = 120.0):
        """Call a service of the node; None (a problem noted) when unanswered within ``timeout``. While the call
        is in flight a silent /diagnostics is no hang (a configure builds the backend on the node's executor);
        the call's own timeout is the limit then."""
        client = self.ros.create_client(srv_type, name)
        self.calls_in_flight += 1
        try:
            if not self.wait_for(client.service_is_ready, timeout, f"service {name} (hang)"):
                return None  # a dead node: its own check says so
            future = client.call_async(request)
            return future.result() if self.wait_for(future.done, timeout, f"a reply from {name} (hang)") else None
        finally:
            self.calls_in_flight -= 1
            self.last_call_end = time.time()
            self.ros.destroy_client(client)

    def set_parameters(self, **values: Any) -> bool:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        reply = self.call(SetParameters, f"{NODE}/set_parameters", request)
        ok = reply is not None and all(result.successful for result in reply.results)
        if not ok:
            self.problems.append(f"parameter change {values} refused or unanswered: "
                                 f"{[r.reason for r in reply.results] if reply else 'no reply'}")
        return ok

    def reload(self, key: str, value: str, **values: Any) -> bool:
        """Set parameters that reload the backend; wait until the node's status shows ``key`` = ``value``
        and no reload running."""
        asked = time.time()
        if not self.set_parameters(**values):
            return False

        def done() -> bool:
            status = self.latest("", asked + 1.0)
            return status is not None and status[2].get(key) == value and "reloading" not in status[1]

        return self.wait_for(done, 600, f"the reload to {key}={value}")

    def outputs_of(self, camera: str, topic: str = "result") -> int:
        with self.lock:
            return len(self.outputs[camera, topic])

    def wait_for_outputs(self, cameras: Sequence[str], count: int = 3, timeout: float = 120.0) -> bool:
        before = {camera: self.outputs_of(camera) for camera in cameras}
        return self.wait_for(lambda: all(self.outputs_of(c) >= before[c] + count for c in cameras), timeout,
                             f"{count} new outputs of {', '.join(cameras)}")

    # -- sampling ----------------------------------------------------------------------------------
    def sample(self) -> None:
        """Once a second: the node's memory, threads, open files, CPU time, its network's time per batch (the
        same work all run: the machine's speed), /dev/shm; a hang when diagnostics stop."""
        now = time.time()
        if self.samples and now - self.samples[-1]["time"] < 1.0:
            return
        pid = self.node_process.pid
        try:
            threads = int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                               if line.startswith("Threads:")))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]  # utime, stime
            cpu_s = sum(map(int, ticks)) / os.sysconf("SC_CLK_TCK")
        except (OSError, StopIteration):
            threads = fds = 0
            cpu_s = math.nan
        names = [path.name for path in SHM.iterdir()] if SHM.is_dir() else []
        status = self.latest("", now - 1.5)  # the node's own memory, from its last second's /diagnostics
        values = status[2] if status else {}
        parts = rss_parts_mb(pid)
        # The node's own pages (anon + file) apart from the shared ones: those are Fast DDS segments, the cameras'
        # that it reads and its own, resident as frames pass through them, at most what it maps of them.
        self.samples.append({"time": now, "rss_mb": sum(parts.values()), **{f"rss_{part}_mb": mb for part, mb in parts.items()},
                             "rss_own_mb": parts["anon"] + parts["file"],
                             "shm_mapped_mb": sum(shm_mapped(pid).values()) / 2**20,
                             "heap_mb": _float(values.get("memory_heap_in_use_mb")),
                             "python_blocks": _float(values.get("memory_python_blocks")), "threads": threads, "fds": fds,
                             "cpu_s": cpu_s, "inference_ms": _float(values.get("inference_median_ms")),
                             "shm_files": len(names), "shm_fastdds": sum(1 for name in names if name.startswith("fastrtps_"))})
        with self.lock:
            last = max(self.diagnostics[-1][0] if self.diagnostics else self.started, self.last_call_end)
        if self.started and not self.calls_in_flight and now - last > self.profile.hang_s and not self.hung:
            self.hung = True
            self.problems.append(f"hang: no /diagnostics for {now - last:.0f} s")
            self.log(f"soak: no /diagnostics for {now - last:.0f} s: the node hangs; no more faults")

    # -- faults ------------------------------------------------------------------------------------
    def inject(self, kind: str, round_index: int, lifecycle_cycles: int) -> FaultEvent:
        camera = self.cameras[round_index % len(self.cameras)] if FAULTS_BY_KIND[kind].interrupts == "one" else ""
        event = FaultEvent(kind, camera, time.time())
        self.events.append(event)
        self.log(f"soak: {time.time() - self.started:7.1f} s  fault {kind}{f' ({camera})' if camera else ''}")
        problems = len(self.problems)
        try:
            survived = getattr(self, f"_fault_{kind}")(event, **({"cycles": lifecycle_cycles} if kind == "lifecycle" else {}))
        except Exception as error:  # the harness's own failure: reported as this fault not survived
            event.detail["error"] = f"{type(error).__name__}: {error}"
            survived = False
        event.end = time.time()
        event.survived = bool(survived) and len(self.problems) == problems and self.node_process.poll() is None
        return event

    def _rejected(self, camera: str) -> int:
        status = self.latest(camera)
        return int(status[2].get("rejected_bad", 0)) if status else 0

    def _fault_bad_frames(self, event: FaultEvent) -> bool:
        """Bad frames to the first raw camera's topic and corrupt JPEGs to the compressed camera's, each camera
        paused meanwhile and one bad frame at a time (the next after the node counted the last, or 5 s; 0.2 s
        once one was not counted): a newer frame would supersede a waiting one before the worker decodes it.
        Survived when each camera rejected at least half of those sent to it (best effort: most arrive) and the
        outputs of both come back after."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        raw = next(c for c in self.cameras if c not in self.compressed)
        targets = {raw: (self.ros.create_publisher(Image, f"/soak/{raw}/image_raw", qos), [
            Image(height=720, width=1280, encoding="bgr8", step=3840, data=array.array("B", bytes(1000))),
            Image(height=4, width=4, encoding="yuv422_weird", step=12, data=array.array("B", bytes(48))),
            Image(height=0, width=0, encoding="bgr8", step=0)])}
        for camera in self.compressed:
            jpeg = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + os.urandom(2000)
            targets[camera] = (self.ros.create_publisher(CompressedImage, f"/soak/{camera}/image_raw/compressed", qos),
                               [CompressedImage(format="jpeg", data=array.array("B", jpeg)),
                                CompressedImage(format="jpeg", data=array.array("B", jpeg[:10]))])
        event.detail["paused"] = sorted(targets)
        self.pause_cameras(targets, True)
        try:
            self.wait_for(lambda: all(p.get_subscription_count() for p, _ in targets.values()), 30,
                          "the node's camera subscriptions")
            counts = {}
            for camera, (publisher, frames) in targets.items():
                before, sent, patience = self._rejected(camera), 0, 5.0
                for _ in range(3):
                    for msg in frames:
                        msg.header.stamp = self.ros.get_clock().now().to_msg()  # a stamp no camera sent
                        msg.header.frame_id = "bad"
                        publisher.publish(msg)
                        sent += 1
                        deadline = time.monotonic() + patience
                        while self._rejected(camera) < before + sent:
                            if time.monotonic() > deadline:
                                patience = 0.2
                                break
                            time.sleep(0.05)
                counts[camera] = {"sent": sent, "rejected": self._rejected(camera) - before}
            event.detail["cameras"] = counts
            event.detail.update(sent=sum(c["sent"] for c in counts.values()),
                                rejected=sum(c["rejected"] for c in counts.values()))
            ok = all(c["rejected"] >= c["sent"] // 2 for c in counts.values())
        finally:
            self.pause_cameras(targets, False)
            for publisher, _ in targets.values():
                self.ros.destroy_publisher(publisher)
        return ok and self.wait_for_outputs(list(targets))

    def _fault_camera_stop(self, event: FaultEvent) -> bool:
        process = self.camera_process(event.camera)
        process.send_signal(signal.SIGINT)
        process.wait(30)
        silent = self.wait_for(lambda: (s := self.latest(event.camera)) is not None and "no frames" in s[1], 60,
                               f"the node to report {event.camera} silent")
        self.start_camera(event.camera)
        return silent and self.wait_for_outputs([event.camera])

    def _fault_camera_kill(self, event: FaultEvent) -> bool:
        """SIGKILL the camera (its Fast DDS segments in /dev/shm are named by random ids, not the PID: the ones
        it had mapped are recorded, and after the run :meth:`run` reports which of them are left), restart it."""
        process = self.camera_process(event.camera)
        event.detail["shm_mapped"] = own_segments(shm_mapped(process.pid))
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        self.start_camera(event.camera)
        return self.wait_for_outputs([event.camera])

    def _fault_subscribers(self, event: FaultEvent) -> bool:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from .conversions import message_class

        from rclpy.executors import SingleThreadedExecutor

        received = []
        for _ in range(3):  # each a participant of its own, as a visualiser started and closed
            context = self.rclpy.Context()
            self.rclpy.init(context=context)
            node = self.rclpy.create_node("soak_visitor", context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            count = [0]
            for camera in self.cameras:
                for topic in OUTPUT_TOPICS.values():
                    node.create_subscription(message_class(topic.msg_type), f"{NODE}/{camera}/{topic.name}",
                                             lambda _data: count.__setitem__(0, count[0] + 1),
                                             QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT), raw=True)
            deadline = time.monotonic() + 30
            while count[0] < 10 and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
                self.sample()
            received.append(count[0])
            executor.shutdown()
            node.destroy_node()
            context.try_shutdown()
        event.detail["received"] = received
        return all(received)

    def _fault_backend_faults(self, event: FaultEvent) -> bool:
        status = self.latest()
        errors, publish = int(status[2]["backend_errors"]), int(status[2].get("faults_publish", 0))
        worker = int(status[2].get("faults_worker", 0))
        options = "fail_every=5,bad_result_every=7,short_result_every=3"
        if not self.reload("backend_options", options, backend_options=options):
            return False

        def counted() -> bool:
            values = self.latest()[2]
            return (int(values["backend_errors"]) >= errors + 3 and int(values.get("faults_publish", 0)) >= publish + 2
                    and int(values.get("faults_worker", 0)) >= worker + 1)

        ok = self.wait_for(counted, 120, "injected backend errors, publish faults and worker faults to be counted")
        values = self.latest()[2]
        event.detail.update(backend_errors=int(values["backend_errors"]) - errors,
                            publish_faults=int(values.get("faults_publish", 0)) - publish,
                            worker_faults=int(values.get("faults_worker", 0)) - worker)
        # The worker survived the faults that reached its loop: the next batches are processed.
        processed = int(values["processed"])
        ok = self.wait_for(lambda: int(self.latest()[2]["processed"]) >= processed + 3, 60,
                           "batches processed after the worker faults") and ok
        event.detail["processed_after"] = int(self.latest()[2]["processed"]) - processed
        # The defect the issue names: after a fault outside the backend call the next parameter change hung.
        ok = self.set_parameters(score_threshold=0.4) and self.set_parameters(score_threshold=-1.0) and ok
        return self.reload("backend_options", "", backend_options="") and self.wait_for_outputs(self.cameras) and ok

    def _fault_thresholds(self, event: FaultEvent) -> bool:
        ok = self.set_parameters(score_threshold=0.5, mask_threshold=0.6, max_detections=100)
        with self.lock:
            seen = len(self.detection_counts)
        ok = ok and self.wait_for(lambda: 100 in self.detection_counts[seen:], 60, "detections limited to 100")
        return self.set_parameters(score_threshold=-1.0, mask_threshold=-1.0, max_detections=0) and ok

    def _fault_runtime(self, event: FaultEvent) -> bool:
        ok = self.reload("runtime", "onnxruntime", runtime="onnxruntime") and self.wait_for_outputs(self.cameras)
        return self.reload("runtime", "torch", runtime="torch") and self.wait_for_outputs(self.cameras) and ok

    def _fault_backend_switch(self, event: FaultEvent) -> bool:
        ok = self.reload("backend", "twinlitenet", backend="twinlitenet") and self.wait_for_outputs(self.cameras)
        return self.reload("backend", DENSE_BACKEND, backend=DENSE_BACKEND) and self.wait_for_outputs(self.cameras) and ok

    def _fault_lifecycle(self, event: FaultEvent, cycles: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        for _ in range(cycles):
            for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP,
                               Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
                reply = self.call(ChangeState, f"{NODE}/change_state", ChangeState.Request(transition=Transition(id=transition)))
                if reply is None or not reply.success:
                    self.problems.append(f"lifecycle transition {transition} failed")
                    return False
        event.detail["cycles"] = cycles
        return self.wait_for_outputs(self.cameras)

    def _fault_sim_time(self, event: FaultEvent) -> bool:
        """A looping bag's /clock: the node and the cameras (restarted with use_sim_time) follow it, so image
        stamps jump back with it. Survived when diagnostics and every camera's outputs go on across several
        loops, each camera's output stamps jumped back at least once, and all resume on wall time after."""
        from rosgraph_msgs.msg import Clock

        clock = self.ros.create_publisher(Clock, "/clock", 10)
        stop = threading.Event()
        loop_ns, start_ns = 3_000_000_000, time.time_ns() - 60_000_000_000

        def publish() -> None:  # a bag of 3 s played in a loop, a minute behind the wall clock
            begun = time.monotonic_ns()
            while not stop.wait(0.01):
                elapsed = (time.monotonic_ns() - begun) % loop_ns
                clock.publish(Clock(clock=self.rclpy.time.Time(nanoseconds=start_ns + elapsed).to_msg()))

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        try:
            ok = self.set_parameters(use_sim_time=True)
            stale = {camera: int((self.latest(camera) or (0, "", {}))[2].get("dropped_stale", 0)) for camera in self.cameras}
            for camera in self.cameras:
                self.restart_camera(camera, sim_time=True)
            seen = {camera: self.outputs_of(camera) for camera in self.cameras}
            asked = time.time()
            ok = ok and self.wait_for(lambda: self.latest("", asked + 4 * loop_ns / 1e9) is not None, 60,
                                      "diagnostics under a looping /clock")

            def jumps_back(camera: str) -> int:
                with self.lock:
                    stamps = [stamp for _, stamp in self.outputs[camera, "result"][seen[camera]:]]
                return sum(1 for a, b in zip(stamps, stamps[1:]) if b < a)

            ok = ok and self.wait_for(lambda: all(jumps_back(c) for c in self.cameras), 60,
                                      "output stamps that jump back with /clock")
            event.detail["stamp_jumps_back"] = {camera: jumps_back(camera) for camera in self.cameras}
            for camera in self.cameras:
                self.restart_camera(camera)
            ok = self.set_parameters(use_sim_time=False) and ok
            event.detail["dropped_stale"] = {
                camera: int((self.latest(camera) or (0, "", {}))[2].get("dropped_stale", 0)) - stale[camera]
                for camera in self.cameras}
            return self.wait_for_outputs(self.cameras) and ok
        finally:
            stop.set()
            thread.join(5)
            self.ros.destroy_publisher(clock)

    def _ground_status(self, camera: str, after: float) -> str | None:
        status = self.latest(camera, after)
        return status[2].get("ground") if status else None

    def _fault_bad_camera_info(self, event: FaultEvent) -> bool:
        """The camera restarted without its CameraInfo (the node falls back to the newest it has), then each bad
        CameraInfo in turn: the camera's ``ground`` status must say stopped after each; then the camera with its
        own CameraInfo again: ``ok``."""
        from sensor_msgs.msg import CameraInfo

        camera = event.camera
        self.restart_camera(camera, camera_info=False)
        publisher = self.ros.create_publisher(CameraInfo, f"/soak/{camera}/camera_info", 10)
        try:
            ok = self.wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the node's camera_info subscription")
            width, height = self.profile.size
            stopped = []
            for info in (CameraInfo(width=width, height=height), CameraInfo(width=0, height=0, k=[1.0] * 9),
                         CameraInfo(width=width, height=height, k=[500.0, 0, 320, 0, 500, 180, 0, 0, 1],
                                    d=[math.nan] * 5, distortion_model="plumb_bob")):
                asked = time.time()

                def stopped_by(info=info, asked=asked) -> bool:
                    # Sent again at every look: a message sent right after discovery may still be lost, and
                    # the node matches CameraInfo to frames by stamp (the newest when none has the frame's).
                    info.header.stamp = self.ros.get_clock().now().to_msg()
                    publisher.publish(info)
                    return (self._ground_status(camera, asked + 1.0) or "").startswith("stopped")

                ok = self.wait_for(stopped_by, 60, f"{camera}'s ground outputs to stop on a bad CameraInfo") and ok
                stopped.append(self._ground_status(camera, 0.0))
            event.detail["ground_stopped"] = stopped
        finally:
            self.ros.destroy_publisher(publisher)
        self.restart_camera(camera)
        asked = time.time()
        ok = self.wait_for(lambda: self._ground_status(camera, asked + 1.0) == "ok", 60,
                           f"{camera}'s ground outputs to come back with its own CameraInfo") and ok
        return self.wait_for_outputs([camera]) and ok

    def _settled(self) -> bool:
        """The newest two node statuses are equal and every camera's frames have outcomes."""
        with self.lock:
            last = [statuses for _, statuses in self.diagnostics[-2:]]
        counters = [{name: values.get("", (0, "", {}))[2].get(name) for name in ("received", *OUTCOMES)} for values in last]
        return len(last) == 2 and counters[0] == counters[1] and all(
            frames_accounted(values) for _, _, values in last[1].values())

    # -- the run -----------------------------------------------------------------------------------
    def schedule(self) -> list[tuple[float, str, int, int]]:
        """(seconds after start, kind, round, lifecycle cycles) of every fault, rounds spread evenly between
        the first and the last latency window (both without faults: the same load before and after them)."""
        scale = self.duration_s / self.profile.duration_s
        rounds = max(1, round(self.profile.rounds * scale))
        cycles = max(rounds, round(self.profile.lifecycle_cycles * scale))
        first = self.profile.settle_s + self.window_s
        span = self.duration_s - self.window_s - first
        faults = []
        for r in range(rounds):
            begin = first + span * r / rounds
            for i, spec in enumerate(FAULTS):
                per_round = cycles // rounds + (r < cycles % rounds) if spec.kind == "lifecycle" else 0
                faults.append((begin + span / rounds * i / len(FAULTS), spec.kind, r, per_round))
        return faults

    def end_time(self) -> float:
        """When the run ends: after its duration, and after a last window without faults that begins, like the
        first, ``settle_s`` after the load returns (however long the faults took; a camera killed last is
        discovered again and sends its first frames meanwhile)."""
        last_fault = (self.events[-1].end or self.events[-1].start) if self.events else 0.0
        return max(self.started + self.duration_s, last_fault + self.profile.settle_s + self.window_s)

    def environment(self) -> dict[str, str]:
        """The processes' environment (:func:`~panoptic_perception.ros.benchmark.process_environment`), with a
        cache of exports of the run's own (``output/cache``): the node exports its network at the first runtime
        change, as on a machine's first start, every run (with the user's cache, only a run after a change of
        the backend's code did: that export left 1.08 million more Python objects in the node, and its anon pages
        rose 170-220 MB at that fault against 64 MB with the export cached)."""
        env = process_environment(self.output / "logs")
        return {**env, "PYTHONUNBUFFERED": "1", "PANOPTIC_PERCEPTION_CACHE": str(self.output / "cache")}

    def run(self) -> dict:
        (self.output / "logs").mkdir(parents=True, exist_ok=True)
        self.env = self.environment()
        self._start_ros()
        self.node_process = subprocess.Popen(with_parent(self.node_args), env=self.env, stdout=open(self.output / "logs" / "node.log", "w"),
                                             stderr=subprocess.STDOUT)
        try:
            self.started = time.time()
            if not self.wait_for(lambda: all(self.ros.count_publishers(f"{NODE}/{c}/result") for c in self.cameras), 300,
                                 "the node's outputs"):
                raise RuntimeError(f"the node did not start; see {self.output / 'logs' / 'node.log'}")
            for camera in self.cameras:
                self.start_camera(camera)
            self.wait_for_outputs(self.cameras, 1, 300)
            self.started = time.time()
            width, height = self.profile.size
            self.log(f"soak: load running: {len(self.cameras)} cameras, {width}x{height} at {self.profile.rate:g} Hz, "
                     f"for {self.duration_s:.0f} s")
            for at, kind, round_index, cycles in self.schedule():
                self.wait_for(lambda: time.time() - self.started >= at, at + 60, "the next fault's time")
                if self.node_process.poll() is not None or self.hung:  # a dead or hung node: the verdict is known
                    break
                self.inject(kind, round_index, cycles)
            end = self.end_time()
            self.wait_for(lambda: time.time() >= end, end - time.time() + 60, "the end")
            self.ended = time.time()
        except KeyboardInterrupt:  # Ctrl-C: stop at once and report what ran, marked interrupted
            self.interrupted, self.ended = True, time.time()
            self.node_exit = self.node_process.poll()  # a death before the interrupt, not the exit it caused
            self.log("soak: interrupted; stopping the cameras and the node")
        finally:
            cameras = [process for runs in self.camera_runs.values() for process, _ in runs]
            stop_processes(cameras)
            if not hasattr(self, "ended"):
                self.ended = time.time()
            # The last outputs, and a final status in which every frame has an outcome.
            if self.node_process.poll() is None and not self.interrupted:
                self.wait_for(self._settled, 60, "every received frame to have an outcome")
            if not self.interrupted:
                self.node_exit = self.node_process.poll()
            asked = time.time()
            stop_processes([self.node_process])  # SIGINT, as Ctrl-C; killed after 15 s
            self.node_shutdown = {"exit": self.node_process.returncode, "seconds": time.time() - asked}
            self.executor.shutdown()
            self.ros.destroy_node()
            self.context.try_shutdown()
            # Every process of the run has ended: what a killed camera had mapped and is still there, it left.
            for event in self.events:
                if "shm_mapped" in event.detail:
                    event.detail["shm_left_after_run"] = [n for n in event.detail["shm_mapped"] if (SHM / n).exists()]
        return analyse(self)


# -- analysis --------------------------------------------------------------------------------------
def _rate(series: list[tuple[float, float]]) -> float:
    """Growth per second of a counter sampled as (time, value), from its first to its last sample (NaN: too few)."""
    series = [(t, v) for t, v in series if not math.isnan(v)]
    return (series[-1][1] - series[0][1]) / (series[-1][0] - series[0][0]) if len(series) > 1 and series[-1][0] > series[0][0] else math.nan


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not len(values):
        return {"p50": math.nan, "p99": math.nan, "count": 0}
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)), "count": len(values)}


def _excused(events: list[FaultEvent], camera: str, grace: float) -> list[tuple[float, float]]:
    """The intervals in which ``camera``'s outputs may stop: each fault that interrupts it, from its start to
    ``grace`` seconds after its end (outputs come back within a batch or two of the fault's end; the fault itself
    waits for them)."""
    spans = []
    for event in events:
        interrupts = FAULTS_BY_KIND[event.kind].interrupts
        if (interrupts == "all" or (interrupts == "one" and event.camera == camera)
                or (interrupts == "paused" and camera in event.detail.get("paused", ()))):
            spans.append((event.start, (event.end or event.start) + grace))
    return spans


def _inside(t: float, spans: list[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in spans)


def longest_unexcused(a: float, b: float, spans: list[tuple[float, float]]) -> float:
    """The longest part of the silence from ``a`` to ``b`` (s) outside every excused span: a fault excuses its
    own time, not a silence that merely overlaps it."""
    longest, at = 0.0, a
    for x, y in sorted(spans):
        if y <= at or x >= b:
            continue
        longest, at = max(longest, x - at), max(at, y)
    return max(longest, b - at)


def _counters(status: tuple[int, str, dict[str, str]] | None) -> dict[str, int]:
    values = status[2] if status else {}
    return {name: int(values.get(name, 0)) for name in ("received", *OUTCOMES)}


def frames_per_minute(diagnostics: list, cameras: Sequence[str], a: float, b: float) -> dict[str, dict[str, int]]:
    """Frames received and their outcomes per camera from ``a`` to ``b`` (time.time()): the difference of the
    newest /diagnostics status before ``b`` and the newest before ``a`` (none: zeros)."""

    def newest_before(t: float) -> dict:
        return next((statuses for arrival, statuses in reversed(diagnostics) if arrival < t), {})

    before, after = newest_before(a), newest_before(b)
    return {camera: {name: value - _counters(before.get(camera))[name]
                     for name, value in _counters(after.get(camera)).items()} for camera in cameras}


LOG_LINE = re.compile(r"^\[(ERROR|WARN)\] \[(\d+(?:\.\d+)?)\]", re.MULTILINE)


def logged_times(log: Path) -> list[tuple[str, float]]:
    """(level, time.time()) of each ERROR and WARN line of a ROS log (``[LEVEL] [seconds.nanoseconds] ...``)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [(level.lower(), float(stamp)) for level, stamp in LOG_LINE.findall(text)]


def _stamp_faults(received: list[int], sent: collections.Counter) -> tuple[int, int]:
    """(stamps never sent, stamps published more often than sent) of one output of one camera."""
    counts = collections.Counter(received)
    return (sum(1 for s in counts if s not in sent), sum(max(0, n - sent[s]) for s, n in counts.items() if s in sent))


def _fused_stamp_faults(received: list[int], sent: collections.Counter) -> tuple[int, int]:
    """Of a fused (node-level) output: (stamps never sent by any camera, repeats beyond the allowed ones). A batch
    of older frames republishes the fusion under the stamp of the previous message, the newest: consecutive
    messages may share a stamp. A stamp may start such a run of messages as often as the cameras sent it (a
    /clock that jumps back can make a camera send a stamp again)."""
    unknown = sum(1 for s in set(received) if s not in sent)
    runs = collections.Counter(stamp for previous, stamp in zip([None, *received], received) if stamp != previous)
    return unknown, sum(max(0, n - sent[s]) for s, n in runs.items() if s in sent)


def analyse(run: Harness) -> dict:
    """The report of a finished run: counters, series per minute, faults, the checks and the verdict."""
    profile, start, end = run.profile, run.started, run.ended
    window = run.window_s
    sent = {camera: collections.Counter() for camera in run.cameras}
    for camera, runs in run.camera_runs.items():
        for _, stamps in runs:
            if stamps.exists():
                sent[camera].update(int(line) for line in stamps.read_text().split())
    cameras, latencies = {}, []
    final = run.diagnostics[-1][1] if run.diagnostics else {}
    for camera in run.cameras:
        topics, unknown, duplicates = {}, 0, 0
        for (name, topic), received in run.outputs.items():
            if name != camera or not received:
                continue
            topics[topic] = len(received)
            never, twice = _stamp_faults([stamp for _, stamp in received], sent[camera])
            unknown, duplicates = unknown + never, duplicates + twice
        spans = _excused(run.events, camera, profile.starve_s)
        arrivals = [(a / 1e9, (a - s) / 1e6) for a, s in run.outputs[camera, "result"]]
        latencies += [(t, ms) for t, ms in arrivals if not _inside(t, spans)]
        times = [start, *(t for t, _ in arrivals), end]
        counters = final.get(camera, (0, "", {}))[2]
        cameras[camera] = {
            "transport": "compressed" if camera in run.compressed else "raw", "frames_sent": sum(sent[camera].values()),
            "node_counters": node_counters(counters),
            "ground": counters.get("ground", ""),
            "outputs": topics, "stamps_never_sent": unknown, "stamps_twice": duplicates,
            "longest_unexcused_gap_s": max((longest_unexcused(a, b, spans) for a, b in zip(times, times[1:])), default=0.0),
            "camera_restarts": len(run.camera_runs[camera]) - 1,
        }
    every_sent = sum(sent.values(), collections.Counter())
    ground = {}
    for (name, topic), received in run.outputs.items():
        if name == NODE_LEVEL:
            never, repeats = _fused_stamp_faults([stamp for _, stamp in received], every_sent)
            ground[topic] = {"outputs": len(received), "stamps_never_sent": never, "stamps_repeated": repeats}
    logged_at = logged_times(run.output / "logs" / "node.log")
    minutes = []
    for m in range(int(math.ceil((end - start) / 60))):
        a, b = start + 60 * m, min(start + 60 * (m + 1), end)
        in_minute = [ms for t, ms in latencies if a <= t < b]
        samples = [s for s in run.samples if a <= s["time"] < b]
        minutes.append({
            "minute": m, "seconds": b - a, "latency_ms": _percentiles(in_minute),
            "outputs_per_s": {c: sum(1 for t, _ in run.outputs[c, "result"] if a <= t / 1e9 < b) / (b - a) for c in run.cameras},
            "frames": frames_per_minute(run.diagnostics, run.cameras, a, b),
            "logged": {level: sum(1 for lv, t in logged_at if lv == level and a <= t < b) for level in ("error", "warn")},
            **{k: max((s.get(k, math.nan) for s in samples), default=math.nan)
               for k in ("rss_mb", "rss_own_mb", "rss_anon_mb", "rss_file_mb", "rss_shmem_mb", "shm_mapped_mb", "heap_mb",
                         "threads", "fds", "shm_files", "shm_fastdds")},
            "faults": [e.kind for e in run.events if a <= e.start < b],
            "node_cpu_cores": _rate([(s["time"], s.get("cpu_s", math.nan)) for s in samples]),
            "inference_ms": _percentiles([ms for s in samples if not math.isnan(ms := s.get("inference_ms", math.nan))])["p50"],
        })
    first_window, last_window = (start + profile.settle_s, start + profile.settle_s + window), (end - window, end)
    first = [ms for t, ms in latencies if first_window[0] <= t < first_window[1]]
    last = [ms for t, ms in latencies if last_window[0] <= t <= last_window[1]]

    def network_ms(window: tuple[float, float]) -> float:
        return _percentiles([s["inference_ms"] for s in run.samples if window[0] <= s["time"] <= window[1]
                             and not math.isnan(s.get("inference_ms", math.nan))])["p50"]
    # Warm-up: half a window, and the first of each fault that loads code or memory once (ONNX export and
    # ONNX Runtime, another backend's module, a configure): a step, not a leak.
    warmed = max([start + window / 2, *(min((e.end for e in run.events if e.kind == kind), default=start)
                                        for kind in REBUILDING_KINDS)])
    # Faults move memory both ways (a cleanup or a backend switch releases the backend: 60-100 MB dips in the
    # 1-hour run, and a reload takes it back): the leak is read between them, once the heap has regrown. A
    # leak still shows: each plateau stands higher than the one before.
    faults = [(e.start, (e.end or e.start) + profile.starve_s + profile.regrowth_s * (e.kind in REBUILDING_KINDS))
              for e in run.events] if profile.memory_between_faults else []

    def between_faults(key: str) -> list[tuple[float, float]]:
        return [(s["time"], s[key]) for s in run.samples
                if s["time"] >= warmed and s.get(key, 0) > 0 and not _inside(s["time"], faults)]

    fits = {key: (samples, memory_fit(samples)) for key in ("rss_own_mb", "rss_mb", "rss_shmem_mb", "heap_mb", "python_blocks")
            for samples in [between_faults(key)]}
    shared = [s for s in run.samples if s["time"] >= warmed and s.get("rss_shmem_mb", 0) > 0]
    node = final.get("", (0, "", {}))[2]
    logged = logged_problems(run.output / "logs" / "node.log")
    report = {
        "profile": dataclasses.asdict(profile), "started": start, "duration_s": end - start, "window_s": window,
        "cameras": cameras, "ground": ground, "node_counters": node_counters(node),
        "faults": [dataclasses.asdict(e) | {"start_s": e.start - start, "end_s": e.end - start} for e in run.events],
        "faults_injected": _fault_totals(run.events), "minutes": minutes,
        "latency_first_window_ms": _percentiles(first), "latency_last_window_ms": _percentiles(last),
        "network_first_window_ms": network_ms(first_window), "network_last_window_ms": network_ms(last_window),
        "memory_slope_mb_per_h": _per_hour(fits["rss_own_mb"][1]),
        "rss_slope_mb_per_h": _per_hour(fits["rss_mb"][1]),
        "shared_memory": {"slope_mb_per_h": _per_hour(fits["rss_shmem_mb"][1]),
                          "resident_mb_max": max((s["rss_shmem_mb"] for s in shared), default=math.nan),
                          "mapped_mb_max": max((s["shm_mapped_mb"] for s in shared if not math.isnan(s.get("shm_mapped_mb", math.nan))),
                                               default=math.nan)},
        "heap_slope_mb_per_h": _per_hour(fits["heap_mb"][1]),
        "python_blocks_slope_per_h": _per_hour(fits["python_blocks"][1]),
        "memory_fit": _fit_line(*fits["rss_own_mb"], start), "heap_fit": _fit_line(*fits["heap_mb"], start),
        "detections_per_frame": _spread(run.detection_counts),
        "logged": logged, "problems": run.problems, "node_exit": run.node_exit, "node_shutdown": run.node_shutdown,
        "interrupted": run.interrupted,
        "samples": run.samples,
    }
    report["checks"] = verdict(report, profile)
    report["passed"] = all(check["passed"] for check in report["checks"].values())
    return report


def node_counters(values: dict[str, str]) -> dict[str, int]:
    """The frame counters (``FrameCounters``) and the fault counts (``faults_<kind>``) among the values of a
    ``/diagnostics`` status; not its rates, times or memory."""
    return {k: int(v) for k, v in values.items() if k in FRAME_COUNTERS or k.startswith("faults_")}


def frames_accounted(values: dict[str, str]) -> bool:
    """Whether a status counts received frames (a camera that never reported has none: False) and every one
    has an outcome (processed, dropped, rejected, failed)."""
    return "received" in values and int(values["received"]) == sum(int(values.get(name, 0)) for name in OUTCOMES)


def _fault_totals(events: list[FaultEvent]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for event in events:
        entry = totals.setdefault(event.kind, {"injected": 0, "survived": 0})
        entry["injected"] += 1
        entry["survived"] += event.survived
    return totals


def _spread(values: list[int]) -> dict[str, float]:
    return {"min": min(values), "max": max(values), "count": len(values)} if values else {"count": 0}


def memory_slope_mb_per_h(samples: list[tuple[float, float]], pieces: int = 12) -> float:
    """Growth of resident memory (MB/h): a line through the median of each of ``pieces`` equal spans of
    ``samples`` (time s, MB). The median: a leak raises it; the allocator's swings, which go both ways (it
    returns freed memory to the system and takes it again: +-40 MB a minute in the 1-hour run), do not.
    NaN with fewer than 2 samples a piece."""
    return _per_hour(memory_fit(samples, pieces))


def _per_hour(fit: tuple[float, float, float] | None) -> float:
    return fit[0] * 3600 if fit else math.nan


def _fit_line(samples: list[tuple[float, float]], fit: tuple[float, float, float] | None, start: float) -> dict:
    """A :func:`memory_fit` line for the report and the plot: its ends (s from the start), slope per hour and
    the slope's standard error."""
    if not fit:
        return {}
    return {"from_s": samples[0][0] - start, "to_s": samples[-1][0] - start, "mb_at_from": fit[1] + fit[0] * samples[0][0],
            "slope_mb_per_h": fit[0] * 3600, "slope_se_mb_per_h": fit[2] * 3600}


def _float(value: str | None) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # absent, or "n/a" where the C library has no mallinfo2
        return math.nan


def memory_fit(samples: list[tuple[float, float]], pieces: int = 12) -> tuple[float, float, float] | None:
    """The line of :func:`memory_slope_mb_per_h`: (MB per second, MB at time 0, the slope's standard error in MB
    per second, from the medians' scatter about the line); None with too few samples."""
    if len(samples) < 2 * pieces:
        return None
    times, values = np.array(samples).T
    edges = np.linspace(times[0], times[-1], pieces + 1)
    medians = [(t0, np.median(values[(times >= t0) & (times <= t1)])) for t0, t1 in zip(edges, edges[1:])
               if ((times >= t0) & (times <= t1)).any()]
    x, y = np.array(medians).T
    slope, intercept = np.polyfit(x - x[0], y, 1)
    residuals = y - (intercept + slope * (x - x[0]))
    spread = ((x - x.mean()) ** 2).sum()
    error = math.sqrt((residuals ** 2).sum() / (len(x) - 2) / spread) if len(x) > 2 and spread > 0 else math.nan
    return float(slope), float(intercept - slope * x[0]), error


def _growth(first: float, last: float) -> float:
    """``last`` over ``first``, less 1 (0.2: 20 % more); NaN where either is missing."""
    return last / first - 1 if first and not math.isnan(first) and not math.isnan(last) else math.nan


def logged_problems(log: Path) -> dict[str, int]:
    """Lines of the node's log by level (ERROR, WARN) and by Python tracebacks."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return {"error": text.count("[ERROR]"), "warn": text.count("[WARN]"), "traceback": text.count("Traceback")}


def verdict(report: dict, profile: Profile) -> dict[str, dict]:
    """Each pass criterion: passed, the measured value and the limit."""
    first, last = report["latency_first_window_ms"]["p99"], report["latency_last_window_ms"]["p99"]
    heap, resident = report["heap_slope_mb_per_h"], report["memory_slope_mb_per_h"]
    resident_error = report["memory_fit"].get("slope_se_mb_per_h", math.nan)
    resident_error = 0.0 if math.isnan(resident_error) else resident_error
    growth = _growth(first, last)
    # The network runs the same batch all run long: its time is the machine's speed (this shared host's moved by
    # more than 20 % within minutes). Latency that grew no more than 20 % beyond it is no slower node.
    network = _growth(report.get("network_first_window_ms", math.nan), report.get("network_last_window_ms", math.nan))
    beyond_network = (1 + growth) / (1 + network) - 1 if not math.isnan(network) else math.nan
    cameras = report["cameras"].values()
    checks = {
        "completed": {"passed": not report.get("interrupted"), "value": "interrupted" if report.get("interrupted") else "ran",
                      "limit": "the whole duration, not interrupted (Ctrl-C)"},
        "node_alive": {"passed": report["node_exit"] is None and not report["logged"]["traceback"],
                       "value": report["node_exit"], "limit": "running until stopped, no traceback"},
        # Not judged after Ctrl-C: a terminal's Ctrl-C reaches the node too, and the harness's own SIGINT may then
        # be its second, which ends it at once (exit 130) rather than after the batch in flight.
        "node_shutdown": {"passed": bool(report.get("interrupted")) or report["node_shutdown"].get("exit") == 0,
                          "value": f"exit {report['node_shutdown'].get('exit')} after {report['node_shutdown'].get('seconds', math.nan):.1f} s",
                          "limit": "exit 0 after SIGINT (as Ctrl-C), within 15 s (then it is killed); not judged when interrupted"},
        "no_hang": {"passed": not report["problems"], "value": report["problems"], "limit": "none"},
        "faults_survived": {"passed": all(f["survived"] for f in report["faults"]) and bool(report["faults"]),
                            "value": report["faults_injected"], "limit": "every fault survived"},
        "no_starved_camera": {"passed": all(c["longest_unexcused_gap_s"] <= profile.starve_s for c in cameras),
                              "value": max((c["longest_unexcused_gap_s"] for c in cameras), default=math.nan),
                              "limit": profile.starve_s},
        "latency_p99_growth": {"passed": not math.isnan(growth) and min(growth, beyond_network) <= profile.latency_growth,
                               "value": f"{growth:+.0%} (network per batch {network:+.0%}: {beyond_network:+.0%} beyond it)",
                               "limit": f"{profile.latency_growth:+.0%}, or that beyond the network's own change"},
        # The heap in use is what a leak grows; the node's own resident pages (anon + file; the shared ones are
        # the Fast DDS segments it maps, reported apart) also count what the allocator keeps and swing
        # with it (+-13 MB/h standard error in an hour): judged where it grows faster than the limit beyond
        # two standard errors, so that a flat node does not fail on the allocator's swings.
        "heap_slope_mb_per_h": {"passed": heap <= profile.memory_slope_mb_per_h if not math.isnan(heap)
                                else not any(s.get("heap_mb", 0) > 0 for s in report["samples"]),
                                "value": heap, "limit": profile.memory_slope_mb_per_h},
        "memory_slope_mb_per_h": {"passed": not math.isnan(resident)
                                  and resident - 2 * resident_error <= profile.memory_slope_mb_per_h,
                                  "value": resident, "limit": f"{_number(profile.memory_slope_mb_per_h)} + 2 standard errors "
                                                              f"({_number(resident_error)} MB/h each)"},
        "frames_accounted": {"passed": all(frames_accounted({k: str(v) for k, v in c["node_counters"].items()})
                                           for c in cameras) and bool(report["cameras"]),
                             "value": {name: c["node_counters"].get("received", 0) - sum(c["node_counters"].get(o, 0) for o in OUTCOMES)
                                       for name, c in report["cameras"].items()},
                             "limit": "every received frame has an outcome (value: frames without one)"},
        "stamps_sent_once": {"passed": all(c["stamps_never_sent"] == 0 and c["stamps_twice"] == 0 for c in cameras)
                             and all(g["stamps_never_sent"] == 0 and g["stamps_repeated"] == 0 for g in report["ground"].values()),
                             "value": {**{name: [c["stamps_never_sent"], c["stamps_twice"]] for name, c in report["cameras"].items()},
                                       **{name: [g["stamps_never_sent"], g["stamps_repeated"]] for name, g in report["ground"].items()}},
                             "limit": "0 never sent, 0 more often than sent (fused ground outputs: repeating the previous "
                                      "message's stamp is allowed)"},
    }
    return checks


# -- report ----------------------------------------------------------------------------------------
def write_report(report: dict, output: Path) -> list[str]:
    """``report.json``, ``report.md`` and the plots (matplotlib) into ``output``; returns the files."""
    from ..evaluation.report import json_safe

    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(json_safe(report), indent=1))
    plots = _plots(report, output)
    (output / "report.md").write_text(markdown(report, plots))
    return ["report.json", "report.md", *plots]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def headline(report: dict) -> str:
    """The verdict in a few words: PASSED, INTERRUPTED, or FAILED and the checks that failed."""
    if report.get("interrupted"):
        return "INTERRUPTED"
    failed = [name for name, check in report["checks"].items() if not check["passed"]]
    return f"FAILED ({', '.join(failed)})" if failed else "PASSED"


def markdown(report: dict, plots: Sequence[str] = ()) -> str:
    """The report as markdown: verdict, per camera, faults, the series per minute."""
    profile = report["profile"]
    width, height = profile["size"]
    lines = [f"# Soak: {headline(report)}", "",
             f"Profile {profile['name']}: {profile['cameras']} cameras at {profile['rate']:g} Hz, {width}x{height}, "
             f"{report['duration_s'] / 60:.1f} min; latency windows {report['window_s'] / 60:.1f} min; detections "
             f"per frame {report['detections_per_frame']}.", "",
             "| check | passed | value | limit |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {'yes' if c['passed'] else '**no**'} | {_number(c['value'])} | {_number(c['limit'])} |"
              for name, c in report["checks"].items()]
    counters = ("received", "processed", "dropped_superseded", "dropped_stale", "dropped_inactive", "rejected_bad",
                "backend_errors", "publish_errors")
    lines += ["", "| camera | sent | " + " | ".join(counters) + " | results | never sent / twice | longest gap s |",
              "| --- " * (len(counters) + 5) + "|"]
    for name, c in report["cameras"].items():
        lines.append(f"| {name} ({c['transport']}) | {c['frames_sent']} | "
                     + " | ".join(str(c["node_counters"].get(k, "–")) for k in counters)
                     + f" | {c['outputs'].get('result', 0)} | {c['stamps_never_sent']} / {c['stamps_twice']} | "
                     f"{c['longest_unexcused_gap_s']:.1f} |")
    lines += ["", "| ground output | messages | never sent / repeated |", "| --- | --- | --- |"]
    lines += [f"| {name} | {g['outputs']} | {g['stamps_never_sent']} / {g['stamps_repeated']} |"
              for name, g in report["ground"].items()]
    lines += ["", "Ground status per camera at the end: " + ", ".join(f"{n} {c['ground'] or '–'}" for n, c in report["cameras"].items())]
    shared = report["shared_memory"]
    lines += ["", f"Node: {report['node_counters']}; logged {report['logged']}; memory slope "
              f"{_number(report['memory_slope_mb_per_h'])} MB/h (its own resident pages: anon + file), "
              f"{_number(report['heap_slope_mb_per_h'])} MB/h (heap in use), {_number(report['rss_slope_mb_per_h'])} MB/h "
              f"(all resident pages); shared memory (Fast DDS segments) {_number(shared['slope_mb_per_h'])} MB/h, at most "
              f"{_number(shared['resident_mb_max'])} MB resident of {_number(shared['mapped_mb_max'])} MB mapped; "
              f"{_number(report['python_blocks_slope_per_h'])} Python blocks/h; latency p99 first window "
              f"{_number(report['latency_first_window_ms']['p99'])} ms, last {_number(report['latency_last_window_ms']['p99'])} ms "
              f"(network per batch {_number(report['network_first_window_ms'])} ms, {_number(report['network_last_window_ms'])} ms).",
              "", "| fault | injected | survived |", "| --- | --- | --- |"]
    lines += [f"| {kind} | {t['injected']} | {t['survived']} |" for kind, t in report["faults_injected"].items()]
    for fault in report["faults"]:
        if "shm_mapped" in fault["detail"]:
            lines.append(f"\nSIGKILL of {fault['camera']} at {fault['start_s']:.0f} s: of the {len(fault['detail']['shm_mapped'])} "
                         f"own Fast DDS /dev/shm files it had mapped, {len(fault['detail'].get('shm_left_after_run', []))} were left after "
                         "the run (every process ended): " + ", ".join(fault["detail"].get("shm_left_after_run", [])))
    lines += ["", "| minute | latency p50 / p99 ms | results/s per camera | network ms per batch / node CPU cores | RSS MB (anon / file / shmem of mapped) | heap in use MB | threads | fds | "
              "/dev/shm (Fast DDS), machine-wide | errors / warnings logged | faults |", "| --- " * 11 + "|"]
    for m in report["minutes"]:
        rates = " / ".join(f"{v:.1f}" for v in m["outputs_per_s"].values())
        lines.append(f"| {m['minute']} | {_number(m['latency_ms']['p50'])} / {_number(m['latency_ms']['p99'])} | {rates} | "
                     f"{_number(m.get('inference_ms', math.nan))} / {_number(m.get('node_cpu_cores', math.nan))} | "
                     f"{_number(m['rss_mb'])} ({_number(m['rss_anon_mb'])} / {_number(m['rss_file_mb'])} / "
                     f"{_number(m['rss_shmem_mb'])} of {_number(m.get('shm_mapped_mb', math.nan))}) | {_number(m['heap_mb'])} | {_number(m['threads'])} | {_number(m['fds'])} | {_number(m['shm_files'])} "
                     f"({_number(m['shm_fastdds'])}) | {m['logged']['error']} / {m['logged']['warn']} | {', '.join(m['faults'])} |")
    shown = ("received", "processed", *(name for name in OUTCOMES if name != "processed"))
    lines += ["", "Frames per minute by camera: " + ", ".join(shown), "", "| minute | camera | " + " | ".join(shown) + " |",
              "| --- " * (len(shown) + 2) + "|"]
    for m in report["minutes"]:
        lines += [f"| {m['minute']} | {camera} | " + " | ".join(str(counts[name]) for name in shown) + " |"
                  for camera, counts in m["frames"].items()]
    if report["problems"]:
        lines += ["", "Problems:", *(f"- {p}" for p in report["problems"])]
    lines += ["", *(f"![{p}]({p})" for p in plots)]
    return "\n".join(lines) + "\n"


def _plots(report: dict, output: Path) -> list[str]:
    """``soak.png``, titled with the verdict (:func:`headline`): latency, results per second, resident memory (each sample, and the median line whose slope
    is judged, after warm-up, between faults), threads, files and /dev/shm, over minutes; each fault a vertical line coloured by
    kind (legend below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = report["minutes"]
    if not minutes:
        return []
    x = [m["minute"] + m["seconds"] / 120 for m in minutes]  # each minute at its middle
    figure, axes = plt.subplots(4, 1, figsize=(9, 12), sharex=True)
    axes[0].plot(x, [m["latency_ms"]["p50"] for m in minutes], label="p50")
    axes[0].plot(x, [m["latency_ms"]["p99"] for m in minutes], label="p99")
    axes[0].plot(x, [m.get("inference_ms", math.nan) for m in minutes], label="network per batch (median): the machine's speed")
    figure.suptitle(f"Soak: {headline(report)}", fontweight="bold")
    axes[0].set(ylabel="latency ms", title="Output latency, results per second, node memory and resources")
    for camera in minutes[0]["outputs_per_s"]:
        axes[1].plot(x, [m["outputs_per_s"][camera] for m in minutes], label=camera)
    axes[1].set(ylabel="results/s")
    samples = report["samples"]
    for key, name, fit, style in (("rss_mb", "resident, all", None, None),
                                  ("rss_own_mb", "resident, own (anon + file)", report["memory_fit"], "k--"),
                                  ("heap_mb", "heap in use", report.get("heap_fit"), "r--")):
        axes[2].plot([(s["time"] - report["started"]) / 60 for s in samples], [s.get(key, math.nan) for s in samples],
                     lw=0.6, label=f"{name} MB")
        if fit:
            axes[2].plot([fit["from_s"] / 60, fit["to_s"] / 60],
                         [fit["mb_at_from"], fit["mb_at_from"] + fit["slope_mb_per_h"] * (fit["to_s"] - fit["from_s"]) / 3600],
                         style, label=f"{name}: median fit after warm-up, between faults: {fit['slope_mb_per_h']:+.1f} MB/h")
    axes[2].set(ylabel="MB")
    for key in ("threads", "fds", "shm_files", "shm_fastdds"):
        axes[3].plot(x, [m[key] for m in minutes], label=key)
    axes[3].set(ylabel="count (per minute, max)", xlabel="minute")
    kinds = list(dict.fromkeys(fault["kind"] for fault in report["faults"]))
    colours = plt.get_cmap("tab20")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=7)
        for fault in report["faults"]:
            axis.axvline(fault["start_s"] / 60, color=colours(kinds.index(fault["kind"]) % 20), alpha=0.6, lw=0.8)
    handles = [plt.Line2D([], [], color=colours(i % 20), lw=1.5) for i in range(len(kinds))]
    figure.legend(handles, kinds, loc="lower center", ncol=4, fontsize=7, title="faults (start)")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(output / "soak.png", dpi=100)
    plt.close(figure)
    return ["soak.png"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="panoptic-perception soak", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full",
                        help="full (default): 1 h, 4 cameras at 1280x720, 30 Hz; suite: 3 min, 2 cameras at 640x360, 15 Hz")
    parser.add_argument("--duration", type=positive(parse_duration), help="run time (e.g. 1h, 5m, 180s; default: the profile's)")
    parser.add_argument("--cameras", type=positive(int), help="cameras (default: the profile's)")
    parser.add_argument("--size", type=frame_size, help="camera frame WxH (default: the profile's)")
    parser.add_argument("--rate", type=positive(float), help="camera frames per second (default: the profile's)")
    parser.add_argument("--output", required=True, help="report folder (report.json, report.md, soak.png, logs/)")
    args = parser.parse_args(argv)
    changes = {k: v for k, v in (("cameras", args.cameras), ("rate", args.rate), ("size", args.size)) if v is not None}
    profile = dataclasses.replace(PROFILES[args.profile], **changes)
    output = Path(args.output)
    try:
        harness = Harness(profile, args.duration or profile.duration_s, output)
    except ValueError as error:  # e.g. a frame size no synthetic scene can have
        parser.error(str(error))
    report = harness.run()
    write_report(report, output)
    print(markdown(report))
    return 130 if report["interrupted"] else 0 if report["passed"] else 1


if __name__ == "__main__":  # the node process of a soak run (see node_main)
    sys.exit(node_main(sys.argv[1:]))
