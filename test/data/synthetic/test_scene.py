"""The synthetic scene generator: determinism, resolution independence, exact and consistent labels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.data.synthetic import (
    THING_CLASS_IDS,
    SyntheticConfig,
    SyntheticScene,
    SyntheticScenes,
    generate_scene,
)

W, H = 320, 180
SEEDS = list(range(8))


@pytest.fixture(scope="module")
def scenes() -> list[SyntheticScene]:
    return [generate_scene(seed, W, H) for seed in SEEDS]


@pytest.fixture(scope="module")
def many_small() -> list[SyntheticScene]:
    """50 consecutive seeds at a small size, for statements about the distribution."""
    return list(SyntheticScenes(50, 192, 108, first_seed=100))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# ------------------------------------------------------------------------------------------ basics


def test_arrays_have_the_documented_shapes_and_types(scenes):
    for scene in scenes:
        assert scene.image.shape == (H, W, 3) and scene.image.dtype == np.uint8
        for mask in (scene.drivable_mask, scene.lane_mask):
            assert mask.shape == (H, W) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1}
        assert scene.semantic.shape == (H, W) and scene.semantic.dtype == np.uint8
        assert scene.panoptic.shape == (H, W) and scene.panoptic.dtype == np.int32
        assert scene.size == (W, H)
        assert scene.seed in SEEDS


def test_same_seed_gives_identical_scene_and_other_seeds_differ():
    a, b = generate_scene(11, W, H), generate_scene(11, W, H)
    for name in ("image", "drivable_mask", "lane_mask", "semantic", "panoptic"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.segments == b.segments
    np.testing.assert_array_equal(a.detections.boxes, b.detections.boxes)
    assert a.attributes == b.attributes
    c = generate_scene(12, W, H)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.semantic, c.semantic)


def test_generation_does_not_touch_the_global_random_state():
    np.random.seed(5)
    expected = np.random.random(3)
    np.random.seed(5)
    generate_scene(3, W, H)
    np.testing.assert_array_equal(np.random.random(3), expected)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError):
        generate_scene(-1, W, H)
    with pytest.raises(ValueError):
        generate_scene(0, 8, 8)
    with pytest.raises(ValueError):
        SyntheticConfig(lane_count_range=(3, 2))
    with pytest.raises(ValueError):
        SyntheticConfig(night_prob=1.5)
    with pytest.raises(ValueError):
        SyntheticConfig(horizon_range=(0.0, 0.5))


# --------------------------------------------------------------------------- resolution independence


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_double_resolution_is_the_same_scene(seed):
    small = generate_scene(seed, 640, 360)
    large = generate_scene(seed, 1280, 720)
    assert small.attributes["lanes"] == large.attributes["lanes"]
    assert small.attributes["horizon"] == large.attributes["horizon"]
    down = cv2.resize(large.drivable_mask.astype(np.float32), (640, 360), interpolation=cv2.INTER_AREA) >= 0.5
    assert _iou(down, small.drivable_mask) > 0.9
    lanes = cv2.resize(large.lane_mask.astype(np.float32), (640, 360), interpolation=cv2.INTER_AREA) >= 0.5
    assert _iou(lanes, small.lane_mask) > 0.6
    semantic = cv2.resize(large.semantic, (640, 360), interpolation=cv2.INTER_NEAREST)
    assert (semantic == small.semantic).mean() > 0.9
    # The same things at the same places: boxes scale by two.
    assert [d for d in small.detections.class_ids] == [d for d in large.detections.class_ids] or abs(len(small.detections) - len(large.detections)) <= 1
    big = [i for i, box in enumerate(small.detections.boxes) if (box[2] - box[0]) * (box[3] - box[1]) > 400]
    for i in big:
        cid = small.detections.class_ids[i]
        candidates = large.detections.boxes[large.detections.class_ids == cid] / 2.0
        best = np.abs(candidates - small.detections.boxes[i]).max(axis=1).min()
        assert best <= 3.0


# ------------------------------------------------------------------------------------- label rules


def test_drivable_is_exactly_the_road_and_lanes_lie_on_it(scenes):
    for scene in scenes:
        np.testing.assert_array_equal(scene.drivable_mask, (scene.semantic == 7).astype(np.uint8))
        assert not np.any(scene.lane_mask.astype(bool) & ~scene.drivable_mask.astype(bool))


def test_lanes_are_present_and_the_road_covers_a_sensible_part_of_the_image(many_small):
    with_lanes = sum(scene.lane_mask.sum() > 20 for scene in many_small)
    assert with_lanes >= 0.95 * len(many_small)
    fractions = np.array([scene.drivable_mask.mean() for scene in many_small])
    assert fractions.min() > 0.05 and fractions.max() < 0.8
    assert 0.15 < np.median(fractions) < 0.6
    # Drivable area is below the horizon.
    for scene in many_small:
        rows = np.flatnonzero(scene.drivable_mask.any(axis=1))
        assert rows[0] >= int(scene.attributes["horizon"] * scene.size[1]) - 1


def test_panoptic_encodes_semantic_and_instances(scenes):
    for scene in scenes:
        sem, pan = scene.semantic, scene.panoptic
        assert not np.any(sem == 0)  # no void pixels
        np.testing.assert_array_equal(pan // 1000, sem.astype(np.int32))
        stuff = ~np.isin(sem, THING_CLASS_IDS)
        assert np.all(pan[stuff] % 1000 == 0)
        assert np.all(pan[~stuff] % 1000 >= 1)
        for cls in THING_CLASS_IDS:
            instances = np.unique(pan[sem == cls] % 1000)
            np.testing.assert_array_equal(instances, np.arange(1, len(instances) + 1))


def test_segments_list_every_panoptic_value_with_area_and_box(scenes):
    for scene in scenes:
        ids = np.unique(scene.panoptic)
        assert [s.id for s in scene.segments] == [int(i) for i in ids if i != 0]
        for s in scene.segments:
            mask = scene.panoptic == s.id
            ys, xs = np.nonzero(mask)
            assert s.area == mask.sum() > 0
            assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert s.category_id == s.id // 1000
            assert s.is_thing == (s.category_id in THING_CLASS_IDS) == CITYSCAPES[s.category_id].is_thing
            assert s.score == 1.0
            if not s.is_thing:
                assert s.id % 1000 == 0


def test_one_tight_detection_per_thing_segment(scenes):
    total = 0
    for scene in scenes:
        things = [s for s in scene.segments if s.is_thing]
        det = scene.detections
        assert len(det) == len(things)
        assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
        np.testing.assert_array_equal(det.scores, 1.0)
        for seg, box, cid, name in zip(things, det.boxes, det.class_ids, det.class_names):
            x, y, w, h = seg.bbox
            np.testing.assert_array_equal(box, [x, y, x + w, y + h])
            assert cid == seg.category_id and name == CITYSCAPES.name_of(int(cid))
            assert name in ("person", "car", "truck")
        total += len(det)
    assert total > 0


# ---------------------------------------------------------------------------------------- geometry


def test_lane_lines_are_learnably_wide_near_the_bottom_and_reach_far():
    widths = []
    for seed in range(6):
        scene = generate_scene(seed, 640, 360)
        lane = scene.lane_mask
        band = lane[int(0.85 * 360) :]
        if band.sum() < 50:
            continue
        dist = cv2.distanceTransform(band, cv2.DIST_L2, 5)
        widths.append(2.0 * dist.max())
        # Lines run from near the bottom to close to the horizon.
        rows = np.flatnonzero(lane.any(axis=1))
        horizon_row = scene.attributes["horizon"] * 360
        assert rows[0] - horizon_row < 0.1 * 360
    assert len(widths) >= 4
    assert 3.0 <= np.median(widths) <= 12.0
    assert max(widths) <= 14.0


def test_nearer_objects_are_bigger(many_small):
    # Perspective: a box's height grows with how far below the horizon its bottom is.
    heights, depth_rows = [], []
    for scene in many_small:
        horizon = scene.attributes["horizon"] * scene.size[1]
        for box, cid in zip(scene.detections.boxes, scene.detections.class_ids):
            if cid == 26 and box[3] < scene.size[1] and box[0] > 0 and box[2] < scene.size[0]:
                heights.append(box[3] - box[1])
                depth_rows.append(box[3] - horizon)
    assert len(heights) > 20
    ranks = [np.argsort(np.argsort(v)) for v in (heights, depth_rows)]
    assert np.corrcoef(ranks[0], ranks[1])[0, 1] > 0.7


def test_pedestrians_mostly_stand_beside_the_road(many_small):
    # What is right below the feet of the nearer (taller than 12 px) pedestrians.
    beside = on_road = 0
    for scene in many_small:
        for seg in scene.segments:
            x, y, w, h = seg.bbox
            if seg.category_id != 24 or h < 12 or y + h >= scene.size[1]:
                continue
            below = scene.semantic[y + h, x : x + w]
            on_road += np.mean(below == 7) > 0.5
            beside += np.mean(np.isin(below, (8, 22))) > 0.5
    assert beside >= 20
    assert beside > 2 * on_road


# -------------------------------------------------------------------------------------- appearance


def test_images_look_like_daylight_or_night_scenes(many_small):
    for scene in many_small:
        gray = cv2.cvtColor(scene.image, cv2.COLOR_BGR2GRAY).astype(np.float64)
        assert gray.std() > 5.0
        sky, road = gray[scene.semantic == 23], gray[scene.semantic == 7]
        if not scene.attributes["night"]:
            assert sky.mean() > road.mean() + 10
            assert gray.mean() > 60
    night = [s for s in many_small if s.attributes["night"]]
    day = [s for s in many_small if not s.attributes["night"]]
    assert night and day
    assert max(s.image.mean() for s in night) < min(s.image.mean() for s in day)


def test_scenes_vary_over_seeds(many_small):
    attrs = [s.attributes for s in many_small]
    curvatures = [a["curvature"] for a in attrs]
    assert any(c == 0 for c in curvatures) and any(c > 0 for c in curvatures) and any(c < 0 for c in curvatures)
    assert any(a["dashed"] for a in attrs) and not all(a["dashed"] for a in attrs)
    assert {a["lanes"] for a in attrs} == {2, 3, 4}
    assert any(a["two_way"] for a in attrs) and any(a["urban"] for a in attrs) and not all(a["urban"] for a in attrs)
    assert any(a["night"] for a in attrs) and any(a["sunny"] for a in attrs)
    vehicles = [a["vehicles"] for a in attrs]
    assert min(vehicles) == 0 and max(vehicles) >= 4
    assert sum(a["pedestrians"] > 0 for a in attrs) >= 10
    classes = set()
    for s in many_small:
        classes |= set(np.unique(s.semantic).tolist())
    assert {7, 8, 11, 21, 23, 24, 26, 27} <= classes
    # The ego position varies: the ego lane's left line is not always at the same place.
    assert len({a["ego_lane"] for a in attrs}) >= 3


def test_config_knobs_change_the_distribution():
    empty = SyntheticConfig(vehicle_count_range=(0, 0), pedestrian_count_range=(0, 0), night_prob=1.0, curved_road_prob=0.0, lane_count_range=(4, 4))
    for seed in range(3):
        scene = generate_scene(seed, W, H, empty)
        assert len(scene.detections) == 0 and not any(s.is_thing for s in scene.segments)
        assert scene.attributes["night"] and scene.attributes["curvature"] == 0.0 and scene.attributes["lanes"] == 4
    busy = SyntheticConfig(vehicle_count_range=(8, 8), truck_fraction=1.0, night_prob=0.0)
    scene = generate_scene(0, W, H, busy)
    assert not scene.attributes["night"]
    assert set(scene.detections.class_names) <= {"truck", "person"} and "truck" in scene.detections.class_names


# ------------------------------------------------------------------------------------------- API


def test_scene_sequence():
    seq = SyntheticScenes(3, W, H, first_seed=40)
    assert len(seq) == 3
    np.testing.assert_array_equal(seq[1].image, generate_scene(41, W, H).image)
    assert seq[-1].seed == 42
    assert [s.seed for s in seq] == [40, 41, 42]
    with pytest.raises(IndexError):
        seq[3]


def test_ground_truth_as_a_result():
    scene = generate_scene(4, 160, 90)
    result = scene.to_result()
    assert result.image_size == (160, 90)
    assert result.drivable_mask is scene.drivable_mask and result.panoptic is scene.panoptic
    assert result.segments == scene.segments and len(result.detections) == len(scene.detections)
