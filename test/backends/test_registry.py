import json
import re

import numpy as np
import pytest

from panoptic_perception import Capability, InvalidImageError, create_backend, list_backends
from panoptic_perception.backends.registry import UnknownBackendError


def test_twinlitenet_is_registered_with_its_capabilities():
    assert "twinlitenet" in list_backends()
    backend = create_backend("twinlitenet")
    assert backend.capabilities == {Capability.DRIVABLE_AREA, Capability.LANE_LINES}
    assert backend.label_map.name_of(1) == "drivable_area"


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(UnknownBackendError, match="unknown backend 'nope'; available: .*twinlitenet"):
        create_backend("nope")


def test_single_image_and_batch_of_mixed_sizes():
    backend = create_backend("twinlitenet")
    single = backend(np.zeros((50, 70, 3), np.uint8))
    assert single.image_size == (70, 50) and single.drivable_mask.shape == (50, 70)
    assert single.detections is None and single.semantic is None and single.panoptic is None
    batch = backend([np.zeros((50, 70, 3), np.uint8), np.zeros((90, 30, 3), np.uint8)])
    assert [r.drivable_mask.shape for r in batch] == [(50, 70), (90, 30)]
    assert all(r.timings.batch_size == 2 and r.timings.inference_ms > 0 for r in batch)


def test_bad_frame_is_rejected_and_backend_goes_on():
    backend = create_backend("twinlitenet")
    with pytest.raises(InvalidImageError):
        backend(np.zeros((10, 10, 2), np.uint8))
    assert backend(np.zeros((40, 40, 3), np.uint8)).lane_mask.shape == (40, 40)


def test_thresholds_change_at_runtime_and_are_validated():
    backend = create_backend("twinlitenet")
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8)
    backend.set_thresholds(mask=0.0)
    assert backend(image).drivable_mask.all()
    backend.set_thresholds(mask=1.0)
    assert not backend(image).drivable_mask.any()
    with pytest.raises(ValueError, match="score threshold must be in"):
        backend.set_thresholds(score=2.0)
    assert backend.thresholds.mask == 1.0, "a rejected change leaves the thresholds as they were"


@pytest.mark.parametrize("name, used", [("twinlitenet", {"mask"}), ("cyclenet", set()), ("cross_cooperative", set()),
                                        ("yolopv2", {"score", "iou", "max_detections", "mask"}),
                                        ("fusion_panoptic", {"score", "iou", "max_detections", "mask"})])
def test_reports_name_only_the_thresholds_post_processing_applies(name, used):
    assert set(create_backend(name).describe()["thresholds"]) == used


def test_describe_records_the_options_the_backend_runs_with():
    described = create_backend("cross_cooperative", output="top", output_stride=8).describe()["config"]
    assert described["output"] == "top" and described["output_stride"] == 8
    assert described["layer_connections"] == "cross" and described["top_width"] == 0.125  # the checkpoint's
    assert json.loads(json.dumps(described)) == described


#: A narrow variant of every registered backend (random weights: the claim is about the input, and one
#: backend instance runs every form of the same frame).
NARROW = {
    "twinlitenet": {},
    "yolopv2": {"width": 0.25, "depth": 0.33, "input_width": 320, "input_height": 192},
    "fusion_panoptic": {"width": 0.25, "norm": "batch_norm", "fpn_channels": 32, "representation_size": 64,
                        "mask_channels": 32, "semantic_channels": 32, "group_norm_groups": 8,
                        "input_width": 256, "input_height": 160},
    "cyclenet": {"width": 0.125, "rates": (1, 2, 3), "aspp_bottleneck": 16, "aspp_growth": 8, "high_channels": 16,
                 "low_channels": 8, "decoder_channels": 16, "aux_channels": 8, "input_width": 128, "input_height": 72},
    "cross_cooperative": {"top_width": 0.125, "bottom_width": 0.125, "head_channels": 16, "reduced_channels": 8,
                          "input_width": 96, "input_height": 64},
}


