"""The fusion of semantic and instance segmentation (Costea et al., section IV; Kirillov et al.'s baseline).

Small hand-made maps, written as character grids, with the right answer written out; one oracle test
against a brute-force pixel-by-pixel breadth-first search.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.panoptic_fusion import (
    CITYSCAPES_CATEGORIES,
    FusionConfig,
    InstanceSegmentation,
    _benchmark_scene,
    benchmark_fusion,
    fuse,
)
from panoptic_perception.evaluation.panoptic import PanopticQuality

# Semantic grids: Cityscapes label ids.
CLASSES = {".": 0, "r": 7, "b": 11, "S": 23, "P": 24, "R": 25, "C": 26, "T": 27, "B": 33}
PERSON, RIDER, CAR, TRUCK, BICYCLE = 24, 25, 26, 27, 33


def semantic_grid(text: str) -> np.ndarray:
    return np.array([[CLASSES[c] for c in row] for row in text.split()], np.uint8)


def mask_grid(text: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in text.split()], bool)


def panoptic_grid(text: str, legend: dict[str, int]) -> np.ndarray:
    return np.array([[legend[c] for c in row] for row in text.split()], np.int32)


def instances(*detections: tuple[str, float, int]) -> InstanceSegmentation:
    """(mask grid, score, class id) per detection, in the order given."""
    return InstanceSegmentation(
        np.stack([mask_grid(m) for m, _, _ in detections]),
        np.array([s for _, s, _ in detections]),
        np.array([c for _, _, c in detections]),
    )


# Fig. 2 of the paper: the semantic head labels the right part of a car "truck" (T), the car's mask is
# shifted one column right and loses the car's top row and left column, and the pedestrian (P) behind
# is not detected. R is a one-pixel "rider" noise segment.
FIG2_SEMANTIC = """
bbbbbbbbbb
bbCCCTTbPb
bbCCCTTbPb
rrCCCTTrPr
Rrrrrrrrrr
"""
FIG2_CAR_MASK = """
..........
..........
...######.
...######.
..........
"""
FIG2_LEGEND = {".": 0, "r": 7000, "b": 11000, "p": 24001, "c": 26001}


def test_paper_fusion_on_fig2_matches_fills_and_adds_the_missed_pedestrian():
    semantic = semantic_grid(FIG2_SEMANTIC)
    fused = fuse(semantic, instances((FIG2_CAR_MASK, 0.9, CAR)), config=FusionConfig(min_area=3, new_instance_score=0.3))
    # Matching keeps the car mask's vehicle pixels (the truck-labelled ones too), deletes those on
    # building, road and the pedestrian; filling grows the car over the whole vehicle region; the
    # isolated pedestrian (3 pixels >= min_area) becomes a new person; the 1-pixel rider is void.
    expected = panoptic_grid(
        """
        bbbbbbbbbb
        bbcccccbpb
        bbcccccbpb
        rrcccccrpr
        .rrrrrrrrr
        """,
        FIG2_LEGEND,
    )
    np.testing.assert_array_equal(fused.panoptic, expected)
    assert fused.panoptic.dtype == np.int32
    # The refined semantic map: the car's class on the whole car, the noise keeps its class.
    refined = semantic.copy()
    refined[expected == 26001] = CAR
    np.testing.assert_array_equal(fused.semantic, refined)
    assert fused.semantic[4, 0] == RIDER and fused.semantic.dtype == np.uint8

    assert [(s.id, s.category_id, s.is_thing, s.area, s.bbox) for s in fused.segments] == [
        (7000, 7, False, 13, (0, 3, 10, 2)),
        (11000, 11, False, 18, (0, 0, 10, 3)),
        (24001, PERSON, True, 3, (8, 1, 1, 3)),
        (26001, CAR, True, 15, (2, 1, 5, 3)),
    ]
    assert [s.score for s in fused.segments] == pytest.approx([1.0, 1.0, 0.3, 0.9])
    assert fused.sources == {26001: 0, 24001: -1}
    # Boxes of the fused instances (not the detector's mask), detector scores, by descending score.
    np.testing.assert_array_equal(fused.detections.boxes, [[2, 1, 7, 4], [8, 1, 9, 4]])
    np.testing.assert_allclose(fused.detections.scores, [0.9, 0.3])
    np.testing.assert_array_equal(fused.detections.class_ids, [CAR, PERSON])
    assert fused.detections.class_names == ["car", "person"]


def test_kirillov_baseline_on_fig2_takes_whole_masks_and_leaves_unmatched_things_void():
    semantic = semantic_grid(FIG2_SEMANTIC)
    fused = fuse(semantic, instances((FIG2_CAR_MASK, 0.9, CAR)), config=FusionConfig(method="kirillov", stuff_area_threshold=0))
    expected = panoptic_grid(
        """
        bbbbbbbbbb
        bb.....b.b
        bb.ccccccb
        rr.ccccccr
        .rrrrrrrrr
        """,
        FIG2_LEGEND,
    )
    np.testing.assert_array_equal(fused.panoptic, expected)
    refined = semantic.copy()
    refined[expected == 26001] = CAR  # elsewhere (void included) the input class, e.g. truck at (1, 5)
    np.testing.assert_array_equal(fused.semantic, refined)
    assert fused.semantic[1, 5] == TRUCK
    assert fused.sources == {26001: 0}


def test_the_paper_fusion_improves_panoptic_quality_over_the_baseline_on_fig2():
    truth = panoptic_grid(
        """
        bbbbbbbbbb
        bbcccccbpb
        bbcccccbpb
        rrcccccrpr
        rrrrrrrrrr
        """,
        FIG2_LEGEND,
    )
    semantic, detected = semantic_grid(FIG2_SEMANTIC), instances((FIG2_CAR_MASK, 0.9, CAR))
    categories = {c.id: c.is_thing for c in CITYSCAPES.classes}
    results = {}
    for method in ("paper", "kirillov"):
        quality = PanopticQuality(categories)
        config = FusionConfig(method=method, min_area=3, stuff_area_threshold=0)
        quality.add(fuse(semantic, detected, config=config).panoptic, truth)
        results[method] = quality.compute()
    assert results["paper"]["things"]["pq"] == pytest.approx(1.0)
    # Baseline: the car's 12 mask pixels overlap 8 of its 15 truth pixels (IoU 8/19 < 0.5), and the
    # pedestrian is missed: both things fail.
    assert results["kirillov"]["things"]["pq"] == 0.0
    assert results["paper"]["all"]["pq"] > results["kirillov"]["all"]["pq"]


def test_matching_keeps_mask_pixels_only_on_the_detections_category():
    # A rider (R) on a bicycle (B). The person detection's mask covers the rider and the bicycle's
    # top; the bicycle's mask covers the bicycle, the rider's bottom, building and road.
    semantic = semantic_grid(
        """
        bbRRbb
        bbRRbb
        bBBBBb
        rBrrBr
        """
    )
    detected = instances(
        ("..##.. ..##.. ..##.. ......", 0.9, PERSON),
        ("...... .####. .####. .####.", 0.8, BICYCLE),
    )
    legend = {"r": 7000, "b": 11000, "p": 24001, "c": 33001}
    paper = fuse(semantic, detected)
    expected = """
        bbppbb
        bbppbb
        bccccb
        rcrrcr
    """
    np.testing.assert_array_equal(paper.panoptic, panoptic_grid(expected, legend))
    # Human pixels take the detector's class (person), although the semantic head said rider.
    assert set(paper.semantic[:2, 2:4].ravel().tolist()) == {PERSON}
    kirillov = fuse(semantic, detected, config=FusionConfig(method="kirillov", stuff_area_threshold=0))
    expected = """
        bbppbb
        bcppcb
        bcppcb
        rccccr
    """
    np.testing.assert_array_equal(kirillov.panoptic, panoptic_grid(expected, legend))


OVERLAP_SEMANTIC = """
CCCCCCCC
CCCCCCCC
rrrrrrrr
"""
OVERLAPPING = (
    ("...##### ...##### ........", 0.6, CAR),  # overlaps the best one on 4 of its 10 pixels: kept
    ("#####... #####... ........", 0.9, CAR),  # the best: claims first
    ("###..... ###..... ........", 0.7, CAR),  # wholly inside the best one: a duplicate, dropped
    ("......## ......## ........", 0.4, CAR),  # below the score threshold: ignored
)


@pytest.mark.parametrize("method", ["paper", "kirillov"])
def test_overlapping_masks_are_claimed_in_descending_score_order(method):
    config = FusionConfig(method=method, stuff_area_threshold=0)
    fused = fuse(semantic_grid(OVERLAP_SEMANTIC), instances(*OVERLAPPING), config=config)
    expected = panoptic_grid("11111222 11111222 rrrrrrrr", {"r": 7000, "1": 26001, "2": 26002})
    np.testing.assert_array_equal(fused.panoptic, expected)
    assert fused.sources == {26001: 1, 26002: 0}
    np.testing.assert_allclose(fused.detections.scores, [0.9, 0.6])


def test_an_instance_mostly_claimed_already_is_dropped_and_the_paper_fills_its_pixels():
    semantic, detected = semantic_grid(OVERLAP_SEMANTIC), instances(*OVERLAPPING)
    legend = {".": 0, "r": 7000, "1": 26001}
    # 4 of the 0.6 instance's 10 pixels are claimed: more than 0.3, so it is dropped.
    paper = fuse(semantic, detected, config=FusionConfig(overlap_threshold=0.3))
    np.testing.assert_array_equal(paper.panoptic, panoptic_grid("11111111 11111111 rrrrrrrr", legend))
    kirillov = fuse(semantic, detected, config=FusionConfig(method="kirillov", overlap_threshold=0.3, stuff_area_threshold=0))
    np.testing.assert_array_equal(kirillov.panoptic, panoptic_grid("11111... 11111... rrrrrrrr", legend))


# A vehicle region bent around a building: the kept pixels are the corners (0, 0) and (2, 6). Pixel
# (2, 0) is nearer to (0, 0) in a straight line (2 vs 6) but 12 steps away through the vehicle region.
BENT_SEMANTIC = """
CCCCCCC
bbbbbbC
CCCCCCC
"""
BENT_A = "#...... ....... ......."
BENT_B = "....... ....... ......#"


@pytest.mark.parametrize(
    ("connectivity", "first_row"),
    [
        (8, "1111222"),  # chessboard steps: (0, 4) is 4 from A and 3 from B
        (4, "1111122"),  # city-block steps: (0, 4) is 4 from both; the tie goes to the higher score (A)
    ],
)
def test_filling_follows_the_geodesic_distance_through_the_category(connectivity, first_row):
    fused = fuse(
        semantic_grid(BENT_SEMANTIC),
        instances((BENT_A, 0.9, CAR), (BENT_B, 0.8, CAR)),
        config=FusionConfig(connectivity=connectivity),
    )
    expected = panoptic_grid(f"{first_row} bbbbbb2 2222222", {"b": 11000, "1": 26001, "2": 26002})
    np.testing.assert_array_equal(fused.panoptic, expected)


def test_a_tie_goes_to_the_higher_score():
    fused = fuse(
        semantic_grid(BENT_SEMANTIC),
        instances((BENT_A, 0.8, CAR), (BENT_B, 0.9, CAR)),  # now B scores higher: instance 1
        config=FusionConfig(connectivity=4),
    )
    expected = panoptic_grid("2222111 bbbbbb1 1111111", {"b": 11000, "1": 26001, "2": 26002})
    np.testing.assert_array_equal(fused.panoptic, expected)


def test_filling_does_not_cross_into_another_category():
    # The car's kept pixels touch a person region, which must not take the car's label.
    semantic = semantic_grid("CCPP CCPP")
    fused = fuse(semantic, instances(("#... ....", 0.9, CAR)), config=FusionConfig(min_area=4))
    np.testing.assert_array_equal(fused.panoptic, panoptic_grid("1122 1122", {"1": 26001, "2": 24001}))
    assert fused.sources == {26001: 0, 24001: -1}


NEW_SEMANTIC = """
PPrrrrr
PPrrrCr
rrPrrCr
rrrrrrr
"""


@pytest.mark.parametrize(
    ("connectivity", "min_area", "expected"),
    [
        (8, 5, "11rrrrr 11rrr.r rr1rr.r rrrrrrr"),  # the diagonal pixel joins the block: 5 pixels
        (4, 5, "..rrrrr ..rrr.r rr.rr.r rrrrrrr"),  # two regions of 4 and 1 pixels: noise
        (4, 4, "11rrrrr 11rrr.r rr.rr.r rrrrrrr"),  # the 4-pixel block is big enough
    ],
)
def test_isolated_segments_become_instances_from_min_area_on(connectivity, min_area, expected):
    semantic = semantic_grid(NEW_SEMANTIC)
    fused = fuse(semantic, InstanceSegmentation.empty(4, 7), config=FusionConfig(connectivity=connectivity, min_area=min_area))
    np.testing.assert_array_equal(fused.panoptic, panoptic_grid(expected, {".": 0, "r": 7000, "1": 24001}))
    # Noise is void in the panoptic image but keeps its class in the refined semantic map.
    np.testing.assert_array_equal(fused.semantic, semantic)


def test_a_new_instance_takes_the_most_frequent_semantic_class_and_the_mean_confidence():
    semantic = semantic_grid("CCTTTrCCTT")
    confidence = np.array([[0.5, 0.7, 0.6, 0.8, 0.9, 1.0, 0.2, 0.4, 0.6, 0.8]], np.float32)
    fused = fuse(semantic, InstanceSegmentation.empty(1, 10), config=FusionConfig(min_area=1), semantic_confidence=confidence)
    # Left: truck is the majority; right: a tie between car and truck goes to the lower id, car.
    np.testing.assert_array_equal(fused.panoptic, [[27001] * 5 + [7000] + [26001] * 4])
    scores = {s.id: s.score for s in fused.segments}
    assert scores[27001] == pytest.approx(0.7) and scores[26001] == pytest.approx(0.5)
    np.testing.assert_array_equal(fused.semantic, [[27] * 5 + [7] + [26] * 4])


def test_kirillov_removes_small_stuff_and_lets_instances_override_stuff():
    semantic = semantic_grid("SSrrrr rrrrrC")
    mask = "...... .##..."
    fused = fuse(semantic, instances((mask, 0.8, CAR)), config=FusionConfig(method="kirillov", stuff_area_threshold=3))
    # Sky has 2 pixels (< 3): void; the car mask overrides road; the uncovered car pixel is void.
    np.testing.assert_array_equal(fused.panoptic, panoptic_grid("..rrrr r11rr.", {".": 0, "r": 7000, "1": 26001}))
    np.testing.assert_array_equal(fused.semantic, semantic_grid("SSrrrr rCCrrC"))
    assert [s.id for s in fused.segments] == [7000, 26001]
    # The paper's fusion keeps small stuff.
    assert 23000 in {s.id for s in fuse(semantic, instances((mask, 0.8, CAR))).segments}


def test_probability_masks_torch_tensors_and_torchvision_layout_give_the_same_result():
    semantic = semantic_grid(FIG2_SEMANTIC)
    reference = fuse(semantic, instances((FIG2_CAR_MASK, 0.9, CAR)), config=FusionConfig(min_area=3))
    probabilities = np.where(mask_grid(FIG2_CAR_MASK), 0.7, 0.3).astype(np.float32)[None, None]  # (K, 1, H, W)
    for masks in (probabilities, torch.from_numpy(probabilities), mask_grid(FIG2_CAR_MASK)[None].astype(np.uint8)):
        fused = fuse(
            torch.from_numpy(semantic.astype(np.int64)),
            InstanceSegmentation(masks, torch.tensor([0.9]), torch.tensor([CAR])),
            config=FusionConfig(min_area=3),
        )
        np.testing.assert_array_equal(fused.panoptic, reference.panoptic)
        assert fused.segments == reference.segments
    # A stricter mask threshold drops the mask entirely.
    config = FusionConfig(min_area=3, mask_threshold=0.8)
    stricter = fuse(semantic, InstanceSegmentation(probabilities, [0.9], [CAR]), config=config)
    assert stricter.sources == {24001: -1, 26001: -1}, "the car is then found as an undetected vehicle region"


def test_no_instances_and_no_foreground():
    semantic = semantic_grid("rrbb rrbb")
    fused = fuse(semantic, InstanceSegmentation.empty(2, 4))
    np.testing.assert_array_equal(fused.panoptic, [[7000, 7000, 11000, 11000]] * 2)
    assert len(fused.detections) == 0 and fused.sources == {}


def test_bad_input_raises_value_error():
    semantic = semantic_grid("rrC rrC")
    good = instances(("..# ..#", 0.9, CAR))
    with pytest.raises(ValueError, match=r"\(1, 3, 3\)"):
        fuse(semantic, InstanceSegmentation(np.zeros((1, 3, 3), bool), [0.9], [CAR]))
    with pytest.raises(ValueError, match="scores"):
        InstanceSegmentation(np.zeros((2, 2, 3), bool), [0.9], [CAR, CAR])
    with pytest.raises(ValueError, match=r"\[5\]"):
        fuse(np.array([[7, 5, 26]]), InstanceSegmentation.empty(1, 3))
    with pytest.raises(ValueError, match="integer"):
        fuse(semantic.astype(np.float32), good)
    with pytest.raises(ValueError, match=r"\[7\] are not thing classes"):
        fuse(semantic, instances(("..# ..#", 0.9, 7)))
    with pytest.raises(ValueError, match="semantic_confidence"):
        fuse(semantic, good, semantic_confidence=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not a thing class"):
        fuse(semantic, good, config=FusionConfig(categories={"vehicle": (26, 7)}))
    with pytest.raises(ValueError, match="two categories"):
        fuse(semantic, good, config=FusionConfig(categories={"a": (26,), "b": (26, 27)}))
    for bad in ({"method": "nms"}, {"connectivity": 6}, {"min_area": 0}, {"score_threshold": 1.5}, {"overlap_threshold": 1.0}):
        with pytest.raises(ValueError):
            FusionConfig(**bad)


def test_categories_default_to_cityscapes_and_ungrouped_things_stand_alone():
    assert FusionConfig().categories == {"human": (24, 25), "vehicle": (26, 27, 28, 31, 32, 33)} == dict(CITYSCAPES_CATEGORIES)
    # Without groups every thing class is its own category: a car mask then keeps no truck pixel.
    semantic = semantic_grid("CCTT")
    detected = instances(("####", 0.9, CAR))
    grouped = fuse(semantic, detected)
    alone = fuse(semantic, detected, config=FusionConfig(categories={}, min_area=1))
    np.testing.assert_array_equal(grouped.panoptic, [[26001] * 4])
    np.testing.assert_array_equal(alone.panoptic, [[26001, 26001, 27001, 27001]])


def _reference_labels(semantic: np.ndarray, detected: InstanceSegmentation, config: FusionConfig) -> np.ndarray:
    """Steps 3 and 4 pixel by pixel: each labelled pixel holds 1 + its detection's input index."""
    group = {c: g for g, ids in enumerate(config.categories.values(), 1) for c in ids}
    category = np.vectorize(lambda c: group.get(int(c), 0))(semantic)
    labels = np.zeros(semantic.shape, np.int64)
    rank = {}
    for k in sorted(range(len(detected)), key=lambda i: -detected.scores[i]):
        if detected.scores[k] < config.score_threshold:
            continue
        candidate = detected.masks[k] & (category == group[int(detected.class_ids[k])])
        free = candidate & (labels == 0)
        if free.sum() == 0 or candidate.sum() - free.sum() > config.overlap_threshold * candidate.sum():
            continue
        labels[free] = k + 1
        rank[k + 1] = len(rank)
    height, width = semantic.shape
    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    frontier = deque(zip(*np.nonzero(labels)))
    while frontier:  # one BFS layer per pass; a pixel reached twice in a layer takes the best rank
        layer: dict[tuple[int, int], int] = {}
        for y, x in frontier:
            for dy, dx in steps:
                v, u = y + dy, x + dx
                if 0 <= v < height and 0 <= u < width and labels[v, u] == 0 and category[v, u] == category[y, x] > 0:
                    if (v, u) not in layer or rank[labels[y, x]] < rank[layer[v, u]]:
                        layer[v, u] = labels[y, x]
        for (v, u), label in layer.items():
            labels[v, u] = label
        frontier = deque(layer)
    return labels


