"""Ground-plane metrics where truth in metres exists: a backend's outputs placed on the ground
(:mod:`panoptic_perception.core.ground`) against the world the synthetic generator drew.

Truth (:class:`GroundTruth`): the frame's exact camera (calibration and mount), the road on the ground plane,
the pixels that show things, and each thing's class and ground position. Only synthetic scenes have it
(:meth:`~panoptic_perception.data.synthetic.types.SyntheticScene.to_truth`; ``evaluate --data synthetic:N``):
datasets and bags label pixels, not metres.

- **Drivable-area IoU within 40 m** (:data:`DRIVABLE_RANGE_M`): the frame's grid as the node builds it
  (:func:`~panoptic_perception.core.ground.result_occupancy`: drivable from the drivable mask, else the
  semantic road class; cells behind a predicted thing unknown) against the generator's road, on 0.1 m cells
  within 40 m of the camera's foot. Scored cells: those the camera sees and no true thing hides (what a
  perfect segmentation gets right); a scored cell the prediction leaves unknown counts as not drivable.
  Per frame; the summary gives the mean and the minimum over frames.
- **Object range error within 50 m** (:data:`OBJECT_RANGE_M`): predicted objects are panoptic instances
  placed at the lowest pixels of their masks, else detections at the bottom centre of their boxes
  (:func:`~panoptic_perception.core.ground.ground_objects`); objects cut by the image's bottom edge are left
  out (their position is only a bound). The true things are those within 50 m of the camera's foot whose
  ground contact is in view: it lies in the image and the thing's lowest visible pixels reach it (within
  :data:`CONTACT_ROWS` rows; a thing whose feet or wheels a nearer thing hides has no visible contact, and
  no flat-ground method can place it: these are counted apart). Each object is matched to a true thing of the same class (the backend's
  vehicle class takes cars, trucks, buses and trains, as detection scoring does), one to one, nearest pairs
  on the ground first, within a gate of ``max(2 m, 20 % of the true range)`` (:func:`match_gate`): wide
  enough for a box a few pixels off at 50 m (a pixel there is about 2 m of range for a camera 1.5 m up),
  narrow enough that cars a lane apart do not swap. Reported: the relative range error ``|r - r_true| /
  r_true`` of the matched pairs (median, p90, count; ranges from the camera's foot) and the recall (matched
  over true things).

``python -m panoptic_perception.evaluation.ground_figures`` measures both on held-out synthetic scenes for
the truth itself (masks, and boxes) and each bundled backend (README, Ground plane).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.ground import (
    FREE,
    CameraCalibration,
    GroundGrid,
    GroundProjection,
    Mount,
    contact_pixels,
    ground_objects,
    result_occupancy,
)
from ..core.labels import CITYSCAPES, VEHICLE_CLASSES, LabelMap
from ..core.types import PerceptionResult

#: Drivable-area IoU: cells within this distance (metres) of the camera's foot, this size (metres).
DRIVABLE_RANGE_M = 40.0
DRIVABLE_CELL_M = 0.1
#: Range error and recall: true things within this distance (metres) of the camera's foot.
OBJECT_RANGE_M = 50.0
#: A true thing's contact is in view when its mask reaches this many rows of the contact's row.
CONTACT_ROWS = 2
#: The matching gate: the larger of this distance (metres) and this fraction of the true range.
MATCH_GATE_M = 2.0
MATCH_GATE_FRACTION = 0.2


@dataclass(frozen=True)
class GroundTruth:
    """A frame's truth in metres.

    ``calibration`` and ``mount``: the camera exactly; ``road``: (rows, columns) bool, the road on
    :func:`drivable_grid` of the mount; ``panoptic``: (H, W) int32 ``class_id * 1000 + instance``, the
    pixels of each thing (the ground behind them is hidden); ``thing_ids``: the N things' panoptic ids;
    ``thing_positions``: (N, 2) float64 ground positions (x, y, metres, target frame) of their contact with
    the ground; ``thing_classes``: their N class names.
    """

    calibration: CameraCalibration
    mount: Mount
    road: np.ndarray
    panoptic: np.ndarray
    thing_ids: tuple[int, ...]
    thing_positions: np.ndarray
    thing_classes: tuple[str, ...]


def drivable_grid(mount: Mount) -> GroundGrid:
    """The grid of the drivable-area IoU: :data:`DRIVABLE_CELL_M` cells from the camera's foot to
    :data:`DRIVABLE_RANGE_M` ahead (along x) and as far to each side."""
    x, y = mount.translation[:2]
    return GroundGrid(DRIVABLE_CELL_M, x, x + DRIVABLE_RANGE_M, y - DRIVABLE_RANGE_M, y + DRIVABLE_RANGE_M)


def synthetic_camera(camera) -> tuple[CameraCalibration, Mount]:
    """The calibration and mount of a synthetic scene's exact camera
    (:class:`~panoptic_perception.data.synthetic.truth.PinholeCamera`), in its ground frame (origin on the
    road below the camera)."""
    transform = camera.ground_from_optical
    return (CameraCalibration.checked(camera.width, camera.height, camera.K, camera.D),
            Mount(transform[:3, :3], transform[:3, 3]))


def ground_truth_of(truth: PerceptionResult | None) -> GroundTruth | None:
    """The :class:`GroundTruth` of a frame's truth where it has one (a
    :class:`~panoptic_perception.data.synthetic.types.SyntheticTruth`: ``camera``, ``things``,
    ``ground_road``, ``panoptic``); None for any other truth."""
    camera, road = getattr(truth, "camera", None), getattr(truth, "ground_road", None)
    if camera is None or road is None:
        return None
    calibration, mount = synthetic_camera(camera)
    grid = drivable_grid(mount)
    things = list(truth.things.values())
    return GroundTruth(calibration, mount, road.mask(grid.resolution, (grid.x_min, grid.x_max), (grid.y_min, grid.y_max)),
                       truth.panoptic, tuple(truth.things), np.array([[t.x, t.y] for t in things], np.float64).reshape(-1, 2),
                       tuple(CITYSCAPES.name_of(t.class_id) for t in things))


def drivable_iou(predicted: np.ndarray, truth: np.ndarray, scored: np.ndarray) -> float:
    """IoU of two (rows, columns) bool drivable grids over the ``scored`` cells; NaN where neither has a
    drivable scored cell."""
    union = ((predicted | truth) & scored).sum()
    return float((predicted & truth & scored).sum() / union) if union else math.nan


def match_gate(true_range: np.ndarray) -> np.ndarray:
    """The matching gate (metres) of true things at ``true_range`` metres: ``max(MATCH_GATE_M,
    MATCH_GATE_FRACTION * range)``."""
    return np.maximum(MATCH_GATE_M, MATCH_GATE_FRACTION * np.asarray(true_range, np.float64))


def match_nearest(predicted: np.ndarray, predicted_classes, true: np.ndarray, true_classes, gates: np.ndarray
                  ) -> list[tuple[int, int]]:
    """One-to-one matches of (P, 2) predicted and (T, 2) true ground positions (metres) of equal class names:
    pairs (predicted index, true index), nearest pairs first, each within its true thing's ``gates`` (T,)
    metres; ties go to the lower indices."""
    predicted, true = np.asarray(predicted, np.float64).reshape(-1, 2), np.asarray(true, np.float64).reshape(-1, 2)
    distance = np.linalg.norm(predicted[:, None] - true[None], axis=-1)
    same = np.asarray(predicted_classes, object)[:, None] == np.asarray(true_classes, object)[None]
    candidates = np.argwhere(same & (distance <= np.asarray(gates)[None]))
    order = np.lexsort((candidates[:, 1], candidates[:, 0], distance[tuple(candidates.T)]))
    matches, used_predicted, used_true = [], set(), set()
    for p, t in candidates[order].tolist():
        if p not in used_predicted and t not in used_true:
            matches.append((p, t))
            used_predicted.add(p)
            used_true.add(t)
    return matches


def predicted_objects(result: PerceptionResult, label_map: LabelMap) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """A result's objects as (N, 4) xyxy boxes, (N, 2) contact pixels and N class names: its panoptic
    instances (of the label map's thing classes; the box spans the mask's pixels, the contact is the centre
    of its lowest row), else its detections (contact: the bottom centre of the box). None for a result with
    neither."""
    if result.panoptic is not None:
        ids = [int(i) for i in np.unique(result.panoptic) if i % 1000 and i // 1000 in label_map.thing_ids]
        masks = [result.panoptic == i for i in ids]
        boxes = np.array([[*np.flatnonzero(m.any(0))[[0, -1]], *np.flatnonzero(m.any(1))[[0, -1]]] for m in masks],
                         np.float64).reshape(-1, 4)[:, [0, 2, 1, 3]]
        return boxes, contact_pixels(boxes, masks), [label_map.name_of(i // 1000) for i in ids]
    if result.detections is not None:
        boxes = np.asarray(result.detections.boxes, np.float64).reshape(-1, 4)
        return boxes, contact_pixels(boxes), list(result.detections.class_names)
    return None


def contact_in_view(truth: GroundTruth) -> np.ndarray:
    """(N,) bool: each true thing's ground contact lies in the image, in front of the camera, and the thing's
    lowest visible pixel is at most :data:`CONTACT_ROWS` rows above it (nothing nearer hides it)."""
    points = np.column_stack([truth.thing_positions, np.zeros(len(truth.thing_positions))])
    optical = (points - truth.mount.translation) @ truth.mount.rotation
    width, height = truth.calibration.image_size
    pixels = np.full((len(points), 2), -1.0)
    ahead = optical[:, 2] > 1e-3
    if ahead.any():
        pixels[ahead] = truth.calibration.project(optical[ahead])
    in_view = ahead & (pixels > -0.5).all(1) & (pixels[:, 0] < width - 0.5) & (pixels[:, 1] < height - 0.5)
    for i in np.flatnonzero(in_view):
        rows = np.flatnonzero((truth.panoptic == truth.thing_ids[i]).any(1))
        in_view[i] = rows.size > 0 and rows[-1] >= pixels[i, 1] - CONTACT_ROWS
    return in_view


class GroundMetrics:
    """Drivable-area IoU and object range error (module docstring) of one backend (its ``label_map``;
    ``merge_vehicles``: its only class is "vehicle", which matches true cars, trucks, buses and trains)
    over frames added with :meth:`add`."""

    def __init__(self, label_map: LabelMap, merge_vehicles: bool = False) -> None:
        self.label_map, self.merge_vehicles = label_map, merge_vehicles
        self.ious: list[float] = []
        self.range_errors: list[float] = []
        self.true_objects = self.hidden_contacts = 0
        self.frames = self.object_frames = 0

    def add(self, prediction: PerceptionResult, truth: GroundTruth) -> dict:
        """Score one frame; returns its record: ``ground_drivable_iou`` where the prediction has a drivable
        area, ``ground_objects_matched`` and ``ground_objects_true`` where it has objects. Raises
        CalibrationError when the prediction is not of the truth camera's image size."""
        record: dict = {}
        projection = GroundProjection(truth.calibration, truth.mount, drivable_grid(truth.mount), DRIVABLE_RANGE_M)
        grid = result_occupancy(projection, prediction, self.label_map)
        if grid is not None:
            hidden = projection.sample((truth.panoptic % 1000 > 0).astype(np.uint8)).astype(bool)
            iou = drivable_iou(grid == FREE, truth.road, projection.seen & ~hidden)
            if not math.isnan(iou):
                self.ious.append(iou)
                record["ground_drivable_iou"] = round(iou, 5)
        objects = predicted_objects(prediction, self.label_map)
        if objects is not None:
            matched, true = self._add_objects(truth, *objects)
            record.update(ground_objects_matched=matched, ground_objects_true=true)
            self.object_frames += 1
        self.frames += 1
        return record

    def _add_objects(self, truth: GroundTruth, boxes: np.ndarray, contacts: np.ndarray, names: list[str]) -> tuple[int, int]:
        """Match one frame's objects to its true things in view; returns (matched, true things in view)."""
        # Every object that meets the ground, however far: one just beyond 50 m may be a thing just within.
        camera = GroundProjection(truth.calibration, truth.mount, GroundGrid(1.0, 0.0, 1.0, 0.0, 1.0), math.inf)
        placed = ground_objects(camera, boxes, contacts)
        usable = ~placed.truncated
        positions = placed.positions[usable, :2]
        classes = [self._class(names[i]) for i in placed.kept[usable]]
        foot = truth.mount.translation[:2]
        true_range = np.linalg.norm(truth.thing_positions - foot, axis=1)
        in_view = contact_in_view(truth)
        near = true_range <= OBJECT_RANGE_M
        counted = np.flatnonzero(near & in_view)
        matches = match_nearest(positions, classes, truth.thing_positions[counted],
                                [self._class(truth.thing_classes[i]) for i in counted], match_gate(true_range[counted]))
        for p, t in matches:
            r = true_range[counted[t]]
            self.range_errors.append(abs(float(np.linalg.norm(positions[p] - foot)) - r) / r)
        self.true_objects += len(counted)
        self.hidden_contacts += int((near & ~in_view).sum())
        return len(matches), len(counted)

    def _class(self, name: str) -> str:
        return "vehicle" if self.merge_vehicles and name in VEHICLE_CLASSES else name

    def compute(self) -> dict:
        """``frames``; with drivable areas ``drivable_iou`` (mean over frames), ``drivable_iou_min`` and
        ``drivable_frames``; with objects ``range_error_median`` and ``range_error_p90`` (fractions of the
        true range; NaN without a match), ``range_error_count`` (matched objects), ``true_objects`` (true
        things within range, contact in view), ``object_recall`` and ``hidden_contacts`` (true things within
        range whose contact is not in view, left out); and the ranges and gate they use."""
        summary: dict = {"frames": self.frames, "drivable_range_m": DRIVABLE_RANGE_M, "object_range_m": OBJECT_RANGE_M,
                         "match_gate": f"max({MATCH_GATE_M:g} m, {100 * MATCH_GATE_FRACTION:g} % of the true range)"}
        if self.ious:
            summary.update(drivable_iou=float(np.mean(self.ious)), drivable_iou_min=float(np.min(self.ious)),
                           drivable_frames=len(self.ious))
        if self.object_frames:
            errors = np.asarray(self.range_errors)
            summary.update(
                range_error_median=float(np.median(errors)) if errors.size else math.nan,
                range_error_p90=float(np.percentile(errors, 90)) if errors.size else math.nan,
                range_error_count=len(errors), true_objects=self.true_objects, hidden_contacts=self.hidden_contacts,
                object_recall=len(errors) / self.true_objects if self.true_objects else math.nan)
        return summary

