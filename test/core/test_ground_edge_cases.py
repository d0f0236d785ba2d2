"""Ground-plane edge cases found by trying the ground outputs as a new user: wide-angle distortion, mounts at or
below the ground, objects seen by sideways cameras."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_perception.core.ground import CameraCalibration, GroundGrid, GroundProjection, Mount


def test_cells_outside_a_wide_angle_lens_field_of_view_are_not_seen_through_the_distortion_fold_back():
    # A common wide-angle calibration: plumb_bob with k1 = -0.3, monotonic over the whole image (its corners
    # lie below the radius where r (1 + k1 r^2) turns back), 66 degrees wide. Beyond the image the polynomial
    # folds back, so ground cells far outside the field of view (steeply below the camera, or far to the side)
    # project into the image; they must not be marked seen, with a pixel that looks elsewhere.
    focal = 1130.0
    calibration = CameraCalibration.checked(1280, 720, [[focal, 0, 639.5], [0, focal, 359.5], [0, 0, 1]],
                                            [-0.3, 0.0, 0.0, 0.0, 0.0])
    corner = np.hypot(*calibration.rays(np.array([[0.0, 0.0]]))[0, :2])
    assert corner < 1 / np.sqrt(3 * 0.3)  # the distortion is monotonic over the image
    grid = GroundGrid()
    projection = GroundProjection(calibration, Mount.from_xyz_rpy(0.0, 0.0, 1.5), grid)
    x, y = grid.centres()
    pixels = np.stack([projection.map_x[projection.seen], projection.map_y[projection.seen]], 1)
    points, hits = projection.ground_points(pixels)
    error = np.hypot(points[:, 0] - x[projection.seen], points[:, 1] - y[projection.seen])
    distance = np.hypot(x[projection.seen], y[projection.seen])
    wrong = ~hits | (error > 0.5 + 0.05 * distance)  # far more than a pixel's footprint
    assert wrong.sum() == 0, (f"{wrong.sum()} seen cells read a pixel that looks elsewhere, e.g. the cell at "
                              f"({x[projection.seen][wrong][0]:.2f}, {y[projection.seen][wrong][0]:.2f}) m reads "
                              f"pixel {pixels[wrong][0].tolist()}")


def test_a_camera_at_or_below_the_ground_sees_no_ground_cell():
    # A mount whose height was forgotten (z = 0: a TF with only a rotation, mount [0, 0, 0, ...]) or a
    # ground_height above the camera: every ground cell lies on or above the camera's horizon, so none is seen
    # (issue: unknown "above the horizon"). Instead the whole grid is "seen", read from the horizon row (z = 0)
    # or from the sky (below the ground).
    calibration = CameraCalibration.checked(640, 360, [[320.0, 0, 319.5], [0, 320.0, 179.5], [0, 0, 1]])
    for height in (0.0, -1.0):
        projection = GroundProjection(calibration, Mount.from_xyz_rpy(0.0, 0.0, height), GroundGrid())
        assert projection.seen.sum() == 0, f"camera {height} m above the ground: {projection.seen.sum()} cells seen"
