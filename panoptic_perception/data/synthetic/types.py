"""What a synthetic scene is drawn from (:class:`SyntheticConfig`), what comes out (:class:`SyntheticScene`),
and the Cityscapes label ids the generator draws."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from ...core.types import Detections, PerceptionResult, SegmentInfo
from ...errors import ConfigurationError

if TYPE_CHECKING:  # truth.py builds on geometry.py, which imports this module
    from .truth import PinholeCamera, RoadOnGround, ThingOnGround

# Cityscapes label ids used by the generator.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, TERRAIN, SKY = 7, 8, 11, 17, 21, 22, 23
PERSON, CAR, TRUCK = 24, 26, 27
THING_CLASS_IDS = (PERSON, CAR, TRUCK)


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the scene distribution.  Ranges are ``(low, high)``; probabilities are per scene.

    Lengths are in metres in the road's world frame; the camera looks along the road.

    Raises:
        ValueError: a range that is not ``(low, high)`` with ``0 <= low <= high``, a probability outside
            [0, 1], fewer than one lane, a horizon outside [0.05, 0.9] or a camera 0.2 m or less high.
    """

    #: Horizon row as a fraction of the image height (camera pitch).
    horizon_range: tuple[float, float] = (0.36, 0.56)
    #: Camera height above the road (car to truck dash cams).
    camera_height_range: tuple[float, float] = (1.2, 1.8)
    #: Number of lanes (inclusive range).
    lane_count_range: tuple[int, int] = (2, 4)
    lane_width_range: tuple[float, float] = (2.9, 3.8)
    #: Asphalt beyond the outermost lane line on each side.
    shoulder_width_range: tuple[float, float] = (0.25, 1.5)
    #: Lateral offset of the camera from its lane's centre, as a fraction of the lane width.
    max_lane_offset: float = 0.22
    #: Heading of the camera relative to the road (radians, either side).
    max_yaw: float = 0.03
    curved_road_prob: float = 0.55
    #: Magnitude of the road curvature (1 / radius, 1/m) of curved roads.
    curvature_range: tuple[float, float] = (1 / 700, 1 / 70)
    #: Probability that a curved road bends back the other way further ahead.
    s_curve_prob: float = 0.25
    #: Probability that the lane separators are dashed (else solid).
    dashed_prob: float = 0.65
    #: Probability of a two-way road: yellow centre line, lanes left of it carry oncoming traffic.
    two_way_prob: float = 0.4
    #: Probability of solid lines along both road edges.
    edge_line_prob: float = 0.5
    #: Lane-line width at the bottom image row, as a fraction of the image height.
    lane_line_width_range: tuple[float, float] = (0.012, 0.026)
    #: Far lane lines are never drawn thinner than this (pixels).
    min_lane_line_px: float = 1.0
    #: Probability of a sidewalk, drawn independently for each side.
    sidewalk_prob: float = 0.7
    sidewalk_width_range: tuple[float, float] = (1.5, 4.0)
    #: Probability of a town scene (facades, street lamps) rather than a rural one (trees, hedges).
    urban_prob: float = 0.6
    #: Number of vehicles placed (inclusive range; a few may end up fully occluded or off-screen).
    vehicle_count_range: tuple[int, int] = (0, 9)
    #: Fraction of the vehicles that are trucks.
    truck_fraction: float = 0.2
    #: Number of pedestrians placed (inclusive range).
    pedestrian_count_range: tuple[int, int] = (0, 7)
    #: Probability that a pedestrian is crossing the road instead of walking beside it.
    pedestrian_on_road_prob: float = 0.12
    night_prob: float = 0.15
    fog_prob: float = 0.1
    #: Probability of sunlit scenes with cast shadows on the road.
    shadow_prob: float = 0.5
    #: Probability of a noticeable blur (a slight softening is always applied).
    blur_prob: float = 0.35
    #: Sensor noise amplitude (grey levels, uniform); doubled at night.
    noise_range: tuple[int, int] = (1, 7)
    brightness_range: tuple[float, float] = (0.8, 1.2)
    contrast_range: tuple[float, float] = (0.8, 1.2)
    #: Largest per-channel gain deviation (colour cast).
    max_tint: float = 0.08

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if len(value) != 2 or value[0] > value[1]:
                    raise ConfigurationError(f"SyntheticConfig.{f.name} must be a (low, high) pair with low <= high, got {value}")
                if min(value) < 0:
                    raise ConfigurationError(f"SyntheticConfig.{f.name} must not be negative, got {value}")
            elif f.name.endswith("_prob") or f.name in ("truck_fraction", "pedestrian_on_road_prob"):
                if not 0.0 <= value <= 1.0:
                    raise ConfigurationError(f"SyntheticConfig.{f.name} must be a probability, got {value}")
        if self.lane_count_range[0] < 1:
            raise ConfigurationError("SyntheticConfig.lane_count_range must start at 1 or more")
        if not (0.05 <= self.horizon_range[0] and self.horizon_range[1] <= 0.9):
            raise ConfigurationError("SyntheticConfig.horizon_range must lie within [0.05, 0.9]")
        if self.camera_height_range[0] <= 0.2:
            raise ConfigurationError("SyntheticConfig.camera_height_range must be above 0.2 m")


