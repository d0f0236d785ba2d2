"""Node overhead across processes: end-to-end latency of the node minus the backend's own time.

In one run: the backend alone, in this process, on 1280x720 synthetic frames; then the node and a
camera as separate processes (camera → node → this process over DDS, the package's Fast DDS
profile), with this process subscribed to ``~/result``. For every frame, end-to-end latency is the
arrival time of its result minus the camera's stamp, and the node's overhead is that latency minus
the backend time the node measured for the frame (pre-processing + inference + post-processing).
The overhead thus contains both DDS transfers, message conversion and the node's scheduling.
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
from pathlib import Path
from typing import Sequence

import numpy as np

from ..backends import create_backend
from ..data.synthetic import generate_scene
from ..evaluation.latency import measure_latency

PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_data.xml"


def _stats(values: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, float)
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "mean": float(values.mean())}


def benchmark(backend: str, weights: str | None, size: tuple[int, int], rate: float, seconds: float,
              parameters: Sequence[str]) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from ..msg import DrivingPerception

    image = generate_scene(0, *size).image
    local = measure_latency({"backend": create_backend(backend, weights)}, image, runs=30, warmup=5)["backend"]

    log_dir = Path(tempfile.mkdtemp(prefix="panoptic_benchmark_"))
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
    cli = [sys.executable, "-m", "panoptic_perception.cli"]
    overrides = [f"backend:={backend}", *([f"weights:={weights}"] if weights else []), *parameters]
    node_args = [*cli, "node", "--ros-args", "-r", "image:=/benchmark/image", *sum((["-p", p] for p in overrides), [])]
    node = subprocess.Popen(node_args, env=env, stdout=open(log_dir / "node.log", "w"), stderr=subprocess.STDOUT)
    camera = None
    rclpy.init()
    probe = rclpy.create_node("node_benchmark")
    arrivals: list[tuple[int, DrivingPerception]] = []
    probe.create_subscription(
        DrivingPerception, "/panoptic_perception/result",
        lambda msg: arrivals.append((probe.get_clock().now().nanoseconds, msg)),
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )
    diagnostics: list[dict[str, str]] = []
    probe.create_subscription(
        DiagnosticArray, "/diagnostics",
        lambda msg: diagnostics.extend({kv.key: kv.value for kv in s.values} for s in msg.status), 10,
    )
    try:
        deadline = time.monotonic() + 120
        while probe.count_publishers("/panoptic_perception/result") == 0:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start; see {log_dir / 'node.log'}")
            rclpy.spin_once(probe, timeout_sec=0.1)
        count = int(rate * seconds)
        camera = subprocess.Popen(
            [*cli, "camera", "--topic", "/benchmark/image", "--rate", str(rate), "--count", str(count),
             "--size", f"{size[0]}x{size[1]}", "--wait-for-subscriber", "30"],
            env=env, stdout=open(log_dir / "camera.log", "w"), stderr=subprocess.STDOUT,
        )
        while camera.poll() is None:
            rclpy.spin_once(probe, timeout_sec=0.05)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            rclpy.spin_once(probe, timeout_sec=0.05)
    finally:
        for process in (camera, node):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        probe.destroy_node()
        rclpy.try_shutdown()

    warm = arrivals[3:]  # the first frames include discovery and lazily allocated buffers
    if not warm:
        raise RuntimeError(f"no results arrived; see {log_dir}")
    end_to_end = [(t - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)) / 1e6 for t, m in warm]
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
        "logs": str(log_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="panoptic-perception node-benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="twinlitenet")
    parser.add_argument("--weights")
    parser.add_argument("--size", default="1280x720", help="camera frame WxH (bgr8)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    report = benchmark(args.backend, args.weights, size, args.rate, args.seconds, args.parameter)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['backend']}: {size[0]}x{size[1]} bgr8 at {args.rate:g} Hz for {args.seconds:g} s, "
          f"{report['results_received']}/{report['frames_published']} results")
    print(f"{'':28} {'median ms':>10} {'p95 ms':>10}")
    for name in ("backend_in_process_ms", "backend_in_node_ms", "end_to_end_ms", "node_overhead_ms"):
        print(f"{name[:-3].replace('_', ' '):28} {report[name]['median']:>10.2f} {report[name]['p95']:>10.2f}")
    stages = ", ".join(f"{k.replace('_', ' ')} {v:.2f} ms" for k, v in report["node_stages_ms"].items())
    print(f"inside the node (median): {stages}")
    return 0
