"""Ground truth in metres: the camera of a rendered frame exactly, each thing's place and size on the ground,
and the road on the ground plane.

Ground frame (REP 103, like ``base_link`` on the ground): ``x`` forward along the optical axis, ``y`` left,
``z`` up; its origin is the point on the road right below the camera.  The camera looks along ``x`` with no
pitch or roll (the optical axis is parallel to the flat road), so the ground frame is the camera's optical
frame (``x`` right, ``y`` down, ``z`` forward) turned and raised by the camera's height:
``x_ground = z_optical``, ``y_ground = -x_optical``, ``z_ground = height_above_ground - y_optical``.  The
render frame of :mod:`.geometry` (``x`` right, ``y`` up, ``z`` forward) maps as ``x_ground = z``,
``y_ground = -x``, ``z_ground = y``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import yaml

from .geometry import FU, FV, Z_FAR, View


@dataclass(frozen=True)
class PinholeCamera:
    """The exact camera of a rendered frame: a distortion-free pinhole, its optical axis parallel to the
    ground (no pitch, no roll), ``height_above_ground`` metres above the road.

    Pixel coordinates follow OpenCV and ``sensor_msgs/CameraInfo``: integer coordinates are pixel centres,
    (0, 0) is the centre of the top-left pixel.  A point (X, Y, Z) of the optical frame (metres, Z > 0) is
    seen at ``(fx * X / Z + cx, fy * Y / Z + cy)``.  The horizon is the row ``cy``.
    """

    #: Image size (pixels).
    width: int
    height: int
    #: Focal lengths (pixels).
    fx: float
    fy: float
    #: Principal point (pixels, pixel-centre convention).
    cx: float
    cy: float
    #: Height of the optical centre above the road (metres).
    height_above_ground: float

    #: The distortion model of ``D`` (all coefficients zero).
    distortion_model = "plumb_bob"

    @classmethod
    def of_view(cls, view: View, width: int, height: int) -> PinholeCamera:
        """The camera that renders ``view`` at ``width`` x ``height``.

        The renderer maps a normalised coordinate ``u`` to the fillPoly coordinate ``u * width - 0.5``
        (:meth:`.Canvas.fixed_point`), for which an integer is a pixel centre: so ``cx = 0.5 * width - 0.5``
        and ``cy = horizon * height - 0.5``.  fillPoly fills every pixel whose centre lies within half a pixel
        of a polygon, so a rendered mask reaches half a pixel beyond its exact outline on every side.
        """
        return cls(
            width=width, height=height, fx=FU * width, fy=FV * height,
            cx=0.5 * width - 0.5, cy=view.horizon * height - 0.5, height_above_ground=float(view.camera_height),
        )

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the CameraInfo field's name
        """(3, 3) float64 intrinsic matrix (pixels)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def D(self) -> np.ndarray:  # noqa: N802 - the CameraInfo field's name
        """(5,) float64 plumb_bob coefficients k1 k2 t1 t2 k3: all zero."""
        return np.zeros(5)

    @property
    def R(self) -> np.ndarray:  # noqa: N802 - the CameraInfo field's name
        """(3, 3) float64 rectification: the identity (a monocular camera)."""
        return np.eye(3)

    @property
    def P(self) -> np.ndarray:  # noqa: N802 - the CameraInfo field's name
        """(3, 4) float64 projection ``[K | 0]`` (pixels)."""
        return np.hstack((self.K, np.zeros((3, 1))))

    @property
    def ground_from_optical(self) -> np.ndarray:
        """(4, 4) float64 homogeneous transform of points from the optical frame to the ground frame (module
        docstring): the camera's mount, ``height_above_ground`` above the origin, no pitch, roll or yaw."""
        out = np.zeros((4, 4))
        out[0, 2] = 1.0  # x_ground = z_optical
        out[1, 0] = -1.0  # y_ground = -x_optical
        out[2, 1] = -1.0  # z_ground = -y_optical + height
        out[2, 3] = self.height_above_ground
        out[3, 3] = 1.0
        return out

    def camera_calibration(self, camera_name: str = "synthetic") -> dict:
        """The camera as the ``camera_calibration`` / ``camera_info_manager`` YAML holds it: image_width,
        image_height, camera_name, camera_matrix, distortion_model, distortion_coefficients,
        rectification_matrix and projection_matrix (each matrix ``{rows, cols, data}``, row-major floats)."""

        def matrix(a: np.ndarray) -> dict:
            return {"rows": a.shape[0], "cols": a.shape[1], "data": [float(v) for v in a.ravel()]}

        return {
            "image_width": self.width,
            "image_height": self.height,
            "camera_name": camera_name,
            "camera_matrix": matrix(self.K),
            "distortion_model": self.distortion_model,
            "distortion_coefficients": matrix(self.D[None]),
            "rectification_matrix": matrix(self.R),
            "projection_matrix": matrix(self.P),
        }

    def camera_calibration_yaml(self, camera_name: str = "synthetic") -> str:
        """:meth:`camera_calibration` as YAML text (the file ``camera_calibration`` writes)."""
        return yaml.safe_dump(self.camera_calibration(camera_name), sort_keys=False)


