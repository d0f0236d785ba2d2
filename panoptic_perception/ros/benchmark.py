"""Node overhead across processes: end-to-end latency of the node minus the backend's own time.

In one run: the backend alone, in this process, on 1280x720 synthetic frames; then the node and a
camera as separate processes (camera → node → this process over DDS, the package's Fast DDS
profile), with this process subscribed to ``~/result``. For every frame, end-to-end latency is the
arrival time of its result minus the camera's stamp, and the node's overhead is that latency minus
the backend time the node measured for the frame (pre-processing + inference + post-processing).
The overhead thus contains both DDS transfers, message conversion and the node's scheduling.

``--cameras N`` measures, in one run, one node serving N cameras (their newest frames in one batch)
against N single-camera nodes, each camera a process of its own at the same rate: the results per
second of all cameras together, each camera's output rate and latency, and the nodes' peak resident
memory together.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backends import create_backend
from ..core.io import frame_size
from ..core.memory import rss_mb
from ..data.synthetic import generate_scene
from ..evaluation.latency import measure_latency
from .conversions import message_class
from .topics import GROUND_TOPICS

PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_data.xml"


def _stats(values: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, float)
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "mean": float(values.mean())}


def benchmark(backend: str, weights: str | None, size: tuple[int, int], rate: float, seconds: float,
              parameters: Sequence[str], ground: bool = False) -> dict:
    """The single-camera node benchmark (module docstring). ``ground``: the camera repeats one scene with its
    exact CameraInfo (a calibration that does not change: the lookup table is built once), the node has a level
    mount 1.5 m up and every ground output is subscribed to, and the report has ``ground_ms``, the node's median
    ground step per batch and per camera frame (its diagnostics)."""
    image = generate_scene(0, *size).image
    local = measure_latency({"backend": create_backend(backend, weights)}, image, runs=30, warmup=5)["backend"]

    log_dir = Path(tempfile.mkdtemp(prefix="panoptic_benchmark_"))
    env = process_environment(log_dir)
    overrides = [f"backend:={backend}", *([f"weights:={weights}"] if weights else []),
                 *(["mount:=[0.0,0.0,1.5,0.0,0.0,0.0]"] if ground else []), *parameters]
    node_args = [sys.executable, "-m", "panoptic_perception.cli", "node", "--ros-args", "-r", "image:=/benchmark/image",
                 "-r", "camera_info:=/benchmark/camera_info", *sum((["-p", p] for p in overrides), [])]
    recording = record([node_args], {"camera": "/panoptic_perception/result"}, {"camera": "/benchmark/image"}, size,
                       rate, seconds, log_dir, env,
                       # One scene: each synthetic scene has its own horizon (K), a real camera's calibration stays.
                       distinct=1 if ground else 30,
                       # the node builds only the outputs someone subscribes to
                       ground_topics={f"/panoptic_perception/{t.name}": t.msg_type for t in GROUND_TOPICS.values()} if ground else {})
    arrivals, diagnostics = recording.results["camera"], recording.diagnostics
    warm = arrivals[3:]  # the first frames include discovery and lazily allocated buffers
    if not warm:
        raise RuntimeError(f"no results arrived; see {log_dir}")
    end_to_end = [(t - _stamp_ns(m)) / 1e6 for t, m in warm]
    in_node = [m.preprocess_ms + m.inference_ms + m.postprocess_ms for _, m in warm]
    return {
        "backend": backend,
        "frame_size": list(size),
        "rate_hz": rate,
        "frames_published": int(rate * seconds),
        "results_received": len(arrivals),
        "backend_in_process_ms": {"median": local["total_ms"]["median"], "p95": local["total_ms"]["p90"]},
        "backend_in_node_ms": _stats(in_node),
        "end_to_end_ms": _stats(end_to_end),
        "node_overhead_ms": _stats([e - b for e, b in zip(end_to_end, in_node)]),
        # The node's own view (its diagnostics, median over its last frames): time a frame waited for
        # the worker, decoding, and building + publishing the outputs.
        "node_stages_ms": {
            stage: float(diagnostics[-1][f"{stage}_median_ms"]) for stage in ("queue_wait", "decode", "publish")
        } if diagnostics else {},
        **({"ground_ms": {"per_batch": float(diagnostics[-1]["ground_per_batch_median_ms"]),
                          "per_camera_frame": float(diagnostics[-1]["ground_median_ms"])}} if ground and diagnostics else {}),
        "logs": str(log_dir),
    }


def process_environment(log_dir: Path) -> dict[str, str]:
    """The processes' environment: an own domain, localhost discovery, the package's Fast DDS profile; also
    applied to this process."""
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(101 - os.getpid() % 50)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(log_dir),
        "FASTRTPS_DEFAULT_PROFILES_FILE": os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", str(PROFILE)),
        "FASTDDS_DEFAULT_PROFILES_FILE": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", str(PROFILE)),
    }
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR",
                                            "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")})
    return env


#: The launcher of :func:`with_parent`: sets the parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``, kept
#: across exec) and execs the command, unless the parent has already gone.
_PARENT_DEATH_LAUNCHER = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):  # not Linux: the command runs without it
    pass
if os.getppid() == int(sys.argv[1]):
    os.execvp(sys.argv[2], sys.argv[2:])
"""


