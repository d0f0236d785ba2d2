"""Seeded synthetic dash-camera driving frames with exact, pixel-consistent labels.

The project cannot download a dataset, so this module draws its own test and training data: a
forward-looking dash-camera view of a road, rendered with flat-shaded polygons (OpenCV ``fillPoly``,
no anti-aliasing) and post-processed so that it looks less synthetic.

What a frame shows
------------------
* **Sky** with a vertical colour gradient (clear, overcast, dusk or night) and sometimes clouds.
* **A skyline** at the horizon: distant buildings, tree lines or hills.
* **A road** on a flat ground plane, seen by a pinhole camera 1.2-1.8 m above it with a random
  pitch (the horizon row).  The road is straight or curved (its lateral offset is a cubic
  polynomial of depth, so left and right curves and S-bends occur), has 2-4 lanes of random width,
  shoulders, and the camera drives in one of its lanes, not necessarily centred.
* **Lane lines** painted on it: solid or dashed (dashes shrink with perspective), white or yellow
  (a yellow centre line on two-way roads, sometimes doubled), sometimes road-edge lines.  They
  follow the road's curve; they are ~4-10 px wide at the bottom of a 640x360 frame and never
  thinner than ``SyntheticConfig.min_lane_line_px`` near the horizon.
* **Sidewalks** (with a kerb band) beside the road on none, one or both sides, and grass or pavement
  beyond them.
* **Roadside objects**: building facades with windows and shop fronts (urban scenes), trees, hedges,
  street lamps and utility poles (all following the road's curve).
* **Vehicles** (cars, vans, trucks) in the lanes, seen from behind or, on two-way roads, oncoming;
  **pedestrians**, mostly on the sidewalks, sometimes crossing the road.  Everything is sized by the
  same perspective projection and drawn back to front, so nearer objects occlude farther ones.
* **Appearance variety** that never changes a label: colour palettes, night scenes (dark ambient
  light, headlight beam, street-lamp pools, lit windows and tail lights), fog/haze, road texture
  (tyre tracks, patches), cast shadows, vignetting, brightness/contrast/gamma/tint, blur and sensor
  noise.

Label conventions
-----------------
* ``semantic``: Cityscapes *label ids* (:data:`panoptic_perception.core.labels.CITYSCAPES`):
  road 7, sidewalk 8, building 11, pole 17, vegetation 21, terrain 22, sky 23, person 24, car 26,
  truck 27.  Every pixel gets a class; void (0) does not occur.
* ``panoptic``: ``class_id * 1000 + instance`` (int32).  Stuff classes have instance 0; every visible
  person / car / truck (the *things*) gets its own instance number 1..k, counted per class.
  ``segments`` lists each distinct panoptic value with its pixel area and bounding box; ``detections``
  holds one tight box per thing instance (``x2 = max_x + 1``, ``y2 = max_y + 1``).
* ``drivable_mask``: the visible road surface, i.e. exactly ``semantic == 7`` - lane markings are
  included, vehicles and pedestrians standing on the road are not.
* ``lane_mask``: visible painted lane-line pixels (a subset of the drivable mask).

The label maps are drawn from the very polygons that draw the image, so they are exact; the
image-only effects (paint colour, shadows, light pools, blur, noise, colour grading) change how a
pixel looks, never what it shows.

Scenes are defined in normalised image coordinates (``u = x / width``, ``v = y / height``; the
projection's focal lengths are fractions of the image size), and all random choices are drawn from
``np.random.default_rng(seed)`` before they are scaled to pixels, so ``generate_scene(s, 1280, 720)``
is the scene of ``generate_scene(s, 640, 360)`` at twice the size.  Only the sensor noise pattern and
the 1-pixel minimum width of far lane lines depend on the resolution.  The focal lengths assume a
16:9 frame; other aspect ratios show the same scene stretched.

``python -m panoptic_perception.data.synthetic --benchmark`` prints the generation speed on one CPU
core; ``--save DIR --count N`` writes images and colour-coded labels to look at.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np

from ..core.labels import CITYSCAPES
from ..core.types import PANOPTIC_LABEL_DIVISOR, Detections, PerceptionResult, SegmentInfo
from ..core.visualize import colorize_panoptic, colorize_semantic, draw_overlay

# Cityscapes label ids used by the generator.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, TERRAIN, SKY = 7, 8, 11, 17, 21, 22, 23
PERSON, CAR, TRUCK = 24, 26, 27
THING_CLASS_IDS = (PERSON, CAR, TRUCK)

# Pinhole camera in normalised units: u = 0.5 + FU * X / Z, v = horizon + FV * (camera_height - Y) / Z.
# FU / FV = 9 / 16 gives square pixels in a 16:9 frame; about 83 deg horizontal field of view.
_FU = 0.5625
_FV = 1.0
_SHIFT = 4  # fillPoly fixed-point bits: polygons keep 1/16 pixel precision at every resolution
_ONE = float(1 << _SHIFT)
_FIRST_THING = 64  # segment-index map: < 64 is the stuff class id itself, >= 64 is a thing
_MAX_THINGS = 256 - _FIRST_THING


# --------------------------------------------------------------------------------------------- API


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the scene distribution.  Ranges are ``(low, high)``; probabilities are per scene.

    Lengths are in metres in the road's world frame; the camera looks along the road.
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
                    raise ValueError(f"SyntheticConfig.{f.name} must be a (low, high) pair with low <= high, got {value}")
                if min(value) < 0:
                    raise ValueError(f"SyntheticConfig.{f.name} must not be negative, got {value}")
            elif f.name.endswith("_prob") or f.name in ("truck_fraction", "pedestrian_on_road_prob"):
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"SyntheticConfig.{f.name} must be a probability, got {value}")
        if self.lane_count_range[0] < 1:
            raise ValueError("SyntheticConfig.lane_count_range must start at 1 or more")
        if not (0.05 <= self.horizon_range[0] and self.horizon_range[1] <= 0.9):
            raise ValueError("SyntheticConfig.horizon_range must lie within [0.05, 0.9]")
        if self.camera_height_range[0] <= 0.2:
            raise ValueError("SyntheticConfig.camera_height_range must be above 0.2 m")


@dataclass
class SyntheticScene:
    """One rendered frame and its labels (all arrays at the requested resolution)."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    drivable_mask: np.ndarray  # (H, W) uint8 0/1, == (semantic == 7)
    lane_mask: np.ndarray  # (H, W) uint8 0/1, subset of drivable_mask
    semantic: np.ndarray  # (H, W) uint8 Cityscapes label ids
    panoptic: np.ndarray  # (H, W) int32 class_id * 1000 + instance
    segments: list[SegmentInfo]
    detections: Detections
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


def generate_scene(seed: int, width: int = 640, height: int = 360, config: SyntheticConfig | None = None) -> SyntheticScene:
    """Render the scene of ``seed`` (a non-negative int) at ``width`` x ``height``."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16x16, got {width}x{height}")
    return _Renderer(seed, int(width), int(height), config or SyntheticConfig()).render()


class SyntheticScenes:
    """The sequence of scenes with seeds ``first_seed .. first_seed + count - 1`` (rendered on access)."""

    def __init__(self, count: int, width: int = 640, height: int = 360, first_seed: int = 0, config: SyntheticConfig | None = None) -> None:
        if count < 0:
            raise ValueError(f"count must be non-negative, got {count}")
        if first_seed < 0:
            raise ValueError(f"first_seed must be non-negative, got {first_seed}")
        self.count = int(count)
        self.width = int(width)
        self.height = int(height)
        self.first_seed = int(first_seed)
        self.config = config or SyntheticConfig()

    def __len__(self) -> int:
        return self.count

    def seed_of(self, index: int) -> int:
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f"scene index {index} out of range for {self.count} scenes")
        return self.first_seed + index

    def __getitem__(self, index: int | slice) -> SyntheticScene | list[SyntheticScene]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        return generate_scene(self.seed_of(int(index)), self.width, self.height, self.config)

    def __iter__(self) -> Iterator[SyntheticScene]:
        for i in range(self.count):
            yield generate_scene(self.first_seed + i, self.width, self.height, self.config)


# ----------------------------------------------------------------------------------- colour helpers

# Base colours, BGR.
_BUILDING_COLORS = np.array(
    [
        (150, 170, 190), (120, 130, 140), (60, 70, 150), (175, 190, 205), (90, 100, 115), (200, 205, 210),
        (110, 140, 170), (140, 120, 100), (70, 90, 120), (160, 160, 150), (85, 85, 85), (130, 160, 200),
    ],
    np.float64,
)
_CAR_COLORS = np.array(
    [
        (235, 235, 235), (30, 30, 32), (185, 185, 180), (110, 110, 112), (40, 40, 170), (150, 75, 30),
        (95, 45, 25), (60, 110, 55), (40, 190, 225), (150, 175, 195), (30, 110, 220), (70, 70, 90),
        (225, 225, 220), (20, 20, 20), (160, 160, 160),
    ],
    np.float64,
)
_TRUCK_COLORS = np.array(
    [(230, 230, 230), (210, 215, 220), (40, 40, 160), (140, 80, 30), (50, 120, 60), (40, 180, 220), (120, 120, 120)],
    np.float64,
)
_SKIN = np.array([(160, 190, 235), (120, 160, 210), (90, 125, 180), (60, 85, 130), (40, 60, 95)], np.float64)
_HAIR = np.array([(20, 20, 25), (30, 45, 70), (60, 90, 130), (120, 170, 210), (160, 160, 165)], np.float64)
_CLOTHES = np.array(
    [
        (30, 30, 30), (60, 40, 30), (130, 70, 30), (40, 40, 150), (200, 200, 200), (60, 100, 60), (40, 120, 200),
        (120, 110, 100), (90, 60, 120), (150, 150, 40), (30, 170, 220), (80, 80, 80),
    ],
    np.float64,
)
_PANTS = np.array([(110, 60, 30), (40, 35, 30), (70, 70, 70), (140, 170, 190), (90, 50, 20), (25, 25, 25)], np.float64)


_UNIT_CIRCLE = {
    n: (np.cos(np.linspace(0.0, 2 * math.pi, n, endpoint=False)), np.sin(np.linspace(0.0, 2 * math.pi, n, endpoint=False)))
    for n in range(3, 33)
}


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 12, jitter: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) polygon around (cx, cy); ``jitter`` scales each radius (irregular blobs)."""
    cos, sin = _UNIT_CIRCLE[n]
    r = 1.0 if jitter is None else jitter
    out = np.empty((n, 2))
    out[:, 0] = cx + rx * r * cos
    out[:, 1] = cy + ry * r * sin
    return out


