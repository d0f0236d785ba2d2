"""The perception node's parameters, as data: names, types, defaults, ranges and what a change does.

Kept free of ROS imports so that the README table, the config files and the launch-file test can be
checked against it without a ROS installation.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from ..backends.base import parse_options
from ..backends.registry import list_backends
from ..core.ground import GroundGrid
from ..core.streaming import BATCH_POLICIES
from ..deploy.runtime import PRECISIONS, RUNTIMES, check_int8_source, check_runtime
from .topics import GROUND_TOPICS, OUTPUT_TOPICS


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
    #: The element type of a list parameter whose default is empty (an empty list cannot say its type).
    element: type = str


#: The value of a threshold parameter (``BACKEND_DEFAULT_COUNT`` for ``max_detections``) that stands for
#: the backend's own default (:attr:`Backend.default_thresholds`, the paper's or official post-processing):
#: outside each threshold's valid range, so that it cannot be mistaken for a setting.
BACKEND_DEFAULT = -1.0
BACKEND_DEFAULT_COUNT = 0
#: Threshold parameters → the names :meth:`Backend.set_thresholds` takes.
THRESHOLD_PARAMETERS = {"score_threshold": "score", "iou_threshold": "iou", "max_detections": "max_detections",
                        "mask_threshold": "mask"}

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("autostart", True, "configure and activate on start (no lifecycle manager needed)", OnChange.READ_ONLY),
    ParameterSpec("cameras", [], "camera names served by this node, each configured by the cameras.<name>.* "
                  "parameters, outputs under ~/<name>/; empty: one camera on `image`, outputs under ~/",
                  OnChange.READ_ONLY),
    ParameterSpec("batch_policy", "newest", "newest: every camera's newest frame at once, never waiting; "
                  "synchronized: frames whose stamps lie within sync_tolerance_ms, waiting at most sync_timeout_ms "
                  "for a silent camera", OnChange.APPLY, choices=BATCH_POLICIES),
    ParameterSpec("max_batch", 8, "most frames per forward pass (cameras served longest ago first)", OnChange.APPLY, 1, 64),
    ParameterSpec("sync_tolerance_ms", 20.0, "synchronized: the most two stamps of one batch may differ",
                  OnChange.APPLY, 0.0, 10000.0),
    ParameterSpec("sync_timeout_ms", 100.0, "synchronized: the longest wait for the other cameras' frames",
                  OnChange.APPLY, 0.0, 10000.0),
    ParameterSpec("backend", "twinlitenet", "inference backend (see `panoptic-perception backends`)", OnChange.RELOAD),
    ParameterSpec("weights", "", "checkpoint path; empty: the backend's bundled weights", OnChange.RELOAD),
    ParameterSpec("device", "cpu", "torch device: cpu, cuda, cuda:1, ...", OnChange.RELOAD),
    ParameterSpec("input_size", [0, 0], "network input [width, height]; [0, 0]: from the weights", OnChange.RELOAD),
    ParameterSpec("fast", True, "inference-optimised network (folded BatchNorms, channels-last, ...)", OnChange.RELOAD),
    ParameterSpec("backend_options", "", "backend options KEY=VALUE[,KEY=VALUE], e.g. fusion=kirillov or output=top",
                  OnChange.RELOAD),
    ParameterSpec("runtime", "torch", "runs the network: torch (eager), onnxruntime or tensorrt (its ONNX export, cached)",
                  OnChange.RELOAD, choices=RUNTIMES),
    ParameterSpec("precision", "fp32", "fp16 (tensorrt), int8 (onnxruntime: a `quantize` onnx_path or calibration; "
                  "tensorrt: calibration); else fp32",
                  OnChange.RELOAD, choices=PRECISIONS),
    ParameterSpec("onnx_path", "", "ONNX file exported from this very network (runtime onnxruntime or tensorrt); "
                  "empty: exported into the cache", OnChange.RELOAD),
    ParameterSpec("calibration", "", "precision int8: the frames the network is quantized / its TensorRT engine "
                  "calibrated on (a folder, video, bag or synthetic:N; cached by their digest); empty: none",
                  OnChange.RELOAD),
    # ONNX Runtime takes the thread count when its session is made: at configure and backend reloads.
    ParameterSpec("threads", 0, "CPU threads for torch; 0: torch's default. ONNX Runtime takes it at the next "
                  "configure or backend reload", OnChange.APPLY, 0, 256),
    ParameterSpec("input_transport", "raw", "subscribe to `image` (raw) or `image/compressed`", OnChange.READ_ONLY,
                  choices=("raw", "compressed")),
    ParameterSpec("qos_reliability", "best_effort", "input QoS reliability (sensor-data default: best_effort)",
                  OnChange.READ_ONLY, choices=("best_effort", "reliable")),
    ParameterSpec("qos_depth", 10, "input QoS history depth (the node still processes only the newest frame)",
                  OnChange.READ_ONLY, 1, 100),
    ParameterSpec("max_frame_age_ms", 500.0, "drop frames older than this when inference starts; 0: never",
                  OnChange.APPLY, 0.0, 60000.0),
    # The post-processing thresholds default to the backend's own (BACKEND_DEFAULT), see THRESHOLD_PARAMETERS.
    ParameterSpec("score_threshold", BACKEND_DEFAULT, "minimum detection confidence; -1.0: the backend's default",
                  OnChange.APPLY, BACKEND_DEFAULT, 1.0),
    ParameterSpec("iou_threshold", BACKEND_DEFAULT, "non-maximum suppression IoU; -1.0: the backend's default",
                  OnChange.APPLY, BACKEND_DEFAULT, 1.0),
    ParameterSpec("max_detections", BACKEND_DEFAULT_COUNT, "most detections per frame (NMS work grows with it); "
                  "0: the backend's default", OnChange.APPLY, BACKEND_DEFAULT_COUNT, 1000),
    ParameterSpec("mask_threshold", BACKEND_DEFAULT, "probability above which a drivable / lane pixel is set "
                  "(0.5: argmax); -1.0: the backend's default", OnChange.APPLY, BACKEND_DEFAULT, 1.0),
    *(ParameterSpec(f"publish_{topic}", True, f"publish ~/{topic}", OnChange.APPLY) for topic in OUTPUT_TOPICS),
    ParameterSpec("overlay_alpha", 0.5, "opacity of masks in ~/overlay", OnChange.APPLY, 0.0, 1.0),
    # Ground plane (README, Ground plane): read at start-up; each camera's lookup table depends on them.
    *(ParameterSpec(f"publish_{topic.replace('/', '_')}", True, f"publish ~/{topic}", OnChange.APPLY)
      for topic in GROUND_TOPICS),
    ParameterSpec("target_frame", "base_link", "frame of the ground outputs (x forward, y left, z up); cameras are "
                  "placed in it by their mount parameter, else TF", OnChange.READ_ONLY),
    ParameterSpec("ground_height", 0.0, "the ground is the plane z = ground_height of target_frame (m; flat-ground "
                  "assumption)", OnChange.READ_ONLY, -100.0, 100.0),
    ParameterSpec("ground_max_range", 60.0, "ground cells and objects farther from a camera are unknown / dropped (m)",
                  OnChange.READ_ONLY, 1.0, 1000.0),
    ParameterSpec("ground_resolution", 0.1, "cell size of ~/ground/drivable and of the lane-point thinning (m; the grid may have at most 4 million cells)",
                  OnChange.READ_ONLY, 0.01, 10.0),
    ParameterSpec("ground_ahead", 60.0, "grid extent ahead of the target frame's origin (m)", OnChange.READ_ONLY, 0.0, 1000.0),
    ParameterSpec("ground_behind", 20.0, "grid extent behind the origin (m)", OnChange.READ_ONLY, 0.0, 1000.0),
    ParameterSpec("ground_side", 20.0, "grid extent to each side of the origin (m)", OnChange.READ_ONLY, 0.0, 1000.0),
    ParameterSpec("mount", [], "the single camera's fixed mount in target_frame [x, y, z, roll, pitch, yaw] (m, rad; "
                  "pitch > 0 looks down); empty: TF", OnChange.READ_ONLY, element=float),
)

PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}
#: The node's parameters that the node passes to ``create_backend`` itself: never in ``backend_options``.
BACKEND_ARGUMENTS = frozenset({"weights", "device", "input_size", "fast", "runtime", "precision", "onnx_path", "calibration"})

#: The parameters of each camera of ``cameras``, ``cameras.<name>.<parameter>`` (read-only); in the defaults
#: ``{name}`` stands for the camera's name and an empty transport for the node's ``input_transport``.
CAMERA_PARAMETERS: tuple[ParameterSpec, ...] = (
    # <name>/image_raw and <name>/camera_info: what a camera driver started in namespace <name> publishes.
    ParameterSpec("image_topic", "{name}/image_raw", "the camera's image topic (relative names resolve in the node's "
                  "namespace); compressed transport subscribes to <image_topic>/compressed", OnChange.READ_ONLY),
    ParameterSpec("transport", "", "raw or compressed; empty: the node's input_transport", OnChange.READ_ONLY,
                  choices=("", "raw", "compressed")),
    ParameterSpec("camera_info_topic", "{name}/camera_info", "the camera's sensor_msgs/CameraInfo topic (for the "
                  "ground-plane outputs); empty: none", OnChange.READ_ONLY),
    ParameterSpec("mount", [], "the camera's fixed mount in target_frame [x, y, z, roll, pitch, yaw] (m, rad); "
                  "empty: TF", OnChange.READ_ONLY, element=float),
)
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_values(values: dict[str, Any]) -> None:
    """Raises ValueError for a value the node refuses: not one of a parameter's choices, an unknown backend,
    camera names that are not ROS name tokens or repeat, a bad ``input_size`` or ``mount``, a ground grid
    without extent or of more than ``MAX_GROUND_CELLS`` cells, or ``runtime`` / ``onnx_path`` / ``precision`` /
    ``calibration`` that do not go together (checked when ``values`` holds the first three: pass the settings
    with the changes applied), and backend options that set one of the node's own backend arguments."""
    for spec in PARAMETERS:
        if spec.choices and spec.name in values and values[spec.name] not in spec.choices:
            raise ValueError(f"{spec.name} must be one of {', '.join(spec.choices)}, got {values[spec.name]!r}")
    if "backend" in values and values["backend"] not in list_backends():
        raise ValueError(f"unknown backend {values['backend']!r}; available: {', '.join(list_backends())}")
    if "cameras" in values:
        names = list(values["cameras"] or [])
        bad = [name for name in names if not CAMERA_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"camera names must be ROS name tokens (a letter, then letters, digits, _), got {bad}")
        if len(set(names)) != len(names):
            raise ValueError(f"camera names repeat: {names}")
    if "input_size" in values:
        size = list(values["input_size"])
        if len(size) != 2 or any(v < 0 for v in size):
            raise ValueError(f"input_size must be [width, height] ([0, 0]: from the weights), got {size}")
    if "mount" in values:
        check_mount("mount", values["mount"])
    if {"ground_ahead", "ground_behind", "ground_side"} <= values.keys() and not (
            values["ground_ahead"] + values["ground_behind"] > 0 and values["ground_side"] > 0):
        raise ValueError("the ground grid needs an extent: ground_ahead + ground_behind and ground_side must be positive")
    if set(GROUND_GRID_PARAMETERS) <= values.keys():
        ground_grid(values)  # ConfigurationError (a ValueError) for a grid of more than MAX_GROUND_CELLS cells
    if values.get("backend_options"):
        given = sorted(set(parse_options([values["backend_options"]])) & BACKEND_ARGUMENTS)
        if given:
            raise ValueError(f"backend_options sets {', '.join(given)}: set the node parameter of that name instead")
    if {"runtime", "onnx_path", "precision"} <= values.keys():
        onnx_path, calibration = values["onnx_path"] or None, values.get("calibration") or None
        check_runtime(values["runtime"], onnx_path, values["precision"], calibration)
        if values["precision"] == "int8":
            check_int8_source(values["runtime"], onnx_path, calibration)


