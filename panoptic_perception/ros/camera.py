"""A stand-in camera: publishes synthetic scenes, image files or a video as a ROS 2 image topic.

For trying the node and RViz without a camera, and for the multi-process tests. Frames are stamped
with the time of publishing and ``frame_id`` (default ``camera``).
"""

from __future__ import annotations

import argparse
import array
import itertools
import sys
import time
from typing import Iterator, Sequence

import cv2
import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.io import FrameSource
from ..data.synthetic import generate_scene
from .conversions import bgr_to_image


def synthetic_frames(size: tuple[int, int], first_seed: int = 0, distinct: int = 30) -> Iterator[np.ndarray]:
    """``distinct`` synthetic scenes, repeated forever (generating 720p scenes live would cost 30 ms each)."""
    frames = [generate_scene(first_seed + i, *size).image for i in range(distinct)]
    return itertools.cycle(frames)


def file_frames(inputs: Sequence[str], loop: bool) -> Iterator[np.ndarray]:
    while True:
        for frame in FrameSource(inputs):
            if frame.image is not None:
                yield frame.image
        if not loop:
            return


def compressed_msg(image: np.ndarray, header: Header, quality: int = 90) -> CompressedImage:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    msg = CompressedImage(header=header, format="jpeg")
    msg.data = array.array("B", encoded.tobytes())
    return msg


def publish(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="panoptic-perception camera", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="images, folders or videos (default: synthetic scenes)")
    parser.add_argument("--topic", default="/camera/image_raw", help="raw topic; compressed goes to TOPIC/compressed")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--count", type=int, default=0, help="frames to publish; 0: until stopped")
    parser.add_argument("--size", default="1280x720", help="synthetic frame WxH")
    parser.add_argument("--distinct", type=int, default=30, metavar="N",
                        help="synthetic: how many scenes to render at start and repeat (default 30)")
    parser.add_argument("--compressed", action="store_true", help="publish sensor_msgs/CompressedImage (jpeg)")
    parser.add_argument("--reliability", choices=("best_effort", "reliable"), default="best_effort")
    parser.add_argument("--frame-id", default="camera")
    parser.add_argument("--loop", action="store_true", help="repeat the inputs")
    parser.add_argument("--wait-for-subscriber", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for subscribers before publishing")
    parser.add_argument("--subscribers", type=int, default=1, metavar="N", help="how many to wait for (default 1)")
    parser.add_argument("--stamps", metavar="FILE",
                        help="write the stamp of every published frame to FILE as it is published (integer ns, one "
                             "per line; the last may be of a frame interrupted by the stop; a killed camera's file "
                             "keeps every frame it published)")
    args, ros_args = parser.parse_known_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = file_frames(args.inputs, args.loop) if args.inputs else synthetic_frames((width, height), distinct=args.distinct)

    rclpy.init(args=ros_args or None)
    node = rclpy.create_node("camera")
    reliability = ReliabilityPolicy.BEST_EFFORT if args.reliability == "best_effort" else ReliabilityPolicy.RELIABLE
    qos = QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=5)
    topic = f"{args.topic}/compressed" if args.compressed else args.topic
    publisher = node.create_publisher(CompressedImage if args.compressed else Image, topic, qos)
    deadline = time.monotonic() + args.wait_for_subscriber
    while publisher.get_subscription_count() < args.subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    period = 1.0 / args.rate
    next_time = time.monotonic()
    sent = 0
    # Line-buffered: each stamp reaches the file before its frame is published (SIGKILL loses none).
    stamps = open(args.stamps, "w", buffering=1) if args.stamps else None
    try:
        for image in frames:
            now = node.get_clock().now()
            header = Header(stamp=now.to_msg(), frame_id=args.frame_id)
            if stamps:  # first: a stop may interrupt the publishing, not hide a sent frame
                stamps.write(f"{now.nanoseconds}\n")
            publisher.publish(compressed_msg(image, header) if args.compressed else bgr_to_image(image, header))
            sent += 1
            if args.count and sent >= args.count:
                break
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
    except KeyboardInterrupt:
        pass
    except Exception:
        if node.context.ok():
            raise
        # else rclpy's signal handler (Ctrl-C, SIGTERM) shut the context down mid-publish: the stream just ends
    finally:
        if stamps:  # before the log line, which tells a waiting reader that the file is complete
            stamps.close()
        summary = f"published {sent} frames on {publisher.topic_name}"
        if node.context.ok():
            node.get_logger().info(summary)
        else:  # after a signal the context is gone and /rosout with it
            print(f"[camera] {summary}", file=sys.stderr, flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