def _rects(x0, x1, y0, y1) -> np.ndarray:
    """Axis-aligned rectangles (..., 4, 2) from broadcastable corner coordinates."""
    x0, x1, y0, y1 = (np.asarray(a, np.float64) for a in (x0, x1, y0, y1))
    out = np.empty(np.broadcast_shapes(x0.shape, x1.shape, y0.shape, y1.shape) + (4, 2))
    out[..., 0, 0] = out[..., 3, 0] = x0
    out[..., 1, 0] = out[..., 2, 0] = x1
    out[..., 0, 1] = out[..., 1, 1] = y0
    out[..., 2, 1] = out[..., 3, 1] = y1
    return out


class _Renderer:
    """Samples one scene from ``rng`` and draws it into the image and the label maps at once."""

    def __init__(self, seed: int, width: int, height: int, cfg: SyntheticConfig) -> None:
        self.seed = seed
        self.W, self.H = width, height
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.img = np.empty((height, width, 3), np.uint8)
        self.seg = np.empty((height, width), np.uint8)  # stuff class id, or _FIRST_THING + thing index
        self.paint_white = np.zeros((height, width), np.uint8)
        self.paint_yellow = np.zeros((height, width), np.uint8)
        self.shadow = np.zeros((height, width), np.uint8)
        self.glow = np.zeros((height, width), np.uint8)
        self._scale = np.array([width * _ONE, height * _ONE])
        self._half = _ONE / 2  # pixel centres: normalised u = 0 is the left edge of pixel 0
        self.thing_classes: list[int] = []

    # ------------------------------------------------------------------ geometry and drawing

    def _fx(self, uv: np.ndarray) -> np.ndarray:
        """Normalised coordinates → fillPoly fixed-point pixel coordinates."""
        return np.rint(uv * self._scale - self._half).astype(np.int32)

    def fill(self, polys: np.ndarray, color, label: int) -> None:
        """Fill polygon(s) ``(K, 2)`` or ``(N, K, 2)`` (normalised) in the image and the label map."""
        pts = self._fx(polys)
        if pts.ndim == 2:
            pts = pts[None]
        cv2.fillPoly(self.img, pts, color, cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.seg, pts, label, cv2.LINE_8, _SHIFT)

    def fill_each(self, polys, color, label: int) -> None:
        """Like :meth:`fill` for polygons that may overlap (one ``fillPoly`` call fills overlaps
        with the even-odd rule, which would punch holes)."""
        for poly in polys:
            self.fill(poly, color, label)

    def mark(self, mask: np.ndarray, polys: np.ndarray) -> None:
        """Set polygon(s) to 255 in one of the image-only masks (paint, shadow, glow)."""
        pts = self._fx(polys)
        cv2.fillPoly(mask, pts if pts.ndim == 3 else pts[None], 255, cv2.LINE_8, _SHIFT)

    def off(self, z):
        """Lateral offset of the road's reference line at depth ``z`` (the curve)."""
        return z * (self.yaw + z * (0.5 * self.k + z * (self.j / 6.0)))

    def project(self, x, y, z) -> np.ndarray:
        """World point(s) (x right, y up from the road, z forward; metres) → normalised (u, v)."""
        inv = 1.0 / np.asarray(z, np.float64)
        u = 0.5 + _FU * np.asarray(x) * inv
        v = self.vh + _FV * (self.cam_h - np.asarray(y)) * inv
        out = np.empty(np.broadcast_shapes(u.shape, v.shape) + (2,))
        out[..., 0] = u
        out[..., 1] = v
        return out

    def road_point(self, s, y, z) -> np.ndarray:
        """A point ``s`` metres right of the road's reference line (follows the curve)."""
        z = np.asarray(z, np.float64)
        return self.project(np.asarray(s) + self.off(z), y, z)

    def strip(self, s0, s1, z: np.ndarray) -> np.ndarray:
        """Ground band between lateral positions s0 < s1 over the depths ``z`` (..., K) ascending."""
        left = self.road_point(s0, 0.0, z)
        right = self.road_point(s1, 0.0, z)
        return np.concatenate((left, right[..., ::-1, :]), axis=-2)

    def line_strip(self, s_center, width: float, z: np.ndarray) -> np.ndarray:
        """A painted line of ``width`` metres, widened to at least ``min_lane_line_px`` pixels."""
        z = np.asarray(z, np.float64)
        c = self.road_point(s_center, 0.0, z)
        half = np.maximum(_FU * 0.5 * width / z, 0.5 * self.cfg.min_lane_line_px / self.W)
        left = c.copy()
        left[..., 0] -= half
        right = c
        right[..., 0] += half
        return np.concatenate((left, right[..., ::-1, :]), axis=-2)

    def color(self, base, z: float | None = None, emissive: bool = False) -> tuple[float, float, float]:
        """A surface colour under the scene's light, faded into the haze with distance ``z``."""
        c = np.asarray(base, np.float64)
        if not emissive:
            c = c * self.ambient
        if z is not None:
            a = 1.0 - math.exp(-max(z, 0.0) / self.visibility)
            c = c * (1.0 - a) + self.haze * a
        return (float(c[0]), float(c[1]), float(c[2]))

    def jitter(self, base, amount: float) -> np.ndarray:
        return np.clip(np.asarray(base, np.float64) + self.rng.uniform(-amount, amount, 3), 0, 255)

    def pick(self, table: np.ndarray, amount: float = 12.0) -> np.ndarray:
        return self.jitter(table[self.rng.integers(len(table))], amount)

    def new_thing(self, class_id: int) -> int | None:
        if len(self.thing_classes) >= _MAX_THINGS:
            return None
        self.thing_classes.append(class_id)
        return _FIRST_THING + len(self.thing_classes) - 1

    # ------------------------------------------------------------------ scene

    def render(self) -> SyntheticScene:
        self._sample_camera_and_road()
        self._sample_look()
        objects: list[tuple[float, int, object, tuple]] = []  # (depth, order, draw function, args)
        self._sample_roadside(objects)
        self._sample_vehicles(objects)
        self._sample_pedestrians(objects)

        self._draw_sky()
        self._draw_ground()
        self._draw_road()
        self._draw_sidewalks()
        self._draw_lane_lines()
        self._apply_ground_light()
        self._draw_skyline()
        objects.sort(key=lambda o: (-o[0], o[1]))  # far to near
        for _, _, fn, args in objects:
            fn(*args)
        self._post_process()
        scene = self._labels()
        scene.attributes.update(self.attributes)
        return scene

    def _sample_camera_and_road(self) -> None:
        rng, cfg = self.rng, self.cfg
        self.vh = rng.uniform(*cfg.horizon_range)
        self.cam_h = rng.uniform(*cfg.camera_height_range)
        self.z_bottom = _FV * self.cam_h / (1.0 - self.vh)  # depth seen at the bottom image row
        self.z_near = 0.85 * self.z_bottom
        self.z_far = 350.0
        n = int(rng.integers(cfg.lane_count_range[0], cfg.lane_count_range[1] + 1))
        lane_w = rng.uniform(*cfg.lane_width_range)
        two_way = n >= 2 and rng.random() < cfg.two_way_prob
        n_oncoming = n // 2 if two_way else 0
        ego = int(rng.integers(n_oncoming, n))
        lane_offset = rng.uniform(-cfg.max_lane_offset, cfg.max_lane_offset) * lane_w
        # Road frame: s = 0 is the camera's path; lane line i at s = left_line + i * lane_w.
        left_line = -(ego + 0.5) * lane_w - lane_offset
        self.lanes, self.lane_w, self.ego, self.n_oncoming = n, lane_w, ego, n_oncoming
        self.lines_s = left_line + lane_w * np.arange(n + 1)
        self.road_l = self.lines_s[0] - rng.uniform(*cfg.shoulder_width_range)
        self.road_r = self.lines_s[-1] + rng.uniform(*cfg.shoulder_width_range)
        self.yaw = rng.uniform(-cfg.max_yaw, cfg.max_yaw)
        self.k = self.j = 0.0
        curved = rng.random() < cfg.curved_road_prob
        if curved:
            lo, hi = cfg.curvature_range
            self.k = math.exp(rng.uniform(math.log(max(lo, 1e-6)), math.log(max(hi, 1e-6)))) * rng.choice((-1.0, 1.0))
            if rng.random() < cfg.s_curve_prob:
                self.j = -2.0 * self.k / rng.uniform(35.0, 90.0)  # curvature k + j z changes sign ahead
        self.two_way = two_way
        self.dashed = rng.random() < cfg.dashed_prob
        self.edge_lines = rng.random() < cfg.edge_line_prob
        # Painted line width in metres such that it spans the requested fraction of the bottom row.
        frac = rng.uniform(*cfg.lane_line_width_range)
        self.line_w = frac * (9.0 / 16.0) / _FU * self.z_bottom  # (nominal 16:9 frame)
        self.urban = rng.random() < cfg.urban_prob
        self.sidewalk = [rng.random() < cfg.sidewalk_prob for _ in range(2)]
        self.sidewalk_w = [rng.uniform(*cfg.sidewalk_width_range) for _ in range(2)]
        # Outer lateral limits of the paved area on the left (-) and right (+).
        self.outer = [
            self.road_l - (self.sidewalk_w[0] if self.sidewalk[0] else 0.0),
            self.road_r + (self.sidewalk_w[1] if self.sidewalk[1] else 0.0),
        ]
        self.night = rng.random() < cfg.night_prob
        self.fog = rng.random() < cfg.fog_prob
        self.sunny = (not self.night) and (not self.fog) and rng.random() < cfg.shadow_prob
        self.attributes = {
            "night": self.night,
            "fog": self.fog,
            "sunny": self.sunny,
            "urban": self.urban,
            "curved": curved,
            "curvature": float(self.k),
            "s_curve": self.j != 0.0,
            "lanes": n,
            "lane_width": float(lane_w),
            "ego_lane": ego,
            "two_way": two_way,
            "dashed": self.dashed,
            "edge_lines": self.edge_lines,
            "sidewalks": tuple(self.sidewalk),
            "horizon": float(self.vh),
            "camera_height": float(self.cam_h),
        }

    def _sample_look(self) -> None:
        rng = self.rng
        if self.night:
            self.ambient = rng.uniform(0.2, 0.34)
            top = self.jitter((30, 12, 6), 6)
            horizon = self.jitter((60, 50, 45), 12) if self.urban else self.jitter((40, 28, 22), 8)
        else:
            self.ambient = rng.uniform(0.9, 1.08) if self.sunny else rng.uniform(0.75, 0.95)
            kind = rng.random()
            if self.fog:
                top, horizon = self.jitter((195, 195, 192), 12), self.jitter((215, 215, 212), 10)
            elif kind < 0.55:  # clear blue
                top, horizon = self.jitter((205, 140, 75), 25), self.jitter((240, 225, 205), 14)
            elif kind < 0.85:  # overcast
                g = rng.uniform(160, 205)
                top, horizon = self.jitter((g + 8, g, g - 6), 8), self.jitter((g + 28, g + 26, g + 22), 8)
            else:  # dusk / dawn
                top, horizon = self.jitter((150, 105, 80), 15), self.jitter((150, 185, 240), 15)
        self.sky_top = np.clip(top, 0, 255)
        self.sky_horizon = np.clip(horizon, 0, 255)
        self.haze = self.sky_horizon.copy() if not self.night else self.sky_horizon * 0.8
        if self.fog:
            self.visibility = rng.uniform(60.0, 160.0)
        else:
            self.visibility = rng.uniform(400.0, 1500.0)
        asphalt = rng.uniform(62, 118) if rng.random() < 0.85 else rng.uniform(118, 140)
        self.road_color = np.clip(asphalt + rng.uniform(-5, 5, 3) + rng.uniform(-4, 4), 0, 255)
        self.sidewalk_color = self.jitter((rng.uniform(120, 175),) * 3, 14)
        self.kerb_color = np.clip(self.sidewalk_color * rng.uniform(1.05, 1.25), 0, 255)
        self.verge_class = SIDEWALK if (self.urban and rng.random() < 0.5) else TERRAIN
        if self.verge_class == TERRAIN:
            grass = (45, 125, 85) if rng.random() < 0.7 else (70, 140, 150)  # green or dry
            self.verge_color = self.jitter(grass, 18)
        else:
            self.verge_color = np.clip(self.sidewalk_color * rng.uniform(0.85, 1.0), 0, 255)
        self.white = self.jitter((228, 230, 230), 14)
        self.yellow = self.jitter((40, 190, 225), 15)

    # ------------------------------------------------------------------ sampling objects

    def _sample_roadside(self, objects: list) -> None:
        rng = self.rng
        order = len(objects)
        for side, sign in ((0, -1.0), (1, 1.0)):
            edge = self.road_l if side == 0 else self.road_r
            outer = self.outer[side]
            has_walk = self.sidewalk[side]
            kerb = edge + sign * 0.4  # poles stand on the sidewalk / verge just beyond the kerb
            if self.urban:
                z = rng.uniform(-15.0, 12.0)
                z_end = rng.uniform(120.0, 320.0)
                while z < z_end:
                    if rng.random() < 0.35:
                        z += rng.uniform(3.0, 14.0)  # gap between buildings
                    length = rng.uniform(8.0, 35.0)
                    height = rng.uniform(5.0, 16.0) if rng.random() < 0.6 else rng.uniform(14.0, 40.0)
                    setback = rng.uniform(0.0, 1.0) if has_walk else rng.uniform(1.0, 6.0)
                    s_face = outer + sign * setback
                    z2 = z + length
                    if z2 > 2.0:
                        objects.append((z2, order, self._draw_building, (s_face, sign, max(z, 1.5), z2, height, z >= 1.5)))
                        order += 1
                    z = z2
                if has_walk and rng.random() < 0.45:  # trees along the sidewalk
                    z = rng.uniform(8.0, 20.0)
                    step = rng.uniform(9.0, 20.0)
                    while z < 140.0:
                        s_t = outer - sign * rng.uniform(0.6, 1.0)
                        objects.append((z, order, self._draw_tree, (s_t, z, False, 0.7)))
                        order += 1
                        z += step * rng.uniform(0.8, 1.2)
            else:
                if rng.random() < 0.5:  # hedge / bushes along the verge
                    z1 = rng.uniform(2.0, 40.0)
                    z2 = z1 + rng.uniform(20.0, 150.0)
                    s_h = outer + sign * rng.uniform(0.5, 3.0)
                    objects.append((z2, order, self._draw_hedge, (s_h, sign, z1, z2)))
                    order += 1
                for _ in range(int(rng.integers(3, 16))):
                    z = math.exp(rng.uniform(math.log(7.0), math.log(180.0)))
                    s_t = outer + sign * rng.uniform(1.5, 14.0)
                    objects.append((z, order, self._draw_tree, (s_t, z, rng.random() < 0.3, 1.0)))
                    order += 1
                if rng.random() < 0.3:  # a house set back from the road
                    z1 = rng.uniform(20.0, 80.0)
                    s_face = outer + sign * rng.uniform(5.0, 15.0)
                    objects.append((z1 + 12.0, order, self._draw_building, (s_face, sign, z1, z1 + rng.uniform(8.0, 14.0), rng.uniform(4.0, 8.0), True)))
                    order += 1
            if rng.random() < (0.55 if self.urban else 0.35):  # street lamps / utility poles
                z = rng.uniform(5.0, 30.0)
                step = rng.uniform(22.0, 45.0)
                lamp = self.urban or rng.random() < 0.5
                while z < 220.0:
                    objects.append((z, order, self._draw_pole, (kerb, sign, z, lamp)))
                    order += 1
                    z += step
        self._order = order

    def _sample_vehicles(self, objects: list) -> None:
        rng, cfg = self.rng, self.cfg
        count = int(rng.integers(cfg.vehicle_count_range[0], cfg.vehicle_count_range[1] + 1))
        placed: list[tuple[int, float, float]] = []  # (lane, z, length)
        for _ in range(count):
            truck = rng.random() < cfg.truck_fraction
            length = rng.uniform(6.5, 12.0) if truck else rng.uniform(3.9, 4.9)
            # Lanes near the ego lane are busier.
            weights = 1.0 / (1.0 + np.abs(np.arange(self.lanes) - self.ego))
            lane = int(rng.choice(self.lanes, p=weights / weights.sum()))
            s_c = self.lines_s[lane] + self.lane_w * 0.5 + rng.uniform(-0.3, 0.3)
            z_min = 9.0 if lane == self.ego else max(6.0, _FU * abs(s_c) / 0.45)
            z = math.exp(rng.uniform(math.log(z_min), math.log(110.0)))
            if any(l == lane and abs(z - z2) < max(length, l2) + 2.5 for l, z2, l2 in placed):
                continue
            placed.append((lane, z, length))
            oncoming = lane < self.n_oncoming
            cls = TRUCK if truck else CAR
            index = self.new_thing(cls)
            if index is None:
                break
            args = (index, s_c, z, length, oncoming)
            objects.append((z, self._order, self._draw_truck if truck else self._draw_car, args))
            self._order += 1
        self.vehicles_placed = placed

    def _sample_pedestrians(self, objects: list) -> None:
        rng, cfg = self.rng, self.cfg
        count = int(rng.integers(cfg.pedestrian_count_range[0], cfg.pedestrian_count_range[1] + 1))
        for _ in range(count):
            if rng.random() < cfg.pedestrian_on_road_prob:
                s = rng.uniform(self.road_l + 0.3, self.road_r - 0.3)
                z = rng.uniform(8.0, 45.0)
                lane = int(np.clip((s - self.lines_s[0]) // self.lane_w, 0, self.lanes - 1))
                if any(l == lane and -1.0 < z - z2 < l2 + 1.0 for l, z2, l2 in self.vehicles_placed):
                    continue  # would stand inside a vehicle
            else:
                side = int(rng.integers(2))
                sign = -1.0 if side == 0 else 1.0
                edge = self.road_l if side == 0 else self.road_r
                width = self.sidewalk_w[side] if self.sidewalk[side] else 2.0
                s = edge + sign * rng.uniform(0.3, max(0.4, width - 0.3))
                z_min = max(5.0, _FU * abs(s) / 0.48)
                if z_min >= 70.0:
                    continue
                z = math.exp(rng.uniform(math.log(z_min), math.log(70.0)))
            index = self.new_thing(PERSON)
            if index is None:
                break
            objects.append((z, self._order, self._draw_pedestrian, (index, s, z)))
            self._order += 1

    # ------------------------------------------------------------------ background and ground

    def _draw_sky(self) -> None:
        rng = self.rng
        v = (np.arange(self.H) + 0.5) / self.H
        t = np.clip(v / self.vh, 0.0, 1.0) ** 0.8
        top = np.asarray(self.color(self.sky_top, emissive=True))
        hor = np.asarray(self.color(self.sky_horizon, emissive=True))
        grad = top[None, :] * (1.0 - t[:, None]) + hor[None, :] * t[:, None]
        cv2.resize(grad.astype(np.uint8)[:, None, :], (self.W, self.H), dst=self.img, interpolation=cv2.INTER_NEAREST)
        self.seg[:] = SKY
        if not self.night and not self.fog:
            for _ in range(int(rng.integers(0, 6))):
                cx = rng.uniform(-0.1, 1.1)
                cy = rng.uniform(0.02, max(0.03, self.vh - 0.12))
                row = np.clip(cy / self.vh, 0, 1) ** 0.8
                base = self.sky_top * (1 - row) + self.sky_horizon * row
                c = self.color(base + (255 - base) * rng.uniform(0.25, 0.7), emissive=True)
                w = rng.uniform(0.04, 0.16)
                blobs = []
                for _ in range(int(rng.integers(2, 5))):
                    ry = min(rng.uniform(0.01, 0.035), 0.5 * (self.vh - cy))
                    blobs.append(_ellipse(cx + rng.uniform(-w, w), cy + rng.uniform(-0.01, 0.01), w * rng.uniform(0.4, 0.9), ry, 14))
                self.fill_each(blobs, c, SKY)

    def _draw_ground(self) -> None:
        rng = self.rng
        ground = np.array([[-0.02, self.vh], [1.02, self.vh], [1.02, 1.02], [-0.02, 1.02]])
        self.fill(ground, self.color(self.verge_color, 60.0), self.verge_class)
        # Patchy grass / pavement: irregular blobs on the ground, a little darker or lighter.
        if self.verge_class == TERRAIN:
            for _ in range(int(rng.integers(4, 14))):
                side = -1.0 if rng.random() < 0.5 else 1.0
                s = self.outer[0 if side < 0 else 1] + side * rng.uniform(0.0, 25.0)
                z = math.exp(rng.uniform(math.log(4.0), math.log(120.0)))
                blob = _ellipse(s, z, rng.uniform(1.0, 5.0), rng.uniform(2.0, 10.0), 10, rng.uniform(0.7, 1.2, 10))
                col = self.color(self.verge_color * rng.uniform(0.75, 1.15), z)
                self.fill(self.road_point(blob[:, 0], 0.0, np.maximum(blob[:, 1], 1.0)), col, TERRAIN)

    def _depths(self, z0: float, z1: float, n: int) -> np.ndarray:
        return np.geomspace(z0, z1, n)

    def _draw_road(self) -> None:
        rng = self.rng
        z = self._depths(self.z_near, self.z_far, 72)
        self.road_z = z
        self.fill(self.strip(self.road_l, self.road_r, z), self.color(self.road_color, 25.0), ROAD)
        # Far road fades into the haze: a few nested bands, each drawn with the same road label.
        for zb in (40.0, 80.0, 160.0):
            zz = z[z >= zb]
            if len(zz) >= 2:
                self.fill(self.strip(self.road_l, self.road_r, zz), self.color(self.road_color, zb * 1.3), ROAD)
        # Tyre tracks: slightly darker bands in each lane.
        if rng.random() < 0.6:
            f = rng.uniform(0.86, 0.96)
            zt = z[z < 120.0]
            for i in range(self.lanes):
                for off in (0.27, 0.73):
                    c = self.lines_s[i] + off * self.lane_w
                    self.fill(self.strip(c - 0.3, c + 0.3, zt), self.color(self.road_color * f, 25.0), ROAD)
        # Repair patches and darker/lighter asphalt sections.
        for _ in range(int(rng.integers(0, 6))):
            s0 = rng.uniform(self.road_l + 0.2, self.road_r - 1.0)
            s1 = min(s0 + rng.uniform(0.8, 4.0), self.road_r - 0.2)
            z0 = math.exp(rng.uniform(math.log(self.z_near), math.log(100.0)))
            z1 = z0 + rng.uniform(1.0, 12.0)
            c = self.color(self.road_color * rng.uniform(0.75, 1.2), z0)
            self.fill(self.strip(s0, s1, np.geomspace(z0, z1, 4)), c, ROAD)

    def _draw_sidewalks(self) -> None:
        rng = self.rng
        z = self.road_z
        for side in (0, 1):
            if not self.sidewalk[side]:
                continue
            w = self.sidewalk_w[side]
            if side == 0:
                s0, s1, k0, k1 = self.road_l - w, self.road_l, self.road_l - 0.25, self.road_l
            else:
                s0, s1, k0, k1 = self.road_r, self.road_r + w, self.road_r, self.road_r + 0.25
            self.fill(self.strip(s0, s1, z), self.color(self.sidewalk_color, 20.0), SIDEWALK)
            self.fill(self.strip(k0, k1, z), self.color(self.kerb_color, 20.0), SIDEWALK)
            # Paving joints across the sidewalk.
            if rng.random() < 0.6:
                step = rng.uniform(1.5, 4.0)
                zs = np.arange(self.z_near + rng.uniform(0, step), 60.0, step)
                if len(zs):
                    zz = np.stack((zs, zs + 0.08), axis=-1)
                    a, b = (s0, k0) if side == 0 else (k1, s1)
                    self.fill(self.strip(a, b, zz), self.color(self.sidewalk_color * 0.8, 20.0), SIDEWALK)

    def _draw_lane_lines(self) -> None:
        rng = self.rng
        w = self.line_w
        z_end = min(self.z_far, _FU * self.lane_w / 0.012)
        z = self._depths(self.z_near, z_end, 56)
        solid: list[tuple[float, np.ndarray]] = []  # (s, target mask)
        centre = self.n_oncoming if self.two_way else -1
        separators = [float(self.lines_s[i]) for i in range(1, self.lanes) if i != centre]
        dashed = separators if self.dashed else []
        if not self.dashed:
            solid += [(s, self.paint_white) for s in separators]
        if centre > 0:
            s = self.lines_s[centre]
            kind = rng.random()
            if kind < 0.45:  # double solid yellow
                gap = rng.uniform(0.6, 1.2) * w
                solid += [(s - 0.5 * gap - 0.5 * w, self.paint_yellow), (s + 0.5 * gap + 0.5 * w, self.paint_yellow)]
            elif kind < 0.8:
                solid.append((s, self.paint_yellow))
            else:
                self._dashes([s], w, z_end, self.paint_yellow)
        if self.edge_lines:
            left_paint = self.paint_yellow if (rng.random() < 0.2 and not self.two_way) else self.paint_white
            solid += [(float(self.lines_s[0]), left_paint), (float(self.lines_s[-1]), self.paint_white)]
        for s, target in solid:
            self.mark(target, self.line_strip(s, w, z))
        if dashed:
            self._dashes(dashed, w, z_end, self.paint_white)
        # Lines are paint on the road: only where the road is visible now.
        road = cv2.compare(self.seg, ROAD, cv2.CMP_EQ)
        for mask, col in ((self.paint_white, self.white), (self.paint_yellow, self.yellow)):
            cv2.bitwise_and(mask, road, dst=mask)
            x, y, w, h = cv2.boundingRect(mask)
            if w and h:
                roi = self.img[y : y + h, x : x + w]
                paint = np.empty_like(roi)
                paint[:] = np.asarray(self.color(col, 30.0), np.float64).astype(np.uint8)
                cv2.copyTo(paint, mask[y : y + h, x : x + w], roi)

    def _dashes(self, lines_s: list[float], w: float, z_end: float, target: np.ndarray) -> None:
        rng = self.rng
        period = rng.uniform(6.0, 13.0)
        dash = period * rng.uniform(0.25, 0.5)
        phase = rng.uniform(0.0, period)
        starts = np.arange(self.z_near - period + phase, z_end, period)
        if not len(starts):
            return
        zz = np.linspace(starts, starts + dash, 3, axis=-1)
        zz = np.clip(zz, self.z_near * 0.5, z_end)
        polys = np.concatenate([self.line_strip(s, w, zz) for s in lines_s])
        self.mark(target, polys)

    def _apply_ground_light(self) -> None:
        """Shadows and light pools on the ground (image only; labels unchanged)."""
        rng = self.rng
        if self.sunny:
            # Shadows thrown across the road by trees and buildings out of view or at the roadside.
            self.sun_dir = rng.uniform(-1.2, 1.2)  # lateral shift of a shadow per metre of height
            for _ in range(int(rng.integers(0, 5))):
                z0 = math.exp(rng.uniform(math.log(self.z_near), math.log(60.0)))
                z1 = z0 + rng.uniform(0.5, 8.0)
                s0 = (self.outer[0] if self.sun_dir > 0 else self.road_l + rng.uniform(0, 6)) - 1.0
                s1 = (self.road_r - rng.uniform(0, 6) if self.sun_dir > 0 else self.outer[1]) + 1.0
                zs = np.geomspace(z0, z1, 4)
                band = self.strip(s0, s1, zs)
                self.mark(self.shadow, band)
            for _ in range(int(rng.integers(0, 4))):  # dappled blobs
                z = math.exp(rng.uniform(math.log(self.z_near + 2.0), math.log(50.0)))
                s = rng.uniform(self.road_l - 2.0, self.road_r + 2.0)
                blob = _ellipse(s, z, rng.uniform(1.0, 3.5), rng.uniform(1.0, 4.0), 12, rng.uniform(0.6, 1.25, 12))
                self.mark(self.shadow, self.road_point(blob[:, 0], 0.0, np.maximum(blob[:, 1], 1.0)))
        masks = [(self.shadow, rng.uniform(0.45, 0.7), 0.0)]
        if self.night:  # the ego headlights: a bright beam inside a dimmer, wider one
            reach = rng.uniform(25.0, 45.0)
            spread = rng.uniform(0.07, 0.11)
            gain = rng.uniform(1.8, 2.6)
            z = np.geomspace(self.z_near, reach * 1.4, 8)
            self.mark(self.glow, self.strip(-1.6 - 1.3 * spread * z, 1.6 + 1.3 * spread * z, z))
            inner = np.zeros_like(self.glow)
            z = np.geomspace(self.z_near, reach, 8)
            self.mark(inner, self.strip(-1.0 - spread * z, 1.0 + spread * z, z))
            masks += [(self.glow, 0.5 + 0.5 * gain, 4.0), (inner, gain / (0.5 + 0.5 * gain), 4.0)]
        for mask, alpha, beta in masks:
            x, y, w, h = cv2.boundingRect(mask)
            if w and h:
                roi = self.img[y : y + h, x : x + w]
                cv2.copyTo(cv2.convertScaleAbs(roi, alpha=alpha, beta=beta), mask[y : y + h, x : x + w], roi)

    def _draw_skyline(self) -> None:
        rng = self.rng
        base = self.vh + 0.004
        z_far = 1500.0
        if self.urban or rng.random() < 0.25:
            n = int(rng.integers(8, 30))
            x0 = np.sort(rng.uniform(-0.05, 1.05, n))
            widths = rng.uniform(0.02, 0.12, n)
            heights = rng.uniform(0.01, 0.11, n) * (1.0 if self.urban else 0.4)
            for i in range(n):
                col = self.color(self.pick(_BUILDING_COLORS, 20) * rng.uniform(0.8, 1.05), z_far * rng.uniform(0.35, 1.0))
                self.fill(_rects(x0[i], x0[i] + widths[i], base - heights[i], base), col, BUILDING)
        # Tree line / hills: a smooth irregular silhouette.
        if not self.urban or rng.random() < 0.5:
            xs = np.linspace(-0.05, 1.05, 40)
            h = np.zeros_like(xs)
            for _ in range(3):
                freq, phase = rng.uniform(2.0, 12.0), rng.uniform(0, 2 * math.pi)
                h += rng.uniform(0.003, 0.02) * (1 + np.sin(freq * xs * 2 * math.pi / 3 + phase))
            h += rng.uniform(0.0, 0.006, len(xs))
            if self.urban:
                h *= 0.5
            top = np.stack((xs, base - h), axis=-1)
            poly = np.concatenate((top, [[1.05, base], [-0.05, base]]))
            col = self.color(self.jitter((50, 95, 60), 15), z_far * rng.uniform(0.2, 0.6))
            self.fill(poly, col, VEGETATION)

    # ------------------------------------------------------------------ roadside objects

    def _draw_building(self, s_face: float, sign: float, z1: float, z2: float, height: float, front_wall: bool) -> None:
        rng = self.rng
        base = self.pick(_BUILDING_COLORS, 18)
        zmid = 0.5 * (z1 + z2)
        n = 2 if self.k == 0 and self.j == 0 else max(2, int((z2 - z1) / 4.0) + 1)
        zs = np.linspace(z1, z2, n)
        bottom = self.road_point(s_face, 0.0, zs)
        top = self.road_point(s_face, height, zs)
        self.fill(np.concatenate((bottom, top[::-1])), self.color(base, zmid), BUILDING)
        if front_wall:  # the wall facing the camera at the near end, shaded differently
            depth = rng.uniform(8.0, 15.0)
            x = s_face + self.off(z1) + np.array([0.0, sign * depth])
            wall = self.project(np.array([x[0], x[1], x[1], x[0]]), np.array([0.0, 0.0, height, height]), z1)
            self.fill(wall, self.color(base * rng.uniform(0.6, 0.85), z1), BUILDING)
        # Roof cornice and ground-floor shop band.
        if rng.random() < 0.6:
            band = np.concatenate((self.road_point(s_face, height - 0.6, zs), top[::-1]))
            self.fill(band, self.color(base * 0.7, zmid), BUILDING)
        floor_h = rng.uniform(2.8, 3.6)
        ground_h = rng.uniform(3.2, 4.5)
        shop = rng.random() < (0.5 if self.urban else 0.0)
        if shop and height > ground_h + 1.0:
            band = np.concatenate((bottom, self.road_point(s_face, ground_h, zs)[::-1]))
            self.fill(band, self.color(self.pick(_CLOTHES, 20) * 0.7, zmid), BUILDING)
        # Windows on a grid over the facade, each quad projected with the curve.
        spacing = rng.uniform(2.5, 4.0)
        win_w = spacing * rng.uniform(0.4, 0.7)
        win_h = floor_h * rng.uniform(0.4, 0.6)
        cols = np.arange(z1 + 0.8, z2 - win_w - 0.5, spacing)
        rows = np.arange(ground_h + 0.6 if shop else 1.0, height - win_h - 0.8, floor_h)
        lit = rng.random(len(cols) * len(rows)) < (rng.uniform(0.15, 0.6) if self.night else 0.0)
        if len(cols) and len(rows) and z1 < 160.0:
            za, ya = np.meshgrid(cols, rows)
            za, ya = za.ravel(), ya.ravel()
            zc = np.stack((za, za + win_w, za + win_w, za), -1)
            yc = np.stack((ya, ya, ya + win_h, ya + win_h), -1)
            quads = self.road_point(s_face, yc, zc)
            glass = self.color(self.jitter((70, 60, 50), 25) if rng.random() < 0.7 else self.sky_horizon * 0.7, zmid)
            if (~lit).any():
                self.fill(quads[~lit], glass, BUILDING)
            if lit.any():
                self.fill(quads[lit], self.color(self.jitter((90, 190, 245), 20), zmid, emissive=True), BUILDING)
        if shop and height > ground_h + 1.0:
            za = np.arange(z1 + 0.5, z2 - 2.0, rng.uniform(3.0, 6.0))
            if len(za):
                zc = np.stack((za, za + 2.5, za + 2.5, za), -1)
                yc = np.broadcast_to(np.array([0.4, 0.4, ground_h - 0.6, ground_h - 0.6]), zc.shape)
                quads = self.road_point(s_face, yc, zc)
                c = self.color((120, 110, 90), zmid, emissive=False) if not self.night else self.color((120, 200, 240), zmid, emissive=True)
                self.fill(quads, c, BUILDING)

    def _draw_tree(self, s: float, z: float, conifer: bool, size: float) -> None:
        rng = self.rng
        x = s + self.off(z)
        trunk_h = rng.uniform(1.5, 3.5)
        trunk_w = rng.uniform(0.2, 0.45)
        green = self.jitter((40, 105, 55), 22)
        trunk = self.project(np.array([x - trunk_w / 2, x + trunk_w / 2, x + trunk_w / 2, x - trunk_w / 2]), np.array([0, 0, trunk_h + 1.0, trunk_h + 1.0]), z)
        self.fill(trunk, self.color(self.jitter((45, 60, 75), 10), z), VEGETATION)
        if conifer:
            r = rng.uniform(1.2, 2.5)
            top = trunk_h + rng.uniform(5.0, 10.0)
            levels = int(rng.integers(3, 6))
            ys = np.linspace(trunk_h * 0.6, top - (top - trunk_h) / levels, levels)
            polys = []
            for i, y0 in enumerate(ys):
                rr = r * (1.0 - 0.7 * i / levels)
                polys.append(self.project(np.array([x - rr, x + rr, x]), np.array([y0, y0, min(y0 + (top - trunk_h) * 0.55, top)]), z))
            self.fill_each(polys, self.color(green * 0.75, z), VEGETATION)
            return
        r = rng.uniform(1.5, 3.8) * size
        cy = trunk_h + r * 0.8
        blobs = []
        for _ in range(int(rng.integers(2, 5))):
            bx = x + rng.uniform(-0.6, 0.6) * r
            by = cy + rng.uniform(-0.3, 0.5) * r
            e = _ellipse(bx, by, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.55, 0.9), 18, rng.uniform(0.85, 1.12, 18))
            blobs.append(self.project(e[:, 0], e[:, 1], z))
        self.fill_each(blobs, self.color(green, z), VEGETATION)
        # Lit and shaded parts of the canopy.
        e = _ellipse(x + rng.uniform(-0.3, 0.3) * r, cy + 0.25 * r, 0.55 * r, 0.45 * r, 12, rng.uniform(0.8, 1.15, 12))
        self.fill(self.project(e[:, 0], e[:, 1], z), self.color(green * rng.uniform(1.1, 1.3), z), VEGETATION)
        e = _ellipse(x + rng.uniform(-0.3, 0.3) * r, cy - 0.35 * r, 0.6 * r, 0.3 * r, 12, rng.uniform(0.8, 1.15, 12))
        self.fill(self.project(e[:, 0], e[:, 1], z), self.color(green * 0.7, z), VEGETATION)

    def _draw_hedge(self, s: float, sign: float, z1: float, z2: float) -> None:
        rng = self.rng
        zs = np.geomspace(z1, z2, 24)
        height = rng.uniform(0.8, 2.5) * (1.0 + rng.uniform(-0.25, 0.25, len(zs)))
        bottom = self.road_point(s, 0.0, zs)
        top = self.road_point(s, height, zs)
        green = self.jitter((40, 100, 50), 20)
        self.fill(np.concatenate((bottom, top[::-1])), self.color(green, 0.5 * (z1 + z2)), VEGETATION)
        x = s + self.off(z1) + np.array([0.0, sign * rng.uniform(0.8, 2.0)])
        end = self.project(np.array([x[0], x[1], x[1], x[0]]), np.array([0.0, 0.0, height[0], height[0]]), z1)
        self.fill(end, self.color(green * 0.75, z1), VEGETATION)

    def _draw_pole(self, s: float, sign: float, z: float, lamp: bool) -> None:
        rng = self.rng
        x = s + self.off(z)
        h = rng.uniform(6.5, 9.5)
        w = rng.uniform(0.14, 0.28)
        col = self.color(self.jitter((95, 100, 105) if lamp else (60, 80, 100), 12), z)
        self.fill(self.project(np.array([x - w / 2, x + w / 2, x + w / 2, x - w / 2]), np.array([0.0, 0.0, h, h]), z), col, POLE)
        if lamp:
            arm = rng.uniform(1.2, 2.5)
            xe = x - sign * arm
            self.fill(self.project(np.array([x, xe, xe, x]), np.array([h - 0.3, h - 0.1, h - 0.02, h - 0.2]), z), col, POLE)
            head = self.project(np.array([xe - 0.35, xe + 0.35, xe + 0.25, xe - 0.25]), np.array([h - 0.25, h - 0.25, h - 0.05, h - 0.05]), z)
            self.fill(head, self.color((200, 245, 255), z, emissive=True) if self.night else col, POLE)

    # ------------------------------------------------------------------ things

    def _vehicle_shadow(self, x: float, z: float, width: float, length: float) -> None:
        """Darken the road under a vehicle just before drawing it (image only: visible road pixels)."""
        zz = np.array([z - 0.15, z + length])
        quad = self.project(np.array([x - width / 2 - 0.1, x - width / 2 - 0.1, x + width / 2 + 0.1, x + width / 2 + 0.1]), 0.0, np.array([zz[0], zz[1], zz[1], zz[0]]))
        pts = self._fx(quad)
        mask = np.zeros_like(self.shadow)
        cv2.fillConvexPoly(mask, pts, 255, cv2.LINE_8, _SHIFT)
        ground = cv2.compare(self.seg, ROAD, cv2.CMP_EQ)
        cv2.bitwise_and(mask, ground, dst=mask)
        x0, y0, bw, bh = cv2.boundingRect(mask)
        if bw and bh:
            roi = self.img[y0 : y0 + bh, x0 : x0 + bw]
            dark = cv2.convertScaleAbs(roi, alpha=0.35)
            cv2.copyTo(dark, mask[y0 : y0 + bh, x0 : x0 + bw], roi)

    def _face(self, x: float, z: float, pts: np.ndarray) -> np.ndarray:
        """Polygon(s) in a vertical plane facing the camera: (..., 2) of (dx, y) metres at depth z."""
        return self.project(x + pts[..., 0], pts[..., 1], z)

    def _side(self, s_side: float, z: float, pts: np.ndarray) -> np.ndarray:
        """Polygon(s) on a vehicle's side: (..., 2) of (dz, y) metres, following the road's curve."""
        zz = z + pts[..., 0]
        return self.project(s_side + self.off(zz), pts[..., 1], zz)

    def _draw_car(self, index: int, s: float, z: float, length: float, oncoming: bool) -> None:
        rng = self.rng
        kind = rng.random()
        van = kind < 0.15
        suv = 0.15 <= kind < 0.35
        w = rng.uniform(1.7, 2.0) if (van or suv) else rng.uniform(1.65, 1.85)
        h = rng.uniform(1.85, 2.2) if van else (rng.uniform(1.6, 1.8) if suv else rng.uniform(1.35, 1.52))
        body_h = h * (0.48 if van else rng.uniform(0.5, 0.58))
        base = self.pick(_CAR_COLORS, 10)
        body = self.color(base, z)
        dark = self.color(base * 0.55, z)
        glass = self.color(self.jitter((55, 45, 40), 12) if rng.random() < 0.75 else self.sky_horizon * 0.55, z)
        tyre = self.color((22, 22, 24), z)
        x = s + self.off(z)
        self._vehicle_shadow(x, z, w, length)
        # Visible side (the one facing the camera) with wheels and side windows.
        if abs(x) > w / 2:
            sgn = 1.0 if x > 0 else -1.0
            s_side = s - sgn * w / 2
            L = length
            if van:
                cab = [(0.02 * L, body_h), (0.92 * L, body_h), (0.85 * L, h), (0.02 * L, h)]
            elif oncoming:
                cab = [(0.22 * L, body_h), (0.95 * L, body_h), (0.78 * L, h), (0.45 * L, h)]
            else:
                cab = [(0.05 * L, body_h), (0.78 * L, body_h), (0.55 * L, h), (0.22 * L, h)]
            cab = np.array(cab)
            self.fill(self._side(s_side, z, np.array([(0, 0.22), (L, 0.22), (L, body_h), (0, body_h)])), dark, index)
            self.fill(self._side(s_side, z, cab), dark, index)
            centre = cab.mean(axis=0)
            self.fill(self._side(s_side, z, centre + (cab - centre) * np.array([0.85, 0.75])), glass, index)
            wheels = np.stack([_ellipse(dz, 0.32, 0.33, 0.32, 10) for dz in (0.18 * length, 0.8 * length)])
            self.fill(self._side(s_side, z, wheels), tyre, index)
        # Roof, seen from a camera higher than the car.
        if self.cam_h > h + 0.05:
            zr = z + length * np.array([0.25, 0.55]) if not van else z + length * np.array([0.03, 0.85])
            roof = self.project(x + np.array([-0.36, 0.36, 0.36, -0.36]) * w, h, np.array([zr[0], zr[0], zr[1], zr[1]]))
            self.fill(roof, self.color(base * 1.05, z), index)
        # Rear (or front) face.
        hw = w / 2
        top_hw = hw * (0.9 if van else 0.72)
        wheels = _rects(np.array([-hw + 0.02, hw - 0.27]), np.array([-hw + 0.27, hw - 0.02]), 0.0, 0.38)
        self.fill(self._face(x, z, wheels), tyre, index)
        lower = _rects(-hw, hw, 0.2, body_h)
        cabin = np.array([(-hw * 0.94, body_h), (hw * 0.94, body_h), (top_hw, h), (-top_hw, h)])
        self.fill(self._face(x, z, np.stack((lower, cabin))), body, index)
        self.fill(self._face(x, z, _rects(-hw, hw, 0.2, 0.38)), dark, index)  # bumper
        wy0, wy1 = body_h + 0.06, h - 0.07
        window = np.array([(-hw * 0.84, wy0), (hw * 0.84, wy0), (top_hw * 0.88, wy1), (-top_hw * 0.88, wy1)])
        if oncoming:
            self.fill(self._face(x, z, window), glass, index)
            lights = _rects(np.array([-hw + 0.06, hw - 0.36]), np.array([-hw + 0.36, hw - 0.06]), body_h - 0.2, body_h - 0.07)
            light_col = self.color((235, 250, 255), z, emissive=True) if self.night else self.color((200, 210, 215), z)
            self.fill(self._face(x, z, lights), light_col, index)
            self.fill(self._face(x, z, _rects(-0.3, 0.3, body_h - 0.24, body_h - 0.08)), self.color((30, 30, 30), z), index)
        else:
            self.fill(self._face(x, z, window), glass, index)
            lights = _rects(np.array([-hw + 0.03, hw - 0.3]), np.array([-hw + 0.3, hw - 0.03]), body_h - 0.22, body_h - 0.05)
            light_col = self.color((30, 30, 255), z, emissive=True) if self.night else self.color((35, 35, 170), z)
            self.fill(self._face(x, z, lights), light_col, index)
            self.fill(self._face(x, z, _rects(-0.26, 0.26, 0.42, 0.54)), self.color((215, 215, 215), z), index)  # plate

    def _draw_truck(self, index: int, s: float, z: float, length: float, oncoming: bool) -> None:
        rng = self.rng
        w = rng.uniform(2.35, 2.55)
        box_h = rng.uniform(3.0, 3.9)
        cab_h = rng.uniform(2.6, 3.0)
        cab_l = 2.3
        box_base = rng.uniform(0.95, 1.2)
        base = self.pick(_TRUCK_COLORS, 10)
        cab_base = self.pick(_TRUCK_COLORS, 10) if rng.random() < 0.5 else base
        tyre = self.color((22, 22, 24), z)
        chassis = self.color((40, 40, 45), z)
        glass = self.color(self.jitter((60, 50, 45), 10), z)
        x = s + self.off(z)
        hw = w / 2
        self._vehicle_shadow(x, z, w, length)
        box_z0 = z + (cab_l + 0.3 if oncoming else 0.0)
        box_len = length - cab_l - 0.3
        cab_z0 = z if oncoming else z + box_len + 0.3
        if abs(x) > hw:
            sgn = 1.0 if x > 0 else -1.0
            s_side = s - sgn * hw
            self.fill(self._side(s_side, box_z0, _rects(0.0, box_len, box_base, box_h)), self.color(base * 0.8, z), index)
            self.fill(self._side(s_side, cab_z0, _rects(0.0, cab_l, 0.6, cab_h)), self.color(cab_base * 0.8, z), index)
            self.fill(self._side(s_side, cab_z0, _rects(0.25 if oncoming else 1.1, 1.2 if oncoming else 2.05, cab_h * 0.6, cab_h - 0.2)), glass, index)
            self.fill(self._side(s_side, z, _rects(0.0, length, 0.5, box_base)), chassis, index)
            axles = (0.9, 2.2, length - 1.5) if not oncoming else (1.4, length - 2.2, length - 0.9)
            self.fill(self._side(s_side, z, np.stack([_ellipse(a, 0.5, 0.5, 0.5, 10) for a in axles])), tyre, index)
        if oncoming:
            # The box's front shows above the cab, then the cab's front face.
            self.fill(self._face(x, box_z0, _rects(-hw, hw, box_base, box_h)), self.color(base * 0.9, z), index)
            self.fill(self._face(x, z, _rects(np.array([-hw + 0.05, hw - 0.45]), np.array([-hw + 0.45, hw - 0.05]), 0.0, 1.0)), tyre, index)
            self.fill(self._face(x, z, _rects(-hw + 0.05, hw - 0.05, 0.45, cab_h)), self.color(cab_base, z), index)
            self.fill(self._face(x, z, _rects(-hw + 0.2, hw - 0.2, cab_h * 0.6, cab_h - 0.15)), glass, index)
            self.fill(self._face(x, z, _rects(-0.7, 0.7, 0.6, 1.3)), chassis, index)
            lights = _rects(np.array([-hw + 0.12, hw - 0.45]), np.array([-hw + 0.45, hw - 0.12]), 0.65, 0.9)
            self.fill(self._face(x, z, lights), self.color((235, 250, 255), z, emissive=True) if self.night else self.color((200, 210, 215), z), index)
        else:
            wheels = _rects(np.array([-hw + 0.05, hw - 0.65]), np.array([-hw + 0.65, hw - 0.05]), 0.0, 0.95)
            self.fill(self._face(x, z, wheels), tyre, index)
            self.fill(self._face(x, z, _rects(-hw + 0.1, hw - 0.1, 0.45, 0.62)), chassis, index)  # under-run bar
            self.fill(self._face(x, z, _rects(-hw, hw, box_base, box_h)), self.color(base, z), index)
            seams = _rects(np.array([-0.03, -hw + 0.05, hw - 0.09]), np.array([0.03, -hw + 0.09, hw - 0.05]), box_base + 0.1, box_h - 0.1)
            self.fill(self._face(x, z, seams), self.color(base * 0.6, z), index)
            lights = _rects(np.array([-hw + 0.1, hw - 0.4]), np.array([-hw + 0.4, hw - 0.1]), box_base - 0.35, box_base - 0.12)
            self.fill(self._face(x, z, lights), self.color((30, 30, 255), z, emissive=True) if self.night else self.color((35, 35, 170), z), index)

    def _draw_pedestrian(self, index: int, s: float, z: float) -> None:
        rng = self.rng
        hp = rng.uniform(1.5, 1.95) if rng.random() < 0.9 else rng.uniform(1.05, 1.4)
        wscale = rng.uniform(0.85, 1.2) * hp
        x = s + self.off(z)
        skin = self.color(self.pick(_SKIN, 8), z)
        shirt = self.color(self.pick(_CLOTHES, 15), z)
        pants = self.color(self.pick(_PANTS, 12), z)
        hair = self.color(self.pick(_HAIR, 8), z)
        shoes = self.color((30, 30, 35), z)
        stride = rng.uniform(-0.1, 0.1)
        swing = rng.uniform(-0.06, 0.06)
        skirt = rng.random() < 0.15

        def pts(a):  # (dx, y) in fractions of the height → world offsets
            a = np.asarray(a, np.float64)
            return np.stack((a[..., 0] * wscale, a[..., 1] * hp), -1)

        hip = 0.5
        legs = np.array(
            [
                [(-0.1, hip), (0.0, hip), (-0.04 + stride + 0.035, 0.0), (-0.04 + stride - 0.035, 0.0)],
                [(0.0, hip), (0.1, hip), (0.04 - stride + 0.035, 0.0), (0.04 - stride - 0.035, 0.0)],
            ]
        )
        self.fill_each(self._face(x, z, pts(legs)), pants, index)
        feet = _rects(np.array([-0.085 + stride, -0.005 - stride]), np.array([0.005 + stride, 0.085 - stride]), 0.0, 0.035)
        self.fill_each(self._face(x, z, pts(feet)), shoes, index)
        torso = np.array([(-0.125, hip - 0.03), (0.125, hip - 0.03), (0.14, 0.82), (-0.14, 0.82)])
        if skirt:
            torso = np.array([(-0.16, 0.36), (0.16, 0.36), (0.14, 0.82), (-0.14, 0.82)])
        arms = np.array(
            [
                [(-0.175, 0.81), (-0.12, 0.81), (-0.14 - swing, 0.46), (-0.19 - swing, 0.46)],
                [(0.12, 0.81), (0.175, 0.81), (0.19 + swing, 0.46), (0.14 + swing, 0.46)],
            ]
        )
        self.fill(self._face(x, z, pts(arms)), shirt, index)
        self.fill(self._face(x, z, pts(torso)), shirt, index)
        hands = np.stack([_ellipse(-0.165 - swing, 0.45, 0.025, 0.025, 8), _ellipse(0.165 + swing, 0.45, 0.025, 0.025, 8)])
        self.fill(self._face(x, z, pts(hands)), skin, index)
        self.fill(self._face(x, z, pts(_rects(-0.03, 0.03, 0.8, 0.85))), skin, index)  # neck
        self.fill(self._face(x, z, pts(_ellipse(0.0, 0.9, 0.055, 0.068, 12))), skin, index)
        hair_poly = _ellipse(0.0, 0.915, 0.058, 0.06, 12)
        hair_poly = hair_poly[hair_poly[:, 1] >= 0.905]
        self.fill(self._face(x, z, pts(hair_poly)), hair, index)
        if rng.random() < 0.25:  # bag
            side = rng.choice((-1.0, 1.0))
            self.fill(self._face(x, z, pts(_rects(side * 0.13, side * 0.24, 0.45, 0.6))), self.color(self.pick(_CLOTHES, 20), z), index)

    # ------------------------------------------------------------------ finishing

    def _post_process(self) -> None:
        rng, cfg, img = self.rng, self.cfg, self.img
        H, W = self.H, self.W
        # Uneven illumination and vignetting from a smooth low-resolution gain field.
        gy, gx = np.mgrid[0:9, 0:16]
        r2 = ((gx - 7.5) / 7.5) ** 2 + ((gy - 4.0) / 4.0) ** 2
        coarse = cv2.resize(rng.uniform(0.9, 1.1, (3, 4)).astype(np.float32), (16, 9), interpolation=cv2.INTER_LINEAR)
        gain = coarse * (1.0 - rng.uniform(0.05, 0.3) * r2 / 2.0)
        gain8 = np.clip(gain * 128.0, 0, 255).astype(np.uint8)
        field8 = cv2.resize(gain8, (W, H), interpolation=cv2.INTER_LINEAR)
        cv2.multiply(img, cv2.merge((field8, field8, field8)), dst=img, scale=1.0 / 128.0)
        # Colour grading: gamma, contrast, brightness and a colour cast in one lookup table.
        x = np.arange(256, dtype=np.float64) / 255.0
        gamma = rng.uniform(0.85, 1.15)
        contrast = rng.uniform(*cfg.contrast_range)
        brightness = rng.uniform(*cfg.brightness_range)
        tint = 1.0 + rng.uniform(-cfg.max_tint, cfg.max_tint, 3)
        y = ((x**gamma - 0.5) * contrast + 0.5)[:, None] * brightness * tint[None, :]
        lut = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8).reshape(1, 256, 3)
        cv2.LUT(img, lut, dst=img)
        sigma = (rng.uniform(0.7, 1.5) if rng.random() < cfg.blur_prob else rng.uniform(0.3, 0.6)) * H / 360.0
        cv2.GaussianBlur(img, (0, 0), sigma, dst=img)
        amp = int(rng.integers(cfg.noise_range[0], cfg.noise_range[1] + 1)) * (2 if self.night else 1)
        if amp > 0:
            noise_rng = np.random.default_rng((self.seed, 0x5E75))
            noise = noise_rng.integers(0, 2 * amp + 1, (H, W), dtype=np.uint8)
            cv2.add(img, cv2.merge((noise, noise, noise)), dst=img)
            cv2.subtract(img, (amp, amp, amp, 0), dst=img)
        self.attributes["blur_sigma_px"] = float(sigma)
        self.attributes["noise"] = amp

    def _labels(self) -> SyntheticScene:
        seg = self.seg
        hist = cv2.calcHist([seg], [0], None, [256], [0, 256]).ravel()
        sem_lut = np.zeros((1, 256), np.uint8)
        pan_lut = np.zeros(256, np.int32)
        segments: list[SegmentInfo] = []
        next_instance = {c: 1 for c in THING_CLASS_IDS}
        for idx in np.flatnonzero(hist):
            idx = int(idx)
            is_thing = idx >= _FIRST_THING
            if is_thing:
                cls = self.thing_classes[idx - _FIRST_THING]
                inst = next_instance[cls]
                next_instance[cls] += 1
            else:
                cls, inst = idx, 0
            sem_lut[0, idx] = cls
            pan = cls * PANOPTIC_LABEL_DIVISOR + inst
            pan_lut[idx] = pan
            mask = cv2.compare(seg, idx, cv2.CMP_EQ)
            x, y, w, h = cv2.boundingRect(mask)
            area = cv2.countNonZero(mask)
            segments.append(SegmentInfo(id=pan, category_id=cls, is_thing=is_thing, area=int(area), bbox=(x, y, w, h), score=1.0))
        segments.sort(key=lambda sgm: sgm.id)
        semantic = cv2.LUT(seg, sem_lut)
        panoptic = pan_lut.take(seg)
        drivable = (seg == ROAD).view(np.uint8)
        lane = cv2.bitwise_or(self.paint_white, self.paint_yellow)
        cv2.bitwise_and(lane, drivable, dst=lane)
        cv2.min(lane, 1, dst=lane)
        things = [sgm for sgm in segments if sgm.is_thing]  # detections in panoptic-id order
        if things:
            det = Detections(
                boxes=np.array([(x, y, x + w, y + h) for x, y, w, h in (t.bbox for t in things)], np.float32),
                scores=np.ones(len(things), np.float32),
                class_ids=np.array([t.category_id for t in things], np.int64),
                class_names=[CITYSCAPES.name_of(t.category_id) for t in things],
            )
        else:
            det = Detections.empty()
        classes = [t.category_id for t in things]
        self.attributes["vehicles"] = sum(1 for c in classes if c in (CAR, TRUCK))
        self.attributes["pedestrians"] = sum(1 for c in classes if c == PERSON)
        return SyntheticScene(
            image=self.img,
            drivable_mask=drivable,
            lane_mask=lane,
            semantic=semantic,
            panoptic=panoptic,
            segments=segments,
            detections=det,
            seed=self.seed,
        )


