"""The camera's projection, the road's curve and the sampled road layout."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_perception.data.synthetic import SyntheticConfig
from panoptic_perception.data.synthetic.geometry import Road, View, ellipse, rects, sample_geometry


def test_the_road_meets_the_horizon_far_away_and_the_bottom_row_at_z_bottom():
    view = View(horizon=0.45, camera_height=1.5, yaw=0.0, curvature=0.0, curvature_rate=0.0)
    np.testing.assert_allclose(view.project(0.0, 0.0, 1e12), [0.5, 0.45])
    np.testing.assert_allclose(view.road_point(0.0, 0.0, view.z_bottom), [0.5, 1.0])
    # A point at the camera's height stays on the horizon at every depth.
    np.testing.assert_allclose(view.project(3.0, 1.5, np.array([5.0, 50.0]))[:, 1], 0.45)
    assert view.straight and view.z_near < view.z_bottom


def test_the_road_curve_is_a_cubic_of_depth_and_bends_what_follows_the_road():
    view = View(horizon=0.45, camera_height=1.5, yaw=0.01, curvature=1 / 100, curvature_rate=-1 / 5000)
    z = np.array([10.0, 50.0])
    np.testing.assert_allclose(view.offset(z), 0.01 * z + 0.5 / 100 * z**2 - z**3 / 30000)
    straight = View(0.45, 1.5, 0.0, 0.0, 0.0)
    assert not view.straight
    assert np.all(view.road_point(0.0, 0.0, z)[:, 0] > straight.road_point(0.0, 0.0, z)[:, 0])  # it bends right
    band = view.strip(-1.0, 1.0, z)
    assert band.shape == (4, 2) and band[0, 0] < band[3, 0] and band[1, 0] < band[2, 0]


def test_rectangles_broadcast_and_ellipses_lie_on_their_ellipse():
    np.testing.assert_allclose(rects(0, 2, 1, 3), [[0, 1], [2, 1], [2, 3], [0, 3]])
    assert rects(np.zeros(5), 1.0, 0.0, 1.0).shape == (5, 4, 2)
    blob = ellipse(1.0, 2.0, 3.0, 4.0, 8)
    assert blob.shape == (8, 2)
    np.testing.assert_allclose((((blob - (1.0, 2.0)) / (3.0, 4.0)) ** 2).sum(axis=1), 1.0)
    jittered = ellipse(0.0, 0.0, 1.0, 1.0, 8, np.full(8, 2.0))
    np.testing.assert_allclose(np.hypot(*jittered.T), 2.0)


def test_the_paved_area_ends_beyond_the_sidewalks_that_exist():
    road = Road(lanes=2, lane_width=3.0, ego_lane=1, oncoming_lanes=0, lines=np.array([-4.5, -1.5, 1.5]), left=-5.0,
                right=2.0, two_way=False, dashed=True, edge_lines=False, line_width=0.12, urban=True,
                sidewalks=(True, False), sidewalk_widths=(2.5, 3.0))
    assert road.outer == (-7.5, 2.0)


@pytest.mark.parametrize("seed", range(20))
def test_the_camera_drives_in_its_lane_between_the_road_edges(seed):
    config = SyntheticConfig()
    view, road = sample_geometry(np.random.default_rng(seed), config)
    assert len(road.lines) == road.lanes + 1 and np.all(np.diff(road.lines) > 0)
    assert road.lines[road.ego_lane] < 0.0 < road.lines[road.ego_lane + 1]
    assert road.left < road.lines[0] and road.lines[-1] < road.right
    assert road.oncoming_lanes <= road.ego_lane and (road.oncoming_lanes > 0) == road.two_way
    assert config.horizon_range[0] <= view.horizon <= config.horizon_range[1]
