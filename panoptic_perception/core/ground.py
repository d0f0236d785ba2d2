"""Ground-plane geometry: a camera's calibration and mount, and its image outputs projected onto the ground.

Frames follow ROS (REP 103 / 105): the *optical* frame of a camera has z forward, x right, y down; the
*target* frame (``base_link`` by default) has x forward, y left, z up. A camera is described by its
:class:`CameraCalibration` (the fields of ``sensor_msgs/CameraInfo``: K, D and the distortion model, image
size, binning and ROI) and its :class:`Mount` (the transform from its optical frame to the target frame).

Flat-ground assumption: the ground is the plane ``z = ground_height`` of the target frame. A pixel's ray
meets it at one point; slopes, ramps and a pitching vehicle bias the range (a 1 degree slope moves a point
at 40 m by several metres), and nothing above the ground (a car's roof) has a ground position.

:class:`GroundProjection` is a camera's lookup table onto a :class:`GroundGrid`: the image pixel that sees
each cell (built once per change of calibration, mount or grid), after which a frame's mask is projected
with one ``cv2.remap``. Units: metres, radians, pixels (integer pixel coordinates are pixel centres, as in
OpenCV and CameraInfo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import ConfigurationError, PanopticPerceptionError

DISTORTION_MODELS = {"plumb_bob": (5,), "rational_polynomial": (8,), "equidistant": (4,)}
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
#: A ground cell is seen only if the pixel it projects to, undistorted, looks within this many pixels (as an
#: angle at the image centre) along the cell's own ray: a distortion that folds back beyond the image does not.
FOLD_BACK_TOLERANCE_PX = 0.1
#: The optical frame in a camera's body frame (x forward, y left, z up): optical z = body x, x = -y, y = -z.
OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class CalibrationError(PanopticPerceptionError, ValueError):
    """A calibration or mount that cannot place pixels on the ground (zero or NaN K, an unknown distortion
    model, a size that differs from the image, no transform): that camera's ground outputs stop."""