def assert_same_results(got, expected) -> None:
    for name in ("drivable_mask", "lane_mask", "semantic", "panoptic", "detections"):
        a, b = getattr(got, name), getattr(expected, name)
        assert (a is None) == (b is None), name
        if name == "detections" and b is not None:
            for field in ("boxes", "scores", "class_ids"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        elif b is not None:
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_every_registered_backend_is_covered_by_the_input_tests():
    assert sorted(NARROW) == list_backends()


@pytest.mark.parametrize("name", sorted(NARROW))
def test_grey_and_bgra_frames_give_the_results_of_the_same_frame_in_bgr(name):
    import cv2

    backend = create_backend(name, allow_random_weights=True, **NARROW[name])
    rng = np.random.default_rng(1)
    grey = cv2.GaussianBlur(rng.integers(0, 256, (180, 320), np.uint8), (0, 0), 3)
    grey_as_bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (180, 320, 3), np.uint8), (0, 0), 3)
    bgra = np.dstack([bgr, np.full((180, 320), 77, np.uint8)])
    expected_grey, expected_bgr = backend(grey_as_bgr), backend(bgr)
    assert expected_grey.image_size == (320, 180)
    for image, expected in ((grey, expected_grey), (grey[:, :, None], expected_grey), (bgra, expected_bgr),
                            (bgr[::-1][::-1], expected_bgr)):  # a view with negative strides works too
        assert_same_results(backend(image), expected)
    for got, expected in zip(backend([grey, bgra]), backend([grey_as_bgr, bgr])):  # a mixed batch
        assert_same_results(got, expected)

    for bad, described in ((grey.astype(np.uint16), "shape (180, 320) and dtype uint16"),
                           (bgr.astype(np.float32), "shape (180, 320, 3) and dtype float32")):
        with pytest.raises(InvalidImageError, match=re.escape(described)) as error:
            backend(bad)
        assert "(H, W) or (H, W, 1) grey, (H, W, 3) BGR or (H, W, 4) BGRA" in str(error.value)
    assert_same_results(backend(bgr), expected_bgr)  # and the backend goes on


@pytest.mark.parametrize("name", sorted(NARROW))
def test_process_takes_what_call_takes_and_tiny_or_extreme_frames_work(name):
    backend = create_backend(name, allow_random_weights=True, **NARROW[name])
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (36, 64, 3), np.uint8)
    (single,) = backend.process(bgr)  # one image, not a batch of 36 rows
    assert_same_results(single, backend(bgr))
    (grey,) = backend.process(bgr[:, :, 0])
    assert grey.image_size == (64, 36)
    with pytest.raises(InvalidImageError, match="got a NoneType"):
        backend.process(None)
    for height, width in ((1, 1), (1, 1000), (1000, 1), (2, 3)):
        result = backend(rng.integers(0, 256, (height, width), np.uint8))
        assert result.image_size == (width, height)
        for mask in (result.drivable_mask, result.lane_mask, result.semantic, result.panoptic):
            assert mask is None or mask.shape == (height, width)


@pytest.fixture(scope="module")
def held_out_scenes():
    from panoptic_perception.data.synthetic import SyntheticScenes

    return list(SyntheticScenes(2, 640, 360, first_seed=5_000_000))  # seeds no bundled weights trained on


@pytest.mark.parametrize("name", list_backends())
def test_fast_path_gives_the_plain_paths_results_with_the_bundled_weights(name, held_out_scenes):
    # The inference-optimised network (folded BatchNorms, merged RepConvs, channels-last, no auxiliary
    # heads) differs from the network as trained only by float rounding: measured here, every mask pixel
    # and panoptic id equal, boxes within 1e-4 px and scores within 2e-6.
    plain, fast = create_backend(name, fast=False), create_backend(name)
    assert (plain.fast, fast.fast) == (False, True)
    for scene in held_out_scenes:
        expected, got = plain(scene.image), fast(scene.image)
        for field in ("drivable_mask", "lane_mask", "semantic", "panoptic"):
            a, b = getattr(got, field), getattr(expected, field)
            assert (a is None) == (b is None), field
            if b is not None:
                assert (a == b).mean() >= 0.9999, field
        if expected.detections is not None:
            a, b = got.detections, expected.detections
            assert len(a.boxes) == len(b.boxes) and np.array_equal(a.class_ids, b.class_ids)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
