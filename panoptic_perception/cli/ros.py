"""The ROS 2 commands: ``node``, ``camera``, ``node-benchmark``, ``soak``, ``make-bag`` and ``replay``.

All but ``replay`` hand their arguments on unparsed to the module that runs them (ROS arguments, the
camera's options). Everything ROS is imported when a command runs, so the other commands need no ROS.
"""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigurationError
from .options import add_backend_options, build_backend, runtime_options, set_threads


def add_parsers(commands, common: argparse.ArgumentParser) -> None:
    node = commands.add_parser("node", help="run the ROS 2 perception node (needs ROS 2)",
                               description="Run the ROS 2 perception node, e.g. `panoptic-perception node --ros-args "
                               "--params-file config/twinlitenet.yaml -r image:=/camera/image_raw`.")
    node.set_defaults(func=cmd_node, passes_arguments=True)

    camera = commands.add_parser("camera", add_help=False,
                                 help="publish synthetic scenes, images or a video as a ROS 2 camera topic")
    camera.set_defaults(func=cmd_camera, passes_arguments=True)

    node_benchmark = commands.add_parser("node-benchmark", add_help=False,
                                         help="node overhead: end-to-end latency across processes minus backend time")
    node_benchmark.set_defaults(func=cmd_node_benchmark, passes_arguments=True)

    soak = commands.add_parser("soak", add_help=False,
                               help="hours of multi-camera traffic through the node with injected faults; a report and a verdict")
    soak.set_defaults(func=cmd_soak, passes_arguments=True)

    make_bag = commands.add_parser("make-bag", add_help=False, help="write a rosbag2 bag from synthetic scenes, images or a video")
    make_bag.set_defaults(func=cmd_make_bag, passes_arguments=True)

    replay = commands.add_parser("replay", parents=[common], help="replay a bag through a backend (or --live into the node)")
    add_backend_options(replay)  # offline; --live replays into the node, which has its own backend
    replay.add_argument("bag")
    replay.add_argument("--output", required=True, help="MCAP bag to write (a folder)")
    replay.add_argument("--image-topic", action="append", help="camera topic of the bag (repeatable; default: every image "
                        "topic outside /ground_truth; several: outputs on /panoptic_perception/<camera>/..., metrics per "
                        "camera; --live plays one)")
    replay.add_argument("--overlay", action="store_true", help="also write ~/overlay (offline)")
    replay.add_argument("--mount", action="append", default=[], metavar="[CAMERA=]X,Y,Z,ROLL,PITCH,YAW",
                        help="offline, for the ground topics (the bag's CameraInfo needed): a camera's mount in base_link "
                             "(metres, radians; repeatable, CAMERA= for one camera, else every camera; default: the "
                             "bag's /tf_static)")
    replay.add_argument("--live", action="store_true", help="play into the running node and record what it publishes")
    replay.add_argument("--rate", type=float, default=1.0, help="live: playback speed factor")
    replay.add_argument("--publish-topic", help="live: topic the node listens to (default: the bag's topic)")
    replay.add_argument("--reliable", action="store_true", help="live: publish with reliable QoS")
    replay.add_argument("--report", help="also write a report folder")
    replay.set_defaults(func=cmd_replay)


def cmd_node(args: argparse.Namespace) -> int:
    from ..ros.node import main as node_main

    return node_main(["panoptic-perception-node", *args.passed_arguments])


def cmd_camera(args: argparse.Namespace) -> int:
    from ..ros.camera import publish

    return publish(args.passed_arguments)


def cmd_node_benchmark(args: argparse.Namespace) -> int:
    from ..ros.benchmark import main as benchmark_main

    return benchmark_main(args.passed_arguments)


def cmd_soak(args: argparse.Namespace) -> int:
    from ..ros.soak import main as soak_main

    return soak_main(args.passed_arguments)


def cmd_make_bag(args: argparse.Namespace) -> int:
    from ..ros.bags import main as make_bag_main

    return make_bag_main(args.passed_arguments)


def cmd_replay(args: argparse.Namespace) -> int:
    from ..evaluation.cameras import camera_runs
    from ..evaluation.report import json_safe, write_report
    from ..ros.replay import parse_mounts, replay_live, replay_offline

    if args.live:
        if args.mount:
            raise ConfigurationError("--mount is for offline replay: the node places cameras by its own mount parameters")
        summary = replay_live(args.bag, args.output, args.rate, args.image_topic, args.publish_topic, args.reliable,
                              progress=not args.quiet)
    else:
        mounts = parse_mounts(args.mount)  # checked before the backend is built
        set_threads(args)
        backend = build_backend(args, args.backend, args.weights, **runtime_options(args, args.runtime))
        summary = replay_offline(args.bag, backend, args.output, args.image_topic, args.overlay, progress=not args.quiet,
                                 mounts=mounts)
    frames = summary.pop("frames_detail", [])
    if args.report:
        write_report(camera_runs({"name": "live" if args.live else args.backend, "summary": summary, "frames": frames,
                                  "failed": summary["failed"]}), args.report, str(args.bag))
    print(json.dumps(json_safe(summary), indent=2))
    return 1 if summary["failed"] else 0