@dataclass(frozen=True)
class CameraCalibration:
    """A camera's intrinsics, as ``sensor_msgs/CameraInfo`` gives them.

    ``K`` (3, 3) and ``D`` refer to the full-resolution sensor image of ``width`` x ``height`` pixels; the
    published image is its region of interest ``roi`` (x_offset, y_offset, width, height; all zero: the
    whole image) binned by ``binning_x`` / ``binning_y`` (0 or 1: none). ``distortion_model``: plumb_bob
    (k1 k2 p1 p2 k3), rational_polynomial (k1 k2 p1 p2 k3 k4 k5 k6) or equidistant (k1 k2 k3 k4, fisheye).
    An empty ``D`` means no distortion. Build with :meth:`checked` to have it validated.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = "plumb_bob"
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)

    @classmethod
    def checked(cls, width: int, height: int, K, D=(), distortion_model: str = "plumb_bob", binning_x: int = 0,
                binning_y: int = 0, roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> "CameraCalibration":
        """The calibration, validated. Raises CalibrationError for a non-positive size, a K that is not a
        finite (3, 3) matrix with positive focal lengths, an unknown distortion model or a D of the wrong
        length, or a ROI outside the image."""
        K = np.asarray(K, np.float64).reshape(-1)
        if K.size != 9 or not np.isfinite(K).all():
            raise CalibrationError(f"K must be 9 finite numbers, got {K.tolist()}")
        K = K.reshape(3, 3)
        if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1:
            raise CalibrationError(f"K needs positive focal lengths and K[2][2] = 1, got {K.tolist()}")
        if width <= 0 or height <= 0:
            raise CalibrationError(f"the image size must be positive, got {width}x{height}")
        if distortion_model not in DISTORTION_MODELS:
            raise CalibrationError(f"unknown distortion model {distortion_model!r} "
                                   f"(known: {', '.join(DISTORTION_MODELS)})")
        D = np.asarray(D, np.float64).reshape(-1)
        if D.size and (D.size not in DISTORTION_MODELS[distortion_model] or not np.isfinite(D).all()):
            raise CalibrationError(f"{distortion_model} takes {DISTORTION_MODELS[distortion_model][0]} finite "
                                   f"coefficients, got {D.tolist()}")
        x, y, w, h = (int(v) for v in roi)
        if (w or h) and (x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height):
            raise CalibrationError(f"the ROI {roi} does not lie in the {width}x{height} image")
        return cls(int(width), int(height), K, D if D.size else np.zeros(DISTORTION_MODELS[distortion_model][0]),
                   distortion_model, int(binning_x), int(binning_y), (x, y, w, h))

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the published image: the ROI (or the whole image), binned."""
        _, _, w, h = self.roi
        w, h = (w, h) if w and h else (self.width, self.height)
        return w // max(self.binning_x, 1), h // max(self.binning_y, 1)

    def check_image(self, width: int, height: int) -> None:
        """Raises CalibrationError when an image of ``width`` x ``height`` is not what this calibration
        describes."""
        if (width, height) != self.image_size:
            raise CalibrationError(f"the calibration describes {self.image_size[0]}x{self.image_size[1]} images, "
                                   f"the camera sends {width}x{height}")

    def to_sensor(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) published-image pixels -> full-resolution sensor pixels (undoing binning and ROI)."""
        bx, by = max(self.binning_x, 1), max(self.binning_y, 1)
        x, y = self.roi[:2]
        return np.stack([(pixels[:, 0] + 0.5) * bx - 0.5 + x, (pixels[:, 1] + 0.5) * by - 0.5 + y], 1)

    def from_sensor(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) full-resolution sensor pixels -> published-image pixels."""
        bx, by = max(self.binning_x, 1), max(self.binning_y, 1)
        x, y = self.roi[:2]
        return np.stack([(pixels[:, 0] - x + 0.5) / bx - 0.5, (pixels[:, 1] - y + 0.5) / by - 0.5], 1)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points in the optical frame (z > 0) -> (N, 2) published-image pixels, distortion applied."""
        points = np.ascontiguousarray(points, np.float64).reshape(-1, 1, 3)
        zero = np.zeros(3)
        if self.distortion_model == "equidistant":
            pixels, _ = cv2.fisheye.projectPoints(points, zero, zero, self.K, self.D)
        else:
            pixels, _ = cv2.projectPoints(points, zero, zero, self.K, self.D)
        return self.from_sensor(pixels.reshape(-1, 2))

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) published-image pixels -> (N, 3) ray directions in the optical frame (z = 1), distortion
        removed."""
        sensor = np.ascontiguousarray(self.to_sensor(np.asarray(pixels, np.float64)), np.float64).reshape(-1, 1, 2)
        if self.distortion_model == "equidistant":
            normalised = cv2.fisheye.undistortPoints(sensor, self.K, self.D)
        else:  # iterated to convergence: OpenCV's default 5 iterations leave millimetres at 7 m near the edges
            normalised = cv2.undistortPoints(sensor, self.K, self.D, criteria=UNDISTORT_CRITERIA)
        normalised = normalised.reshape(-1, 2)
        return np.concatenate([normalised, np.ones((len(normalised), 1))], 1)


