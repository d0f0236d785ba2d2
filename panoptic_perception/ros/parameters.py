"""The perception node's parameters, as data: names, types, defaults, ranges and what a change does.

Kept free of ROS imports so that the README table, the config files and the launch-file test can be
checked against it without a ROS installation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..deploy.runtime import RUNTIMES


class OnChange(str, enum.Enum):
    """What happens when a parameter changes at runtime."""

    READ_ONLY = "read-only"  # fixed at start-up
    APPLY = "applies immediately"
    RELOAD = "reloads the backend"


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    on_change: OnChange = OnChange.APPLY
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


OUTPUT_TOPICS = ("detections", "drivable_area", "lane_lines", "semantic", "panoptic", "result", "overlay")

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", True, "configure and activate on start (no lifecycle manager needed)", OnChange.READ_ONLY),
    ParameterSpec("backend", "twinlitenet", "inference backend (see `panoptic-perception backends`)", OnChange.RELOAD),
    ParameterSpec("weights", "", "checkpoint path; empty: the backend's bundled weights", OnChange.RELOAD),
    ParameterSpec("device", "cpu", "torch device: cpu, cuda, cuda:1, ...", OnChange.RELOAD),
    ParameterSpec("input_size", [0, 0], "network input [width, height]; [0, 0]: from the weights", OnChange.RELOAD),
    ParameterSpec("fast", True, "inference-optimised network (folded BatchNorms, channels-last, ...)", OnChange.RELOAD),
    ParameterSpec("backend_options", "", "backend options KEY=VALUE[,KEY=VALUE], e.g. fusion=kirillov or output=top",
                  OnChange.RELOAD),
    ParameterSpec("runtime", "torch", "runs the network: torch (eager), onnxruntime or tensorrt (its ONNX export, cached)",
                  OnChange.RELOAD, choices=RUNTIMES),
    ParameterSpec("threads", 0, "CPU threads for torch; 0: torch's default", OnChange.APPLY, 0, 256),
    ParameterSpec("input_transport", "raw", "subscribe to `image` (raw) or `image/compressed`", OnChange.READ_ONLY,
                  choices=("raw", "compressed")),
    ParameterSpec("qos_reliability", "best_effort", "input QoS reliability (sensor-data default: best_effort)",
                  OnChange.READ_ONLY, choices=("best_effort", "reliable")),
    ParameterSpec("qos_depth", 10, "input QoS history depth (the node still processes only the newest frame)",
                  OnChange.READ_ONLY, 1, 100),
    ParameterSpec("max_frame_age_ms", 500.0, "drop frames older than this when inference starts; 0: never",
                  OnChange.APPLY, 0.0, 60000.0),
    ParameterSpec("score_threshold", 0.3, "minimum detection confidence", OnChange.APPLY, 0.0, 1.0),
    ParameterSpec("iou_threshold", 0.45, "non-maximum suppression IoU", OnChange.APPLY, 0.0, 1.0),
    ParameterSpec("max_detections", 300, "most detections per frame (NMS work grows with it)", OnChange.APPLY, 1, 1000),
    ParameterSpec("mask_threshold", 0.5, "probability above which a drivable / lane pixel is set (0.5: argmax)",
                  OnChange.APPLY, 0.0, 1.0),
    *(ParameterSpec(f"publish_{topic}", True, f"publish ~/{topic}", OnChange.APPLY) for topic in OUTPUT_TOPICS),
    ParameterSpec("overlay_alpha", 0.5, "opacity of masks in ~/overlay", OnChange.APPLY, 0.0, 1.0),
)

PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}
