"""The fusion of semantic and instance segmentation (Costea et al., section IV; Kirillov et al.'s baseline).

Small hand-made maps, written as character grids, with the right answer written out; one oracle test
against a brute-force pixel-by-pixel breadth-first search; property tests of every output against a
slow whole-image reference of all steps (random scenes, both methods, many configurations, mask
kinds and windows, the paths for many instances and regions); and digests of the outputs on
street scenes recorded from the implementation before its speed-up (windows, flood fills).
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque

import cv2
import numpy as np
import pytest
import torch

from panoptic_perception.core.labels import CITYSCAPES, VOID_ID
from panoptic_perception.core.semantic_instance_fusion import (
    CITYSCAPES_CATEGORIES,
    FusionConfig,
    InstanceSegmentation,
    fuse,
)
from panoptic_perception.core.types import SegmentInfo
from panoptic_perception.data.synthetic.fusion_benchmark import fusion_benchmark_scene
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
    with pytest.raises(ValueError, match=r"masks of a \(3, 3\) image do not match semantic \(2, 3\)"):
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
    semantic, detected = fusion_benchmark_scene(96, 54, 12, seed=3)
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
    semantic, detected = fusion_benchmark_scene(320, 180, 30, seed=1)
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


# --- Exactness: a slow whole-image reference of every step, and digests of the former implementation.


def _reference_fuse(
    semantic: np.ndarray, detected: InstanceSegmentation, config: FusionConfig, confidence: np.ndarray | None = None
) -> dict:
    """The fusion written for clarity, not speed: whole-image boolean images, a pixel-by-pixel
    breadth-first search, segment statistics from np.nonzero. Masks are read inside their windows
    only. New instances are numbered as documented: by category, then in cv2.connectedComponents's
    order on the category's unlabelled pixels cropped to their bounding box."""
    semantic = np.asarray(semantic).astype(np.uint8)
    height, width = semantic.shape
    group = {c: g for g, ids in enumerate(config.categories.values(), 1) for c in ids}
    for c in sorted(CITYSCAPES.thing_ids - set(group)):
        group[c] = max(group.values(), default=0) + 1
    category = np.vectorize(lambda c: group.get(int(c), 0), otypes=[np.int64])(semantic)
    masks = detected.masks > config.mask_threshold if detected.masks.dtype.kind == "f" else detected.masks != 0
    if detected.windows is not None:
        window = np.zeros_like(masks)
        for k, (x, y, w, h) in enumerate(detected.windows.tolist()):
            window[k, y : y + h, x : x + w] = True
        masks = masks & window
    paper = config.method == "paper"

    # Step 3: label = 1 + rank of the claiming detection (lower: higher score).
    labels = np.zeros((height, width), np.int64)
    instances = {}  # label → (class id, score, source)
    order = sorted((k for k in range(len(detected)) if detected.scores[k] >= config.score_threshold), key=lambda k: -detected.scores[k])
    for rank, k in enumerate(order):
        candidate = masks[k] & (category == group[int(detected.class_ids[k])]) if paper else masks[k]
        free = candidate & (labels == 0)
        if free.sum() == 0 or candidate.sum() - free.sum() > config.overlap_threshold * candidate.sum():
            continue
        labels[free] = rank + 1
        instances[rank + 1] = (int(detected.class_ids[k]), float(detected.scores[k]), k)
    if paper:
        # Step 4: one BFS layer per pass; a pixel reached twice in a layer takes the lower label.
        steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
        if config.connectivity == 4:
            steps = [(dy, dx) for dy, dx in steps if dy == 0 or dx == 0]
        frontier = list(zip(*np.nonzero(labels)))
        while frontier:
            layer: dict[tuple[int, int], int] = {}
            for y, x in frontier:
                for dy, dx in steps:
                    v, u = y + dy, x + dx
                    if 0 <= v < height and 0 <= u < width and labels[v, u] == 0 and category[v, u] == category[y, x] > 0:
                        layer[v, u] = min(layer.get((v, u), labels[y, x]), labels[y, x])
            for (v, u), label in layer.items():
                labels[v, u] = label
            frontier = list(layer)
        # Step 5.
        for g in range(1, max(group.values()) + 1):
            rest = (labels == 0) & (category == g)
            if not rest.any():
                continue
            ys, xs = np.nonzero(rest)
            crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            count, regions = cv2.connectedComponents(rest[crop].astype(np.uint8), connectivity=config.connectivity, ltype=cv2.CV_32S)
            for number in range(1, count):
                inside = regions == number
                if inside.sum() < config.min_area:
                    continue
                label = len(order) + 1 + sum(1 for v in instances if v > len(order))
                classes = np.bincount(semantic[crop][inside], minlength=256)
                score = float(confidence[crop][inside].mean()) if confidence is not None else config.new_instance_score
                labels[crop][inside] = label
                instances[label] = (int(classes.argmax()), score, -1)

    # Step 6.
    panoptic = np.zeros((height, width), np.int32)
    refined = semantic.copy()
    segments = []

    def add(pixels: np.ndarray, segment_id: int, class_id: int, is_thing: bool, score: float) -> None:
        ys, xs = np.nonzero(pixels)
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        segments.append(SegmentInfo(segment_id, class_id, is_thing, len(ys), box, score))
        panoptic[pixels] = segment_id

    for c in CITYSCAPES.classes:
        pixels = (semantic == c.id) & (labels == 0)
        if not c.is_thing and pixels.any() and (paper or pixels.sum() >= config.stuff_area_threshold):
            add(pixels, c.id * 1000, c.id, False, 1.0)
    numbers: dict[int, int] = {}
    sources = {}
    things = []
    for label in sorted(instances):  # kept detections by rank, then new instances
        class_id, score, source = instances[label]
        numbers[class_id] = numbers.get(class_id, 0) + 1
        add(labels == label, class_id * 1000 + numbers[class_id], class_id, True, score)
        refined[labels == label] = class_id
        sources[segments[-1].id] = source
        things.append(segments[-1])
    things.sort(key=lambda s: -s.score)
    return {
        "panoptic": panoptic,
        "semantic": refined,
        "segments": sorted(segments, key=lambda s: s.id),
        "boxes": np.array([(x, y, x + w, y + h) for x, y, w, h in (s.bbox for s in things)], np.float32).reshape(-1, 4),
        "scores": np.array([s.score for s in things], np.float32),
        "class_ids": np.array([s.category_id for s in things], np.int64),
        "class_names": [CITYSCAPES.name_of(s.category_id) for s in things],
        "sources": sources,
    }


