"""Latency measurement of backends: warm-up, then per-stage median / p90 over timed runs.

Several backends (e.g. the fast and the plain path of one model) are measured in the same run,
interleaved frame by frame, so that a noisy machine slows them alike and their ratio stays fair.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..backends.base import Backend

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
    that entered NMS, which post-processing time grows with) for backends that report them.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be at least 1 and warmup at least 0, got {runs} and {warmup}")
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
