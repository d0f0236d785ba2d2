"""``export``: a backend's network part as an ONNX file, or as a cached TensorRT engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..deploy import PRECISIONS
from ..errors import ConfigurationError
from .options import add_backend_options, build_backend, frame_size, set_threads


def add_parser(commands, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser("export", parents=[common], help="export a backend's network part to ONNX (or a TensorRT engine)")
    add_backend_options(export, runs_frames=False)
    export.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx",
                        help="onnx: an ONNX file; tensorrt: a cached engine (needs CUDA and the tensorrt package)")
    export.add_argument("--size", type=frame_size, required=True, help="network input WxH")
    export.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch dimension (default: batch 1)")
    export.add_argument("--output", help="ONNX file to write (default: BACKEND_WxH.onnx)")
    export.add_argument("--precision", choices=PRECISIONS, help="TensorRT engine precision (default fp32; an INT8 ONNX "
                        "model: `quantize`)")
    export.add_argument("--calibration", help="--precision int8: calibration frames (a folder, video, bag or synthetic:N)")
    export.add_argument("--plain", action="store_true", help="export the network as trained, without inference optimisations")
    export.add_argument("--random-weights", action="store_true", help="untrained random weights (to test a deployment)")
    export.set_defaults(func=cmd_export)


def check_export_arguments(args: argparse.Namespace) -> None:
    """Raises ConfigurationError for options the chosen --format would ignore."""
    if args.format == "onnx" and args.precision is not None:
        raise ConfigurationError("--precision is an option of --format tensorrt; an ONNX file is float32 (an INT8 one: "
                                 "`panoptic-perception quantize`)")
    if args.format == "tensorrt" and (args.output or args.dynamic_batch):
        raise ConfigurationError("--output and --dynamic-batch are options of --format onnx; a TensorRT engine goes "
                                 "into the cache (its path is printed), built for batches of 1 to 8")


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import OPSET, export_onnx

    check_export_arguments(args)
    set_threads(args)
    width, height = args.size
    runtime = "tensorrt" if args.format == "tensorrt" else "torch"
    precision = args.precision or "fp32"
    backend = build_backend(args, args.backend, args.weights, fast=not args.plain, input_size=args.size,
                            allow_random_weights=args.random_weights, runtime=runtime, precision=precision,
                            calibration=args.calibration)
    if runtime == "tensorrt":  # the backend exported the ONNX file into the cache and built the engine
        print(f"{backend.run_network.engine_path}: TensorRT engine ({precision}) of {backend.run_network.path}")
        return 0
    output = Path(args.output or f"{args.backend}_{width}x{height}.onnx")
    export_onnx(backend, output, dynamic_batch=args.dynamic_batch)
    batch = "dynamic batch" if args.dynamic_batch else "batch 1"
    print(f"{output}: {args.backend} network part, ONNX opset {OPSET}, input images (N, 3, {height}, {width}) "
          f"float32 RGB in [0, 1], {batch}; onnx.checker passed")
    return 0
