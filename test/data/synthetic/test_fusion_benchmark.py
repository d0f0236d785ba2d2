"""The fusion benchmark's street scene in label space, and its timing of the fusion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

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


@pytest.mark.parametrize("method, windows", [("paper", True), ("kirillov", False)])
def test_benchmark_times_the_fusion_it_is_asked_for(monkeypatch, method, windows):
    """A warm-up and ``runs`` timed calls of fuse on the scene, with the method and windows asked for."""
    from panoptic_perception.data.synthetic import fusion_benchmark

    calls = []

    def recorded(semantic, detected, label_map, config):
        calls.append((config.method, detected.windows is not None, semantic.shape))
        return real_fuse(semantic, detected, label_map, config)

    real_fuse = fusion_benchmark.fuse
    monkeypatch.setattr(fusion_benchmark, "fuse", recorded)
    assert benchmark_fusion(size=(160, 90), objects=8, runs=2, method=method, windows=windows) > 0
    assert calls == [(method, windows, (90, 160))] * 3
