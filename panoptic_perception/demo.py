"""The demo: a backend on freshly generated synthetic camera frames, with overlays and a summary.

Frames are 1280x720 like a dash camera, from seeds no training or validation run uses, so the
numbers in the summary measure generalisation to new synthetic scenes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .backends import create_backend
from .core.labels import CITYSCAPES
from .core.types import Capability
from .core.visualize import draw_overlay
from .data.synthetic import SyntheticScenes
from .evaluation.segmentation import DrivingSegmentationMetrics

DEMO_FIRST_SEED = 3_000_000


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    image = image.copy()
    cv2.putText(image, text, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(image, text, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return image


def run_demo(
    output_dir: str | Path,
    backend_name: str = "twinlitenet",
    weights: str | None = None,
    frames: int = 8,
    size: tuple[int, int] = (1280, 720),
    progress: bool = True,
) -> dict:
    """Run, write ``frame_NNN.jpg`` (ground truth above, prediction below) and ``summary.{json,md}``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    backend = create_backend(backend_name, weights)
    scores_masks = {Capability.DRIVABLE_AREA, Capability.LANE_LINES} <= backend.capabilities
    metrics = DrivingSegmentationMetrics()
    latencies = []
    for index, scene in enumerate(tqdm(SyntheticScenes(frames, *size, first_seed=DEMO_FIRST_SEED), disable=not progress, desc="demo")):
        result = backend(scene.image)
        latencies.append(result.timings.total_ms)
        panel = np.vstack([
            _caption(draw_overlay(scene.image, replace(scene.to_result(), semantic=None), CITYSCAPES), "ground truth"),
            _caption(draw_overlay(scene.image, result, backend.label_map), f"{backend.name} ({backend.weights_info.source} weights)"),
        ])
        cv2.imwrite(str(output / f"frame_{index:03d}.jpg"), panel)
        if scores_masks:
            metrics.update(result.drivable_mask, scene.drivable_mask, result.lane_mask, scene.lane_mask)
    summary = {
        **backend.describe(),
        "frames": frames,
        "frame_size": list(size),
        "latency_ms": {"median": float(np.median(latencies)), "p90": float(np.percentile(latencies, 90))},
        "metrics": metrics.compute() if scores_masks else {},
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    (output / "summary.md").write_text(summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# Demo: {summary['backend']} on {summary['frames']} synthetic {summary['frame_size'][0]}x{summary['frame_size'][1]} frames",
        "",
        f"Weights: {summary['weights']['source']} ({summary['weights']['path']}), network input "
        f"{summary['input_size'][0]}x{summary['input_size'][1]}, device {summary['device']}.",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for name in ("drivable_miou", "lane_iou", "lane_accuracy", "lane_recall"):
        if name in summary["metrics"]:
            lines.append(f"| {name} | {summary['metrics'][name]:.4f} |")
    latency = summary["latency_ms"]
    lines.append(f"| latency median / p90 (ms) | {latency['median']:.1f} / {latency['p90']:.1f} |")
    lines += ["", "Each `frame_NNN.jpg` shows the ground truth (top) and the prediction (bottom)."]
    return "\n".join(lines) + "\n"
