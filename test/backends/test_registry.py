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
        backend(np.zeros((10, 10), np.uint8))
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
