"""Scene geometry: the pinhole camera over a flat road, the road's curve and the road's lateral layout.

World frame (metres): ``x`` right, ``y`` up from the road, ``z`` forward.  Points beside the road are
given as ``s``, metres right of the road's reference line, the camera's path, which bends sideways by
:meth:`View.offset` (a cubic of depth: straight roads, curves and S-bends).  Images are in normalised
coordinates ``u = x / width``, ``v = y / height``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .types import SyntheticConfig

# Pinhole camera in normalised units: u = 0.5 + FU * X / Z, v = horizon + FV * (camera_height - Y) / Z.
# FU / FV = 9 / 16 gives square pixels in a 16:9 frame; about 83 deg horizontal field of view.
FU = 0.5625
FV = 1.0
#: The farthest depth the road is drawn to (metres).
Z_FAR = 350.0

_UNIT_CIRCLE = {
    n: (np.cos(np.linspace(0.0, 2 * math.pi, n, endpoint=False)), np.sin(np.linspace(0.0, 2 * math.pi, n, endpoint=False)))
    for n in range(3, 33)
}


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 12, jitter: np.ndarray | None = None) -> np.ndarray:
    """(n, 2) float64 polygon around (cx, cy), 3 <= n <= 32; ``jitter`` (n,) scales each radius (irregular blobs)."""
    cos, sin = _UNIT_CIRCLE[n]
    r = 1.0 if jitter is None else jitter
    out = np.empty((n, 2))
    out[:, 0] = cx + rx * r * cos
    out[:, 1] = cy + ry * r * sin
    return out


def rects(x0, x1, y0, y1) -> np.ndarray:
    """Axis-aligned rectangles (..., 4, 2) float64 from broadcastable corner coordinates."""
    x0, x1, y0, y1 = (np.asarray(a, np.float64) for a in (x0, x1, y0, y1))
    out = np.empty(np.broadcast_shapes(x0.shape, x1.shape, y0.shape, y1.shape) + (4, 2))
    out[..., 0, 0] = out[..., 3, 0] = x0
    out[..., 1, 0] = out[..., 2, 0] = x1
    out[..., 0, 1] = out[..., 1, 1] = y0
    out[..., 2, 1] = out[..., 3, 1] = y1
    return out


@dataclass(frozen=True)
class View:
    """The camera (its horizon row and height) and the road's curve it looks along."""

    #: Horizon row as a fraction of the image height (the camera's pitch).
    horizon: float
    #: Camera height above the road (metres).
    camera_height: float
    #: Heading of the road's reference line relative to the camera (radians).
    yaw: float
    #: Curvature of the reference line at the camera (1/m, positive bends right).
    curvature: float
    #: Change of the curvature per metre of depth (non-zero on S-bends).
    curvature_rate: float

    @property
    def z_bottom(self) -> float:
        """Depth (metres) seen at the bottom image row."""
        return FV * self.camera_height / (1.0 - self.horizon)

    @property
    def z_near(self) -> float:
        """The nearest depth the ground is drawn from (a little below the bottom image row)."""
        return 0.85 * self.z_bottom

    @property
    def straight(self) -> bool:
        return self.curvature == 0 and self.curvature_rate == 0

    def offset(self, z):
        """Lateral offset (metres) of the road's reference line at depth(s) ``z`` (the curve)."""
        return z * (self.yaw + z * (0.5 * self.curvature + z * (self.curvature_rate / 6.0)))

    def project(self, x, y, z) -> np.ndarray:
        """World point(s) (x right, y up from the road, z forward; metres, broadcastable) → (..., 2) normalised (u, v)."""
        inv = 1.0 / np.asarray(z, np.float64)
        u = 0.5 + FU * np.asarray(x) * inv
        v = self.horizon + FV * (self.camera_height - np.asarray(y)) * inv
        out = np.empty(np.broadcast_shapes(u.shape, v.shape) + (2,))
        out[..., 0] = u
        out[..., 1] = v
        return out

    def road_point(self, s, y, z) -> np.ndarray:
        """A point ``s`` metres right of the road's reference line (follows the curve), projected."""
        z = np.asarray(z, np.float64)
        return self.project(np.asarray(s) + self.offset(z), y, z)

    def strip(self, s0, s1, z: np.ndarray) -> np.ndarray:
        """Ground band between lateral positions s0 < s1 over the depths ``z`` (..., K) ascending: (..., 2K, 2)."""
        left = self.road_point(s0, 0.0, z)
        right = self.road_point(s1, 0.0, z)
        return np.concatenate((left, right[..., ::-1, :]), axis=-2)

    def face(self, x: float, z: float, pts: np.ndarray) -> np.ndarray:
        """Polygon(s) in a vertical plane facing the camera: (..., 2) of (dx, y) metres at depth z, projected."""
        return self.project(x + pts[..., 0], pts[..., 1], z)

    def side(self, s_side: float, z: float, pts: np.ndarray) -> np.ndarray:
        """Polygon(s) on a vehicle's side: (..., 2) of (dz, y) metres from depth z, following the road's curve."""
        zz = z + pts[..., 0]
        return self.project(s_side + self.offset(zz), pts[..., 1], zz)