@dataclass(frozen=True)
class Mount:
    """The transform from a camera's optical frame to the target frame: ``p_target = rotation @ p_optical +
    translation`` (metres)."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    @classmethod
    def from_xyz_rpy(cls, x: float, y: float, z: float, roll: float = 0.0, pitch: float = 0.0,
                     yaw: float = 0.0) -> "Mount":
        """A camera body at (x, y, z) in the target frame, turned by roll, pitch, yaw (radians, fixed axes x,
        y, z: ``R = Rz(yaw) Ry(pitch) Rx(roll)``; pitch > 0 looks down), its optical frame as ROS defines it.
        Raises CalibrationError for a value that is not finite."""
        values = (x, y, z, roll, pitch, yaw)
        if not all(math.isfinite(v) for v in values):
            raise CalibrationError(f"the mount must be finite numbers, got {values}")
        cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
        body = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                         [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                         [-sp, cp * sr, cp * cr]])
        return cls(body @ OPTICAL_IN_BODY, np.array([x, y, z], np.float64))

    @classmethod
    def from_quaternion(cls, translation, quaternion) -> "Mount":
        """From a transform as TF gives it (``translation`` x y z, ``quaternion`` x y z w, not necessarily
        normalised) whose child is the optical frame. Raises CalibrationError for a zero or non-finite one."""
        q = np.asarray(quaternion, np.float64)
        t = np.asarray(translation, np.float64)
        norm = np.linalg.norm(q)
        if not (np.isfinite(q).all() and np.isfinite(t).all()) or norm < 1e-9:
            raise CalibrationError(f"the transform must be finite with a non-zero rotation, got {t.tolist()} {q.tolist()}")
        x, y, z, w = q / norm
        rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                             [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                             [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        return cls(rotation, t)

    def then(self, outer: "Mount") -> "Mount":
        """This transform followed by ``outer`` (e.g. camera -> body, then body -> base_link)."""
        return Mount(outer.rotation @ self.rotation, outer.rotation @ self.translation + outer.translation)


class StaticTransforms:
    """The static transforms of a robot (what ``/tf_static`` carries: camera mounts do not move), chained:
    :meth:`lookup` gives the transform from one frame to another through the tree, whichever way its edges
    were published. For nodes without tf2; a frame published again (under any parent) replaces its old
    transform."""

    def __init__(self) -> None:
        self._edges: dict[str, tuple[str, Mount]] = {}  # child -> (its parent, child in parent)

    def add(self, parent: str, child: str, translation, quaternion) -> None:
        """``child``'s pose in ``parent`` (a TransformStamped's header.frame_id, child_frame_id, translation and
        rotation x y z w); as in tf2 a frame has one parent, so this replaces ``child``'s old transform whatever
        its parent was. Raises CalibrationError for a degenerate transform."""
        self._edges[child.lstrip("/")] = (parent.lstrip("/"), Mount.from_quaternion(translation, quaternion))

    def lookup(self, target: str, source: str) -> Mount:
        """The transform taking points of ``source`` into ``target``. Raises CalibrationError when the two
        frames are not connected (yet)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        neighbours: dict[str, list[tuple[str, Mount]]] = {}
        for child, (parent, mount) in self._edges.items():
            inverse = Mount(mount.rotation.T, -mount.rotation.T @ mount.translation)
            neighbours.setdefault(child, []).append((parent, mount))  # child points into the parent
            neighbours.setdefault(parent, []).append((child, inverse))
        paths = {source: Mount(np.eye(3), np.zeros(3))}
        frontier = [source]
        while frontier and target not in paths:
            frame = frontier.pop(0)
            for neighbour, step in neighbours.get(frame, []):
                if neighbour not in paths:
                    paths[neighbour] = paths[frame].then(step)
                    frontier.append(neighbour)
        if target not in paths:
            raise CalibrationError(f"no transform from {source} to {target} (known frames: "
                                   f"{', '.join(sorted(neighbours)) or 'none'})")
        return paths[target]


#: The most cells a :class:`GroundGrid` may have: the default grid (0.1 m, 80 x 40 m) has 320 000; 0.01 m cells on
#: it would be 32 million, ~16 GB to build each camera's lookup table (``BUILD_BYTES_PER_CELL``); 4 million ~2 GB.
MAX_GROUND_CELLS = 4_000_000
#: Peak bytes of memory per cell while a :class:`GroundProjection` is built (float64 points, optical coordinates,
#: pixels, distances and masks of every cell; measured at 1.3 and 5 million cells).
BUILD_BYTES_PER_CELL = 500


