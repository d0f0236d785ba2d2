"""The options several commands share, and the backend they describe.

:func:`add_backend_options` gives every command that builds a backend the same options, with the same
meaning: ``--backend``, ``--weights``, ``--device``, ``--threads``, ``--option KEY=VALUE`` (a backend
option; ``--options`` is the same), and, for the commands that run frames, the detection thresholds and
the runtime of the network part (``--runtime``, ``--onnx``, ``--precision``, ``--calibration``). :func:`build_backend`
builds the backend they name.
"""

from __future__ import annotations

import argparse
from typing import Collection

from ..backends import Backend
from ..backends.base import parse_options
from ..core.io import frame_size  # noqa: F401  (the --size type of the commands)
from ..deploy import PRECISIONS, RUNTIMES
from ..deploy.runtime import PRECISION_RUNTIMES
from ..errors import ConfigurationError
from ..factory import create_backend

#: The threshold a ``set_thresholds`` keyword sets, and the command-line option (its ``dest``) that gives it.
THRESHOLD_OPTIONS = {"score": "score_threshold", "iou": "iou_threshold", "max_detections": "max_detections"}


def count(text: str) -> int:
    """A non-negative integer; argparse reports anything else as a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_option_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--option KEY=VALUE`` (repeatable; ``--options KEY=VALUE,KEY=VALUE`` is the same): backend options."""
    parser.add_argument("--option", "--options", dest="option", action="append", default=[], metavar="KEY=VALUE",
                        help=f"{help} (repeatable; also --options KEY=VALUE,KEY=VALUE)")


def add_backend_options(parser: argparse.ArgumentParser, several: Collection[str] = (), runs_frames: bool = True) -> None:
    """Add the options of the backend a command builds (see the module docstring).

    ``several``: those of ``backend``, ``weights`` and ``runtime`` that may be given more than once, for
    runs compared side by side (then a list, None where not given; ``--weights -`` is the bundled weights).
    ``runs_frames=False`` (``export``): no thresholds and no runtime options, which would change nothing.
    """
    if "backend" in several:
        parser.add_argument("--backend", action="append", help="backend name (repeatable; default twinlitenet; see `backends`)")
    else:
        parser.add_argument("--backend", default="twinlitenet", help="backend name (see `backends`)")
    if "weights" in several:
        parser.add_argument("--weights", action="append", default=[],
                            help="checkpoint path (repeatable; '-': the backend's bundled weights)")
    else:
        parser.add_argument("--weights", help="checkpoint path (default: the backend's bundled weights)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    add_option_argument(parser, "backend option, e.g. fusion=kirillov, output=top or width=0.25")
    if not runs_frames:
        return
    parser.add_argument("--score-threshold", type=float, help="minimum detection score (default: the backend's)")
    parser.add_argument("--iou-threshold", type=float, help="NMS IoU threshold (default: the backend's)")
    parser.add_argument("--max-detections", type=int, help="detections kept per frame (default: the backend's)")
    if "runtime" in several:
        parser.add_argument("--runtime", action="append", choices=RUNTIMES,
                            help="runtime of the network part (repeatable: compared side by side; default torch)")
    else:
        parser.add_argument("--runtime", choices=RUNTIMES, default="torch", help="runtime of the network part")
    parser.add_argument("--onnx", help="ONNX file exported from this network (default: exported into the cache)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="precision of the network part: fp16 "
                        "(tensorrt), int8 (onnxruntime, tensorrt: with --calibration, or an --onnx made by `quantize`)")
    parser.add_argument("--calibration", help="int8: calibration frames (a folder, video, bag or synthetic:N)")


def runtime_options(args: argparse.Namespace, runtime: str) -> dict:
    """The backend options of ``runtime`` from --onnx, --precision and --calibration (given only to the
    runtimes they apply to, e.g. int8 to onnxruntime where torch and onnxruntime are compared). Raises
    ConfigurationError for a precision none of the command's runtimes runs (never a float network instead)."""
    requested = args.runtime if isinstance(args.runtime, list) else [args.runtime or "torch"]
    if not any(name in PRECISION_RUNTIMES[args.precision] for name in requested):
        raise ConfigurationError(f"--precision {args.precision} runs in {' or '.join(PRECISION_RUNTIMES[args.precision])}, "
                                 f"not {', '.join(requested)}: add --runtime {PRECISION_RUNTIMES[args.precision][0]}")
    precision = args.precision if runtime in PRECISION_RUNTIMES[args.precision] else "fp32"
    return {"runtime": runtime, "onnx_path": args.onnx if runtime != "torch" else None, "precision": precision,
            "calibration": args.calibration if precision == "int8" else None}


def build_backend(args: argparse.Namespace, name: str, weights: str | None, **options) -> Backend:
    """The backend ``name`` with ``weights`` on ``--device``, built with the ``--option`` values and
    ``options`` (the command's own, e.g. ``fast``; they win over ``--option``), and the thresholds given
    on the command line (the others: the backend's defaults)."""
    backend = create_backend(name, weights, args.device, **{**parse_options(args.option), **options})
    given = {threshold: getattr(args, dest, None) for threshold, dest in THRESHOLD_OPTIONS.items()}
    backend.set_thresholds(**{threshold: value for threshold, value in given.items() if value is not None})
    return backend


def set_threads(args: argparse.Namespace) -> None:
    """``--threads``: torch's CPU threads (default: torch's, all cores)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