#: The parameters that make the ground grid (:func:`ground_grid`).
GROUND_GRID_PARAMETERS = ("ground_resolution", "ground_ahead", "ground_behind", "ground_side", "ground_height")


def ground_grid(values: dict[str, Any]) -> GroundGrid:
    """The ground grid of the ``GROUND_GRID_PARAMETERS`` in ``values``: ground_side to each side, ground_behind
    behind and ground_ahead ahead of target_frame's origin. Raises ConfigurationError for a grid without an
    extent or of more than :data:`~panoptic_perception.core.ground.MAX_GROUND_CELLS` cells."""
    return GroundGrid(values["ground_resolution"], -values["ground_behind"], values["ground_ahead"], -values["ground_side"],
                      values["ground_side"], values["ground_height"])


def check_mount(name: str, mount) -> None:
    """Raises ValueError unless ``mount`` (the parameter ``name``) is empty or six finite numbers."""
    values = list(mount or [])
    if values and (len(values) != 6 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
        raise ValueError(f"{name} must be [x, y, z, roll, pitch, yaw] (m, rad) or empty (TF), got {values}")


def given_thresholds(values: dict[str, Any]) -> dict[str, float]:
    """The thresholds that ``values`` (node parameters by name) set, by :meth:`Backend.set_thresholds` name:
    those neither absent nor at ``BACKEND_DEFAULT`` / ``BACKEND_DEFAULT_COUNT``. The node applies them over
    the backend's ``default_thresholds``; a value outside a threshold's range is left for ``set_thresholds``
    to refuse (ValueError)."""
    return {name: values[parameter] for parameter, name in THRESHOLD_PARAMETERS.items()
            if parameter in values and values[parameter] != PARAMETERS_BY_NAME[parameter].default}