@dataclass
class SyntheticScene:
    """One rendered frame and its labels (all arrays at the requested resolution), and its ground truth in
    metres (:mod:`.truth`): the exact camera, each visible thing on the ground and the road on the ground."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    drivable_mask: np.ndarray  # (H, W) uint8 0/1, == (semantic == 7)
    lane_mask: np.ndarray  # (H, W) uint8 0/1, subset of drivable_mask
    semantic: np.ndarray  # (H, W) uint8 Cityscapes label ids
    panoptic: np.ndarray  # (H, W) int32 class_id * 1000 + instance
    segments: list[SegmentInfo]
    detections: Detections
    #: The camera that rendered the frame (intrinsics, height above the road; no pitch or roll).
    camera: PinholeCamera
    #: Each visible thing's class, place and size on the ground, by its panoptic segment id (ascending).
    things: dict[int, ThingOnGround]
    #: The road on the ground plane (:meth:`.RoadOnGround.mask` rasterises it onto a metric grid).
    ground_road: RoadOnGround
    seed: int
    #: What was drawn: ``night``, ``fog``, ``urban``, ``curved``, ``curvature``, ``lanes``, ``dashed``,
    #: ``two_way``, ``edge_lines``, ``horizon``, ``vehicles`` / ``pedestrians`` (visible instances), ...
    attributes: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]

    def to_result(self) -> PerceptionResult:
        """The ground truth as a :class:`PerceptionResult`, e.g. to draw or to score like a prediction."""
        return PerceptionResult(
            self.size, "ground truth", drivable_mask=self.drivable_mask, lane_mask=self.lane_mask,
            detections=self.detections, semantic=self.semantic, panoptic=self.panoptic, segments=self.segments,
        )

    def to_truth(self) -> SyntheticTruth:
        """:meth:`to_result` with the ground truth in metres (camera, things and road on the ground), for
        scoring ground-plane outputs (:mod:`panoptic_perception.evaluation.ground`)."""
        return SyntheticTruth(**vars(self.to_result()), camera=self.camera, things=self.things,
                              ground_road=self.ground_road)


@dataclass
class SyntheticTruth(PerceptionResult):
    """A scene's labels (:meth:`SyntheticScene.to_result`) and its ground truth in metres: the exact camera,
    each visible thing on the ground by panoptic id, and the road on the ground plane (:mod:`.truth`)."""

    camera: PinholeCamera | None = None
    things: dict[int, ThingOnGround] = field(default_factory=dict)
    ground_road: RoadOnGround | None = None
