"""``evaluate`` (backends scored side by side on a dataset, bag or synthetic scenes) and ``demo`` (a backend
on generated scenes, with overlays)."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from ..errors import ConfigurationError
from .options import add_backend_options, build_backend, count, frame_size, runtime_options, set_threads


def add_parsers(commands, common: argparse.ArgumentParser) -> None:
    evaluate = commands.add_parser("evaluate", parents=[common], help="score backends on a dataset, bag or synthetic:N")
    add_backend_options(evaluate, several=("backend", "weights"))
    evaluate.add_argument("--data", required=True, help="dataset folder, bag, synthetic:N[@WxH][+SEED] (default seeds: "
                          "the held-out evaluation scenes from 5,000,000), images or video")
    evaluate.add_argument("--output", required=True, help="report folder")
    evaluate.add_argument("--image-topic", action="append", help="camera topic of a bag (repeatable; default: every image "
                          "topic outside /ground_truth; with several, metrics per camera plus overall)")
    evaluate.add_argument("--limit", type=count, help="evaluate at most this many frames")
    evaluate.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                          help="backend options of one more run of every backend, side by side (repeatable), "
                               "e.g. --variant fusion=paper --variant fusion=kirillov")
    evaluate.set_defaults(func=cmd_evaluate)

    demo = commands.add_parser("demo", parents=[common], help="run a backend on generated synthetic frames; overlays + summary")
    add_backend_options(demo)
    demo.add_argument("--frames", type=int, default=8)
    demo.add_argument("--size", type=frame_size, default=(1280, 720), help="frame WxH")
    demo.add_argument("--output", default="demo_output")
    demo.set_defaults(func=cmd_demo)


def _weights_label(weights: str | None, every: list[str | None]) -> str:
    """A run's weights in its name: the file's stem, with its folder where stems repeat (runs/a/best.pth and
    runs/b/best.pth: a-best, b-best)."""
    if weights is None:
        return "bundled"
    path = Path(weights)
    repeated = sum(w is not None and Path(w).stem == path.stem for w in every) > 1
    return f"{path.parent.name}-{path.stem}" if repeated else path.stem


def _runs(backends: list[str], weights: list[str]) -> list[tuple[str, str | None]]:
    """Pair ``--backend`` and ``--weights`` options: one backend with several weights, or one each."""
    weights = [None if w in ("", "-", "bundled") else w for w in weights]
    if not weights:
        return [(b, None) for b in backends]
    if len(backends) == 1:
        return [(backends[0], w) for w in weights]
    if len(backends) == len(weights):
        return list(zip(backends, weights))
    raise ConfigurationError("give one --backend per --weights, or one --backend for several --weights")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..backends.base import parse_options
    from ..core.failures import FrameFailures
    from ..data.sources import open_dataset
    from ..evaluation.cameras import camera_runs, evaluator_for
    from ..evaluation.loop import run_frames
    from ..evaluation.report import write_report

    set_threads(args)
    pairs = _runs(args.backend or ["twinlitenet"], args.weights)
    variants = [parse_options([v]) for v in args.variant] or [{}]
    dataset = open_dataset(args.data, args.image_topic)
    runs, names = [], set()
    for (backend_name, weights), variant in ((pair, variant) for pair in pairs for variant in variants):
        backend = build_backend(args, backend_name, weights, **runtime_options(args, args.runtime), **variant)
        name = (backend_name if len(pairs) == 1 or [b for b, _ in pairs].count(backend_name) == 1
                else f"{backend_name}_{_weights_label(weights, [w for _, w in pairs])}")
        if variant:
            name += "[" + ",".join(f"{key}={value}" for key, value in variant.items()) + "]"
        while name in names:
            name += "_"
        names.add(name)
        evaluator = evaluator_for(backend.label_map, backend.capabilities, getattr(dataset, "cameras", ()))
        failures = FrameFailures(label=name)
        samples = itertools.islice(dataset, args.limit) if args.limit else dataset
        run_frames(backend, samples, failures, evaluator, progress=not args.quiet, description=name,
                   total=min(len(dataset), args.limit) if args.limit else len(dataset))
        runs += camera_runs({"name": name, "backend": backend.describe(), "summary": evaluator.compute(), "frames": evaluator.frames,
                             "failed": failures.to_list(), "class_names": {c.id: c.name for c in backend.label_map.classes}})
    report = write_report(runs, args.output, args.data)
    print(report.read_text())
    print(f"report, plots, metrics.json/csv and per-frame results written to {args.output}")
    return 1 if any(run["failed"] for run in runs) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    set_threads(args)
    backend = build_backend(args, args.backend, args.weights, **runtime_options(args, args.runtime))
    summary = run_demo(args.output, backend, args.frames, args.size, progress=not args.quiet)
    print((Path(args.output) / "summary.md").read_text())
    print(f"overlays and summary written to {args.output}")
    return 1 if summary["failed"] else 0