@dataclass(frozen=True)
class Road:
    """The road across: lanes, painted lines, shoulders and sidewalks, and its surroundings.

    Lateral positions ``s`` are metres right of the camera's path.
    """

    lanes: int
    lane_width: float
    #: The lane the camera drives in (0 = leftmost).
    ego_lane: int
    #: Lanes ``0 .. oncoming_lanes - 1`` carry oncoming traffic (two-way roads).
    oncoming_lanes: int
    #: (lanes + 1,) float64: the lane lines' lateral positions, left to right.
    lines: np.ndarray
    #: Lateral positions of the asphalt's left and right edges (beyond the shoulders).
    left: float
    right: float
    two_way: bool
    dashed: bool
    edge_lines: bool
    #: Painted line width (metres).
    line_width: float
    #: A town street (facades, street lamps) rather than a country road (trees, hedges).
    urban: bool
    #: Whether there is a sidewalk on the left and on the right, and how wide each would be.
    sidewalks: tuple[bool, bool]
    sidewalk_widths: tuple[float, float]

    @property
    def outer(self) -> tuple[float, float]:
        """Outer lateral limits of the paved area (road and sidewalks) on the left (-) and right (+)."""
        return (
            self.left - (self.sidewalk_widths[0] if self.sidewalks[0] else 0.0),
            self.right + (self.sidewalk_widths[1] if self.sidewalks[1] else 0.0),
        )


def sample_geometry(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[View, Road]:
    """The camera, the road's curve and its layout, drawn from ``rng`` as ``cfg`` allows."""
    horizon = rng.uniform(*cfg.horizon_range)
    camera_height = rng.uniform(*cfg.camera_height_range)
    n = int(rng.integers(cfg.lane_count_range[0], cfg.lane_count_range[1] + 1))
    lane_w = rng.uniform(*cfg.lane_width_range)
    two_way = n >= 2 and rng.random() < cfg.two_way_prob
    n_oncoming = n // 2 if two_way else 0
    ego = int(rng.integers(n_oncoming, n))
    lane_offset = rng.uniform(-cfg.max_lane_offset, cfg.max_lane_offset) * lane_w
    # Road frame: s = 0 is the camera's path; lane line i at s = left_line + i * lane_w.
    left_line = -(ego + 0.5) * lane_w - lane_offset
    lines = left_line + lane_w * np.arange(n + 1)
    left = lines[0] - rng.uniform(*cfg.shoulder_width_range)
    right = lines[-1] + rng.uniform(*cfg.shoulder_width_range)
    yaw = rng.uniform(-cfg.max_yaw, cfg.max_yaw)
    k = j = 0.0
    if rng.random() < cfg.curved_road_prob:
        lo, hi = cfg.curvature_range
        k = math.exp(rng.uniform(math.log(max(lo, 1e-6)), math.log(max(hi, 1e-6)))) * rng.choice((-1.0, 1.0))
        if rng.random() < cfg.s_curve_prob:
            j = -2.0 * k / rng.uniform(35.0, 90.0)  # curvature k + j z changes sign ahead
    view = View(horizon, camera_height, yaw, k, j)
    dashed = rng.random() < cfg.dashed_prob
    edge_lines = rng.random() < cfg.edge_line_prob
    # Painted line width in metres such that it spans the requested fraction of the bottom row.
    frac = rng.uniform(*cfg.lane_line_width_range)
    line_w = frac * (9.0 / 16.0) / FU * view.z_bottom  # (nominal 16:9 frame)
    urban = rng.random() < cfg.urban_prob
    sidewalks = (rng.random() < cfg.sidewalk_prob, rng.random() < cfg.sidewalk_prob)
    sidewalk_widths = (rng.uniform(*cfg.sidewalk_width_range), rng.uniform(*cfg.sidewalk_width_range))
    road = Road(n, lane_w, ego, n_oncoming, lines, left, right, two_way, dashed, edge_lines, line_w, urban, sidewalks, sidewalk_widths)
    return view, road
