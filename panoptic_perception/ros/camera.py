"""A stand-in camera: publishes synthetic scenes, image files or a video as a ROS 2 image topic.

For trying the node and RViz without a camera, and for the multi-process tests. Frames are stamped
with the time of publishing and ``frame_id`` (default ``camera``). With ``--camera-info`` a synthetic
scene's exact camera is published beside each frame, with its header, on the ``camera_info`` topic next
to the image topic (``/front/image_raw`` → ``/front/camera_info``); ``--roi`` publishes only a region of
interest of each scene (CameraInfo ``roi`` set, K of the whole image), as a cropping camera does.
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
from rclpy.duration import Duration
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..core.io import FrameSource
from ..data.synthetic import PinholeCamera, generate_scene
from .conversions import bgr_to_image, camera_info_msg
from .topics import camera_info_topic


def synthetic_frames(size: tuple[int, int], first_seed: int = 0, distinct: int = 30,
                     roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Iterator[tuple[np.ndarray, PinholeCamera]]:
    """``distinct`` synthetic scenes (the image, cropped to ``roi`` x, y, w, h where w is not 0, and its exact
    camera), repeated forever (generating 720p scenes live would cost 30 ms each)."""
    x, y, w, h = roi
    scenes = [generate_scene(first_seed + i, *size) for i in range(distinct)]
    return itertools.cycle([(scene.image[y:y + h, x:x + w] if w else scene.image, scene.camera) for scene in scenes])


def file_frames(inputs: Sequence[str], loop: bool) -> Iterator[tuple[np.ndarray, None]]:
    """The images of files, folders or videos (no camera known)."""
    while True:
        for frame in FrameSource(inputs):
            if frame.image is not None:
                yield frame.image, None
        if not loop:
            return


def compressed_msg(image: np.ndarray, header: Header, quality: int = 90) -> CompressedImage:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    msg = CompressedImage(header=header, format="jpeg")
    msg.data = array.array("B", encoded.tobytes())
    return msg


def wait_until(node, deadline: float) -> None:
    """Waits until ``deadline`` (``time.monotonic()`` seconds) while serving ``node``'s callbacks: with
    ``use_sim_time`` its clock follows ``/clock`` only while it spins."""
    while (remaining := deadline - time.monotonic()) > 0:
        rclpy.spin_once(node, timeout_sec=remaining)


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
    parser.add_argument("--seed", type=int, default=0, help="synthetic: the first scene's seed (default 0)")
    parser.add_argument("--camera-info", action="store_true",
                        help="synthetic: publish each scene's exact sensor_msgs/CameraInfo on <image topic's namespace>/camera_info")
    parser.add_argument("--roi", default="", metavar="X,Y,W,H",
                        help="synthetic: publish this region of interest of each scene (CameraInfo roi)")
    parser.add_argument("--loop", action="store_true", help="repeat the inputs")
    parser.add_argument("--wait-for-subscriber", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for subscribers before publishing")
    parser.add_argument("--subscribers", type=int, default=1, metavar="N", help="how many to wait for (default 1)")
    parser.add_argument("--stamps", metavar="FILE",
                        help="write the stamp of every published frame to FILE as it is published (integer ns, one "
                             "per line; the last may be of a frame interrupted by the stop; a killed camera's file "
                             "keeps every frame it published)")
    argv = list(sys.argv[1:] if argv is None else argv)
    # ROS arguments go to rclpy whole: argparse would take ``-p name:=value``'s value for an input.
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args, unknown = parser.parse_known_args(argv[:len(argv) - len(ros_args)])
    ros_args = unknown + ros_args
    width, height = (int(v) for v in args.size.lower().split("x"))
    roi = tuple(int(v) for v in args.roi.split(",")) if args.roi else (0, 0, 0, 0)
    if len(roi) != 4 or (args.inputs and (args.camera_info or args.roi)):
        parser.error("--roi takes X,Y,W,H; --camera-info and --roi need synthetic scenes (no inputs)")
    frames = (file_frames(args.inputs, args.loop) if args.inputs
              else synthetic_frames((width, height), args.seed, args.distinct, roi))

    rclpy.init(args=ros_args or None)
    node = rclpy.create_node("camera")
    reliability = ReliabilityPolicy.BEST_EFFORT if args.reliability == "best_effort" else ReliabilityPolicy.RELIABLE
    qos = QoSProfile(reliability=reliability, history=HistoryPolicy.KEEP_LAST, depth=5)
    topic = f"{args.topic}/compressed" if args.compressed else args.topic
    publisher = node.create_publisher(CompressedImage if args.compressed else Image, topic, qos)
    info_publisher = (node.create_publisher(CameraInfo, camera_info_topic(args.topic), qos)
                      if args.camera_info else None)
    deadline = time.monotonic() + args.wait_for_subscriber
    while publisher.get_subscription_count() < args.subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    if node.get_parameter("use_sim_time").value:  # stamps from /clock: none before the first clock message
        while node.context.ok() and node.get_clock().now().nanoseconds == 0:
            rclpy.spin_once(node, timeout_sec=0.1)
    period = 1.0 / args.rate
    next_time = time.monotonic()
    sent = 0
    # Line-buffered: each stamp reaches the file before its frame is published (SIGKILL loses none).
    stamps = open(args.stamps, "w", buffering=1) if args.stamps else None
    try:
        for image, camera in frames:
            now = node.get_clock().now()
            header = Header(stamp=now.to_msg(), frame_id=args.frame_id)
            if stamps:  # first: a stop may interrupt the publishing, not hide a sent frame
                stamps.write(f"{now.nanoseconds}\n")
            if info_publisher is not None:  # before the frame, so that the node has it when the frame arrives
                info_publisher.publish(camera_info_msg(camera.width, camera.height, camera.K, camera.D,
                                                       camera.distortion_model, header, roi))
            publisher.publish(compressed_msg(image, header) if args.compressed else bgr_to_image(image, header))
            sent += 1
            if args.count and sent >= args.count:
                if reliability == ReliabilityPolicy.RELIABLE:  # exiting at once could lose the last frames in flight
                    publisher.wait_for_all_acked(Duration(seconds=10))
                break
            next_time += period
            wait_until(node, next_time)
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
