"""What INT8 costs and gains: one backend's float32 and INT8 network parts side by side.

:func:`network_speed` times the network part alone (the prepared batch in, the runtime's outputs out; no
pre- or post-processing), the two runtimes interleaved run by run so that a busy machine slows both alike,
and reports the medians and their ratio. :func:`compare_accuracy` runs both backends on the same frames:
how many pixels of each mask (drivable area, lane lines, semantic classes) agree, how many detections each
finds, and, where the frames have ground truth, each one's headline metrics (drivable mIoU, lane IoU,
mAP50, semantic mIoU, PQ) and their difference in points.
"""

from __future__ import annotations

import time
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