def _assert_same(fused, expected: dict) -> None:
    assert fused.panoptic.dtype == np.int32 and fused.semantic.dtype == np.uint8
    np.testing.assert_array_equal(fused.panoptic, expected["panoptic"])
    np.testing.assert_array_equal(fused.semantic, expected["semantic"])
    assert fused.segments == expected["segments"]
    assert fused.detections.boxes.dtype == np.float32 and fused.detections.scores.dtype == np.float32
    np.testing.assert_array_equal(fused.detections.boxes, expected["boxes"])
    np.testing.assert_array_equal(fused.detections.scores, expected["scores"])
    np.testing.assert_array_equal(fused.detections.class_ids, expected["class_ids"])
    assert fused.detections.class_names == expected["class_names"]
    assert fused.sources == expected["sources"]


THINGS = [24, 25, 26, 27, 28, 31, 32, 33]
STUFF = [7, 8, 11, 17, 21, 23]
CONFIGS = [
    {},
    {"min_area": 1},
    {"min_area": 3, "connectivity": 4},
    {"overlap_threshold": 0.0, "score_threshold": 0.0},
    {"categories": {}, "min_area": 2},
    {"method": "kirillov"},
    {"method": "kirillov", "stuff_area_threshold": 0, "overlap_threshold": 0.2},
    {"method": "kirillov", "score_threshold": 0.0, "stuff_area_threshold": 20, "connectivity": 4},
]


