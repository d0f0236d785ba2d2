"""The fusion benchmark's street scene in label space, and its timing of the fusion."""

from __future__ import annotations

import cv2
import numpy as np

from panoptic_perception.data.synthetic.fusion_benchmark import benchmark_fusion, fusion_benchmark_scene


def test_the_scene_has_overlapping_masks_in_their_windows_and_a_false_detection_on_the_road():
    semantic, detected = fusion_benchmark_scene(320, 180, 30, seed=1)
    assert semantic.shape == (180, 320) and semantic.dtype == np.uint8
    assert detected.masks.shape[1:] == (180, 320) and detected.masks.dtype == bool
    assert np.all((detected.scores >= 0.5) & (detected.scores < 1.0))
    for mask, window in zip(detected.masks, detected.windows):
        assert tuple(window) == cv2.boundingRect(mask.view(np.uint8))
    assert (detected.masks.sum(axis=0) >= 2).any(), "neighbours' masks overlap"
    false = detected.masks[-1]  # the last detection: a "car" where the semantic map has road
    assert detected.class_ids[-1] == 26 and np.all(semantic[false] == 7)


def test_the_scene_depends_on_the_seed_only():
    first, second = fusion_benchmark_scene(96, 54, 12, seed=3), fusion_benchmark_scene(96, 54, 12, seed=3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1].masks, second[1].masks)
    assert not np.array_equal(first[0], fusion_benchmark_scene(96, 54, 12, seed=4)[0])


def test_benchmark_returns_milliseconds():
    assert benchmark_fusion(size=(160, 90), objects=8, runs=2) > 0


def test_benchmark_without_windows_returns_milliseconds():
    assert benchmark_fusion(size=(160, 90), objects=8, runs=2, method="kirillov", windows=False) > 0
