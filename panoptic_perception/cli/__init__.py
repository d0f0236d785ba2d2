"""The panoptic-perception command line: infer, evaluate, benchmark, export, quantize, train, demo, replay and more.

One module per group of commands (``infer``, ``benchmark``, ``export``, ``quantize``, ``evaluate`` with ``demo``,
``training`` with the weights tools, ``ros``), each adding its commands to the parser; the options they
share, and the backend those describe, are in :mod:`.options`.

A problem of the input (a missing file, an unknown backend, unreadable weights or images, an option the
package refuses: a :class:`~panoptic_perception.errors.PanopticPerceptionError` or an ``OSError``)
prints one line and exits with status 2; any other exception is a bug and shows its traceback, and
``-v`` shows the traceback of every error. In ``infer``, ``evaluate``, ``replay`` and ``demo`` a frame
that fails (it cannot be decoded, the backend or the fusion raises on it, its outputs cannot be written
or scored) is reported on stderr and skipped (:mod:`~panoptic_perception.evaluation.loop`); the other
frames are processed, the summary names the failed frames, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Sequence

from ..errors import PanopticPerceptionError
from . import benchmark, evaluate, export, infer, quantize, ros, training


def cmd_backends(args: argparse.Namespace) -> int:
    from ..backends import backend_class, list_backends

    for name in list_backends():
        cls = backend_class(name)
        print(f"{name:<20} {', '.join(sorted(c.value for c in cls.capabilities))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # -v / -q are accepted before or after the command (SUPPRESS: a subcommand does not reset them).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log INFO messages; show the traceback of an error")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    parser = argparse.ArgumentParser(prog="panoptic-perception", description=__doc__.splitlines()[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    infer.add_parser(commands, common)
    benchmark.add_parser(commands, common)
    export.add_parser(commands, common)
    quantize.add_parser(commands, common)
    training.add_parsers(commands, common)
    evaluate.add_parsers(commands, common)
    ros.add_parsers(commands, common)
    backends = commands.add_parser("backends", parents=[common], help="list backends and what they produce")
    backends.set_defaults(func=cmd_backends)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `node` and `camera` hand their arguments (ROS arguments, the camera's options) on unparsed.
    if getattr(args, "passes_arguments", False):
        args.passed_arguments = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (PanopticPerceptionError, OSError) as error:  # the input's problem; anything else is a bug: its traceback
        if args.verbose:
            traceback.print_exc()
        print(f"panoptic-perception: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
