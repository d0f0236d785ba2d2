"""``benchmark``: per-stage latency of a backend's fast and plain paths (and runtimes), as a table or JSON."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigurationError
from .options import add_backend_options, build_backend, frame_size, runtime_options, set_threads


def add_parser(commands, common: argparse.ArgumentParser) -> None:
    bench = commands.add_parser("benchmark", parents=[common], help="per-stage latency of the fast and plain paths")
    add_backend_options(bench, several=("runtime",))
    bench.add_argument("--size", type=frame_size, help="camera frame WxH to time on (default 1280x720; with --image, "
                       "the image resized to it)")
    bench.add_argument("--input-size", type=frame_size, help="network input WxH (default from the weights)")
    bench.add_argument("--image", help="image to time on (default: a synthetic camera frame, see --size)")
    bench.add_argument("--runs", type=int, default=30)
    bench.add_argument("--warmup", type=int, default=5)
    bench.add_argument("--paths", default="fast,plain", help="comma-separated: fast, plain")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--random-weights", action="store_true", help="time untrained random weights instead of bundled "
                       "ones (speed only; --option sets the architecture)")
    bench.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    import cv2

    from ..core.io import read_image
    from ..data.synthetic import generate_scene
    from ..evaluation.latency import STAGES, benchmark_report

    set_threads(args)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"fast", "plain"}:
        raise ConfigurationError(f"--paths takes fast and/or plain, got {args.paths!r}")
    if args.onnx and len(paths) > 1:  # one file is the export of one network: the fast or the plain one
        raise ConfigurationError("--onnx is the export of one path: give --paths fast, or --paths plain for a file "
                                 "exported with --plain")
    runtimes = list(dict.fromkeys(args.runtime or ["torch"]))
    # Runs are named by their path, and by path/runtime when runtimes are compared.
    backends = {
        path if runtimes == ["torch"] else f"{path}/{runtime}": build_backend(
            args, args.backend, args.weights, fast=path == "fast", input_size=args.input_size,
            allow_random_weights=args.random_weights, **runtime_options(args, runtime)
        )
        for path in paths for runtime in runtimes
    }
    # A camera frame, not the network's input size: post-processing works at the frame's resolution.
    if args.image:
        image = read_image(args.image)
        if args.size:
            image = cv2.resize(image, args.size, interpolation=cv2.INTER_AREA)
    else:
        image = generate_scene(0, *(args.size or (1280, 720))).image
    report = benchmark_report(backends, image, runs=args.runs, warmup=args.warmup)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    results = report["paths"]
    width, height = report["input_size"]
    print(f"{args.backend}: network input {width}x{height}, image {report['image_size'][0]}x{report['image_size'][1]}, "
          f"{report['threads']} threads, {args.runs} runs after {args.warmup} warm-up, weights {report['weights']['source']}")
    for path, stats in results.items():
        print(f"{path}: {stats['parameters'] / 1e6:.3f} M parameters, {stats['gflops']:.2f} GFLOPs per frame")
    column = max(6, *(len(path) for path in results))
    print(f"{'path':<{column}} {'stage':<12} {'median ms':>10} {'p90 ms':>10} {'FPS':>8}")
    for path, stats in results.items():
        for stage in STAGES:
            fps = 1000 / stats[stage]["median"] if stats[stage]["median"] > 0 else float("inf")
            print(f"{path:<{column}} {stage[:-3]:<12} {stats[stage]['median']:>10.2f} {stats[stage]['p90']:>10.2f} {fps:>8.1f}")
    for path, stats in results.items():
        print(f"{path}: post-processing / network (medians) {stats['postprocess_ratio']:.2f}")
    for path, stats in results.items():
        if "candidates" in stats:
            print(f"{path}: post-processing {stats['postprocess_ms']['median']:.2f} ms median for {stats['candidates']['median']:.0f} "
                  f"NMS candidates (max {stats['candidates']['max']:.0f}), next to {stats['inference_ms']['median']:.2f} ms in the network")
    for name, value in report["extra_ms"].items():
        print(f"{name[:-3]}: {value:.2f} ms median")
    if "speedup_total" in report:
        print(f"fast path speed-up over plain (median): total {report['speedup_total']:.2f}x, "
              f"inference {report['speedup_inference']:.2f}x")
    for name, ratios in report.get("runtime_speedup", {}).items():
        print(f"{name} speed-up over {runtimes[0]} (median): total {ratios['total']:.2f}x, inference {ratios['inference']:.2f}x")
    return 0