# ------------------------------------------------------------------------------------ viewing / CLI


def save_scene(scene: SyntheticScene, directory: str | Path) -> list[Path]:
    """Write image, semantic / panoptic colour maps, the driving overlay and a 2x2 panel."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"synthetic_{scene.seed:05d}"
    parts = {
        "image": scene.image,
        "semantic": colorize_semantic(scene.semantic, CITYSCAPES),
        "panoptic": colorize_panoptic(scene.panoptic, CITYSCAPES),
        "driving": draw_overlay(scene.image, replace(scene.to_result(), semantic=None), CITYSCAPES, alpha=0.45),
    }
    paths = []
    for name, arr in parts.items():
        path = directory / f"{stem}_{name}.png"
        cv2.imwrite(str(path), arr)
        paths.append(path)
    panel = np.concatenate((np.concatenate((parts["image"], parts["driving"]), 1), np.concatenate((parts["semantic"], parts["panoptic"]), 1)), 0)
    path = directory / f"{stem}_panel.png"
    cv2.imwrite(str(path), panel)
    paths.append(path)
    return paths


def benchmark(width: int = 640, height: int = 360, frames: int = 200, first_seed: int = 0) -> float:
    """Frames per second of :func:`generate_scene` on one core (images and labels)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for s in range(3):
            generate_scene(first_seed + s, width, height)
        start = time.perf_counter()
        for s in range(frames):
            generate_scene(first_seed + s, width, height)
        return frames / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m panoptic_perception.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", action="store_true", help="print frames/s on one CPU core")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--frames", type=int, default=200, help="frames to time with --benchmark")
    parser.add_argument("--save", metavar="DIR", help="write images and colour-coded labels to DIR")
    parser.add_argument("--count", type=int, default=6, help="scenes to write with --save")
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.benchmark and not args.save:
        parser.error("nothing to do: give --benchmark and/or --save DIR")
    if args.save:
        for scene in SyntheticScenes(args.count, args.width, args.height, first_seed=args.first_seed):
            paths = save_scene(scene, args.save)
            print(f"seed {scene.seed}: {paths[-1]}  ({len(scene.detections)} objects, {scene.attributes})")
    if args.benchmark:
        fps = benchmark(args.width, args.height, args.frames, args.first_seed)
        print(f"synthetic scenes {args.width}x{args.height}: {fps:.1f} frames/s on one core ({1000.0 / fps:.2f} ms/frame, {args.frames} frames)")
    return 0


def _pin_to_one_core() -> None:
    """Run this process on a single CPU (the benchmark's "one core"), where the OS allows it."""
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        except OSError:
            pass


if __name__ == "__main__":
    _pin_to_one_core()
    raise SystemExit(main())
