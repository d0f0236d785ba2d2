"""What INT8 costs and gains: one backend's float32 and INT8 network parts side by side.

:func:`network_speed` times the network part alone (the prepared batch in, the runtime's outputs out; no
pre- or post-processing), the two runtimes interleaved run by run so that a busy machine slows both alike,
and reports the medians and their ratio. :func:`compare_accuracy` runs both backends on the same frames:
how many pixels of each mask (drivable area, lane lines, semantic classes) agree, how many detections each
finds, and, where the frames have ground truth, each one's headline metrics (drivable mIoU, lane IoU,
mAP50, semantic mIoU, PQ) and their difference in points. :func:`operator_profiles` is ONNX Runtime's own
profiler (``SessionOptions.enable_profiling``) on the models, interleaved: the time per operator type and the operators
of the graph ONNX Runtime actually runs (after its fusions, ``optimized_model_filepath``); the two side by
side (:func:`profile_table`) say where INT8 gains and where it does not: the operators that stay float
between DequantizeLinear and QuantizeLinear, and the cost of those conversions.
"""

from __future__ import annotations

import time
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..backends.base import Backend
from ..core.preprocess import prepare_batch
from ..core.types import Capability
from .evaluator import Evaluator
from .report import metric_value

#: (section, key, name) of the headline metrics reported where truth exists.
HEADLINE_METRICS = (("driving", "drivable_miou", "drivable mIoU"), ("driving", "lane_iou", "lane IoU"),
                    ("detection", "map50", "mAP50"), ("semantic", "miou", "semantic mIoU"), ("panoptic.all", "pq", "PQ"))
MASKS = ("drivable_mask", "lane_mask", "semantic")


def network_speed(fp32: Backend, int8: Backend, image: np.ndarray, runs: int = 10, warmup: int = 2) -> dict:
    """Network time (ms) of ``fp32`` and ``int8`` on ``image`` (BGR uint8) through their pre-processing:
    ``{"fp32_ms", "int8_ms"}`` medians of ``runs`` interleaved runs after ``warmup``, ``"speedup"`` the
    fp32 median over the int8 median, and ``"threads"`` (torch's, which ONNX Runtime sessions take)."""
    batch, _ = prepare_batch([image], fp32.input_size, fp32.resize_mode, fp32.pad_value)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    with torch.inference_mode():
        for run in range(warmup + runs):
            for name, backend in (("fp32", fp32), ("int8", int8)):
                start = time.perf_counter()
                backend.run_network(batch)
                if run >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
    medians = {f"{name}_ms": float(np.median(values)) for name, values in times.items()}
    return {**medians, "speedup": medians["fp32_ms"] / medians["int8_ms"], "runs": runs,
            "threads": torch.get_num_threads(), "image_size": [image.shape[1], image.shape[0]],
            "input_size": list(fp32.input_size)}


def compare_accuracy(fp32: Backend, int8: Backend, samples: Iterable, total: int | None = None,
                     progress: bool = False) -> dict:
    """Both backends on ``samples`` (objects with ``name``, ``image``, ``truth``; unreadable frames skipped):
    ``frames``; ``agreement`` per mask, the share of pixels both give the same value (over every pixel of
    every frame); ``detections`` of each; ``metrics`` per variant and ``metric_loss`` (fp32 - int8, in
    points) where the frames have truth."""
    evaluators = {name: Evaluator(fp32.label_map, fp32.capabilities) for name in ("fp32", "int8")}
    equal = {mask: 0 for mask in MASKS}
    pixels = {mask: 0 for mask in MASKS}
    detections = {"fp32": 0, "int8": 0}
    frames = 0
    for sample in tqdm(samples, total=total, desc="fp32 vs int8", disable=not progress):
        if sample.image is None:
            continue
        results = {"fp32": fp32(sample.image), "int8": int8(sample.image)}
        for mask in MASKS:
            a, b = getattr(results["fp32"], mask), getattr(results["int8"], mask)
            if a is not None and b is not None:
                equal[mask] += int((a == b).sum())
                pixels[mask] += a.size
        for name, result in results.items():
            detections[name] += len(result.detections.boxes) if result.detections is not None else 0
            evaluators[name].add(sample.name, result, sample.truth)
        frames += 1
    report: dict = {"frames": frames, "agreement": {mask: equal[mask] / pixels[mask] for mask in MASKS if pixels[mask]}}
    if Capability.DETECTION in fp32.capabilities:
        report["detections"] = detections
    summaries = {name: evaluator.compute() for name, evaluator in evaluators.items()}
    metrics = {name: {label: metric_value(summary, section, key) for section, key, label in HEADLINE_METRICS
                      if metric_value(summary, section, key) is not None}
               for name, summary in summaries.items()}
    if metrics["fp32"]:
        report["metrics"] = metrics
        report["metric_loss"] = {label: 100 * (metrics["fp32"][label] - metrics["int8"][label]) for label in metrics["fp32"]}
    return report