@dataclass(frozen=True)
class ThingOnGround:
    """A thing (vehicle or pedestrian) on the ground: its class, where it stands and its size.

    ``x``, ``y`` (metres, ground frame: forward, left) locate the middle of the bottom edge of the thing's
    face nearest the camera, on the road: the rear of a vehicle driving ahead, the front of an oncoming one
    (faces are drawn square to the optical axis), the flat figure of a pedestrian.  It is the point the
    lowest pixels of the thing's mask show, where nothing nearer hides them: image row
    ``cy + fy * height_above_ground / x`` of :class:`PinholeCamera`.
    """

    #: Cityscapes label id (24 person, 26 car, 27 truck).
    class_id: int
    #: Forward distance along the optical axis (metres).
    x: float
    #: Lateral offset, positive to the left (metres).
    y: float
    #: Across the optical axis (metres): a vehicle's body; a pedestrian's arms at the shoulders (hands,
    #: swinging arms and a bag may reach a little beyond).
    width: float
    #: Along the road from the near face away from the camera (metres; a vehicle's body follows the road's
    #: curve).  0 for pedestrians, drawn as a flat figure.
    length: float
    #: Top of the thing above the road (metres): a car's roof, a truck's box, a pedestrian's hair.
    height: float

    @property
    def range(self) -> float:
        """Distance on the ground from the camera's foot to :attr:`x`, :attr:`y` (metres)."""
        return math.hypot(self.x, self.y)


@dataclass(frozen=True)
class RoadOnGround:
    """The asphalt of a scene on the ground plane: lanes and shoulders between two edges that follow the road's
    curve, everywhere ahead of the camera up to the farthest depth drawn (``Z_FAR`` metres).  The image's road
    label is this road seen by :class:`PinholeCamera` where nothing above the ground hides it, up to its
    rasterisation at the edges (a pixel, a few on edges that cross many columns per row: fillPoly rounds the
    rows of polygon vertices)."""

    #: The road's curve (the render view; only its curve is used).
    view: View
    #: The asphalt's edges, metres right of the road's reference line (the camera's path): left < right.
    left: float
    right: float

    def mask(self, cell_size: float, x_range: tuple[float, float], y_range: tuple[float, float]) -> np.ndarray:
        """The road on a metric grid in the ground frame, laid out as ``nav_msgs/OccupancyGrid`` data.

        Args:
            cell_size: edge of a square cell (metres), > 0.
            x_range: (x_min, x_max) forward extent (metres), x_min < x_max.
            y_range: (y_min, y_max) lateral extent, positive left (metres), y_min < y_max.

        Returns:
            (ny, nx) bool, ``nx = ceil((x_max - x_min) / cell_size)`` (likewise ``ny``): cell [i, j] has its
            centre at ``x = x_min + (j + 0.5) * cell_size``, ``y = y_min + (i + 0.5) * cell_size`` and is True
            where that centre is on the road.  Cells at or behind the camera (x <= 0) or beyond ``Z_FAR`` are
            False: the scene defines its road only ahead.

        Raises:
            ValueError: a cell size that is not positive or a range that is not ascending.
        """
        if not cell_size > 0:
            raise ValueError(f"cell_size must be positive, got {cell_size}")
        centres = []
        for lo, hi in (y_range, x_range):
            if not lo < hi:
                raise ValueError(f"a range must be (low, high) with low < high, got {(lo, hi)}")
            n = math.ceil((hi - lo) / cell_size - 1e-9)  # an extent that is a whole number of cells, up to rounding
            centres.append(lo + (np.arange(n) + 0.5) * cell_size)
        y, x = centres
        ahead = (x > 0) & (x <= Z_FAR)
        # Metres right of the reference line: the render frame's x (= -y) less the curve's offset there.
        s = -y[:, None] - self.view.offset(np.where(ahead, x, 0.0))[None, :]
        return ahead[None, :] & (s >= self.left) & (s <= self.right)
