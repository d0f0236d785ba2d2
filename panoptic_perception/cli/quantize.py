"""``quantize``: a backend's network part as an INT8 ONNX model calibrated on the user's frames, with a
report of the speed gained and the accuracy lost (:mod:`panoptic_perception.deploy.quantize`,
:mod:`panoptic_perception.evaluation.quantization`)."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from ..errors import ConfigurationError
from .options import add_backend_options, build_backend, count, frame_size

#: The report's default held-out frames: the evaluation scenes (seeds from 5,000,000) at camera size.
DEFAULT_EVALUATION = "synthetic:20@1280x720"


def add_parser(commands, common: argparse.ArgumentParser) -> None:
    from ..deploy.quantize import CALIBRATION_METHODS, DEFAULT_FRAMES, DEFAULT_METHOD

    quantize = commands.add_parser("quantize", parents=[common], help="an INT8 ONNX model calibrated on your frames, "
                                   "with its speed and accuracy against float32")
    add_backend_options(quantize, runs_frames=False)
    quantize.set_defaults(threads=2)
    quantize.add_argument("--calibration", required=True, help="calibration frames: a folder of images, a video, a bag "
                          "or synthetic:N[@WxH][+SEED]")
    quantize.add_argument("--image-topic", help="camera topic of a bag (default: every image topic)")
    quantize.add_argument("--frames", type=count, default=DEFAULT_FRAMES, help="calibration frames used (the first ones)")
    quantize.add_argument("--method", choices=CALIBRATION_METHODS, default=DEFAULT_METHOD, help="calibration method")
    quantize.add_argument("--output", required=True, help="INT8 ONNX file to write")
    quantize.add_argument("--input-size", type=frame_size, help="network input WxH (default from the weights)")
    quantize.add_argument("--evaluate", default=DEFAULT_EVALUATION, help="held-out frames the report scores both "
                          "models on (other frames than the calibration's); any --calibration form")
    quantize.add_argument("--limit", type=count, default=20, help="frames of --evaluate scored (0: no accuracy report)")
    quantize.add_argument("--runs", type=count, default=10, help="timed runs of each model for the speed report "
                          "(0: no speed report)")
    quantize.add_argument("--profile", action="store_true", help="add ONNX Runtime's profile of both models per "
                          "operator type (time and nodes of the graph it runs) to the report")
    quantize.add_argument("--report", help="JSON report to write (default: the output with .json)")
    quantize.add_argument("--plain", action="store_true", help="quantize the network as trained, without inference "
                          "optimisations")
    quantize.add_argument("--random-weights", action="store_true", help="untrained random weights (to test a deployment)")
    quantize.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    import torch

    from ..data.sources import open_dataset
    from ..data.synthetic import generate_scene
    from ..deploy.quantize import calibration_frames, frame_digest, prepared_frame, quantize_onnx
    from ..evaluation.quantization import compare_accuracy, network_speed, operator_profiles

    torch.set_num_threads(args.threads)
    output = Path(args.output)
    options = dict(fast=not args.plain, input_size=args.input_size, allow_random_weights=args.random_weights)
    fp32 = build_backend(args, args.backend, args.weights, runtime="onnxruntime", **options)
    calibration = calibration_frames(fp32, args.calibration, args.frames, args.image_topic, progress=not args.quiet)
    evaluation = open_dataset(args.evaluate) if args.limit else []
    held_out = list(itertools.islice(evaluation, args.limit))
    calibrated = calibration.frame_digests()  # by content: bags name their frames alike, a folder otherwise
    overlap = [s.name for s in held_out if s.image is not None and frame_digest(prepared_frame(fp32, s.image)) in calibrated]
    if overlap:
        raise ConfigurationError(f"--evaluate shares {len(overlap)} frames with --calibration (e.g. {overlap[0]}): "
                                 "score on other frames than those calibrated on")
    quantize_onnx(fp32.run_network.path, output, calibration, args.method, progress=not args.quiet)
    int8 = build_backend(args, args.backend, args.weights, runtime="onnxruntime", precision="int8",
                         onnx_path=str(output), **options)
    report = {"backend": fp32.describe(), "output": str(output), "calibration": {
        "source": args.calibration, "frames": len(calibration.batches), "method": args.method, "digest": calibration.digest}}
    frame = generate_scene(0, 1280, 720).image
    if args.runs:
        report["speed"] = network_speed(fp32, int8, frame, runs=args.runs)
    if args.profile:
        report["profile"] = operator_profiles({"fp32": fp32.run_network.path, "int8": int8.run_network.path},
                                              prepared_frame(fp32, frame),
                                              args.threads, max(args.runs, 1))
    if held_out:
        report["accuracy"] = {"source": args.evaluate, **compare_accuracy(fp32, int8, held_out, len(held_out),
                                                                           progress=not args.quiet)}
    report_path = Path(args.report or output.with_suffix(".json"))
    report_path.write_text(json.dumps(report, indent=2))
    print(format_report(report))
    print(f"report written to {report_path}")
    return 0


def format_report(report: dict) -> str:
    """The report of :func:`cmd_quantize` as lines for the terminal."""
    from ..evaluation.quantization import profile_table

    calibration = report["calibration"]
    lines = [f"{report['output']}: {report['backend']['backend']} INT8 (QDQ), calibrated ({calibration['method']}) on "
             f"{calibration['frames']} frames of {calibration['source']}"]
    if "speed" in report:
        speed = report["speed"]
        lines.append(f"network time, ONNX Runtime, {speed['threads']} threads, {speed['image_size'][0]}x{speed['image_size'][1]} "
                     f"frame at {speed['input_size'][0]}x{speed['input_size'][1]}, median of {speed['runs']}: fp32 "
                     f"{speed['fp32_ms']:.1f} ms, int8 {speed['int8_ms']:.1f} ms, {speed['speedup']:.2f}x")
    if "profile" in report:
        profile = report["profile"]["fp32"]
        lines.append(f"ONNX Runtime's profile, median of {profile['runs']} runs, {profile['threads']} threads, per operator "
                     "type of the graph it runs:")
        lines.extend("  " + line for line in profile_table(report["profile"]["fp32"], report["profile"]["int8"]))
    if "accuracy" in report:
        accuracy = report["accuracy"]
        agreement = ", ".join(f"{mask} {100 * value:.2f} %" for mask, value in accuracy["agreement"].items())
        lines.append(f"{accuracy['frames']} frames of {accuracy['source']}: pixels int8 = fp32: {agreement}")
        if "detections" in accuracy:
            lines.append(f"detections: fp32 {accuracy['detections']['fp32']}, int8 {accuracy['detections']['int8']}")
        for label, loss in accuracy.get("metric_loss", {}).items():
            lines.append(f"{label}: fp32 {100 * accuracy['metrics']['fp32'][label]:.2f}, int8 "
                         f"{100 * accuracy['metrics']['int8'][label]:.2f} ({-loss:+.2f} points)")
    return "\n".join(lines)