@dataclass(frozen=True)
class GroundGrid:
    """A metric grid on the ground plane of the target frame: cells of ``resolution`` metres from
    ``x_min`` to ``x_max`` (forward) and ``y_min`` to ``y_max`` (left), at height ``ground_height``. Row r,
    column c is the cell whose centre is (x_min + (c + 0.5) resolution, y_min + (r + 0.5) resolution), as
    ``nav_msgs/OccupancyGrid`` lays out its data (row-major, origin at the (x_min, y_min) corner). Raises
    ConfigurationError for a non-positive resolution or extent, or more than ``MAX_GROUND_CELLS`` cells."""

    resolution: float = 0.1
    x_min: float = -20.0
    x_max: float = 60.0
    y_min: float = -20.0
    y_max: float = 20.0
    ground_height: float = 0.0

    def __post_init__(self) -> None:
        if not self.resolution > 0 or not (self.x_max > self.x_min and self.y_max > self.y_min):
            raise ConfigurationError(f"a grid needs a positive resolution and extents, got {self}")
        rows, columns = self.shape
        if rows * columns > MAX_GROUND_CELLS:
            raise ConfigurationError(
                f"a ground grid of {rows}x{columns} cells of {self.resolution} m is more than {MAX_GROUND_CELLS} "
                f"cells (each camera's lookup table takes ~{BUILD_BYTES_PER_CELL} bytes a cell to build): "
                "use a coarser ground_resolution or smaller extents")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) = (cells along y, cells along x)."""
        return (round((self.y_max - self.y_min) / self.resolution), round((self.x_max - self.x_min) / self.resolution))

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell centres (x, y), each (rows, columns) float64, metres."""
        rows, columns = self.shape
        x = self.x_min + (np.arange(columns) + 0.5) * self.resolution
        y = self.y_min + (np.arange(rows) + 0.5) * self.resolution
        return np.meshgrid(x, y)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, inside) of points on the ground (metres), int64 and bool arrays."""
        column = np.floor((np.asarray(x) - self.x_min) / self.resolution).astype(np.int64)
        row = np.floor((np.asarray(y) - self.y_min) / self.resolution).astype(np.int64)
        rows, columns = self.shape
        return row, column, (row >= 0) & (row < rows) & (column >= 0) & (column < columns)


#: Values of ``nav_msgs/OccupancyGrid``.
FREE, OCCUPIED, UNKNOWN = 0, 100, -1


class GroundProjection:
    """A camera's lookup table from the cells of a :class:`GroundGrid` to the pixels that see them.

    A cell is *seen* when its centre lies in front of the camera, projects into the image, the pixel it
    projects to looks back along the cell's own ray (within ``FOLD_BACK_TOLERANCE_PX``) and it lies within
    ``max_range`` metres of the camera (horizontal distance); building the table costs one projection of
    every cell and one undistortion of every cell in the image (~0.15-0.3 s at 1280x720 on the default grid),
    a frame then costs one ``cv2.remap``. Raises CalibrationError for a camera at or below the ground plane.
    """

    def __init__(self, calibration: CameraCalibration, mount: Mount, grid: GroundGrid, max_range: float = 60.0) -> None:
        camera_height = mount.translation[2] - grid.ground_height
        if not camera_height > 0:  # every cell would lie on or above its horizon
            raise CalibrationError(f"the camera is {camera_height:.3g} m above the ground plane: it must be above it "
                                   "(a mount or transform without the camera's height, or ground_height above it?)")
        self.calibration, self.mount, self.grid, self.max_range = calibration, mount, grid, max_range
        x, y = grid.centres()
        points = np.stack([x, y, np.full_like(x, grid.ground_height)], -1).reshape(-1, 3)
        optical = (points - mount.translation) @ mount.rotation  # R^T (p - t), row vectors
        width, height = calibration.image_size
        in_front = optical[:, 2] > 1e-3
        pixels = np.full((len(points), 2), -1.0)
        if in_front.any():
            pixels[in_front] = calibration.project(optical[in_front])
        horizontal = np.hypot(points[:, 0] - mount.translation[0], points[:, 1] - mount.translation[1])
        # Round to the nearest pixel once here, so that a frame's remap is exact and nearest-neighbour; to
        # micropixels first, so that a cell on a pixel border goes the same way however the same geometry
        # is written (a cropped camera's shifted principal point changes the last bits). Seen: the rounded
        # pixel is in the image (a pixel 63.4999996 rounds to 64, outside a 64 pixel wide image).
        rounded = np.rint(np.round(pixels, 6))
        seen = (in_front & (rounded[:, 0] >= 0) & (rounded[:, 0] <= width - 1) & (rounded[:, 1] >= 0)
                & (rounded[:, 1] <= height - 1) & (horizontal <= max_range))
        # Beyond the image a distortion polynomial can fold back (r (1 + k1 r^2) turns down for k1 < 0), so that
        # cells far outside the field of view project into the image too: keep the cells whose pixel, undistorted,
        # gives their own ray back (the angle between the two under a fraction of a pixel at the centre).
        if seen.any():
            own, back = optical[seen], calibration.rays(pixels[seen])
            angle = np.arctan2(np.linalg.norm(np.cross(own, back), axis=1), np.einsum("ij,ij->i", own, back))
            seen[seen] = angle <= FOLD_BACK_TOLERANCE_PX / calibration.K[:2, :2].diagonal().max()
        rounded = np.where(seen[:, None], rounded, -1).astype(np.float32)
        self.map_x = rounded[:, 0].reshape(grid.shape)
        self.map_y = rounded[:, 1].reshape(grid.shape)
        self.seen = seen.reshape(grid.shape)

    def sample(self, image: np.ndarray, outside: int = 0) -> np.ndarray:
        """``image`` (H, W) of the camera (e.g. a mask or a class map, uint8) read at every cell: (rows,
        columns) of its dtype, ``outside`` where the cell is not seen. Raises CalibrationError when the image
        is not of the calibrated size."""
        self.calibration.check_image(image.shape[1], image.shape[0])
        return cv2.remap(image, self.map_x, self.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=outside)

    def ground_points(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) published-image pixels -> ((N, 3) points on the ground in the target frame, (N,) bool: the
        ray meets the ground in front of the camera, below the horizon)."""
        rays = self.calibration.rays(np.asarray(pixels, np.float64).reshape(-1, 2)) @ self.mount.rotation.T
        height = self.grid.ground_height - self.mount.translation[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = height / rays[:, 2]
        hits = np.isfinite(scale) & (scale > 0)
        points = self.mount.translation + rays * np.where(hits, scale, 0.0)[:, None]
        points[hits, 2] = self.grid.ground_height  # on the plane exactly, not within a rounding (2e-16)
        return points, hits


def occupancy(drivable: np.ndarray, seen: np.ndarray, blocked: np.ndarray | None = None) -> np.ndarray:
    """One camera's grid: (rows, columns) int8 of FREE (seen and drivable), OCCUPIED (seen, not drivable)
    and UNKNOWN (not seen, or ``blocked``: the pixel shows an object standing on the ground, so the ground
    cell there is hidden behind it)."""
    grid = np.where(drivable.astype(bool), FREE, OCCUPIED).astype(np.int8)
    hidden = ~seen if blocked is None else ~seen | blocked
    grid[hidden] = UNKNOWN
    return grid


def fuse_occupancy(grids: list[np.ndarray]) -> np.ndarray:
    """Several cameras' grids (each from :func:`occupancy`) as one: a cell is UNKNOWN when no camera knows
    it, OCCUPIED when any camera that knows it sees it not drivable (the cautious choice: a planner must not
    drive where one camera sees an obstacle or a kerb), else FREE."""
    if not grids:
        raise ValueError("no grids to fuse")
    stack = np.stack(grids)
    known = stack != UNKNOWN
    fused = np.full(stack.shape[1:], UNKNOWN, np.int8)
    fused[known.any(0)] = FREE
    fused[(stack == OCCUPIED).any(0)] = OCCUPIED
    return fused


def lane_points(projection: GroundProjection, lane_mask: np.ndarray) -> np.ndarray:
    """The lane-line pixels of a (H, W) 0/1 mask on the ground, thinned to the grid: (N, 3) float32 centres
    (target frame, metres) of the seen cells whose pixel is a lane line, one point per cell."""
    cells = projection.sample(lane_mask.astype(np.uint8)).astype(bool) & projection.seen
    x, y = projection.grid.centres()
    return np.stack([x[cells], y[cells], np.full(int(cells.sum()), projection.grid.ground_height)], 1).astype(np.float32)


@dataclass(frozen=True)
class GroundObjects:
    """Objects placed on the ground, N of them (arrays indexed alike):

    ``positions`` (N, 3) float64: the ground contact in the target frame (metres); ``bearings`` (N,) float64:
    the yaw of the line of sight from the camera to the contact in the target frame (radians, from x towards
    y), the orientation of the face the camera sees: the width lies across it; ``sizes`` (N, 2): width and
    height in metres from the box at that depth; ``covariances`` (N, 3, 3): of the position in the target frame,
    from a ``pixel_sigma`` error of the contact pixel (along the line of sight, growing with the square of the
    range, and across it, growing with the range);
    ``truncated`` (N,) bool: the box touches the image's bottom edge, so its contact is hidden and the
    position is the nearest visible ground (the object is at most that far); ``kept`` (M,) int64: the
    indices of the input boxes these are (boxes whose contact lies at or above the horizon, or beyond
    ``max_range``, are dropped: their ray does not meet the ground within range).
    """

    positions: np.ndarray
    bearings: np.ndarray
    sizes: np.ndarray
    covariances: np.ndarray
    truncated: np.ndarray
    kept: np.ndarray


def contact_pixels(boxes: np.ndarray, masks: list[np.ndarray | None] | None = None) -> np.ndarray:
    """The ground contact pixel of each object: (N, 2) float64 (x, y). Without a mask the bottom centre of
    its (N, 4) xyxy box; with one (a (H, W) bool instance mask) the centre of its lowest row of pixels (a
    car seen from the side touches the ground at its wheels, not at the box's corner)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    pixels = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], 1)
    for i, mask in enumerate(masks or []):
        if mask is not None and mask.any():
            rows = np.flatnonzero(mask.any(1))
            lowest = rows[-1]
            pixels[i] = (np.flatnonzero(mask[lowest]).mean(), lowest)
    return pixels


def ground_objects(projection: GroundProjection, boxes: np.ndarray, contacts: np.ndarray | None = None,
                   pixel_sigma: float = 1.0) -> GroundObjects:
    """Place (N, 4) xyxy boxes (published-image pixels) on the ground (:class:`GroundObjects`); ``contacts``
    (N, 2): their contact pixels (default: :func:`contact_pixels` of the boxes)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    contacts = contact_pixels(boxes) if contacts is None else np.asarray(contacts, np.float64).reshape(-1, 2)
    calibration, mount = projection.calibration, projection.mount
    points, hits = projection.ground_points(contacts)
    horizontal = np.hypot(points[:, 0] - mount.translation[0], points[:, 1] - mount.translation[1])
    kept = np.flatnonzero(hits & (horizontal <= projection.max_range))
    points, horizontal, boxes = points[kept], horizontal[kept], boxes[kept]
    depth = ((points - mount.translation) @ mount.rotation)[:, 2]  # along the optical axis
    fx, fy = calibration.K[0, 0] / max(calibration.binning_x, 1), calibration.K[1, 1] / max(calibration.binning_y, 1)
    sizes = np.stack([(boxes[:, 2] - boxes[:, 0]) * depth / fx, (boxes[:, 3] - boxes[:, 1]) * depth / fy], 1)
    camera_height = mount.translation[2] - projection.grid.ground_height  # > 0: GroundProjection refuses others
    along = horizontal ** 2 * pixel_sigma / (fy * camera_height)  # d(range) / d(row) of a flat-ground ray
    across = horizontal * pixel_sigma / fx
    bearing = np.arctan2(points[:, 1] - mount.translation[1], points[:, 0] - mount.translation[0])
    c, s = np.cos(bearing), np.sin(bearing)  # along and across the line of sight -> target frame x and y
    covariances = np.zeros((len(kept), 3, 3))
    covariances[:, 0, 0] = (c * along) ** 2 + (s * across) ** 2
    covariances[:, 1, 1] = (s * along) ** 2 + (c * across) ** 2
    covariances[:, 0, 1] = covariances[:, 1, 0] = c * s * (along ** 2 - across ** 2)
    covariances[:, 2, 2] = 1e-4  # on the ground plane by construction
    truncated = boxes[:, 3] >= calibration.image_size[1] - 1.5
    return GroundObjects(points, bearing, sizes, covariances, truncated, kept)


def result_objects(projection: GroundProjection, result) -> tuple[GroundObjects, np.ndarray, np.ndarray] | None:
    """The things of a :class:`~panoptic_perception.core.types.PerceptionResult` on the ground: (the kept
    :class:`GroundObjects`, their class ids (M,) int64, their scores (M,) float64). A panoptic result places
    each thing segment at the lowest pixels of its mask (:func:`contact_pixels`), class its category; else
    each detection at its box's bottom centre. None for a result with neither."""
    if result.panoptic is not None and result.segments is not None:
        things = [segment for segment in result.segments if segment.is_thing]
        boxes = np.array([(x, y, x + w, y + h) for x, y, w, h in (s.bbox for s in things)], np.float64).reshape(-1, 4)
        contacts = contact_pixels(boxes, [result.panoptic == segment.id for segment in things])
        class_ids = np.array([segment.category_id for segment in things], np.int64)
        scores = np.array([segment.score for segment in things], np.float64)
    elif result.detections is not None:
        boxes = np.asarray(result.detections.boxes, np.float64).reshape(-1, 4)
        contacts = None
        class_ids = np.asarray(result.detections.class_ids, np.int64).reshape(-1)
        scores = np.asarray(result.detections.scores, np.float64).reshape(-1)
    else:
        return None
    objects = ground_objects(projection, boxes, contacts)
    return objects, class_ids[objects.kept], scores[objects.kept]


def result_occupancy(projection: GroundProjection, result, label_map) -> np.ndarray | None:
    """One camera's grid (:func:`occupancy`) from a :class:`~panoptic_perception.core.types.PerceptionResult`
    of its frame: drivable where the drivable mask (else the semantic map's road class) says so; a cell whose
    pixel shows a thing (a panoptic instance, a thing class of the semantic map, else inside a detection box)
    is hidden behind it (unknown). None for a result with neither a drivable mask nor a semantic map with a
    road class. Raises CalibrationError when the frame is not of the calibrated size."""
    drivable = result.drivable_mask
    if drivable is None and result.semantic is not None and "road" in {c.name for c in label_map.classes}:
        drivable = (result.semantic == label_map.id_of("road")).astype(np.uint8)
    if drivable is None:
        return None
    if result.panoptic is not None:
        things = result.panoptic % 1000 > 0
    elif result.semantic is not None:
        things = np.isin(result.semantic, [c.id for c in label_map.classes if c.is_thing])
    else:
        things = np.zeros(drivable.shape, bool)
        for x1, y1, x2, y2 in np.asarray(result.detections.boxes if result.detections is not None else [], int).reshape(-1, 4):
            things[max(y1, 0): y2 + 1, max(x1, 0): x2 + 1] = True
    blocked = projection.sample(things.astype(np.uint8)).astype(bool)
    return occupancy(projection.sample(drivable.astype(np.uint8)), projection.seen, blocked)


def read_camera_calibration(path) -> CameraCalibration:
    """The calibration in a ``camera_calibration`` YAML file (what ROS' camera calibrator and camera_info_manager
    write: ``image_width``, ``image_height``, ``camera_matrix``, ``distortion_model``,
    ``distortion_coefficients``, each matrix a ``{rows, cols, data}`` map). Raises CalibrationError naming what
    is missing or wrong, OSError for an unreadable file."""
    import yaml

    with open(path) as file:
        document = yaml.safe_load(file)
    try:
        return CameraCalibration.checked(
            int(document["image_width"]), int(document["image_height"]), document["camera_matrix"]["data"],
            document.get("distortion_coefficients", {}).get("data", ()), document.get("distortion_model", "plumb_bob"))
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, CalibrationError):
            raise
        raise CalibrationError(f"{path} is not a camera_calibration file: {type(error).__name__}: {error}") from None


