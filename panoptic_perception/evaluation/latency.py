"""Latency measurement of backends: warm-up, then per-stage median / p90 over timed runs.

Several backends (e.g. the fast and the plain path of one model) are measured in the same run,
interleaved frame by frame, so that a noisy machine slows them alike and their ratio stays fair.
:func:`benchmark_report` adds what ``panoptic-perception benchmark`` reports beside the times: the
network's size and cost, and the speed-ups of one path or runtime over another.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..backends.base import Backend
from ..errors import ConfigurationError

STAGES = ("preprocess_ms", "inference_ms", "postprocess_ms", "total_ms")


def summarize(samples: Mapping[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per stage: median, p90, mean (ms); plus frames per second from the median total."""
    summary = {
        stage: {
            "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)),
            "mean": float(np.mean(values)),
        }
        for stage, values in samples.items()
    }
    summary["fps"] = {"median": 1000.0 / summary["total_ms"]["median"]}
    return summary


def measure_latency(
    backends: Mapping[str, Backend], image: np.ndarray, runs: int = 30, warmup: int = 5
) -> dict[str, dict[str, dict[str, float]]]:
    """Time each backend on ``image`` ``runs`` times after ``warmup`` untimed calls, interleaved.

    Per backend: :func:`summarize` of the stage timings, plus ``candidates`` (median, max: the boxes
    that entered NMS, which post-processing time grows with) for backends that report them. Raises
    ConfigurationError for ``runs`` below 1 or ``warmup`` below 0.
    """
    if runs < 1 or warmup < 0:
        raise ConfigurationError(f"runs must be at least 1 and warmup at least 0, got {runs} and {warmup}")
    for _ in range(warmup):
        for backend in backends.values():
            backend(image)
    samples = {name: {stage: [] for stage in STAGES} for name in backends}
    candidates: dict[str, list[int]] = {name: [] for name in backends}
    for _ in range(runs):
        for name, backend in backends.items():
            result = backend(image)
            for stage in STAGES:
                samples[name][stage].append(getattr(result.timings, stage))
            if result.detections is not None and result.detections.candidates is not None:
                candidates[name].append(result.detections.candidates)
    summaries = {name: summarize(stage_samples) for name, stage_samples in samples.items()}
    for name, counts in candidates.items():
        if counts:
            summaries[name]["candidates"] = {"median": float(np.median(counts)), "max": float(max(counts))}
    return summaries


def benchmark_report(backends: Mapping[str, Backend], image: np.ndarray, runs: int = 30, warmup: int = 5) -> dict:
    """What ``panoptic-perception benchmark`` reports: the first backend's description, and per backend
    (named ``PATH`` or ``PATH/RUNTIME``, PATH ``fast`` or ``plain``, e.g. ``fast/onnxruntime``)
    :func:`measure_latency`'s stages, ``postprocess_ratio`` (post-processing over network medians),
    ``parameters`` and ``gflops`` per frame of ``image``.

    Where both paths ran: ``speedup_total`` and ``speedup_inference`` (plain over fast medians). Where
    runtimes ran side by side: ``runtime_speedup``, per ``PATH/RUNTIME`` the ``total`` and ``inference``
    medians of the path's first runtime over its own. Raises ConfigurationError as :func:`measure_latency` does.
    """
    import torch

    from ..core.preprocess import prepare_batch
    from ..nn import count_flops, count_parameters

    first = next(iter(backends.values()))
    results = measure_latency(backends, image, runs=runs, warmup=warmup)
    for name, backend in backends.items():
        stats = results[name]
        stats["postprocess_ratio"] = stats["postprocess_ms"]["median"] / stats["inference_ms"]["median"]
        batch, _ = prepare_batch([image], backend.input_size, backend.resize_mode, channels_last=backend.channels_last)
        stats["parameters"] = count_parameters(backend.network)
        # Through the backend: Mask R-CNN also takes image sizes, and its heads run in finish
        stats["gflops"] = count_flops(lambda b: backend.finish(backend.forward(b), b), batch) / 1e9
    report = {
        **first.describe(),
        "extra_ms": first.extra_benchmarks(),
        "image_size": [image.shape[1], image.shape[0]],
        "threads": torch.get_num_threads(),
        "runs": runs,
        "warmup": warmup,
        "paths": results,
    }
    if "fast" in results and "plain" in results:
        report["speedup_total"] = results["plain"]["total_ms"]["median"] / results["fast"]["total_ms"]["median"]
        report["speedup_inference"] = results["plain"]["inference_ms"]["median"] / results["fast"]["inference_ms"]["median"]
    by_path: dict[str, list[str]] = {}  # path → its runs' names, in the order given (the first is the reference)
    for name in results:
        if "/" in name:
            by_path.setdefault(name.split("/")[0], []).append(name)
    speedups = {
        name: {stage: results[reference][f"{stage}_ms"]["median"] / results[name][f"{stage}_ms"]["median"]
               for stage in ("total", "inference")}
        for reference, *others in by_path.values() for name in others
    }
    if speedups:
        report["runtime_speedup"] = speedups
    return report