def _random_scene(rng: np.random.Generator, height: int, width: int, k: int) -> tuple[np.ndarray, InstanceSegmentation]:
    """Blocky semantic regions with pixel noise; rectangles, noise and empty masks, some off the
    image's edge; scores with ties."""
    cells = (max(1, height // int(rng.integers(1, 8))), max(1, width // int(rng.integers(1, 8))))
    pool = np.array([0, *STUFF, *THINGS])
    weights = np.r_[0.05, np.full(len(STUFF), 0.45 / len(STUFF)), np.full(len(THINGS), 0.5 / len(THINGS))]
    semantic = cv2.resize(rng.choice(pool, cells, p=weights).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    noise = rng.random((height, width)) < 0.03
    semantic[noise] = rng.choice(pool, int(noise.sum()))
    masks = np.zeros((k, height, width), bool)
    for i in range(k):
        y0, x0 = int(rng.integers(-3, height)), int(rng.integers(-3, width))
        y1, x1 = max(0, y0 + int(rng.integers(0, height // 2 + 3))), max(0, x0 + int(rng.integers(0, width // 2 + 3)))
        y0, x0 = max(y0, 0), max(x0, 0)
        kind = i % 4
        if kind == 0:
            masks[i, y0:y1, x0:x1] = True
        elif kind == 1:
            masks[i, y0:y1, x0:x1] = rng.random((min(y1, height) - y0, min(x1, width) - x0)) < 0.7 if y1 > y0 and x1 > x0 else False
        elif kind == 2:
            masks[i] = rng.random((height, width)) < 0.2
    scores = rng.choice([0.3, 0.5, 0.6, 0.6, 0.9], k) if rng.random() < 0.5 else rng.uniform(0.2, 1.0, k)
    return semantic, InstanceSegmentation(masks, scores, rng.choice(THINGS, k))


def _variants(detected: InstanceSegmentation, rng: np.random.Generator):
    """The same detections as bool, 0/1 integer and probability masks, without and with windows
    (tight; loose; zero-size for empty masks)."""
    masks = detected.masks
    probabilities = np.where(masks, rng.uniform(0.5, 1.0, masks.shape), rng.uniform(0.0, 0.5, masks.shape)).astype(np.float32)
    probabilities[masks & (rng.random(masks.shape) < 0.05)] = 0.5  # not above the threshold: off
    binary = probabilities > 0.5
    tight = np.array([cv2.boundingRect(m.astype(np.uint8)) for m in binary], np.int64).reshape(-1, 4)
    height, width = masks.shape[1:]
    grown = rng.integers(0, 4, tight.shape)
    x0, y0 = np.maximum(tight[:, 0] - grown[:, 0], 0), np.maximum(tight[:, 1] - grown[:, 1], 0)
    x1 = np.minimum(tight[:, 0] + tight[:, 2] + grown[:, 2], width)
    y1 = np.minimum(tight[:, 1] + tight[:, 3] + grown[:, 3], height)
    loose = np.stack([x0, y0, x1 - x0, y1 - y0], 1)
    loose[tight[:, 2] == 0] = 0
    for windows in (None, tight, loose):
        for kind in (binary, binary.astype(np.uint8), probabilities):
            yield InstanceSegmentation(kind, detected.scores, detected.class_ids, windows=windows)
            if windows is not None:  # each mask stored only inside its window
                yield _windowed(kind, detected, windows)


def _windowed(masks: np.ndarray, detected: InstanceSegmentation, windows: np.ndarray) -> InstanceSegmentation:
    crops = [mask[y : y + h, x : x + w] for mask, (x, y, w, h) in zip(masks, windows.tolist())]
    return InstanceSegmentation(crops, detected.scores, detected.class_ids, windows, image_size=masks.shape[1:])


@pytest.mark.parametrize("seed", range(150))
def test_fusion_equals_the_whole_image_reference_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 40)), int(rng.integers(1, 48))
    semantic, detected = _random_scene(rng, height, width, int(rng.integers(0, 9)))
    config = FusionConfig(**CONFIGS[seed % len(CONFIGS)])
    confidence = rng.random((height, width), np.float32) if seed % 3 == 0 else None
    variants = list(_variants(detected, rng))
    expected = _reference_fuse(semantic, variants[0], config, confidence)
    for variant in variants:
        _assert_same(fuse(semantic, variant, config=config, semantic_confidence=confidence), expected)


@pytest.mark.parametrize("method", ["paper", "kirillov"])
def test_fusion_equals_the_reference_with_many_instances_regions_and_new_instances(method):
    # Beyond uint8: 300 detections (236 kept: int32 labels); 6 of them and 266 new instances (the
    # labels widen during step 5); no detection at all. Car blocks between road lines.
    rng = np.random.default_rng(7)
    semantic = np.full((60, 90), CAR, np.uint8)
    semantic[::4] = 7
    semantic[:, ::5] = 7
    masks = np.zeros((300, 60, 90), bool)
    for i in range(300):
        y, x = rng.integers(0, 58), rng.integers(0, 88)
        masks[i, y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = True
    detected = InstanceSegmentation(masks, rng.uniform(0.5, 1, 300), np.full(300, CAR))
    for config in (FusionConfig(method=method, min_area=1), FusionConfig(method=method, connectivity=4, min_area=2)):
        _assert_same(fuse(semantic, detected, config=config), _reference_fuse(semantic, detected, config))
        few = InstanceSegmentation(masks[:6], detected.scores[:6], detected.class_ids[:6])
        _assert_same(fuse(semantic, few, config=config), _reference_fuse(semantic, few, config))
        none = InstanceSegmentation.empty(60, 90)
        _assert_same(fuse(semantic, none, config=config), _reference_fuse(semantic, none, config))
    # Hundreds of regions, each touched by one of a few masks (more regions than uint8 numbers).
    semantic = np.full((100, 100), 7, np.uint8)
    for y in range(0, 100, 4):
        for x in range(0, 100, 4):
            semantic[y : y + 3, x : x + 3] = rng.choice([PERSON, CAR])
    masks = np.stack([rng.random((100, 100)) < p for p in (0.1, 0.05, 0.2)])
    detected = InstanceSegmentation(masks, [0.9, 0.8, 0.7], [CAR, PERSON, CAR])
    config = FusionConfig(method=method, min_area=1)
    _assert_same(fuse(semantic, detected, config=config), _reference_fuse(semantic, detected, config))


@pytest.mark.parametrize("method", ["paper", "kirillov"])
def test_more_instances_than_label_ids_absent_from_the_semantic_map(method):
    # 240 one-pixel cars apart from each other (detected for Kirillov's baseline, new instances for
    # the paper's), and every class of the label map present: fewer free ids than instances.
    semantic = np.full((34, 64), 7, np.uint8)
    semantic[:32:2, :30:2] = CAR
    semantic[-1, : len(CITYSCAPES.classes)] = [c.id for c in CITYSCAPES.classes]  # 2 regions of things
    masks = np.zeros((240 if method == "kirillov" else 0, 34, 64), bool)
    masks.reshape(len(masks), semantic.size)[np.arange(len(masks)), np.flatnonzero(semantic == CAR)[: len(masks)]] = True
    detected = InstanceSegmentation(masks, np.linspace(0.99, 0.6, len(masks)), np.full(len(masks), CAR))
    config = FusionConfig(method=method, min_area=1, stuff_area_threshold=0)
    fused = fuse(semantic, detected, config=config)
    _assert_same(fused, _reference_fuse(semantic, detected, config))
    assert len(fused.sources) == (240 if method == "kirillov" else 242)


def test_large_unlabelled_foreground_and_thin_images():
    semantic = np.full((300, 240), CAR, np.uint8)  # 72000 unlabelled pixels in one category
    semantic[:, 120:] = PERSON
    semantic[140:150] = 7
    detected = InstanceSegmentation(np.zeros((1, 300, 240), bool), [0.9], [CAR])
    _assert_same(fuse(semantic, detected), _reference_fuse(semantic, detected, FusionConfig()))
    rng = np.random.default_rng(3)
    for height, width in ((1, 1), (1, 17), (23, 1), (2, 2)):
        semantic, detected = _random_scene(rng, height, width, 3)
        for config in (FusionConfig(min_area=1), FusionConfig(method="kirillov", stuff_area_threshold=0)):
            _assert_same(fuse(semantic, detected, config=config), _reference_fuse(semantic, detected, config))


def _digest(fused) -> str:
    """16 hex digits of SHA-256 over every output: panoptic and refined images, segments, detections, sources."""
    h = hashlib.sha256()
    h.update(fused.panoptic.astype("<i4").tobytes())
    h.update(fused.semantic.astype(np.uint8).tobytes())
    for s in fused.segments:
        h.update(struct.pack("<qq?q4qd", s.id, s.category_id, s.is_thing, s.area, *s.bbox, s.score))
    h.update(fused.detections.boxes.astype("<f4").tobytes())
    h.update(fused.detections.scores.astype("<f4").tobytes())
    h.update(fused.detections.class_ids.astype("<i8").tobytes())
    h.update(repr(sorted(fused.sources.items())).encode())
    return h.hexdigest()[:16]


# Recorded with the implementation before the speed-up (without windows, commit 167326a) by running
# the same _digest on the same inputs: fusion_benchmark_scene(width, height, objects, seed), the configs
# of DIGEST_CONFIGS, "paper4" with semantic_confidence = default_rng(seed).random((height, width),
# float32). Probability masks (0.8 in, 0.3 out) gave the boolean masks' digests.
DIGEST_CONFIGS = {
    "paper": {},
    "kirillov": {"method": "kirillov"},
    "paper4": {"min_area": 16, "connectivity": 4},
    "kirillov0": {"method": "kirillov", "stuff_area_threshold": 0, "overlap_threshold": 0.2},
}
DIGESTS = {
    (33, 21, 3, 10): {"paper": "81ed28c70517009f", "kirillov": "07088325e7532de9", "paper4": "fb14d256850b518c", "kirillov0": "51ad1fdc754f7192"},
    (97, 55, 12, 8): {"paper": "8116f725b0b2318b", "kirillov": "4d37bd8589c3ed92", "paper4": "14cf8d8c5b0ff209", "kirillov0": "2aab8586221cf50a"},
    (160, 90, 0, 7): {"paper": "1771e9ed31fc2a52", "kirillov": "ac60bf0d5890d110", "paper4": "84f87c4cb77ee3d5", "kirillov0": "cf66a49d1af046d3"},
    (320, 180, 30, 1): {"paper": "8b4225c38d44fa17", "kirillov": "9ca2700ab62458a3", "paper4": "935a1b782fd61abb", "kirillov0": "0d869462f2bc7c48"},
    (321, 181, 30, 6): {"paper": "926c859611767387", "kirillov": "79accee24b5e227e", "paper4": "6de1b337691df452", "kirillov0": "299fffe3115ef41a"},
    (1283, 721, 30, 2): {"paper": "46d753b9afbac815", "kirillov": "d11da0462d457f00", "paper4": "c383ff2af91c04d3", "kirillov0": "2780a79ea02f1ecc"},
    (1920, 1080, 12, 0): {"paper": "48489a085b32865a", "kirillov": "53928e4e5281f6da", "paper4": "9096f24af2b55bfc", "kirillov0": "53928e4e5281f6da"},
}


@pytest.mark.parametrize("scene", list(DIGESTS))
def test_street_scenes_give_the_former_implementations_outputs(scene):
    width, height, objects, seed = scene
    semantic, detected = fusion_benchmark_scene(width, height, objects, seed)
    confidence = np.random.default_rng(seed).random((height, width), np.float32)
    without_windows = InstanceSegmentation(detected.masks, detected.scores, detected.class_ids)
    probabilities = np.where(detected.masks, np.float32(0.8), np.float32(0.3))
    for name, options in DIGEST_CONFIGS.items():
        config = FusionConfig(**options)
        given = confidence if name == "paper4" else None
        for instances in (detected, without_windows, _windowed(detected.masks, detected, detected.windows)):
            assert _digest(fuse(semantic, instances, config=config, semantic_confidence=given)) == DIGESTS[scene][name], name
    for windows in (detected.windows, None):
        fused = fuse(semantic, InstanceSegmentation(probabilities, detected.scores, detected.class_ids, windows))
        assert _digest(fused) == DIGESTS[scene]["paper"]


def test_windows_are_checked_and_a_mask_is_read_only_inside_its_window():
    semantic = semantic_grid(FIG2_SEMANTIC)
    mask = mask_grid(FIG2_CAR_MASK)[None]
    with pytest.raises(ValueError, match=r"windows must be \(K, 4\) = \(1, 4\) integers"):
        InstanceSegmentation(mask, [0.9], [CAR], windows=np.zeros((1, 3), np.int64))
    with pytest.raises(ValueError, match="integers"):
        InstanceSegmentation(mask, [0.9], [CAR], windows=np.array([[3.0, 2.0, 6.0, 2.0]]))
    for bad in ([-1, 2, 6, 2], [3, 2, 8, 2], [3, 4, 6, 2], [3, 2, -1, 2]):
        with pytest.raises(ValueError, match=r"window 0 \(x, y, w, h\) = .* is not inside the 10x5 image"):
            InstanceSegmentation(mask, [0.9], [CAR], windows=[bad])
    reference = fuse(semantic, InstanceSegmentation(mask, [0.9], [CAR]), config=FusionConfig(min_area=3))
    for window in ([3, 2, 6, 2], [0, 0, 10, 5], torch.tensor([[2, 1, 8, 3]])):  # tight, whole image, loose
        windowed = InstanceSegmentation(mask, [0.9], [CAR], windows=torch.as_tensor(window).reshape(1, 4))
        assert _digest(fuse(semantic, windowed, config=FusionConfig(min_area=3))) == _digest(reference)
    # Pixels outside the window are not read: the same as a mask zeroed there.
    cropped = InstanceSegmentation(mask, [0.9], [CAR], windows=[[3, 2, 3, 1]])
    zeroed = np.zeros_like(mask)
    zeroed[:, 2:3, 3:6] = mask[:, 2:3, 3:6]
    for method in ("paper", "kirillov"):
        config = FusionConfig(method=method, min_area=3)
        assert _digest(fuse(semantic, cropped, config=config)) == _digest(fuse(semantic, InstanceSegmentation(zeroed, [0.9], [CAR]), config=config))
    # An empty mask may have an empty window; no instances, no windows.
    empty = InstanceSegmentation(np.zeros((1, 5, 10), bool), [0.9], [CAR], windows=[[0, 0, 0, 0]])
    assert fuse(semantic, empty, config=FusionConfig(min_area=3)).sources == {24001: -1, 26001: -1}
    assert InstanceSegmentation(np.zeros((0, 5, 10), bool), [], [], windows=np.zeros((0, 4))).windows.shape == (0, 4)


def test_masks_stored_per_window_need_their_windows_and_the_image_size():
    crops = [np.ones((2, 3), bool)]
    with pytest.raises(ValueError, match="masks given per window need windows and image_size"):
        InstanceSegmentation(crops, [0.9], [CAR], windows=[[3, 2, 3, 2]])
    with pytest.raises(ValueError, match=r"windowed mask 0 is \(2, 3\), its window 2x4"):
        InstanceSegmentation(crops, [0.9], [CAR], windows=[[3, 2, 4, 2]], image_size=(5, 10))
    with pytest.raises(ValueError, match=r"window 0 .* is not inside the 10x5 image"):
        InstanceSegmentation(crops, [0.9], [CAR], windows=[[8, 2, 3, 2]], image_size=(5, 10))
    with pytest.raises(ValueError, match="scores"):
        InstanceSegmentation(crops, [0.9, 0.8], [CAR, CAR], windows=[[3, 2, 3, 2]] * 2, image_size=(5, 10))
    windowed = InstanceSegmentation(crops, [0.9], [CAR], windows=[[3, 2, 3, 2]], image_size=(5, 10))
    assert len(windowed) == 1 and windowed.image_size == (5, 10) and windowed.window_mask(0).shape == (2, 3)
    with pytest.raises(ValueError, match=r"masks of a \(5, 10\) image do not match semantic \(4, 10\)"):
        fuse(np.zeros((4, 10), np.uint8), windowed)


@pytest.mark.parametrize("method", ["paper", "kirillov"])
def test_more_than_999_instances_of_a_class_drop_the_smallest_and_keep_the_frame(method):
    """1,005 cars, 6 of them smaller: the panoptic format numbers 999 per class (label divisor 1000)."""
    rows, columns = 26, 40
    semantic = np.full((rows * 5, columns * 5), 7, np.uint8)  # road
    crops, windows, small = [], [], {17, 230, 501, 777, 900, 1004}
    for k in range(1005):
        y, x = divmod(k, columns)
        side = 2 if k in small else 4
        semantic[y * 5 : y * 5 + side, x * 5 : x * 5 + side] = CAR
        crops.append(np.ones((side, side), bool))
        windows.append((x * 5, y * 5, side, side))
    scores = np.linspace(0.99, 0.6, 1005)
    instances = InstanceSegmentation(crops, scores, [CAR] * 1005, windows, image_size=semantic.shape)
    fused = fuse(semantic, instances, config=FusionConfig(method=method, min_area=1, stuff_area_threshold=0))
    assert fused.dropped == 6
    things = [s for s in fused.segments if s.is_thing]
    assert len(things) == 999 and {s.area for s in things} == {16}
    assert max(s.id for s in things) == CAR * 1000 + 999 and len(fused.detections) == 999
    for k in small:  # void in the panoptic image, still a car in the semantic map
        y, x = divmod(k, columns)
        assert (fused.panoptic[y * 5 : y * 5 + 2, x * 5 : x * 5 + 2] == 0).all()
        assert (fused.semantic[y * 5 : y * 5 + 2, x * 5 : x * 5 + 2] == CAR).all()
    assert fuse(semantic, InstanceSegmentation(crops[:999], scores[:999], [CAR] * 999, windows[:999],
                                               image_size=semantic.shape), config=FusionConfig(method=method)).dropped == 0


@pytest.mark.parametrize("method", ["paper", "kirillov"])
@pytest.mark.parametrize("extra", [0, 1])
def test_as_many_instances_as_label_ids_the_semantic_map_leaves_free(method, extra):
    """The panoptic and refined maps are looked up through the label ids absent from the semantic map, one
    per instance, while there are enough of them (every Cityscapes id present leaves 256 - 34); one instance
    more takes the other way. Both give the reference's outputs."""
    ids = [int(i) for i in CITYSCAPES.ids] + [VOID_ID]
    semantic = np.full((24, 600), CAR, np.uint8)
    semantic[0, : len(ids)] = ids
    free = 256 - len(set(ids))
    count = free + extra
    masks = np.zeros((count, 24, 600), bool)
    for k in range(count):
        y, x = divmod(k, 100)
        masks[k, 4 + 4 * y : 6 + 4 * y, 6 * x : 6 * x + 3] = True
    detected = InstanceSegmentation(masks, np.linspace(0.99, 0.6, count), [CAR] * count)
    config = FusionConfig(method=method, min_area=1, stuff_area_threshold=0)
    fused = fuse(semantic, detected, config=config)
    assert len([s for s in fused.segments if s.is_thing]) >= count
    _assert_same(fused, _reference_fuse(semantic, detected, config))
