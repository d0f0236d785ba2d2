"""The ``panoptic-perception`` command line: infer, benchmark, export, train, demo, convert-weights, backends.

Errors (a missing file, an unknown backend, unreadable weights or images) print one line and exit
with status 2. In ``infer``, ``evaluate`` and ``replay`` a frame that fails (it cannot be decoded, the
backend or the fusion raises on it, its outputs cannot be written or scored) is reported on stderr and
skipped (:mod:`~panoptic_perception.core.failures`); the other frames are processed, the summary names
the failed frames, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .backends import WeightsError, backend_class, list_backends
from .backends.base import parse_options
from .backends.registry import UnknownBackendError
from .factory import create_backend
from .core.preprocess import InvalidImageError
from .deploy import PRECISIONS, RUNTIMES, ExportError, RuntimeUnavailableError

log = logging.getLogger("panoptic_perception")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="twinlitenet", help="backend name (see `backends`)")
    parser.add_argument("--weights", help="checkpoint path (default: the backend's bundled weights)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")


def _add_runtime_arguments(parser: argparse.ArgumentParser, repeatable: bool = False) -> None:
    if repeatable:
        parser.add_argument("--runtime", action="append", choices=RUNTIMES,
                            help="runtime of the network part (repeatable: compared side by side; default torch)")
    else:
        parser.add_argument("--runtime", choices=RUNTIMES, default="torch", help="runtime of the network part")
    parser.add_argument("--onnx", help="ONNX file exported from this network (default: exported into the cache)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="TensorRT engine precision")


def _runtime_options(args: argparse.Namespace, runtime: str) -> dict:
    """The backend options of ``runtime`` from --onnx and --precision (given only to the runtimes they apply to)."""
    return {"runtime": runtime, "onnx_path": args.onnx if runtime != "torch" else None,
            "precision": args.precision if runtime == "tensorrt" else "fp32"}


def _add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--score-threshold", type=float, help="minimum detection score (default: the backend's)")
    parser.add_argument("--iou-threshold", type=float, help="NMS IoU threshold (default: the backend's)")
    parser.add_argument("--max-detections", type=int, help="detections kept per frame (default: the backend's)")


def _create_backend(args: argparse.Namespace, **options):
    """The backend the arguments name, with the thresholds given on the command line (others: its defaults)."""
    backend = create_backend(args.backend, args.weights, args.device, **options)
    _set_given_thresholds(backend, args)
    return backend


def _set_given_thresholds(backend, args: argparse.Namespace) -> None:
    given = {"score": args.score_threshold, "iou": args.iou_threshold, "max_detections": args.max_detections}
    backend.set_thresholds(**{name: value for name, value in given.items() if value is not None})


def _set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


# -- infer --------------------------------------------------------------------------------------------
#: infer's folder of semantic maps for cityscapesscripts' pixel-level evaluation, which takes the one file
#: matching ``<city>_<seq>_<frame>*.png`` under CITYSCAPES_RESULTS (the flat folder holds several).
CITYSCAPES_SEMANTIC_DIR = "cityscapes_semantic"


def _write_frame_files(folder: Path, images: dict[str, np.ndarray], record_name: str, record: dict) -> None:
    """Write each image of ``images`` (file names relative to ``folder``) and ``record`` as JSON to
    ``folder / record_name``: all of them, or none.

    Raises OSError (a full disk, a folder that cannot be written; OpenCV reports a failed write only by
    its return value) or cv2.error; the files already written for this frame are removed first, so that
    a failed frame leaves no partial outputs beside the others.
    """
    written: list[Path] = []
    try:
        for name, image in images.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(path)
            if not cv2.imwrite(str(path), image):
                raise OSError(f"cannot write {path}")
        path = folder / record_name
        written.append(path)
        path.write_text(json.dumps(record, indent=2))
    except Exception:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def cmd_infer(args: argparse.Namespace) -> int:
    """Per frame NAME (an image's stem; a Cityscapes image ``<city>_<seq>_<frame>_leftImg8bit.png`` is
    NAME = ``<city>_<seq>_<frame>``, the id Cityscapes' tools match), what the backend produces:
    ``NAME_drivable.png`` / ``NAME_lane.png`` (0/255), ``NAME_semantic.png`` (class ids: ``--class-ids``),
    ``NAME_semantic_color.png``, ``NAME_panoptic.png`` (COCO / Cityscapes panoptic PNG), ``NAME_overlay.jpg``
    and ``NAME.json``; for Cityscapes images also ``cityscapes_semantic/NAME.png`` (label ids, for
    ``csEvalPixelLevelSemanticLabeling``). Then ``summary.json`` and ``panoptic.json`` (``image_id`` NAME)."""
    from tqdm import tqdm

    from .core.failures import FrameFailures
    from .core.io import FrameSource, cityscapes_id
    from .core.labels import CITYSCAPES, CITYSCAPES_TRAIN_IDS
    from .core.visualize import colorize_semantic, draw_overlay
    from .data.cityscapes import panoptic_to_png

    _set_threads(args)
    frames = FrameSource(args.inputs)
    backend = _create_backend(args, fast=not args.plain, **({"input_size": args.input_size} if args.input_size else {}),
                              **_runtime_options(args, args.runtime), **parse_options(args.option))
    cityscapes_classes = backend.label_map == CITYSCAPES
    if args.class_ids == "train" and not cityscapes_classes:
        raise ValueError(f"--class-ids train: train ids are those of the Cityscapes classes; {args.backend} outputs "
                         f"{backend.label_map.name} classes")
    if cityscapes_classes:
        frames.check_cityscapes_ids()  # before any output: its evaluation takes one file per Cityscapes frame
    # Label ids are the backend's own class ids; train ids through the table (255: not evaluated).
    class_ids = CITYSCAPES_TRAIN_IDS if args.class_ids == "train" else np.arange(256, dtype=np.uint8)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    info = backend.describe()
    processed, failures, panoptic_annotations = 0, FrameFailures(), []
    for frame in tqdm(frames, total=len(frames), desc="infer", disable=args.quiet):
        if frame.image is None:
            failures.add(frame.name, "read", frame.error, frame.source)
            continue
        with failures.frame(frame.name, "backend", frame.source) as stage:
            result = backend(frame.image)
            stage.name = "output"
            name, images = frame.name, {}
            if result.drivable_mask is not None:
                images[f"{name}_drivable.png"] = result.drivable_mask * 255
            if result.lane_mask is not None:
                images[f"{name}_lane.png"] = result.lane_mask * 255
            if result.semantic is not None:
                images[f"{name}_semantic.png"] = class_ids[result.semantic]
                images[f"{name}_semantic_color.png"] = colorize_semantic(result.semantic, backend.label_map)
                if cityscapes_classes and cityscapes_id(frame.source) is not None:
                    images[f"{CITYSCAPES_SEMANTIC_DIR}/{name}.png"] = result.semantic
            annotation = None
            if result.panoptic is not None:
                images[f"{name}_panoptic.png"], segments_info = panoptic_to_png(result.panoptic, result.segments)
                for segment in segments_info:
                    segment["category_id"] = int(class_ids[segment["category_id"]])
                annotation = {"image_id": name, "file_name": f"{name}_panoptic.png", "segments_info": segments_info}
            images[f"{name}_overlay.jpg"] = draw_overlay(frame.image, result, backend.label_map)
            record = {
                "source": frame.source,
                "image_size": list(result.image_size),
                **info,
                "timings": result.timings.to_dict(),
                "detections": result.detections.to_list() if result.detections is not None else None,
                "drivable_pixels": int(result.drivable_mask.sum()) if result.drivable_mask is not None else None,
                "lane_pixels": int(result.lane_mask.sum()) if result.lane_mask is not None else None,
            }
            stage.name = "writing"
            _write_frame_files(output, images, f"{name}.json", record)
            if annotation is not None:  # only frames whose files were all written
                panoptic_annotations.append(annotation)
            processed += 1
    summary = {**info, "class_ids": args.class_ids, "processed": processed, "failed": failures.to_list(),
               "output": str(output)}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    if panoptic_annotations:  # the COCO / Cityscapes panoptic format, e.g. for cityscapesscripts' evaluation
        categories = [{"id": int(class_ids[c.id]), "name": c.name, "isthing": int(c.is_thing)} for c in backend.label_map.classes]
        (output / "panoptic.json").write_text(json.dumps({"annotations": panoptic_annotations, "categories": categories}))
    print(f"{processed} frames written to {output}"
          + (f", {len(failures)} skipped (listed in {output / 'summary.json'})" if failures else ""))
    return 1 if failures else 0


# -- benchmark ----------------------------------------------------------------------------------------
def cmd_benchmark(args: argparse.Namespace) -> int:
    import torch

    from .core.io import read_image
    from .core.preprocess import prepare_batch
    from .data.synthetic import generate_scene
    from .evaluation.latency import STAGES, measure_latency
    from .nn import count_flops, count_parameters

    _set_threads(args)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"fast", "plain"}:
        raise ValueError(f"--paths takes fast and/or plain, got {args.paths!r}")
    if args.onnx and len(paths) > 1:  # one file is the export of one network: the fast or the plain one
        raise ValueError("--onnx is the export of one path: give --paths fast, or --paths plain for a file exported "
                         "with --plain")
    runtimes = list(dict.fromkeys(args.runtime or ["torch"]))
    # Runs are named by their path, and by path/runtime when runtimes are compared.
    backends = {
        path if runtimes == ["torch"] else f"{path}/{runtime}": _create_backend(
            args, fast=path == "fast", input_size=args.input_size, allow_random_weights=args.random_weights,
            **_runtime_options(args, runtime), **parse_options(args.option)
        )
        for path in paths for runtime in runtimes
    }
    first = next(iter(backends.values()))
    # A camera frame, not the network's input size: post-processing works at the frame's resolution.
    if args.image:
        image = read_image(args.image)
        if args.size:
            image = cv2.resize(image, args.size, interpolation=cv2.INTER_AREA)
    else:
        image = generate_scene(0, *(args.size or (1280, 720))).image
    results = measure_latency(backends, image, runs=args.runs, warmup=args.warmup)
    for stats in results.values():
        stats["postprocess_ratio"] = stats["postprocess_ms"]["median"] / stats["inference_ms"]["median"]
    for path, backend in backends.items():
        batch, _ = prepare_batch([image], backend.input_size, backend.resize_mode, channels_last=backend.channels_last)
        results[path]["parameters"] = count_parameters(backend.network)
        # Through the backend: Mask R-CNN also takes image sizes, and its heads run in finish
        results[path]["gflops"] = count_flops(lambda b: backend.finish(backend.forward(b), b), batch) / 1e9
    report = {
        **first.describe(),
        "extra_ms": first.extra_benchmarks(),
        "image_size": [image.shape[1], image.shape[0]],
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "warmup": args.warmup,
        "paths": results,
    }
    if "fast" in results and "plain" in results:
        report["speedup_total"] = results["plain"]["total_ms"]["median"] / results["fast"]["total_ms"]["median"]
        report["speedup_inference"] = results["plain"]["inference_ms"]["median"] / results["fast"]["inference_ms"]["median"]
    if len(runtimes) > 1:  # each runtime against the first, path by path
        report["runtime_speedup"] = {
            f"{path}/{runtime}": {stage: results[f"{path}/{runtimes[0]}"][f"{stage}_ms"]["median"]
                                  / results[f"{path}/{runtime}"][f"{stage}_ms"]["median"] for stage in ("total", "inference")}
            for path in paths for runtime in runtimes[1:]
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width, height = first.input_size
    print(f"{args.backend}: network input {width}x{height}, image {report['image_size'][0]}x{report['image_size'][1]}, "
          f"{report['threads']} threads, {args.runs} runs after {args.warmup} warm-up, weights {first.weights_info.source}")
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


# -- export -------------------------------------------------------------------------------------------
def check_export_arguments(args: argparse.Namespace) -> None:
    """Raises ValueError for options the chosen --format would ignore."""
    if args.format == "onnx" and args.precision is not None:
        raise ValueError("--precision is an option of --format tensorrt; an ONNX file is float32")
    if args.format == "tensorrt" and (args.output or args.dynamic_batch):
        raise ValueError("--output and --dynamic-batch are options of --format onnx; a TensorRT engine goes into the "
                         "cache (its path is printed), built for batches of 1 to 8")


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy import OPSET, export_onnx

    check_export_arguments(args)
    _set_threads(args)
    width, height = args.size
    runtime = "tensorrt" if args.format == "tensorrt" else "torch"
    precision = args.precision or "fp32"
    backend = create_backend(args.backend, args.weights, args.device, fast=not args.plain, input_size=args.size,
                             allow_random_weights=args.random_weights, runtime=runtime, precision=precision,
                             **parse_options(args.option))
    if runtime == "tensorrt":  # the backend exported the ONNX file into the cache and built the engine
        print(f"{backend.run_network.engine_path}: TensorRT engine ({precision}) of {backend.run_network.path}")
        return 0
    output = Path(args.output or f"{args.backend}_{width}x{height}.onnx")
    export_onnx(backend, output, dynamic_batch=args.dynamic_batch)
    batch = "dynamic batch" if args.dynamic_batch else "batch 1"
    print(f"{output}: {args.backend} network part, ONNX opset {OPSET}, input images (N, 3, {height}, {width}) "
          f"float32 RGB in [0, 1], {batch}; onnx.checker passed")
    return 0


# -- train / demo / backends ----------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """Train each ``--config`` in order (the stages of a recipe: each stage's ``init_weights`` names the
    previous stage's ``best.pth``), then with ``--pack`` ship the last stage's ``best.pth`` as float16."""
    from .training import train_from_config

    if len(args.config) > 1 and args.output_dir:
        raise ValueError("--output-dir applies to one --config; each stage's config names its own output_dir")
    for config in args.config:
        summary = train_from_config(config, resume=args.resume, output_dir=args.output_dir, progress=not args.quiet,
                                    overrides=args.set)
        best = next(({k: v for k, v in r.items() if k.startswith("val_")} for r in reversed(summary["history"])
                     if any(k.startswith("val_") for k in r)), {})
        if summary.get("rank", 0) == 0:  # under torchrun, one report
            print(json.dumps({"config": config} | {k: v for k, v in summary.items() if k not in ("history", "rank")}
                             | {"last_validation": best}, indent=2))
    if args.pack and summary.get("rank", 0) == 0:
        _pack(summary["best_checkpoint"], args.pack, half=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _set_threads(args)
    summary = run_demo(args.output, args.backend, args.weights, args.frames, args.size, progress=not args.quiet)
    print((Path(args.output) / "summary.md").read_text())
    print(f"overlays and summary written to {args.output}")
    return 0 if summary else 1


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
    raise ValueError("give one --backend per --weights, or one --backend for several --weights")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.failures import FrameFailures
    from .data.sources import open_dataset
    from .evaluation.evaluator import Evaluator
    from .evaluation.report import write_report

    _set_threads(args)
    pairs = _runs(args.backend or ["twinlitenet"], args.weights)
    variants = [parse_options([v]) for v in args.options] or [{}]
    dataset = open_dataset(args.data, args.image_topic)
    runs, names = [], set()
    for (backend_name, weights), options in ((pair, options) for pair in pairs for options in variants):
        backend = create_backend(backend_name, weights, args.device, **_runtime_options(args, args.runtime), **options)
        _set_given_thresholds(backend, args)
        name = (backend_name if len(pairs) == 1 or [b for b, _ in pairs].count(backend_name) == 1
                else f"{backend_name}_{_weights_label(weights, [w for _, w in pairs])}")
        if options:
            name += "[" + ",".join(f"{key}={value}" for key, value in options.items()) + "]"
        while name in names:
            name += "_"
        names.add(name)
        evaluator = Evaluator(backend.label_map, backend.capabilities)
        failures = FrameFailures(label=name)
        total = min(len(dataset), args.limit) if args.limit else len(dataset)
        for index, sample in enumerate(tqdm(dataset, total=total, desc=name, disable=args.quiet)):
            if args.limit and index >= args.limit:
                break
            if sample.image is None:
                failures.add(sample.name, "read", sample.error)
                continue
            with failures.frame(sample.name, "backend") as stage:
                if not evaluator.frames:
                    backend(sample.image)  # warm-up, untimed: the first call allocates and picks kernels
                result = backend(sample.image)
                stage.name = "scoring"
                evaluator.add(sample.name, result, sample.truth, result.timings.total_ms)
        runs.append({"name": name, "backend": backend.describe(), "summary": evaluator.compute(), "frames": evaluator.frames,
                     "failed": failures.to_list(), "class_names": {c.id: c.name for c in backend.label_map.classes}})
    report = write_report(runs, args.output, args.data)
    print(report.read_text())
    print(f"report, plots, metrics.json/csv and per-frame results written to {args.output}")
    return 1 if any(run["failed"] for run in runs) else 0


def cmd_make_bag(args: argparse.Namespace) -> int:
    from .ros.bags import main as make_bag_main

    return make_bag_main(args.passed_arguments)


def cmd_replay(args: argparse.Namespace) -> int:
    from .ros.replay import replay_live, replay_offline

    if args.live:
        summary = replay_live(args.bag, args.output, args.rate, args.image_topic, args.publish_topic, args.reliable,
                              progress=not args.quiet)
    else:
        _set_threads(args)
        backend = create_backend(args.backend, args.weights, args.device)
        summary = replay_offline(args.bag, backend, args.output, args.image_topic, args.overlay, progress=not args.quiet)
    from .evaluation.report import json_safe, write_report

    frames = summary.pop("frames_detail", [])
    if args.report:
        write_report([{"name": "live" if args.live else args.backend, "summary": summary, "frames": frames,
                       "failed": summary["failed"]}], args.report, str(args.bag))
    print(json.dumps(json_safe(summary), indent=2))
    return 1 if summary["failed"] else 0


def cmd_pack_weights(args: argparse.Namespace) -> int:
    _pack(args.input, args.output, args.half)
    return 0


def _pack(source: str, output: str, half: bool) -> None:
    """Re-save a backend checkpoint for shipping: the same weights (float16 if ``half``), config and metadata."""
    from .backends import read_checkpoint, save_checkpoint

    checkpoint = read_checkpoint(source)
    if checkpoint.backend is None:
        raise WeightsError(f"{source} is not a checkpoint of this package's backends (no backend name)")
    state = {k: v.half() if half and v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    metadata = {**checkpoint.metadata, "stored_as": "float16" if half else "as trained"}
    path = save_checkpoint(output, checkpoint.backend, state, checkpoint.config, metadata)
    print(f"{path}: {path.stat().st_size / 1e6:.2f} MB ({checkpoint.backend})")


def cmd_convert_weights(args: argparse.Namespace) -> int:
    """Load INPUT as the backend loads ``--weights`` (converting another framework's checkpoint: see
    :meth:`~panoptic_perception.backends.base.Backend.adapt_checkpoint`), and save it in this package's
    format, with the backend's name and the config the conversion found, so running it or training from it
    (``init_weights``) needs no options."""
    import dataclasses

    from .backends import save_checkpoint

    backend = create_backend(args.backend, args.input, "cpu", fast=False, **parse_options(args.option))
    config = dataclasses.asdict(backend.config)
    defaults = dataclasses.asdict(backend.config_type())
    metadata = {**backend.metadata, "converted_from_sha256": backend.weights_info.sha256}
    path = save_checkpoint(args.output, backend.name, backend.network.state_dict(), config, metadata)
    changed = ", ".join(f"{k}={v}" for k, v in config.items() if v != defaults[k]) or "the defaults"
    origin = backend.metadata.get("converted_from", "already in this package's format")
    print(f"{path}: {backend.name} weights ({origin}); options: {changed}")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    for name in list_backends():
        cls = backend_class(name)
        print(f"{name:<20} {', '.join(sorted(c.value for c in cls.capabilities))}")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from .ros.node import main as node_main

    return node_main(["panoptic-perception-node", *args.passed_arguments])


def cmd_camera(args: argparse.Namespace) -> int:
    from .ros.camera import publish

    return publish(args.passed_arguments)


def cmd_node_benchmark(args: argparse.Namespace) -> int:
    from .ros.benchmark import main as benchmark_main

    return benchmark_main(args.passed_arguments)


def build_parser() -> argparse.ArgumentParser:
    # -v / -q are accepted before or after the command (SUPPRESS: a subcommand does not reset them).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log INFO messages")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    parser = argparse.ArgumentParser(prog="panoptic-perception", description=__doc__.splitlines()[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    infer = commands.add_parser("infer", parents=[common], help="run a backend on images, folders or videos")
    _add_backend_arguments(infer)
    infer.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or videos")
    infer.add_argument("--output", required=True, help="output folder")
    infer.add_argument("--input-size", type=_size, help="network input WxH (default from the weights)")
    infer.add_argument("--plain", action="store_true", help="run the network as trained, without inference optimisations")
    infer.add_argument("--class-ids", choices=("label", "train"), default="label",
                       help="Cityscapes class ids in NAME_semantic.png and panoptic.json: label ids (what cityscapesscripts' "
                            "evaluation reads) or train ids 0-18, 255 not evaluated (e.g. for ground truth of "
                            "createPanopticImgs --use-train-id)")
    infer.add_argument("--option", "--options", dest="option", action="append", default=[], metavar="KEY=VALUE",
                       help="backend option, e.g. fusion=kirillov or output=top (repeatable; also --options KEY=VALUE,KEY=VALUE)")
    _add_threshold_arguments(infer)
    _add_runtime_arguments(infer)
    infer.set_defaults(func=cmd_infer)

    bench = commands.add_parser("benchmark", parents=[common], help="per-stage latency of the fast and plain paths")
    _add_backend_arguments(bench)
    bench.add_argument("--size", type=_size, help="camera frame WxH to time on (default 1280x720; with --image, "
                       "the image resized to it)")
    bench.add_argument("--input-size", type=_size, help="network input WxH (default from the weights)")
    bench.add_argument("--image", help="image to time on (default: a synthetic camera frame, see --size)")
    bench.add_argument("--runs", type=int, default=30)
    bench.add_argument("--warmup", type=int, default=5)
    bench.add_argument("--paths", default="fast,plain", help="comma-separated: fast, plain")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--random-weights", action="store_true", help="time untrained random weights instead of bundled ones (speed only; --option sets the architecture)")
    _add_threshold_arguments(bench)
    bench.add_argument("--option", "--options", dest="option", action="append", default=[], metavar="KEY=VALUE",
                       help="backend architecture option, e.g. width=0.25 (repeatable; also --options KEY=VALUE,KEY=VALUE)")
    _add_runtime_arguments(bench, repeatable=True)
    bench.set_defaults(func=cmd_benchmark)

    export = commands.add_parser("export", parents=[common], help="export a backend's network part to ONNX (or a TensorRT engine)")
    _add_backend_arguments(export)
    export.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx",
                        help="onnx: an ONNX file; tensorrt: a cached engine (needs CUDA and the tensorrt package)")
    export.add_argument("--size", type=_size, required=True, help="network input WxH")
    export.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch dimension (default: batch 1)")
    export.add_argument("--output", help="ONNX file to write (default: BACKEND_WxH.onnx)")
    export.add_argument("--precision", choices=PRECISIONS, help="TensorRT engine precision (default fp32)")
    export.add_argument("--plain", action="store_true", help="export the network as trained, without inference optimisations")
    export.add_argument("--random-weights", action="store_true", help="untrained random weights (to test a deployment)")
    export.add_argument("--option", "--options", dest="option", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option, e.g. width=0.25 (repeatable; also --options KEY=VALUE,KEY=VALUE)")
    export.set_defaults(func=cmd_export)

    train = commands.add_parser("train", parents=[common], help="train a backend from a YAML config")
    train.add_argument("--config", action="append", required=True,
                       help="YAML config; repeat it to train the stages of a recipe in order")
    train.add_argument("--output-dir", help="override the config's output_dir (one --config only)")
    train.add_argument("--pack", metavar="FILE",
                       help="then pack the last stage's best.pth into FILE as float16, as the bundled weights are shipped")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, dotted keys, YAML values (repeatable; e.g. model.layer_connections=none; a number indexes a list: data.train.0.count=8)")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth")
    train.set_defaults(func=cmd_train)

    demo = commands.add_parser("demo", parents=[common], help="run a backend on generated synthetic frames; overlays + summary")
    _add_backend_arguments(demo)
    demo.add_argument("--frames", type=int, default=8)
    demo.add_argument("--size", type=_size, default=(1280, 720), help="frame WxH")
    demo.add_argument("--output", default="demo_output")
    demo.set_defaults(func=cmd_demo)

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

    evaluate = commands.add_parser("evaluate", parents=[common], help="score backends on a dataset, bag or synthetic:N")
    evaluate.add_argument("--backend", action="append", help="backend (repeatable; default twinlitenet)")
    evaluate.add_argument("--weights", action="append", default=[], help="checkpoint (repeatable; '-': bundled)")
    evaluate.add_argument("--data", required=True, help="dataset folder, bag, synthetic:N[@WxH][+SEED] (default seeds: the held-out "
                          "evaluation scenes from 5,000,000), images or video")
    evaluate.add_argument("--output", required=True, help="report folder")
    evaluate.add_argument("--image-topic", help="camera topic of a bag (default: its only image topic)")
    evaluate.add_argument("--limit", type=int, help="evaluate at most this many frames")
    evaluate.add_argument("--options", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                          help="backend options of one more run of every backend, side by side (repeatable), "
                               "e.g. --options fusion=paper --options fusion=kirillov")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--threads", type=int)
    _add_threshold_arguments(evaluate)
    _add_runtime_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    make_bag = commands.add_parser("make-bag", add_help=False, help="write a rosbag2 bag from synthetic scenes, images or a video")
    make_bag.set_defaults(func=cmd_make_bag, passes_arguments=True)

    replay = commands.add_parser("replay", parents=[common], help="replay a bag through a backend (or --live into the node)")
    _add_backend_arguments(replay)
    replay.add_argument("bag")
    replay.add_argument("--output", required=True, help="MCAP bag to write (a folder)")
    replay.add_argument("--image-topic", help="camera topic of the bag (default: its only image topic)")
    replay.add_argument("--overlay", action="store_true", help="also write ~/overlay (offline)")
    replay.add_argument("--live", action="store_true", help="play into the running node and record what it publishes")
    replay.add_argument("--rate", type=float, default=1.0, help="live: playback speed factor")
    replay.add_argument("--publish-topic", help="live: topic the node listens to (default: the bag's topic)")
    replay.add_argument("--reliable", action="store_true", help="live: publish with reliable QoS")
    replay.add_argument("--report", help="also write a report folder")
    replay.set_defaults(func=cmd_replay)

    pack = commands.add_parser("pack-weights", parents=[common], help="re-save a checkpoint for shipping (e.g. float16)")
    pack.add_argument("input", help="a backend checkpoint (e.g. runs/NAME/best.pth)")
    pack.add_argument("output")
    pack.add_argument("--half", action="store_true", help="store floating-point tensors as float16 (loaded as float32)")
    pack.set_defaults(func=cmd_pack_weights)

    convert = commands.add_parser("convert-weights", parents=[common],
                                  help="save another framework's checkpoint (torchvision Mask R-CNN, Detectron2 .pkl) as a backend checkpoint")
    convert.add_argument("input", help="a checkpoint the backend's --weights accepts")
    convert.add_argument("output")
    convert.add_argument("--backend", default="fusion_panoptic", help="backend name (default fusion_panoptic)")
    convert.add_argument("--option", "--options", dest="option", action="append", default=[], metavar="KEY=VALUE",
                         help="backend option overriding what the conversion found, e.g. batch_norm_eps=1e-5")
    convert.set_defaults(func=cmd_convert_weights)

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
    except (FileNotFoundError, WeightsError, UnknownBackendError, InvalidImageError, ValueError, ExportError,
            RuntimeUnavailableError) as error:
        print(f"panoptic-perception: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