def with_parent(args: list[str]) -> list[str]:
    """``args`` (the program first) as a command that gets SIGTERM when the process that starts it ends,
    even by SIGKILL: a harness killed (a test's timeout, an OOM kill) leaves no node or camera running. Start it
    from the main thread: the signal follows the thread that started the child."""
    return [sys.executable, "-c", _PARENT_DEATH_LAUNCHER, str(os.getpid()), *args]


def stop_processes(processes) -> None:
    """Ends each process with SIGINT (as Ctrl-C would), then kills those still running after 15 s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Recording:
    """What :func:`record` saw: each camera's results as (arrival ns, message), the nodes' /diagnostics
    statuses (values by key, in arrival order), the nodes' peak resident memory together (MiB) and how long
    the cameras ran (s)."""

    results: dict[str, list[tuple[int, Any]]]
    diagnostics: list[dict[str, str]]
    peak_rss_mb: float
    seconds: float


def record(nodes: list[list[str]], result_topics: dict[str, str], image_topics: dict[str, str], size: tuple[int, int],
           rate: float, seconds: float, log_dir: Path, env: dict[str, str], distinct: int = 30,
           ground_topics: dict[str, str] | None = None) -> Recording:
    """Start the node processes ``nodes`` (argument lists) and wait until they publish ``result_topics``,
    then one camera process per camera (``distinct`` synthetic ``size`` frames on ``image_topics[camera]``,
    frame_id the camera's name, at ``rate`` for ``seconds``), and record each camera's results on
    ``result_topics[camera]`` until 2 s after the cameras end. ``ground_topics``: topic → its type
    (``nav_msgs/msg/OccupancyGrid``), subscribed to (messages discarded), and the cameras publish their
    CameraInfo, so that the nodes build their ground outputs.
    Raises RuntimeError when the nodes do not start."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from ..msg import DrivingPerception

    cli = [sys.executable, "-m", "panoptic_perception.cli"]
    processes = [subprocess.Popen(with_parent(args), env=env, stdout=open(log_dir / f"node_{i}.log", "w"), stderr=subprocess.STDOUT)
                 for i, args in enumerate(nodes)]
    node_pids = [p.pid for p in processes]
    rclpy.init()
    probe = rclpy.create_node("node_benchmark")
    results: dict[str, list[tuple[int, Any]]] = {camera: [] for camera in result_topics}
    for camera, topic in result_topics.items():
        probe.create_subscription(
            DrivingPerception, topic,
            lambda msg, camera=camera: results[camera].append((probe.get_clock().now().nanoseconds, msg)),
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    for topic, msg_type in (ground_topics or {}).items():
        probe.create_subscription(message_class(msg_type), topic, lambda msg: None,
                                  QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    diagnostics: list[dict[str, str]] = []
    probe.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda msg: diagnostics.extend({kv.key: kv.value for kv in s.values} for s in msg.status), 10,
    )
    peak_mb = 0.0
    try:
        deadline = time.monotonic() + 180
        while any(probe.count_publishers(topic) == 0 for topic in result_topics.values()):
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                raise RuntimeError(f"the nodes did not start; see {log_dir}")
            rclpy.spin_once(probe, timeout_sec=0.1)
        count = int(rate * seconds)
        cameras = [subprocess.Popen(with_parent(
            [*cli, "camera", "--topic", topic, "--frame-id", camera, "--rate", str(rate), "--count", str(count),
             "--size", f"{size[0]}x{size[1]}", "--distinct", str(distinct), "--wait-for-subscriber", "60",
             *(["--camera-info"] if ground_topics else [])]),
            env=env, stdout=open(log_dir / f"camera_{camera}.log", "w"), stderr=subprocess.STDOUT,
        ) for camera, topic in image_topics.items()]
        processes += cameras
        started = time.monotonic()
        while any(c.poll() is None for c in cameras):
            rclpy.spin_once(probe, timeout_sec=0.05)
            peak_mb = max(peak_mb, sum(rss_mb(pid) for pid in node_pids))
        ended = time.monotonic()
        settle = ended + 2.0  # the last frames' results
        while time.monotonic() < settle:
            rclpy.spin_once(probe, timeout_sec=0.05)
    finally:
        stop_processes(processes)
        probe.destroy_node()
        rclpy.try_shutdown()
    return Recording(results, diagnostics, peak_mb, ended - started)


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def camera_rates(recording: Recording, rate: float, seconds: float) -> dict:
    """Results per second over the cameras' run, all together and per camera, latency (arrival minus the
    frame's stamp) per camera, and the nodes' peak memory."""
    per_camera = {}
    for camera, received in recording.results.items():
        warm = received[3:]  # the first results include discovery and lazily allocated buffers
        latency = [(t - _stamp_ns(msg)) / 1e6 for t, msg in warm]
        per_camera[camera] = {"results": len(received), "results_per_s": len(received) / recording.seconds,
                              **({"latency_ms": _stats(latency)} if latency else {})}
    total = sum(c["results"] for c in per_camera.values())
    return {"results_per_s": total / recording.seconds, "cameras": per_camera, "peak_rss_mb": recording.peak_rss_mb,
            "frames_published": int(rate * seconds) * len(recording.results)}


def benchmark_cameras(backend: str, weights: str | None, size: tuple[int, int], rate: float, seconds: float,
                      cameras: int, parameters: Sequence[str]) -> dict:
    """In one run: one node serving ``cameras`` cameras in batches, then as many single-camera nodes, each
    with its own camera process (same backend, frames, rate and duration). Returns both measurements and
    their ratios (aggregate results per second, spread of the per-camera output rates, memory)."""
    log_dir = Path(tempfile.mkdtemp(prefix="panoptic_cameras_benchmark_"))
    env = process_environment(log_dir)
    cli = [sys.executable, "-m", "panoptic_perception.cli", "node", "--ros-args"]
    overrides = [f"backend:={backend}", *([f"weights:={weights}"] if weights else []), *parameters]
    names = [f"cam{i}" for i in range(cameras)]
    images = {name: f"/benchmark/{name}/image" for name in names}
    one = [*cli, *sum((["-p", p] for p in overrides), []), "-p", f"cameras:=[{','.join(names)}]",
           *sum((["-p", f"cameras.{name}.image_topic:={topic}"] for name, topic in images.items()), [])]
    for folder in ("one_node", "separate_nodes"):
        (log_dir / folder).mkdir()
    shared = camera_rates(record([one], {name: f"/panoptic_perception/{name}/result" for name in names}, images, size,
                                 rate, seconds, log_dir / "one_node", env, distinct=4), rate, seconds)
    separate_nodes = [[*cli, "-r", f"__ns:=/{name}", "-r", f"image:={images[name]}", *sum((["-p", p] for p in overrides), [])]
                      for name in names]
    separate = camera_rates(record(separate_nodes, {name: f"/{name}/panoptic_perception/result" for name in names},
                                   images, size, rate, seconds, log_dir / "separate_nodes", env, distinct=4), rate, seconds)
    rates = [c["results_per_s"] for c in shared["cameras"].values()]
    return {
        "backend": backend, "cameras": cameras, "frame_size": list(size), "rate_hz": rate, "seconds": seconds,
        "one_node": shared, "separate_nodes": separate,
        "aggregate_ratio": shared["results_per_s"] / max(separate["results_per_s"], 1e-9),
        "one_node_rate_spread": (max(rates) - min(rates)) / max(max(rates), 1e-9),
        "memory_ratio": shared["peak_rss_mb"] / max(separate["peak_rss_mb"], 1e-9),
        "logs": str(log_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="panoptic-perception node-benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="twinlitenet")
    parser.add_argument("--weights")
    parser.add_argument("--size", type=frame_size, default=(1280, 720), help="camera frame WxH (bgr8)")
    parser.add_argument("--rate", type=float, default=None, help="camera frames per second (default 10; 15 with --cameras)")
    parser.add_argument("--seconds", type=float, default=None, help="camera run time (default 10; 20 with --cameras)")
    parser.add_argument("--cameras", type=int, default=0, metavar="N",
                        help="one node serving N cameras against N single-camera nodes, in one run")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter (repeatable)")
    parser.add_argument("--ground", action="store_true",
                        help="single camera: with its CameraInfo, a mount and the ground outputs subscribed; reports "
                             "the node's ground step per batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    size = args.size
    if args.cameras:
        rate, seconds = args.rate or 15.0, args.seconds or 20.0
        report = benchmark_cameras(args.backend, args.weights, size, rate, seconds, args.cameras, args.parameter)
        print(json.dumps(report, indent=2) if args.json else cameras_table(report))
        return 0
    report = benchmark(args.backend, args.weights, size, args.rate or 10.0, args.seconds or 10.0, args.parameter,
                       args.ground)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['backend']}: {size[0]}x{size[1]} bgr8 at {report['rate_hz']:g} Hz, "
          f"{report['results_received']}/{report['frames_published']} results")
    print(f"{'':28} {'median ms':>10} {'p95 ms':>10}")
    for name in ("backend_in_process_ms", "backend_in_node_ms", "end_to_end_ms", "node_overhead_ms"):
        print(f"{name[:-3].replace('_', ' '):28} {report[name]['median']:>10.2f} {report[name]['p95']:>10.2f}")
    stages = ", ".join(f"{k.replace('_', ' ')} {v:.2f} ms" for k, v in report["node_stages_ms"].items())
    print(f"inside the node (median): {stages}")
    if "ground_ms" in report:
        print(f"ground step (median): {report['ground_ms']['per_batch']:.2f} ms per batch, "
              f"{report['ground_ms']['per_camera_frame']:.2f} ms per camera frame")
    return 0


def cameras_table(report: dict) -> str:
    """The multi-camera benchmark as a markdown table and its ratios."""
    width, height = report["frame_size"]
    lines = [f"{report['backend']}: {report['cameras']} cameras, {width}x{height} at {report['rate_hz']:g} Hz for "
             f"{report['seconds']:g} s each",
             "", "| | results/s (all cameras) | per camera results/s | latency median / p95 ms (per camera) | peak RSS MiB |",
             "| --- | --- | --- | --- | --- |"]
    for key, label in (("one_node", "one node, batched"), ("separate_nodes", "one node per camera")):
        run = report[key]
        rates = " / ".join(f"{c['results_per_s']:.1f}" for c in run["cameras"].values())
        latency = " / ".join(f"{c['latency_ms']['median']:.0f}, {c['latency_ms']['p95']:.0f}" if "latency_ms" in c else "-"
                             for c in run["cameras"].values())
        lines.append(f"| {label} | {run['results_per_s']:.2f} | {rates} | {latency} | {run['peak_rss_mb']:.0f} |")
    lines += ["", f"aggregate one node / separate nodes: {report['aggregate_ratio']:.2f}x; spread of the one node's "
              f"per-camera rates: {report['one_node_rate_spread']:.1%}; memory one node / separate nodes: "
              f"{report['memory_ratio']:.2f}", f"logs: {report['logs']}"]
    return "\n".join(lines)