def operator_profiles(models: dict[str, str | Path], batch: np.ndarray, threads: int = 2, runs: int = 5) -> dict:
    """ONNX Runtime's profile of each model (name → ONNX file) on ``batch`` ((N, 3, H, W) float32), on the
    CPU with ``threads`` intra-op threads: one warm-up run, then ``runs`` runs of the models interleaved (a
    busy machine slows all alike). Per model: ``{"ms": {op type: median ms per run}, "nodes": {op type:
    count}}``, both of the graph ONNX Runtime runs (after its optimisations and fusions; ``com.microsoft``
    operators as ``QLinearAdd`` etc.), ``"total_ms"`` the sum of ``ms`` and ``"run_ms"`` the median time of a
    whole run (the kernels and what lies between them). Raises ValueError for ``runs`` below 1."""
    import bisect

    import onnx
    import onnxruntime

    from ..deploy.onnx_export import INPUT_NAME

    if runs < 1:
        raise ValueError(f"a profile needs at least 1 run, got {runs}")
    profiles = {}
    with tempfile.TemporaryDirectory() as work:
        sessions = {}
        for index, (name, path) in enumerate(models.items()):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.log_severity_level = 3
            options.optimized_model_filepath = str(Path(work) / f"optimized{index}.onnx")
            options.enable_profiling, options.profile_file_prefix = True, str(Path(work) / f"profile{index}")
            sessions[name] = (onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                              options.optimized_model_filepath)
        for _ in range(1 + runs):
            for session, _ in sessions.values():
                session.run(None, {INPUT_NAME: batch})
        for name, (session, optimized) in sessions.items():
            events = json.loads(Path(session.end_profiling()).read_text())  # times in µs
            starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
            per_run = [Counter() for _ in starts]
            for event in events:
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    per_run[bisect.bisect_right(starts, event["ts"]) - 1][event["args"]["op_name"]] += event["dur"] / 1e3
            per_run = per_run[1:]  # the warm-up run is not counted
            kinds = set().union(*per_run)
            ms = {kind: float(np.median([run[kind] for run in per_run])) for kind in kinds}
            durations = [e["dur"] / 1e3 for e in events if e.get("name") == "model_run"][1:]
            profiles[name] = {"ms": dict(sorted(ms.items(), key=lambda item: -item[1])),
                              "nodes": dict(Counter(node.op_type for node in onnx.load(optimized).graph.node)),
                              "total_ms": sum(ms.values()), "run_ms": float(np.median(durations)), "runs": runs,
                              "threads": threads}
    return profiles


def profile_table(fp32: dict, int8: dict) -> list[str]:
    """Two :func:`operator_profiles` results as lines of a table, one per operator type, by the larger of
    its two times: ``op type | fp32 nodes, ms | int8 nodes, ms``, then the sums and the whole runs' times."""
    kinds = sorted(set(fp32["ms"]) | set(int8["ms"]) | set(fp32["nodes"]) | set(int8["nodes"]),
                   key=lambda kind: -max(fp32["ms"].get(kind, 0), int8["ms"].get(kind, 0)))
    lines = [f"{'operator':<22} {'fp32 nodes':>10} {'fp32 ms':>8} {'int8 nodes':>10} {'int8 ms':>8}"]
    for kind in kinds:
        lines.append(f"{kind:<22} {fp32['nodes'].get(kind, 0):>10} {fp32['ms'].get(kind, 0):>8.1f} "
                     f"{int8['nodes'].get(kind, 0):>10} {int8['ms'].get(kind, 0):>8.1f}")
    lines.append(f"{'all operators':<22} {sum(fp32['nodes'].values()):>10} {fp32['total_ms']:>8.1f} "
                 f"{sum(int8['nodes'].values()):>10} {int8['total_ms']:>8.1f}")
    lines.append(f"{'whole run':<22} {'':>10} {fp32['run_ms']:>8.1f} {'':>10} {int8['run_ms']:>8.1f}")
    return lines
