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

from .backends import Backend
from .core.failures import FrameFailures, Stage
from .core.labels import CITYSCAPES
from .core.types import Capability, PerceptionResult
from .core.visualize import draw_overlay
from .data.sample import Sample
from .data.synthetic import SyntheticScenes
from .evaluation.evaluator import Evaluator
from .evaluation.loop import run_frames
from .evaluation.report import KEY_METRICS, format_metric, json_safe, metric_value

DEMO_FIRST_SEED = 3_000_000


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    image = image.copy()
    cv2.putText(image, text, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(image, text, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return image


#: The ground-truth fields a backend of each capability predicts (the top panel shows only those).
_TRUTH_FIELDS = {
    Capability.DRIVABLE_AREA: ("drivable_mask",),
    Capability.LANE_LINES: ("lane_mask",),
    Capability.DETECTION: ("detections",),
    Capability.SEMANTIC: ("semantic",),
    Capability.PANOPTIC: ("panoptic", "segments"),
}


def truth_of_outputs(truth: PerceptionResult, capabilities: frozenset[Capability]) -> PerceptionResult:
    """``truth`` without the outputs the backend does not produce, so that the two panels compare."""
    return replace(truth, **{f: None for c, fields in _TRUTH_FIELDS.items() if c not in capabilities for f in fields})


def run_demo(
    output_dir: str | Path,
    backend: Backend,
    frames: int = 8,
    size: tuple[int, int] = (1280, 720),
    progress: bool = True,
) -> dict:
    """Run ``backend`` on ``frames`` new synthetic scenes of ``size`` (width, height); write
    ``frame_NNN.jpg`` (ground truth above, prediction below) and ``summary.{json,md}``; return the summary.

    The scenes go through :func:`~panoptic_perception.evaluation.loop.run_frames`: the first call is a
    warm-up, left out of ``latency_ms``; a frame that fails is reported on stderr, listed in the summary's
    ``failed`` and skipped. The summary's ``metrics`` are the evaluation module's for every output the
    backend produces (:class:`~panoptic_perception.evaluation.evaluator.Evaluator`: ``driving``,
    ``detection``, ``semantic``, ``panoptic`` sections), scored against the generated ground truth.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(backend.label_map, backend.capabilities)
    failures = FrameFailures()

    def write_panel(scene: Sample, result: PerceptionResult, stage: Stage) -> None:
        stage.name = "writing"
        panel = np.vstack([
            _caption(draw_overlay(scene.image, truth_of_outputs(scene.truth, backend.capabilities), CITYSCAPES), "ground truth"),
            _caption(draw_overlay(scene.image, result, backend.label_map), f"{backend.name} ({backend.weights_info.source} weights)"),
        ])
        cv2.imwrite(str(output / f"{scene.name}.jpg"), panel)

    scenes = (Sample(f"frame_{index:03d}", scene.image, scene.to_result())
              for index, scene in enumerate(SyntheticScenes(frames, *size, first_seed=DEMO_FIRST_SEED)))
    run_frames(backend, scenes, failures, evaluator, on_result=write_panel, progress=progress, description="demo",
               total=frames)
    metrics = evaluator.compute()
    summary = json_safe({
        **backend.describe(),
        "frames": frames,
        "frame_size": list(size),
        "latency_ms": metrics.pop("latency_ms", None),
        "metrics": metrics,
        "failed": failures.to_list(),
    })
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
    for section, key, label, percent in KEY_METRICS:
        value = metric_value(summary["metrics"], section, key)
        if value is not None:
            lines.append(f"| {label}{' (%)' if percent else ''} | {format_metric(value, percent)} |")
    latency = summary["latency_ms"]
    if latency is not None:  # None: every frame failed
        lines.append(f"| latency median / p90 (ms) | {latency['median']:.1f} / {latency['p90']:.1f} |")
    lines += ["", "Each `frame_NNN.jpg` shows the ground truth (top) and the prediction (bottom)."]
    return "\n".join(lines) + "\n"