def parse_mount(text: str) -> Mount:
    """``X,Y,Z,ROLL,PITCH,YAW`` (metres, radians; see :meth:`Mount.from_xyz_rpy`) → the mount. Raises
    CalibrationError for anything else."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 6:
        raise CalibrationError(f"a mount is X,Y,Z,ROLL,PITCH,YAW (metres, radians), got {text!r}")
    return Mount.from_xyz_rpy(*values)


def grid_image(values: np.ndarray) -> np.ndarray:
    """A grid of occupancy values (rows along y, columns along x) as a picture seen from above, forward up and
    left on the left: (columns, rows) uint8, free 255, occupied 0, unknown 128."""
    image = np.full(values.shape, 128, np.uint8)
    image[values == FREE] = 255
    image[values == OCCUPIED] = 0
    return image.T[::-1, ::-1]


def projection_timings(sizes: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080)), grid: GroundGrid = GroundGrid(),
              runs: int = 20) -> dict[str, float]:
    """Milliseconds of one camera's ground projection on ``grid`` at each frame size (a level camera 1.5 m
    up, 90 degrees wide, plumb_bob distortion): ``build_<W>x<H>_ms``, building the lookup table once, and
    ``frame_<W>x<H>_ms``, the median of ``runs`` frames (a drivable mask sampled and turned into occupancy
    values), after one warm-up."""
    import time

    results = {}
    for width, height in sizes:
        focal = width / 2
        calibration = CameraCalibration.checked(width, height, [[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2],
                                                                [0, 0, 1]], [-0.2, 0.05, 0.0, 0.0, 0.0])
        start = time.perf_counter()
        projection = GroundProjection(calibration, Mount.from_xyz_rpy(1.5, 0.0, 1.5), grid)
        results[f"build_{width}x{height}_ms"] = (time.perf_counter() - start) * 1e3
        mask = (np.random.default_rng(0).random((height, width)) > 0.5).astype(np.uint8)
        occupancy(projection.sample(mask), projection.seen)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            occupancy(projection.sample(mask), projection.seen)
            times.append((time.perf_counter() - start) * 1e3)
        results[f"frame_{width}x{height}_ms"] = float(np.median(times))
    return results


if __name__ == "__main__":  # python -m panoptic_perception.core.ground: the timings above, as JSON
    import json

    print(json.dumps({"grid": GroundGrid().shape, **projection_timings()}, indent=2))
