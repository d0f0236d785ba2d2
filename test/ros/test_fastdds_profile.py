"""config/fastdds_large_data.xml, for real: 720p bgr8 images at 30 Hz between two processes, BEST_EFFORT.

Two child processes (a publisher and a subscriber, rclpy on Fast DDS) are started with the profile in
their environment; the subscriber counts the frames that arrive. Without the profile, Fast DDS's
512 KB shared-memory segment cannot hold a 2.7 MB image, it goes over UDP in ~40 fragments, and a
best-effort subscriber loses most frames (how many is machine dependent, so it is not asserted).

Isolation: a ROS domain id from the pid, localhost-only discovery, a topic name with the pid, logs in
tmp_path. Both processes are killed in a finally, and Fast DDS's shared-memory files of processes that
are gone are removed (`fastdds shm clean`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "config" / "fastdds_large_data.xml"

FRAMES = 60
RATE_HZ = 30.0
WIDTH, HEIGHT = 1280, 720
MIN_RECEIVED_FRACTION = 0.9

# Fast DDS 2.x (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE; 3.x (Kilted on) reads FASTDDS_...
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")

PUBLISHER = """
import array, pathlib, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import Image

topic, frames, rate, width, height = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
go = pathlib.Path(sys.argv[6])
rclpy.init()
node = rclpy.create_node("large_image_publisher")
qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
publisher = node.create_publisher(Image, topic, qos)
deadline = time.monotonic() + 30.0
# Both sides must know each other (a best-effort reader drops data of writers it has not matched yet):
# this side from the subscription count, the subscriber's side from the go file the test writes once the
# subscriber reports that it sees this publisher.
while publisher.get_subscription_count() < 1 or not go.exists():
    if time.monotonic() > deadline:
        print("NO_SUBSCRIBER", flush=True)
        sys.exit(2)
    time.sleep(0.02)
message = Image(height=height, width=width, encoding="bgr8", step=width * 3)
message.header.frame_id = "camera"
message.data = array.array("B", bytes(range(256)) * (width * height * 3 // 256))
start = time.monotonic()
for index in range(frames):
    time.sleep(max(0.0, start + index / rate - time.monotonic()))
    message.header.stamp.sec = index  # the frame number, read back by the subscriber
    publisher.publish(message)
print(f"SENT {frames} {time.monotonic() - start:.2f}", flush=True)
time.sleep(0.5)  # let the last samples leave before the participant goes away
node.destroy_node()
rclpy.shutdown()
"""

SUBSCRIBER = """
import json, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import Image

topic, frames, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rclpy.init()
node = rclpy.create_node("large_image_subscriber")
received, bad = set(), 0

def on_image(message):
    global bad
    if message.width != width or message.height != height or len(message.data) != width * height * 3:
        bad += 1
    received.add(message.header.stamp.sec)

qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
node.create_subscription(Image, topic, on_image, qos)
deadline = time.monotonic() + 60.0  # only against a hang: the events below end the loops
while node.count_publishers(topic) < 1 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.02)
print("MATCHED", flush=True)
# Until every frame is in, or the publisher (which leaves after sending) is gone and nothing is pending.
while len(received) < frames and time.monotonic() < deadline:
    if node.count_publishers(topic) == 0:
        rclpy.spin_once(node, timeout_sec=0.5)
        break
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps({"received": len(received), "bad": bad}), flush=True)
node.destroy_node()
rclpy.shutdown()
"""


def ros_environment(tmp_path: Path, profile: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    for name in (*PROFILE_VARIABLES, "FASTDDS_BUILTIN_TRANSPORTS", "ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS",
                 "RMW_FASTRTPS_USE_QOS_FROM_XML", "ROS_DISCOVERY_SERVER"):
        env.pop(name, None)
    env.update(
        ROS_DOMAIN_ID=str(1 + os.getpid() % 100),  # 1..100: never the default domain 0
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp_path / "ros_log"),
        RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
        SKIP_DEFAULT_XML_FILE="1",  # no DEFAULT_FASTRTPS_PROFILES.xml from the working directory
        PYTHONUNBUFFERED="1",
    )
    if profile is not None:
        for name in PROFILE_VARIABLES:
            env[name] = str(profile)
    return env


def clean_shared_memory() -> None:
    """Removes Fast DDS shared-memory files whose processes are gone (never those still in use)."""
    fastdds = Path(sys.executable).parent / "fastdds"
    command = [str(fastdds)] if fastdds.exists() else ([shutil.which("fastdds")] if shutil.which("fastdds") else None)
    if command:
        subprocess.run([*command, "shm", "clean"], capture_output=True, timeout=20, check=False)


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def send_images(tmp_path: Path, profile: Path | None, frames: int = FRAMES) -> dict:
    """Publishes `frames` 720p bgr8 images at 30 Hz from one process to another; returns the counts."""
    (tmp_path / "ros_log").mkdir(exist_ok=True)
    publisher_script = tmp_path / "publisher.py"
    subscriber_script = tmp_path / "subscriber.py"
    publisher_script.write_text(PUBLISHER)
    subscriber_script.write_text(SUBSCRIBER)
    env = ros_environment(tmp_path, profile)
    topic = f"/fastdds_profile_test_{os.getpid()}/image"
    subscriber = publisher = None
    try:
        subscriber = subprocess.Popen(
            [sys.executable, str(subscriber_script), topic, str(frames), str(WIDTH), str(HEIGHT)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        go = tmp_path / "go"
        publisher = subprocess.Popen(
            [sys.executable, str(publisher_script), topic, str(frames), str(RATE_HZ), str(WIDTH), str(HEIGHT), str(go)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        early = []  # the subscriber's output up to the moment it sees the publisher
        for line in subscriber.stdout:
            early.append(line)
            if line.strip() == "MATCHED":
                go.touch()
                break
        publisher_output, _ = publisher.communicate(timeout=90)
        subscriber_output, _ = subscriber.communicate(timeout=90)
        subscriber_output = "".join(early) + subscriber_output
    finally:
        stop(publisher)
        stop(subscriber)
        clean_shared_memory()
    assert publisher.returncode == 0 and f"SENT {frames}" in publisher_output, publisher_output
    assert subscriber.returncode == 0, subscriber_output
    result = json.loads(subscriber_output.strip().splitlines()[-1])
    result["publisher"] = publisher_output.strip().splitlines()[-1]
    return result


@pytest.fixture(scope="module")
def rclpy_available():
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
    pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm: Fast DDS's shared-memory transport is unavailable")


def test_profile_delivers_best_effort_720p_images_between_processes(rclpy_available, tmp_path):
    started = time.monotonic()
    result = send_images(tmp_path, PROFILE)
    print(f"with {PROFILE.name}: {result} in {time.monotonic() - started:.1f} s")
    assert result["bad"] == 0, result
    assert result["received"] >= MIN_RECEIVED_FRACTION * FRAMES, result
