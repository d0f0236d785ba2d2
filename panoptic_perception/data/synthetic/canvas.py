"""The canvas a frame is drawn on, and the :class:`Frame` every scene layer draws with.

Each polygon fills the image and the label map at once (OpenCV ``fillPoly``, no anti-aliasing), so the
labels are exact.  Image-only masks (lane paint, shadows, light pools) collect effects that change how
pixels look, never what they show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from .geometry import Road, View
from .look import Look
from .truth import ThingOnGround
from .types import SyntheticConfig

SHIFT = 4  # fillPoly fixed-point bits: polygons keep 1/16 pixel precision at every resolution
_ONE = float(1 << SHIFT)
#: Segment-index map: a value below FIRST_THING is the stuff class id itself, FIRST_THING + i is thing i.
FIRST_THING = 64
MAX_THINGS = 256 - FIRST_THING

#: An object placed in the scene: its depth (metres, to draw far to near) and the call that draws it.
Placement = tuple[float, Callable[[], None]]


class Canvas:
    """The image, the segment-index map and the image-only masks of one ``width`` x ``height`` frame."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        #: (H, W, 3) uint8 BGR.
        self.image = np.empty((height, width, 3), np.uint8)
        #: (H, W) uint8: a stuff class id, or FIRST_THING + the index of a thing in ``thing_classes``.
        self.segment_index = np.empty((height, width), np.uint8)
        #: (H, W) uint8 0/255 masks: white and yellow lane paint, cast shadows, headlight glow.
        self.paint_white = np.zeros((height, width), np.uint8)
        self.paint_yellow = np.zeros((height, width), np.uint8)
        self.shadow = np.zeros((height, width), np.uint8)
        self.glow = np.zeros((height, width), np.uint8)
        #: Cityscapes class id of each thing drawn so far.
        self.thing_classes: list[int] = []
        self._scale = np.array([width * _ONE, height * _ONE])
        self._half = _ONE / 2  # pixel centres: normalised u = 0 is the left edge of pixel 0

    def fixed_point(self, uv: np.ndarray) -> np.ndarray:
        """Normalised coordinates (..., 2) → int32 fillPoly fixed-point pixel coordinates (``SHIFT`` bits)."""
        return np.rint(uv * self._scale - self._half).astype(np.int32)

    def fill(self, polys: np.ndarray, color, label: int) -> None:
        """Fill polygon(s) ``(K, 2)`` or ``(N, K, 2)`` (normalised) in the image and the segment-index map."""
        pts = self.fixed_point(polys)
        if pts.ndim == 2:
            pts = pts[None]
        cv2.fillPoly(self.image, pts, color, cv2.LINE_8, SHIFT)
        cv2.fillPoly(self.segment_index, pts, label, cv2.LINE_8, SHIFT)

    def fill_each(self, polys, color, label: int) -> None:
        """Like :meth:`fill` for polygons that may overlap (one ``fillPoly`` call fills overlaps
        with the even-odd rule, which would punch holes)."""
        for poly in polys:
            self.fill(poly, color, label)

    def mark(self, mask: np.ndarray, polys: np.ndarray) -> None:
        """Set polygon(s) to 255 in one of the image-only masks (paint, shadow, glow)."""
        pts = self.fixed_point(polys)
        cv2.fillPoly(mask, pts if pts.ndim == 3 else pts[None], 255, cv2.LINE_8, SHIFT)

    def scale_under(self, mask: np.ndarray, alpha: float, beta: float = 0.0) -> None:
        """Image pixels under ``mask`` (H, W) become ``saturate(|alpha * pixel + beta|)`` (shadows, light)."""
        x, y, w, h = cv2.boundingRect(mask)
        if w and h:
            roi = self.image[y : y + h, x : x + w]
            cv2.copyTo(cv2.convertScaleAbs(roi, alpha=alpha, beta=beta), mask[y : y + h, x : x + w], roi)

    def new_thing(self, class_id: int) -> int | None:
        """The segment index of a new thing of ``class_id``; None when the map holds no more things."""
        if len(self.thing_classes) >= MAX_THINGS:
            return None
        self.thing_classes.append(class_id)
        return FIRST_THING + len(self.thing_classes) - 1


@dataclass(frozen=True)
class Frame:
    """What every layer of one scene draws with: its random stream (one, so that the draws' order fixes the
    scene), the distribution's knobs, the canvas, the camera and road, and the look; and, as the actors are
    drawn, each thing's truth on the ground by its segment index."""

    rng: np.random.Generator
    config: SyntheticConfig
    canvas: Canvas
    view: View
    road: Road
    look: Look
    things: dict[int, ThingOnGround] = field(default_factory=dict)
