"""Training data: sources, augmentations that keep every label consistent, instance targets."""

from __future__ import annotations

import numpy as np
import pytest

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.data.sample import Sample
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.training.config import from_dict
from panoptic_perception.training.data import (
    IGNORE_INDEX,
    DataConfig,
    DataSource,
    Example,
    class_index_table,
    crop_or_pad,
    hflip,
    instance_targets,
    open_sources,
    resize,
    scale_flip_crop,
)


def scene_example(seed: int = 3, size=(160, 90)) -> Example:
    scene = generate_scene(seed, *size)
    return Example.from_sample(Sample("s", scene.image, scene.to_result()))


def test_flip_twice_is_the_identity_and_flips_boxes_with_the_masks():
    example = scene_example()
    twice = hflip(hflip(example))
    for name in ("image", "semantic", "panoptic", "drivable", "lane", "boxes"):
        assert np.array_equal(getattr(twice, name), getattr(example, name)), name
    flipped = hflip(example)
    assert np.array_equal(flipped.semantic, example.semantic[:, ::-1])
    width = example.size[0]
    assert np.allclose(flipped.boxes[:, [0, 2]], width - example.boxes[:, [2, 0]])


def test_resize_keeps_labels_nearest_and_scales_boxes():
    example = scene_example()
    half = resize(example, (80, 45))
    assert half.image.shape == (45, 80, 3) and half.semantic.shape == (45, 80) and half.panoptic.dtype == np.int32
    assert set(np.unique(half.semantic)) <= set(np.unique(example.semantic)), "no interpolated label values"
    assert np.allclose(half.boxes, example.boxes * 0.5)
    assert half.valid.dtype == bool and half.valid.all()


def test_crop_or_pad_pads_with_void_and_clips_boxes():
    example = scene_example()
    rng = np.random.default_rng(0)
    padded = crop_or_pad(example, (200, 120), rng, (1, 2, 3))
    assert padded.image.shape == (120, 200, 3)
    assert (padded.image[90:, :] == (1, 2, 3)).all() and (padded.image[:, 160:] == (1, 2, 3)).all()
    assert (padded.semantic[90:] == 0).all() and (padded.panoptic[:, 160:] == 0).all()
    assert padded.valid[:90, :160].all() and not padded.valid[90:].any() and not padded.valid[:, 160:].any()
    assert np.array_equal(padded.boxes, example.boxes)
    cropped = crop_or_pad(example, (100, 60), np.random.default_rng(1), (0, 0, 0))
    assert cropped.image.shape == (60, 100, 3) and cropped.valid.all()
    assert (cropped.boxes[:, [0, 2]] <= 100).all() and (cropped.boxes[:, [1, 3]] <= 60).all()
    assert (cropped.boxes[:, 2] > cropped.boxes[:, 0]).all() and len(cropped.box_names) == len(cropped.boxes)


def test_scale_flip_crop_is_reproducible_from_the_generator_and_fits_the_size():
    example = scene_example()
    a = scale_flip_crop(example, (128, 96), np.random.default_rng(7), (0.8, 1.0), True, (0, 0, 0))
    b = scale_flip_crop(example, (128, 96), np.random.default_rng(7), (0.8, 1.0), True, (0, 0, 0))
    assert a.image.shape == (96, 128, 3) and np.array_equal(a.image, b.image) and np.array_equal(a.panoptic, b.panoptic)
    plain = scale_flip_crop(example, (160, 90), np.random.default_rng(0), (1.0, 1.0), False, (0, 0, 0))
    assert np.array_equal(plain.image, example.image), "scale 1 without flip is the identity"


def test_class_index_table_maps_label_ids_to_channels_and_the_rest_to_ignore():
    table = class_index_table(CITYSCAPES)
    assert table[7] == 0 and table[26] == 13 and table[33] == 18
    assert table[0] == IGNORE_INDEX and table[4] == IGNORE_INDEX and table[255] == IGNORE_INDEX


def test_instance_targets_from_a_hand_made_panoptic_map():
    panoptic = np.zeros((6, 8), np.int32)
    panoptic[:, :] = 7000  # road (stuff)
    panoptic[1:3, 2:5] = 26001  # car instance 1: rows 1-2, columns 2-4
    panoptic[4, 0:2] = 24001  # person instance 1
    panoptic[5, 7] = 26002  # a one-pixel car
    panoptic[0, 0] = 26000  # a crowd region (instance 0): not a target
    targets = instance_targets(panoptic, (24, 25, 26), min_pixels=2)
    assert targets.labels.tolist() == [1, 3]  # person (index 1), car (index 3); the 1-pixel car is too small
    assert targets.boxes.tolist() == [[0, 4, 2, 5], [2, 1, 5, 3]]
    assert targets.masks.shape == (2, 6, 8) and targets.masks[1].sum() == 6 and targets.masks[0].sum() == 2
    empty = instance_targets(np.full((4, 4), 7000, np.int32), (24,))
    assert empty.boxes.shape == (0, 4) and empty.masks.shape == (0, 4, 4)


def test_data_config_reads_lists_of_sources_and_refuses_overlapping_seeds():
    config = from_dict(DataConfig, {"train": [{"count": 4, "width": 64, "height": 48}, {"count": 2, "first_seed": 10}],
                                    "val": [{"count": 2, "first_seed": 100}]})
    assert [s.count for s in config.train] == [4, 2] and isinstance(config.val[0], DataSource)
    with pytest.raises(ValueError, match="overlap"):
        DataConfig(train=[DataSource(count=10)], val=[DataSource(count=5, first_seed=5)])
    with pytest.raises(ValueError, match="needs a root"):
        DataSource(source="cityscapes")
    with pytest.raises(ValueError, match="unknown keys in x: data.train\\[0\\]: colour"):
        from_dict(DataConfig, {"train": [{"colour": 1}]}, "x: data.")


def test_open_sources_concatenates_a_mix():
    samples = open_sources([DataSource(count=2, width=64, height=48), DataSource(count=1, first_seed=50, width=32, height=32)])
    assert len(samples) == 3
    assert samples[2].name == "synthetic_50" and samples[2].image.shape == (32, 32, 3)
    assert samples[0].truth.panoptic.shape == (48, 64)


def test_synthetic_samples_are_kept_compressed_and_read_back_exactly():
    """Rendered scenes stay in memory with compressed label maps (9,600 raw 640x352 scenes were killed at 24 GB)."""
    source = DataSource(count=2, first_seed=7, width=160, height=96)
    samples = open_sources([source])
    for index, seed in enumerate((7, 8)):
        scene, sample = generate_scene(seed, 160, 96), samples[index]
        np.testing.assert_array_equal(sample.image, scene.image)
        for name in ("semantic", "panoptic", "drivable_mask", "lane_mask"):
            stored = getattr(sample.truth, name)
            assert stored.dtype == getattr(scene, name).dtype and stored.flags.writeable
            np.testing.assert_array_equal(stored, getattr(scene, name))
        np.testing.assert_array_equal(sample.truth.detections.boxes, scene.detections.boxes)
        assert sample.truth.segments == scene.segments
    kept = sum(len(data) for data, _, _ in samples._samples[0]._maps.values())
    raw = sum(getattr(samples[0].truth, name).nbytes for name in ("semantic", "panoptic", "drivable_mask", "lane_mask"))
    assert kept < raw / 10