def test_matching_and_filling_agree_with_a_pixel_by_pixel_breadth_first_search():
    semantic, detected = _benchmark_scene(96, 54, 12, seed=3)
    config = FusionConfig(min_area=4)
    fused = fuse(semantic, detected, config=config)
    expected = _reference_labels(semantic, detected, config)
    assert (expected > 0).sum() > 300, "the scene must have instances to grow"
    source = np.full(fused.panoptic.shape, -2)
    for segment_id, index in fused.sources.items():
        source[fused.panoptic == segment_id] = index
    np.testing.assert_array_equal(source[expected > 0], expected[expected > 0] - 1)
    # What no detection reached is a new instance or void.
    assert set(np.unique(source[expected == 0]).tolist()) <= {-2, -1}


def test_segments_detections_and_maps_are_consistent_on_a_street_scene():
    semantic, detected = _benchmark_scene(320, 180, 30, seed=1)
    for method in ("paper", "kirillov"):
        fused = fuse(semantic, detected, config=FusionConfig(method=method, min_area=16))
        ids = np.unique(fused.panoptic)
        assert [s.id for s in fused.segments] == [int(i) for i in ids if i]
        for s in fused.segments:
            ys, xs = np.nonzero(fused.panoptic == s.id)
            assert s.area == len(ys) and s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert s.category_id == s.id // 1000 and s.is_thing == (s.category_id in CITYSCAPES.thing_ids)
        things = [s for s in fused.segments if s.is_thing]
        assert len(fused.detections) == len(things) == len(fused.sources)
        assert np.all(np.diff(fused.detections.scores) <= 0)
        boxes = {tuple(b) for b in fused.detections.boxes.tolist()}
        assert boxes == {(x, y, x + w, y + h) for x, y, w, h in (s.bbox for s in things)}
        labelled = fused.panoptic > 0
        np.testing.assert_array_equal(fused.semantic[labelled], fused.panoptic[labelled] // 1000)
        np.testing.assert_array_equal(fused.semantic[~labelled], semantic[~labelled])
        if method == "paper":  # foreground is void only where a region is below min_area
            foreground = np.isin(semantic, list(CITYSCAPES.thing_ids))
            assert fused.panoptic[foreground].astype(bool).mean() > 0.95
            assert set(fused.sources.values()) <= set(range(-1, len(detected)))


def test_benchmark_returns_milliseconds():
    assert benchmark_fusion(size=(160, 90), objects=8, runs=2) > 0
